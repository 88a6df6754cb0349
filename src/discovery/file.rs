//! The file provider: the routes and services of `lariat.toml`, reloaded when the file changes
//! (polled, so replaced files and ConfigMap symlink swaps are seen; a change is read once it has
//! stayed put for a poll interval) or on SIGHUP. An invalid file is refused with its problems
//! logged and the running config stays.

use crate::config::Config;
use crate::state::Shared;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::Notify;

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config {path} refused, the running config stays:\n{source}")]
    Invalid { path: PathBuf, source: crate::config::ConfigError },
}

pub struct FileProvider {
    path: PathBuf,
    shared: Arc<Shared>,
    /// The config in force.
    current: Mutex<Config>,
    /// Wakes the loop for a reload now (SIGHUP, tests).
    trigger: Arc<Notify>,
    /// The file as it was when the config in force was read: the watch compares with this, so a
    /// change made while the process starts (before the watch's first look) is not taken for
    /// the starting state and missed.
    initial: Option<Stamp>,
}

/// (modification time, length, content hash) of the file as last read.
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some((meta.modified().ok(), meta.len(), h.finish()))
}

impl FileProvider {
    pub fn new(path: PathBuf, shared: Arc<Shared>, config: Config) -> FileProvider {
        let initial = stamp(&path);
        shared.provider_synced("file", initial.map(|s| format!("{:016x}", s.2)));
        FileProvider {
            path,
            shared,
            current: Mutex::new(config),
            trigger: Arc::new(Notify::new()),
            initial,
        }
    }

    /// A handle that asks for a reload now.
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Read the file again and, if it is valid, publish its routes and services.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(source) => {
                self.shared.count_reload(false);
                return Err(ReloadError::Invalid {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if new.entrypoints != current.entrypoints || new.admin.listen != current.admin.listen {
            log::warn!(
                "{}: listeners changed (entrypoints or admin.listen); routes and services are reloaded, listeners take effect after `lariat --upgrade`",
                self.path.display()
            );
        }
        if new.server.threads != current.server.threads || new.server.grace_period != current.server.grace_period {
            log::warn!(
                "{}: server.threads and server.grace_period take effect after `lariat --upgrade`",
                self.path.display()
            );
        }
        self.shared.set_access_log(new.server.access_log);
        let stats = self.shared.registry.apply("file", new.desired.clone());
        log::info!(
            "{}: reloaded ({} services rebuilt, {} unchanged)",
            self.path.display(),
            stats.services_rebuilt,
            stats.services_reused
        );
        *current = new;
        self.shared.count_reload(true);
        self.shared
            .provider_synced("file", stamp(&self.path).map(|s| format!("{:016x}", s.2)));
        Ok(())
    }

    fn try_reload(&self) {
        if let Err(e) = self.reload() {
            log::error!("{e}");
        }
    }
}

#[async_trait]
impl BackgroundService for FileProvider {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (watch, interval) = {
            let c = self.current.lock().unwrap_or_else(|e| e.into_inner());
            (c.providers.file.watch, c.providers.file.poll_interval)
        };
        let mut last = self.initial;
        let mut pending: Option<Stamp> = None;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangup => {
                    log::info!("SIGHUP: reloading {}", self.path.display());
                    last = stamp(&self.path);
                    pending = None;
                    self.try_reload();
                }
                _ = self.trigger.notified() => {
                    last = stamp(&self.path);
                    pending = None;
                    self.try_reload();
                }
                _ = tick.tick(), if watch => {
                    // A change is read once it has stayed the same for a whole poll interval:
                    // a file caught in the middle of being written (even empty) is never applied.
                    let now = stamp(&self.path);
                    if now.is_some() && now != last {
                        if pending == now {
                            last = now;
                            pending = None;
                            self.try_reload();
                        } else {
                            pending = now;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "[providers.file]\npoll_interval = \"20ms\"\n[services.app]\nbackends = [\"127.0.0.1:1\"]\n";

    /// A change written after the config was read but before the watch first looks at the file
    /// (while the process starts) is applied, not taken for the starting state.
    #[tokio::test]
    async fn a_change_during_startup_is_not_missed() {
        let dir = std::env::temp_dir().join(format!("lariat-file-provider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lariat.toml");
        std::fs::write(&path, CONF).unwrap();
        let shared = Arc::new(Shared::new(false));
        let provider = Arc::new(FileProvider::new(path.clone(), shared.clone(), Config::load(&path).unwrap()));
        std::fs::write(&path, CONF.replace("127.0.0.1:1", "127.0.0.1:2")).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let p = provider.clone();
        let task = tokio::spawn(async move { p.start(shutdown).await });
        for _ in 0..250 {
            if shared.reloads().0 > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(shared.reloads(), (1, 0), "the change was not applied");
        let _ = stop.send(true);
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
