//! L4 through the real forwarder: echo, a 50 MB transfer with checksum, half-close, and a refused
//! backend skipped.

mod common;
use common::*;
use std::hash::Hasher;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn conf(backends: &str) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period = "0s"
access_log = false
[admin]
listen = "{{admin}}"
[entrypoints.pg]
listen = "{{pg}}"
kind = "tcp"
[[routes]]
entrypoints = ["pg"]
service = "db"
[services.db]
retries = 2
connect_timeout = "1s"
backends = [{backends}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_round_trip_with_checksum() {
    let echo = tcp_echo().await;
    let l = Lariat::new(&[("b:e", echo.addr.to_string())]).start(&conf("\"{b:e}\"")).await;
    let s = TcpStream::connect(l.addr("pg")).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const TOTAL: usize = 50 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut block = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let mut x: u32 = 12345;
        while sent < TOTAL {
            for b in block.iter_mut() {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
            w.write_all(&block).await.unwrap();
            h.write(&block);
            sent += block.len();
        }
        w.shutdown().await.unwrap();
        h.finish()
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got += n;
            // Hash in the writer's 64 KiB blocks so both sides hash the same sequence of writes.
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 64 * 1024 {
                let rest = pending.split_off(64 * 1024);
                h.write(&pending);
                pending = rest;
            }
        }
    })
    .await
    .expect("transfer did not finish in time");
    assert_eq!(got, TOTAL);
    assert_eq!(h.finish(), writer.await.unwrap(), "checksum differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_passed_on() {
    let echo = tcp_echo().await;
    let l = Lariat::new(&[("b:e", echo.addr.to_string())]).start(&conf("\"{b:e}\"")).await;
    let mut s = TcpStream::connect(l.addr("pg")).await.unwrap();
    s.write_all(b"last words").await.unwrap();
    s.shutdown().await.unwrap(); // our write side closes; reading goes on
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("no EOF after half-close")
        .unwrap();
    assert_eq!(got, b"last words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_is_skipped() {
    let echo = tcp_echo().await;
    let (_guard, dead) = refusing_addr();
    let dead = dead.to_string();
    let l = Lariat::new(&[("b:e", echo.addr.to_string()), ("b:d", dead)])
        .start(&conf("\"{b:d}\", \"{b:e}\""))
        .await;
    for i in 0..20 {
        let mut s = TcpStream::connect(l.addr("pg")).await.unwrap();
        s.write_all(format!("ping {i}").as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("ping {i}"));
    }
    assert_eq!(echo.connections.load(Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_closes_the_connection() {
    let (_guard, dead) = refusing_addr();
    let dead = dead.to_string();
    let l = Lariat::new(&[("b:d", dead)]).start(&conf("\"{b:d}\"")).await;
    let mut s = TcpStream::connect(l.addr("pg")).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection left open");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_bytes_counted_while_open() {
    let echo = tcp_echo().await;
    let conf = conf("\"{b:e}\"").replace("access_log = false", "access_log = false\nidle_timeout = \"1s\"");
    let l = Lariat::new(&[("b:e", echo.addr.to_string())]).start(&conf).await;
    let mut s = TcpStream::connect(l.addr("pg")).await.unwrap();
    s.write_all(b"0123456789").await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    // Still open: the bytes are in the metrics already.
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_tcp_bytes_total{entrypoint=\"pg\",service=\"db@file\",direction=\"rx\"} 10"),
        "{text}"
    );
    // Then nothing either way: lariat closes it after idle_timeout.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "an idle TCP connection outlived idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_exchange_without_closing() {
    let echo = tcp_echo().await;
    let l = Lariat::new(&[("b:e", echo.addr.to_string())]).start(&conf("\"{b:e}\"")).await;
    let mut s = TcpStream::connect(l.addr("pg")).await.unwrap();
    for i in 0..5 {
        let msg = format!("turn {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("an answer stuck in a buffer")
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}
