//! Traefik's circuit-breaker expression language: `NetworkErrorRatio()`,
//! `ResponseCodeRatio(from, to, dividedByFrom, dividedByTo)`, `LatencyAtQuantileMS(q)`, compared
//! with `> >= < <= == !=` to numbers and combined with `&& || ( )`. Parse errors quote the
//! expression and point at the bad token.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    NetworkErrorRatio,
    /// Responses with codes in [from, to) over those in [div_from, div_to).
    ResponseCodeRatio {
        from: u16,
        to: u16,
        div_from: u16,
        div_to: u16,
    },
    /// Latency at quantile q (0..100), in milliseconds.
    LatencyAtQuantileMs(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Compare(Metric, Cmp, f64),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// What an expression is evaluated against.
pub trait Stats {
    fn network_error_ratio(&self) -> f64;
    fn response_code_ratio(&self, from: u16, to: u16, div_from: u16, div_to: u16) -> f64;
    fn latency_at_quantile_ms(&self, q: f64) -> f64;
}

impl Expr {
    pub fn eval(&self, s: &dyn Stats) -> bool {
        match self {
            Expr::And(a, b) => a.eval(s) && b.eval(s),
            Expr::Or(a, b) => a.eval(s) || b.eval(s),
            Expr::Compare(m, op, v) => {
                let x = match m {
                    Metric::NetworkErrorRatio => s.network_error_ratio(),
                    Metric::ResponseCodeRatio {
                        from,
                        to,
                        div_from,
                        div_to,
                    } => s.response_code_ratio(*from, *to, *div_from, *div_to),
                    Metric::LatencyAtQuantileMs(q) => s.latency_at_quantile_ms(*q),
                };
                match op {
                    Cmp::Gt => x > *v,
                    Cmp::Ge => x >= *v,
                    Cmp::Lt => x < *v,
                    Cmp::Le => x <= *v,
                    Cmp::Eq => x == *v,
                    Cmp::Ne => x != *v,
                }
            }
        }
    }
}

/// A parse error: the expression, the column (0-based) of the bad token, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub source: String,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot parse {:?}: {} at column {}\n    {}\n    {}^",
            self.source,
            self.message,
            self.column + 1,
            self.source,
            " ".repeat(self.source[..self.column.min(self.source.len())].chars().count())
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Op(Cmp),
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::And => "\"&&\"".into(),
        Tok::Or => "\"||\"".into(),
        Tok::Op(_) => "a comparison".into(),
        Tok::End => "the end".into(),
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, m: &str| ParseError {
        source: src.to_string(),
        column: i,
        message: m.to_string(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = |s: &[u8]| b[i..].starts_with(s);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            _ if two(b"&&") => Tok::And,
            _ if two(b"||") => Tok::Or,
            _ if two(b">=") => Tok::Op(Cmp::Ge),
            _ if two(b"<=") => Tok::Op(Cmp::Le),
            _ if two(b"==") => Tok::Op(Cmp::Eq),
            _ if two(b"!=") => Tok::Op(Cmp::Ne),
            b'>' => Tok::Op(Cmp::Gt),
            b'<' => Tok::Op(Cmp::Lt),
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = src[start..i].parse().map_err(|_| err(start, "bad number"))?;
                out.push((Tok::Num(n), start));
                continue;
            }
            c if c.is_ascii_alphabetic() => {
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push((Tok::Ident(src[start..i].to_string()), start));
                continue;
            }
            _ => {
                return Err(err(
                    start,
                    &format!("unexpected character {:?}", src[start..].chars().next().unwrap_or('?')),
                ))
            }
        };
        i += match tok {
            Tok::And | Tok::Or | Tok::Op(Cmp::Ge | Cmp::Le | Cmp::Eq | Cmp::Ne) => 2,
            _ => 1,
        };
        out.push((tok, start));
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn fail<T>(&self, message: String) -> Result<T, ParseError> {
        Err(ParseError {
            source: self.src.to_string(),
            column: self.toks[self.pos].1,
            message,
        })
    }

    fn expect(&mut self, want: Tok) -> Result<(), ParseError> {
        if *self.peek() == want {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(format!("expected {}, found {}", describe(&want), describe(self.peek())))
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        match *self.peek() {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(n)
            }
            ref t => self.fail(format!("expected a number, found {}", describe(t))),
        }
    }

    fn code(&mut self) -> Result<u16, ParseError> {
        let n = self.number()?;
        if n.fract() != 0.0 || !(0.0..=1000.0).contains(&n) {
            self.pos -= 1;
            return self.fail(format!("{n} is not a status code"));
        }
        Ok(n as u16)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while *self.peek() == Tok::Or {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        while *self.peek() == Tok::And {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.primary()?));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Tok::LParen {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        let metric = match self.peek().clone() {
            Tok::Ident(name) => {
                self.pos += 1;
                self.expect(Tok::LParen)?;
                let m = match name.as_str() {
                    "NetworkErrorRatio" => Metric::NetworkErrorRatio,
                    "ResponseCodeRatio" => {
                        let from = self.code()?;
                        self.expect(Tok::Comma)?;
                        let to = self.code()?;
                        self.expect(Tok::Comma)?;
                        let div_from = self.code()?;
                        self.expect(Tok::Comma)?;
                        let div_to = self.code()?;
                        Metric::ResponseCodeRatio {
                            from,
                            to,
                            div_from,
                            div_to,
                        }
                    }
                    "LatencyAtQuantileMS" => {
                        let q = self.number()?;
                        if !(0.0..=100.0).contains(&q) {
                            self.pos -= 1;
                            return self.fail(format!("quantile {q} is not between 0 and 100"));
                        }
                        Metric::LatencyAtQuantileMs(q)
                    }
                    _ => {
                        self.pos -= 2;
                        return self.fail(format!(
                            "unknown function {name:?} (NetworkErrorRatio, ResponseCodeRatio, LatencyAtQuantileMS)"
                        ));
                    }
                };
                self.expect(Tok::RParen)?;
                m
            }
            t => return self.fail(format!("expected a metric function or \"(\", found {}", describe(&t))),
        };
        let op = match *self.peek() {
            Tok::Op(op) => op,
            ref t => return self.fail(format!("expected a comparison (> >= < <= == !=), found {}", describe(t))),
        };
        self.pos += 1;
        let v = self.number()?;
        Ok(Expr::Compare(metric, op, v))
    }
}

/// Parse an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser { src, toks, pos: 0 };
    let e = p.or()?;
    if *p.peek() != Tok::End {
        return p.fail(format!("unexpected {} after a complete expression", describe(p.peek())));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(f64, f64, f64);
    impl Stats for Fixed {
        fn network_error_ratio(&self) -> f64 {
            self.0
        }
        fn response_code_ratio(&self, _: u16, _: u16, _: u16, _: u16) -> f64 {
            self.1
        }
        fn latency_at_quantile_ms(&self, _: f64) -> f64 {
            self.2
        }
    }

    #[test]
    fn parses_traefik_examples() {
        for src in [
            "NetworkErrorRatio() > 0.5",
            "ResponseCodeRatio(500, 600, 0, 600) > 0.25",
            "LatencyAtQuantileMS(50.0) > 100",
            "ResponseCodeRatio(500, 600, 0, 600) > 0.30 || NetworkErrorRatio() > 0.10",
            "(NetworkErrorRatio() >= 0.1 && LatencyAtQuantileMS(99) < 1000) || ResponseCodeRatio(500,600,0,600) != 0",
        ] {
            parse(src).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn evaluates_with_precedence() {
        let e = parse("NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500,600,0,600) > 0.1 && LatencyAtQuantileMS(50) > 100").unwrap();
        assert!(e.eval(&Fixed(0.6, 0.0, 0.0)));
        assert!(!e.eval(&Fixed(0.1, 0.2, 50.0)));
        assert!(e.eval(&Fixed(0.1, 0.2, 150.0)));
        assert!(parse("NetworkErrorRatio() == 0").unwrap().eval(&Fixed(0.0, 0.0, 0.0)));
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let e = parse("NetworkErrorRatio() >> 0.5").unwrap_err();
        assert_eq!(e.column, 21, "{e}");
        assert!(e.to_string().contains("\"NetworkErrorRatio() >> 0.5\""), "{e}");
        assert!(e.to_string().ends_with("                         ^"), "{e}");
        let e = parse("NetworkErrorRate() > 0.5").unwrap_err();
        assert_eq!(e.column, 0);
        assert!(e.message.contains("unknown function"), "{e}");
        let e = parse("ResponseCodeRatio(500, 600, 0) > 0.5").unwrap_err();
        assert_eq!(e.column, 29, "{e}");
        let e = parse("(NetworkErrorRatio() > 0.5").unwrap_err();
        assert_eq!(e.column, 26, "{e}");
        assert!(parse("").is_err());
        assert!(parse("NetworkErrorRatio() > 0.5 0.3").is_err());
        assert!(parse("NetworkErrorRatio() > 0.5 $").is_err());
    }
}
