//! Follows a chunked message body's framing as it passes through, to find where it ends without
//! decoding it, and refuses a malformed one (a bad size, a missing CRLF, a bare LF).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size: an extension, up to CR.
    Extension,
    /// Expecting the LF that ends the size line.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// Bytes of the current chunk size, or of the data still to come.
    size: u64,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
        }
    }
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Follow `data`; returns how many of its bytes belong to the body (all of them unless the
    /// body ends inside `data`).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = self.size.min((data.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return Err(Malformed);
                    }
                    self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits: 1.. }, b';' | b' ' | b'\t') => State::Extension,
                (State::Size { digits: 1.. }, b'\r') => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n' | 0) => return Err(Malformed),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerLine, b'\n' | 0) => return Err(Malformed),
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(Malformed),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `body` split at every position and in single bytes: the end is found at the same place.
    fn end_of(body: &[u8]) -> Result<Option<usize>, Malformed> {
        let whole = {
            let mut c = Chunked::default();
            let n = c.feed(body)?;
            c.done().then_some(n)
        };
        for split in 0..=body.len() {
            let mut c = Chunked::default();
            let a = c.feed(&body[..split])?;
            let n = if c.done() { a } else { a + c.feed(&body[split..])? };
            assert_eq!(c.done().then_some(n), whole, "split at {split}");
        }
        let mut c = Chunked::default();
        let mut n = 0;
        for b in body {
            if c.done() {
                break;
            }
            n += c.feed(std::slice::from_ref(b))?;
        }
        assert_eq!(c.done().then_some(n), whole, "byte by byte");
        Ok(whole)
    }

    #[test]
    fn finds_the_end() {
        assert_eq!(end_of(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(end_of(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1"), Ok(Some(13)));
        assert_eq!(end_of(b"A;name=value\r\n0123456789\r\n0\r\n\r\n"), Ok(Some(31)));
        assert_eq!(end_of(b"1\r\nx\r\n0\r\nTrailer: v\r\nOther: w\r\n\r\nrest"), Ok(Some(33)));
        assert_eq!(end_of(b"3\r\nab"), Ok(None));
        assert_eq!(end_of(b"fF\r\n"), Ok(None));
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"3\nabc\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\nTrailer\n\r\n",
            b"0\r\n\r\r",
        ] {
            assert_eq!(end_of(bad), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
