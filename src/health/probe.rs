//! One active probe of one backend: a TCP connect, or an HTTP request whose 2xx/3xx status is
//! healthy. Bounded by the check's timeout.

use crate::desired::{CheckKind, HealthCheckSpec};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probe `addr` (its port replaced by the check's `port`, when set): (healthy, detail).
pub async fn probe(addr: SocketAddr, check: &HealthCheckSpec) -> (bool, String) {
    let target = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    match tokio::time::timeout(check.timeout, run(target, &check.kind)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (false, e.kind().to_string()),
        Err(_) => (false, "timed out".into()),
    }
}

async fn run(target: SocketAddr, kind: &CheckKind) -> std::io::Result<(bool, String)> {
    let mut s = TcpStream::connect(target).await?;
    let CheckKind::Http {
        method,
        path,
        version,
        host,
    } = kind
    else {
        return Ok((true, "connected".into()));
    };
    let host = host.clone().unwrap_or_else(|| target.to_string());
    let req =
        format!("{method} {path} {version}\r\nHost: {host}\r\nUser-Agent: lariat-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let status = match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..600).contains(&code) => code,
        _ => return Ok((false, "not an HTTP response".into())),
    };
    Ok(((200..400).contains(&status), status.to_string()))
}
