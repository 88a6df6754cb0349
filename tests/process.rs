//! The `lariat` binary: `check`, `--version`, a SIGTERM drain that lets in-flight requests finish
//! and exits 0, and a zero-downtime `--upgrade` handover under load.

mod common;
use common::proc::*;
use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_valid_and_refuses_invalid() {
    let out = Command::new(BIN)
        .args(["check", "-c", &fixture("valid/full.toml")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("entrypoint pg (tcp) on 0.0.0.0:5432"), "{text}");
    assert!(text.contains("service app@file (consistent_hash)"), "{text}");

    let out = Command::new(BIN)
        .args(["check", "--config", &fixture("invalid/missing_service.toml")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].service: no service \"nowhere\""), "{err}");

    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/lariat.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = Command::new(BIN)
        .args(["check"])
        .env("LARIAT_CONFIG", fixture("valid/empty.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "LARIAT_CONFIG not used: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lariat {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let b = http_backend("a").await;
    let l = write_conf(&b, "3s");
    let mut p = spawn(&l, &[]);
    wait_serving(&l).await;
    let slow = tokio::spawn({
        let url = l.url("web", "/sleep/1500");
        async move { client().get(&url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&p, "TERM");
    assert_eq!(slow.await.unwrap().expect("in-flight request failed during drain"), 200);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(15)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_too() {
    let b = http_backend("a").await;
    let l = write_conf(&b, "1s");
    let hc = || Command::new(BIN).arg("healthcheck").arg("-c").arg(&l.path).output().unwrap();
    assert_eq!(hc().status.code(), Some(1), "healthcheck succeeded with no lariat running");
    let mut p = spawn(&l, &[]);
    wait_serving(&l).await;
    let out = hc();
    assert!(out.status.success(), "healthcheck: {}", String::from_utf8_lossy(&out.stderr));
    signal(&p, "INT");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(15)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_over_listeners_without_failed_requests() {
    let b = http_backend("a").await;
    let l = write_conf(&b, "1s");
    let old = spawn(&l, &[]);
    wait_serving(&l).await;

    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = l.url("web", "/");
    let loader = tokio::spawn({
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        async move {
            let c = client();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }
    });

    let new = hand_over(&l, old).await;
    // Old process gone: the new one must be serving on the same port.
    let before = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    assert!(ok.load(Ordering::SeqCst) > before, "no request served after the old process left");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during the upgrade ({} ok)",
        ok.load(Ordering::SeqCst)
    );
    drop(new);
}

#[test]
fn a_listener_in_use_is_an_error_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut l = Lariat::new(&[("taken", taken.local_addr().unwrap().to_string())]);
    let text = l.render("[admin]\nlisten = \"{admin}\"\n[entrypoints.web]\nlisten = \"{taken}\"\nkind = \"http\"\n");
    std::fs::write(&l.path, text).unwrap();
    let out = Command::new(BIN).arg("-c").arg(&l.path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entrypoints.web.listen: cannot listen on"), "{err}");
}
