//! The verification keys' file (`JWT_KEYS_FILE`, a JSON Web Key Set): keys chosen by `kid`,
//! reloaded while the edge runs, so keys rotate without a restart and without disconnecting
//! anyone (a connection lives until its own token's `exp`). The file is checked every
//! [`CHECK_EVERY`]; a file that cannot be read or is not a usable key set is logged and
//! counted, and the keys in use stay as they were.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use presence_auth::Verifier;
use tokio_util::sync::CancellationToken;

/// How often the file is looked at.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What identifies one version of the file.
type Version = (Option<SystemTime>, u64);

async fn version(path: &PathBuf) -> Option<Version> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// Reloads `verifier`'s keys from `path` whenever the file changes, until `shutdown`.
pub(crate) async fn watch(path: PathBuf, verifier: Verifier, shutdown: CancellationToken) {
    let mut seen = version(&path).await;
    let mut timer = tokio::time::interval(CHECK_EVERY);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        let now = version(&path).await;
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = match tokio::fs::read(&path).await {
            Ok(jwks) => verifier.replace_keys(&jwks).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(keys) => {
                metrics::counter!("presence_key_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(keys, path = %path.display(), "reloaded the verification keys");
            }
            Err(e) => {
                metrics::counter!("presence_key_reloads_total", "outcome" => "error").increment(1);
                tracing::error!(error = %e, path = %path.display(), "cannot reload the verification keys; keeping the ones in use");
            }
        }
    }
}
