//! An open-loop HTTP/1.1 load generator for the benchmark's fixed-load cell: CONNS keep-alive
//! connections share a fixed total rate; each request has a scheduled send time and its latency
//! counts from that time (a late response delays the next send, and that delay is counted, as
//! wrk2 does against coordinated omission). Prints one line:
//! `requests errors p50_ms p90_ms p99_ms p999_ms max_ms`.
//!
//!   cargo build --release --example fixed_rate
//!   target/release/examples/fixed_rate URL RATE SECONDS [CONNS]    # e.g. http://127.0.0.1:8080/ 20000 10 50

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Read one response (Content-Length framed) from `s`, keeping extra bytes in `buf`.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Ok(status);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(addr: String, req: Vec<u8>, interval: Duration, start: Instant, end: Instant) -> (Vec<u32>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut s = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(_) => return (lat, 1),
    };
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut due = start;
    while due < end {
        tokio::time::sleep_until(due).await;
        let ok = match s.write_all(&req).await {
            Ok(()) => matches!(read_response(&mut s, &mut buf).await, Ok(200..=399)),
            Err(_) => false,
        };
        if ok {
            lat.push(due.elapsed().as_micros() as u32);
        } else {
            errors += 1;
            match TcpStream::connect(&addr).await {
                Ok(n) => {
                    s = n;
                    buf.clear();
                }
                Err(_) => return (lat, errors),
            }
        }
        due += interval;
    }
    (lat, errors)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: fixed_rate URL RATE SECONDS [CONNS]");
        std::process::exit(2)
    };
    let url = args.get(1).unwrap_or_else(|| usage());
    let rate: f64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
    let secs: f64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
    let conns: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(50);
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage());
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n").into_bytes();
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        // Spread the connections' schedules over one interval.
        let offset = interval.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(connection(
            hostport.to_string(),
            req.clone(),
            interval,
            start + offset,
            end,
        )));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let q = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0;
    println!(
        "{} {} {:.3} {:.3} {:.3} {:.3} {:.3}",
        all.len(),
        errors,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        all.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}
