//! ACME against a real ACME server: Debian's pebble (with its own test CA and a localhost
//! certificate generated here, `PEBBLE_VA_NOSLEEP=1`) and pebble-challtestsrv as its DNS,
//! answering 127.0.0.1 for every name. lariat orders a certificate for a host routed on its https
//! entrypoint, answers HTTP-01 on its http entrypoint, serves the certificate, stores it (0600),
//! and after a restart serves the stored one without ordering again.

mod common;
use common::certs::{ca, issue};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Handshake naming `sni`, trusting only `root_pem`: the served certificate's names.
async fn names_trusting(addr: std::net::SocketAddr, root_pem: &str, sni: &str) -> Result<Vec<String>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    Ok(x.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect())
}

struct Pebble {
    _dns: Kill,
    pebble: Option<Kill>,
    directory: String,
    root: String,
    ca_file: std::path::PathBuf,
}

/// Start pebble-challtestsrv and pebble, validating HTTP-01 on `l`'s http entrypoint.
async fn pebble(ca: &common::certs::Ca, l: &mut Lariat) -> Pebble {
    assert!(
        have("pebble") && have("pebble-challtestsrv"),
        "pebble is not installed: ./test.sh installs it (apt-get install pebble)"
    );
    let dir = l.path.parent().unwrap().to_path_buf();
    // pebble's own TLS: a certificate for localhost and 127.0.0.1 from our test CA.
    let (pc, pk) = issue(ca, &dir, "pebble", &["localhost", "127.0.0.1"]);
    let ca_file = dir.join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (acme_port, mgmt_port, dns_port, chall_mgmt, tls_port) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // lariat's http entrypoint is where pebble validates HTTP-01.
    let web = l.render("{web}");
    let http_port: u16 = web.rsplit(':').next().unwrap().parse().unwrap();
    let cfg = dir.join("pebble.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}", "managementListenAddress": "127.0.0.1:{mgmt_port}",
               "certificate": "{pc}", "privateKey": "{pk}", "httpPort": {http_port}, "tlsPort": {tls_port},
               "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#
        ),
    )
    .unwrap();
    let _dns = Kill(
        Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{chall_mgmt}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _pebble = Kill(
        Command::new("pebble")
            .args(["-config", cfg.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    wait_until(Duration::from_secs(20), || {
        let (c, d) = (trusting.clone(), directory.clone());
        async move { c.get(&d).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let root = trusting
        .get(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    Pebble {
        _dns,
        pebble: Some(_pebble),
        directory,
        root,
        ca_file,
    }
}

fn acme_conf(p: &Pebble, storage: &std::path::Path, renew_before: &str) -> String {
    format!(
        r#"
{PREAMBLE}[entrypoints.websecure]
listen = "{{websecure}}"
kind = "https"
[[routes]]
host = "acme.example.test"
service = "app"
[services.app]
backends = ["{{b:app}}"]
[tls.acme]
email = "ops@example.test"
directory = "{}"
ca_file = "{}"
storage = "{}"
on_host_rule = true
renew_before = "{renew_before}"
"#,
        p.directory,
        p.ca_file.display(),
        storage.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_and_reuse_after_restart() {
    assert!(
        have("pebble") && have("pebble-challtestsrv"),
        "pebble is not installed: ./test.sh installs it (apt-get install pebble)"
    );
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let p = pebble(&ca, &mut l).await;
    let root = p.root.clone();
    let storage = dir.join("acme");
    let conf = acme_conf(&p, &storage, "30d");
    l = l.start(&conf).await;
    let secure = l.addr("websecure");
    let t0 = tokio::time::Instant::now();
    loop {
        match names_trusting(secure, &root, "acme.example.test").await {
            Ok(n) => {
                assert_eq!(n, ["DNSName(acme.example.test)"]);
                break;
            }
            Err(e) => assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no certificate from pebble within 60 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("acme: certificate served {:?} after start", t0.elapsed());
    for f in ["account.json", "acme.example.test.pem", "acme.example.test.key"] {
        let mode = std::fs::metadata(storage.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
    }
    let text = l.metrics().await;
    assert!(text.contains("lariat_acme_orders_total{result=\"ok\"} 1"), "{text}");
    assert!(text.contains("certificate=\"acme.example.test\",source=\"acme\""), "{text}");
    let port = secure.port();
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve("acme.example.test", secure)
        .build()
        .unwrap();
    let r = https.get(format!("https://acme.example.test:{port}/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "app");

    // Restart on the same storage: the stored certificate is served at once, with no new order.
    let path = l.path.clone();
    let addrs = l.addrs.clone();
    let extra = l.extra.clone();
    drop(l);
    let mut l2 = Lariat::new(&[]);
    l2.addrs = addrs;
    l2.extra = extra;
    l2.path = path;
    let l2 = l2.start(&conf).await;
    assert_eq!(
        names_trusting(l2.addr("websecure"), &root, "acme.example.test").await.unwrap(),
        ["DNSName(acme.example.test)"]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = l2.metrics().await;
    assert!(
        !text.contains("lariat_acme_orders_total{result=\"ok\"}"),
        "ordered again after a restart: {text}"
    );
}

/// With renew_before longer than pebble's validity every certificate is due at once: lariat renews,
/// and when the CA goes away the failed orders are counted and the certificate in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_and_failed_orders_keep_the_certificate() {
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let mut p = pebble(&ca, &mut l).await;
    let conf = acme_conf(&p, &dir.join("acme"), "3650d");
    l = l.start(&conf).await;
    let secure = l.addr("websecure");
    let orders = |text: &str, result: &str| -> u64 {
        let key = format!("lariat_acme_orders_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(key.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let t0 = tokio::time::Instant::now();
    while orders(&l.metrics().await, "ok") < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no renewal within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        names_trusting(secure, &p.root, "acme.example.test").await.unwrap(),
        ["DNSName(acme.example.test)"]
    );
    // The CA goes away: renewals fail, back off, and the certificate keeps being served.
    p.pebble = None;
    let t0 = tokio::time::Instant::now();
    while orders(&l.metrics().await, "error") < 1 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no failed order counted within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        names_trusting(secure, &p.root, "acme.example.test").await.unwrap(),
        ["DNSName(acme.example.test)"],
        "a failed order removed the certificate"
    );
}
