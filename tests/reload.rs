//! Reloading the config file under load: a valid change takes effect with no failed request; an
//! invalid one is refused and the running config keeps serving.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn conf(service_backends: &str, extra_route: &str) -> String {
    format!(
        r#"
{PREAMBLE}[providers.file]
poll_interval = "50ms"
[[routes]]
service = "app"
{extra_route}
[services.app]
backends = [{service_backends}]
"#
    )
}

/// Send requests in a loop from several tasks until told to stop; count ok and failed.
fn load(url: String, stop: Arc<AtomicBool>, ok: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let c = client();
                // Bounded: at most 20 000 requests per task, and the test stops it long before.
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        other => {
                            // The first few failures say what they were, for the assertion's message.
                            if failed.fetch_add(1, Ordering::SeqCst) < 3 {
                                eprintln!("request failed: {:?}", other.map(|r| r.status()));
                            }
                            0
                        }
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let mut l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())])
        .start(&conf("\"{b:a}\"", ""))
        .await;
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let tasks = load(l.url("web", "/"), stop.clone(), ok.clone(), failed.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Move traffic a -> a+b -> b -> a, with a new route in between.
    for (backends, route) in [
        ("\"{b:a}\", \"{b:b}\"", ""),
        ("\"{b:b}\"", "[[routes]]\nhost = \"new.test\"\nservice = \"app\""),
        ("\"{b:a}\"", ""),
    ] {
        assert!(l.rewrite(&conf(backends, route)).await, "valid reload refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads ({} ok)",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "too few requests to mean anything");
    assert!(b.hits.load(Ordering::SeqCst) > 0, "the reloaded backend never got traffic");
    let (status, backend, _) = get(&client(), &l.url("web", "/"), "x.test").await;
    assert_eq!((status, backend.as_str()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_refused_and_old_config_serves() {
    let a = http_backend("a").await;
    let mut l = Lariat::new(&[("b:a", a.addr.to_string())]).start(&conf("\"{b:a}\"", "")).await;
    let version = l.running().shared.registry.version();
    for bad in [
        conf("\"not-an-address\"", ""),
        conf("\"{b:a}\"", "[[routes]]\nservice = \"missing\""),
        "this is [not toml".to_string(),
        conf("\"{b:a}\"", "").replace("kind = \"http\"", "kind = \"http\"\nspeed = 11"),
    ] {
        assert!(!l.rewrite(&bad).await, "invalid config accepted:\n{bad}");
        let (status, backend, _) = get(&client(), &l.url("web", "/"), "x.test").await;
        assert_eq!((status, backend.as_str()), (200, "a"));
    }
    assert_eq!(
        l.running().shared.registry.version(),
        version,
        "a refused config touched the registry"
    );
    let (ok, errors) = l.running().shared.reloads();
    // The poller may read a file before the trigger does: each bad file counts once or twice.
    assert!(ok == 0 && (4..=8).contains(&errors), "reloads ok={ok} error={errors}");
    // And a good file after the bad ones is taken.
    assert!(
        l.rewrite(&conf("\"{b:a}\"", "[[routes]]\nhost = \"two.test\"\nservice = \"app\""))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_is_picked_up_without_a_trigger() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let mut l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())])
        .start(&conf("\"{b:a}\"", ""))
        .await;
    let text = l.render(&conf("\"{b:b}\"", ""));
    std::fs::write(&l.path, text).unwrap();
    let url = l.url("web", "/");
    wait_until(Duration::from_secs(5), || {
        let url = url.clone();
        async move { get(&client(), &url, "x.test").await.1 == "b" }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_finishes_its_requests() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let mut l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())])
        .start(&conf("\"{b:a}\"", ""))
        .await;
    let slow = tokio::spawn({
        let url = l.url("web", "/sleep/800");
        async move { get(&client(), &url, "x.test").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(l.rewrite(&conf("\"{b:b}\"", "")).await);
    // New work goes to b at once, while a's request is still in flight.
    let (status, backend, _) = get(&client(), &l.url("web", "/"), "x.test").await;
    assert_eq!((status, backend.as_str()), (200, "b"));
    let snap = l.running().shared.registry.snapshot();
    let svc = snap.services().next().unwrap();
    assert_eq!(svc.draining.len(), 1, "a should be draining");
    assert_eq!(svc.draining[0].addr, a.addr);
    let (status, backend, body) = slow.await.unwrap();
    assert_eq!((status, backend.as_str()), (200, "a"), "{body}");
}
