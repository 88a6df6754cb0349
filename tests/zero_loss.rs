//! Zero-loss operations under load: wrk drives keep-alive requests at the `lariat` binary while it
//! reloads its config on SIGHUP, hands its listeners to a new process (`--upgrade`, then SIGQUIT),
//! or drains on SIGTERM. wrk must report no failed request: no read, write or timeout error and
//! no non-2xx answer. (After SIGTERM the listener is closed, so wrk's reconnects are refused; wrk
//! counts those as write errors. They are requests never accepted, so there the check is that no
//! read, timeout or non-2xx error happened and that every request the backend saw was answered.)

mod common;
use common::proc::*;
use common::*;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What wrk printed, parsed.
#[derive(Debug, Default)]
struct WrkReport {
    requests: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    non_2xx: u64,
    text: String,
}

impl WrkReport {
    fn parse(text: &str) -> WrkReport {
        let mut r = WrkReport {
            text: text.to_string(),
            ..WrkReport::default()
        };
        for line in text.lines().map(str::trim) {
            if let Some(n) = line.split(" requests in ").next().filter(|_| line.contains(" requests in ")) {
                r.requests = n.trim().parse().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                for part in rest.split(',') {
                    let mut it = part.split_whitespace();
                    let (Some(kind), Some(n)) = (it.next(), it.next().and_then(|n| n.parse().ok())) else {
                        continue;
                    };
                    match kind {
                        "connect" => r.connect = n,
                        "read" => r.read = n,
                        "write" => r.write = n,
                        "timeout" => r.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                r.non_2xx = n.trim().parse().unwrap_or(0);
            }
        }
        r
    }

    /// Requests that failed after their connection was accepted (a refused connect shows as a
    /// connect or, with wrk's non-blocking connects, a write error: see [`Self::refused`]).
    fn lost(&self) -> u64 {
        self.read + self.timeout + self.non_2xx
    }

    /// Errors that may be refused connections.
    fn refused(&self) -> u64 {
        self.connect + self.write
    }
}

/// Start wrk on `url` for `secs` seconds with 8 keep-alive connections.
fn wrk(url: &str, secs: u32) -> std::process::Child {
    Command::new("wrk")
        .args(["-t1", "-c8", &format!("-d{secs}s"), "--timeout", "10s", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is not installed: run scripts/setup.sh --test (or ./test.sh)")
}

async fn finish(w: std::process::Child) -> WrkReport {
    let out = tokio::task::spawn_blocking(move || w.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "wrk: {}", String::from_utf8_lossy(&out.stderr));
    let report = WrkReport::parse(&String::from_utf8_lossy(&out.stdout));
    assert!(report.requests > 0, "wrk made no request:\n{}", report.text);
    report
}

#[test]
fn wrk_report_parses() {
    let r = WrkReport::parse(
        "Running 4s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  12345 requests in 4.00s, 1.23MB read\n  Socket errors: connect 7, read 1, write 2, timeout 3\n  Non-2xx or 3xx responses: 5\nRequests/sec:   3086.25\n",
    );
    assert_eq!(
        (r.requests, r.connect, r.read, r.write, r.timeout, r.non_2xx),
        (12345, 7, 1, 2, 3, 5)
    );
    assert_eq!((r.lost(), r.refused()), (9, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_under_wrk_loses_nothing() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let mut l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())]);
    let conf = |backends: &str| {
        format!(
            "[server]\nthreads = 1\ngrace_period = \"1s\"\n[admin]\nlisten = \"{{admin}}\"\n[entrypoints.web]\nlisten = \"{{web}}\"\nkind = \"http\"\n[[routes]]\nservice = \"app\"\n[services.app]\nbackends = [{backends}]\n"
        )
    };
    let text = l.render(&conf("\"{b:a}\""));
    std::fs::write(&l.path, text).unwrap();
    let p = spawn(&l, &[]);
    wait_serving(&l).await;
    let w = wrk(&l.url("web", "/"), 4);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Membership a -> b, then back to both, each applied by a SIGHUP.
    for backends in ["\"{b:b}\"", "\"{b:a}\", \"{b:b}\""] {
        let text = l.render(&conf(backends));
        std::fs::write(&l.path, text).unwrap();
        signal(&p, "HUP");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let report = finish(w).await;
    assert_eq!(
        report.lost() + report.refused(),
        0,
        "requests lost across reloads:\n{}",
        report.text
    );
    assert!(b.hits.load(Ordering::SeqCst) > 0, "the reload never took effect");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_wrk_loses_nothing() {
    let b = http_backend("a").await;
    let l = write_conf(&b, "2s");
    let old = spawn(&l, &[]);
    wait_serving(&l).await;
    let w = wrk(&l.url("web", "/"), 5);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let new = hand_over(&l, old).await;
    let report = finish(w).await;
    assert_eq!(
        report.lost() + report.refused(),
        0,
        "requests lost across the upgrade:\n{}",
        report.text
    );
    // The new process serves on its own now.
    assert_eq!(client().get(l.url("web", "/")).send().await.unwrap().status(), 200);
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_under_wrk_answers_every_accepted_request() {
    let b = http_backend("a").await;
    let l = write_conf(&b, "2s");
    let mut p = spawn(&l, &[]);
    wait_serving(&l).await;
    let before = b.hits.load(Ordering::SeqCst);
    let w = wrk(&l.url("web", "/"), 4);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    signal(&p, "TERM");
    let code = wait_exit(&mut p, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "exit status after the drain");
    let report = finish(w).await;
    assert_eq!(report.lost(), 0, "accepted requests lost in the drain:\n{}", report.text);
    let forwarded = (b.hits.load(Ordering::SeqCst) - before) as u64;
    assert_eq!(forwarded, report.requests, "requests forwarded but not answered:\n{}", report.text);
    assert!(
        report.refused() > 0,
        "wrk was never refused: the listener stayed open?\n{}",
        report.text
    );
}
