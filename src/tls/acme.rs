//! ACME (RFC 8555) with `instant-acme`: an account and the certificates it obtains persist under
//! `storage` (files mode 0600) and are reused after a restart; HTTP-01 challenges are answered
//! from memory on every http entrypoint. Names come from `domains` and, with `on_host_rule`, from
//! every exact host routed on an https entrypoint that no other certificate covers — from any
//! provider, picked up as they appear. Renewal `renew_before` expiry; a failed order backs off and
//! never removes a working certificate.

use super::cert::{from_pem, Loaded, Source};
use crate::config::AcmeSettings;
use crate::desired::HostMatch;
use crate::state::Shared;
use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

pub struct Acme {
    pub settings: AcmeSettings,
    pub shared: Arc<Shared>,
    /// The https entrypoints, whose hosts get certificates with `on_host_rule`.
    pub https_entrypoints: Vec<String>,
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

impl Acme {
    fn cert_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.settings.storage.join(format!("{name}.pem")),
            self.settings.storage.join(format!("{name}.key")),
        )
    }

    /// Certificates stored by an earlier run.
    fn load_stored(&self) -> BTreeMap<String, Arc<Loaded>> {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(&self.settings.storage) else {
            return out;
        };
        for e in dir.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pem")) else {
                continue;
            };
            let (c, k) = self.cert_paths(name);
            match (std::fs::read(&c), std::fs::read(&k)) {
                (Ok(cp), Ok(kp)) => match from_pem(&cp, &kp, Source::Acme, format!("acme {}", c.display())) {
                    Ok(l) => {
                        out.insert(name.to_string(), Arc::new(l));
                    }
                    Err(e) => log::warn!("acme: stored certificate {}: {e}", c.display()),
                },
                _ => log::warn!("acme: {} has no readable key beside it", c.display()),
            }
        }
        out
    }

    async fn account(&self) -> Result<Account, String> {
        let builder = || match &self.settings.ca_file {
            Some(p) => Account::builder_with_root(p).map_err(|e| format!("ca_file {}: {e}", p.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        };
        let path = self.settings.storage.join("account.json");
        if let Ok(text) = std::fs::read(&path) {
            let creds: AccountCredentials = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            return builder()?
                .from_credentials(creds)
                .await
                .map_err(|e| format!("account from {}: {e}", path.display()));
        }
        let contact = format!("mailto:{}", self.settings.email);
        let new = NewAccount {
            contact: &[&contact],
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, creds) = builder()?
            .create(&new, self.settings.directory.clone(), None)
            .await
            .map_err(|e| format!("new account at {}: {e}", self.settings.directory))?;
        let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
        write_private(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
        log::info!("acme: account created at {}", self.settings.directory);
        Ok(account)
    }

    /// The names that should have an ACME certificate now.
    fn wanted(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.settings.domains.iter().cloned().collect();
        let snap = self.shared.registry.snapshot();
        names.extend(snap.acme_names.iter().cloned());
        if self.settings.on_host_rule {
            for r in &snap.http_routes {
                if let HostMatch::Exact(h) = &r.host {
                    if r.entrypoints.iter().any(|e| self.https_entrypoints.contains(e)) && !self.shared.certs.covered_by_others(h) {
                        names.insert(h.clone());
                    }
                }
            }
        }
        names
    }

    /// One order for one name, HTTP-01 answered from memory: (certificate chain PEM, key PEM).
    async fn order(&self, account: &Account, name: &str) -> Result<(String, String), String> {
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut tokens = Vec::new();
        let result = async {
            {
                let mut authzs = order.authorizations();
                while let Some(a) = authzs.next().await {
                    let mut a = a.map_err(|e| format!("authorization: {e}"))?;
                    match a.status {
                        AuthorizationStatus::Valid => continue,
                        AuthorizationStatus::Pending => {}
                        other => return Err(format!("authorization is {other:?}")),
                    }
                    let mut ch = a.challenge(ChallengeType::Http01).ok_or("the CA offers no http-01 challenge")?;
                    self.shared
                        .acme_challenge(&ch.token, Some(ch.key_authorization().as_str().to_string()));
                    tokens.push(ch.token.clone());
                    ch.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
                }
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
            let status = order.poll_ready(&retry).await.map_err(|e| format!("waiting for validation: {e}"))?;
            if status != OrderStatus::Ready {
                return Err(format!("order is {status:?}, not ready"));
            }
            let key = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
            let chain = order.poll_certificate(&retry).await.map_err(|e| format!("certificate: {e}"))?;
            Ok((chain, key))
        }
        .await;
        for t in tokens {
            self.shared.acme_challenge(&t, None);
        }
        result
    }
}

#[async_trait]
impl BackgroundService for Acme {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = std::fs::create_dir_all(&self.settings.storage) {
            log::error!("acme: storage {}: {e}; ACME is off", self.settings.storage.display());
            return;
        }
        let _ = std::fs::set_permissions(&self.settings.storage, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let mut certs = self.load_stored();
        self.shared.certs.set_acme(certs.values().cloned().collect());
        let mut account: Option<Account> = None;
        let mut retry_at: HashMap<String, (tokio::time::Instant, Duration)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let due: Vec<String> = self
                .wanted()
                .into_iter()
                .filter(|n| {
                    let fresh = certs
                        .get(n)
                        .is_some_and(|c| c.not_after.duration_since(SystemTime::now()).unwrap_or_default() > self.settings.renew_before);
                    !fresh && retry_at.get(n).is_none_or(|(at, _)| *at <= now)
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            if account.is_none() {
                match self.account().await {
                    Ok(a) => account = Some(a),
                    Err(e) => {
                        log::error!("acme: {e}");
                        for n in due {
                            let back = retry_at.get(&n).map(|(_, b)| (*b * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_MIN);
                            retry_at.insert(n, (now + back, back));
                        }
                        continue;
                    }
                }
            }
            let Some(acct) = &account else { continue };
            for name in due {
                match self.order(acct, &name).await {
                    Ok((chain, key)) => {
                        let (c, k) = self.cert_paths(&name);
                        let loaded = from_pem(chain.as_bytes(), key.as_bytes(), Source::Acme, format!("acme {}", c.display()));
                        match (
                            loaded,
                            write_private(&k, key.as_bytes()).and_then(|_| write_private(&c, chain.as_bytes())),
                        ) {
                            (Ok(l), Ok(())) => {
                                log::info!("acme: certificate for {name} obtained, valid until {:?}", l.not_after);
                                certs.insert(name.clone(), Arc::new(l));
                                self.shared.certs.set_acme(certs.values().cloned().collect());
                                self.shared.count_acme(true);
                                retry_at.remove(&name);
                            }
                            (Err(e), _) => self.failed(&name, &format!("the issued certificate does not load: {e}"), &mut retry_at, now),
                            (_, Err(e)) => self.failed(&name, &format!("storing it: {e}"), &mut retry_at, now),
                        }
                    }
                    Err(e) => self.failed(&name, &e, &mut retry_at, now),
                }
            }
        }
    }
}

impl Acme {
    fn failed(&self, name: &str, e: &str, retry_at: &mut HashMap<String, (tokio::time::Instant, Duration)>, now: tokio::time::Instant) {
        self.shared.count_acme(false);
        let back = retry_at.get(name).map(|(_, b)| (*b * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_MIN);
        retry_at.insert(name.to_string(), (now + back, back));
        log::warn!("acme: order for {name} failed: {e}; the certificate in force stays; next try in {back:?}");
    }
}
