//! The `lariat` binary as a child process: start it on a config, signal it, wait for its exit.

use super::*;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_lariat");

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(l: &Lariat, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&l.path)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc(cmd.spawn().unwrap())
}

pub fn signal(p: &Proc, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &p.0.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// The exit code once the process has exited (polled, so the test's runtime keeps running).
pub async fn wait_exit(p: &mut Proc, limit: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s.code().unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lariat did not exit within {limit:?}");
}

/// A zero-downtime handover: start a new process with `--upgrade`, give it time to wait on the
/// upgrade socket, SIGQUIT the old one and require that it exits 0. Returns the new process.
pub async fn hand_over(l: &Lariat, mut old: Proc) -> Proc {
    let new = spawn(l, &["--upgrade"]);
    tokio::time::sleep(Duration::from_millis(800)).await; // the new process waits on upgrade_sock
    signal(&old, "QUIT");
    assert_eq!(
        wait_exit(&mut old, Duration::from_secs(30)).await,
        Some(0),
        "old process exit status"
    );
    new
}

pub fn write_conf(b: &HttpBackend, grace: &str) -> Lariat {
    let mut l = Lariat::new(&[("b:a", b.addr.to_string())]);
    let sock = l.path.with_file_name("upgrade.sock");
    let text = l.render(&format!(
        r#"
[server]
threads = 1
grace_period = "{grace}"
upgrade_sock = "{}"
pid_file = "{}"
[admin]
listen = "{{admin}}"
[entrypoints.web]
listen = "{{web}}"
kind = "http"
[[routes]]
service = "app"
[services.app]
backends = ["{{b:a}}"]
"#,
        sock.display(),
        l.path.with_file_name("lariat.pid").display()
    ));
    std::fs::write(&l.path, text).unwrap();
    l
}

pub async fn wait_serving(l: &Lariat) {
    let url = l.url("web", "/");
    wait_until(Duration::from_secs(15), || {
        let url = url.clone();
        async move { client().get(&url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}
