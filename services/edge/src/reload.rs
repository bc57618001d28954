//! Files the edge re-reads while it runs, so what they hold changes without a restart: the
//! verification keys (`JWT_KEYS_FILE`, a JSON Web Key Set: keys rotate without disconnecting
//! anyone, a connection lives until its own token's `exp`) and the customers' allowed origins
//! (`PRESENCE_CUSTOMER_ORIGINS_FILE`). Each file is checked every [`CHECK_EVERY`]; a file that
//! cannot be read or does not parse is logged and counted, and what is in use stays as it was.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// How often a file is looked at.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What identifies one version of a file.
type Version = (Option<SystemTime>, u64);

async fn version(path: &PathBuf) -> Option<Version> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// One watched file: what it holds (for the logs), the counter of its reloads (by
/// `outcome`), and how its new content is taken (a summary of what was loaded, or why not).
pub(crate) struct Watched<F> {
    pub(crate) path: PathBuf,
    pub(crate) holds: &'static str,
    pub(crate) counter: &'static str,
    pub(crate) apply: F,
}

/// Hands the file's content to `apply` whenever the file changes, until `shutdown`.
pub(crate) async fn watch<F>(file: Watched<F>, shutdown: CancellationToken)
where
    F: Fn(&[u8]) -> Result<String, String> + Send + 'static,
{
    let Watched {
        path,
        holds,
        counter,
        apply,
    } = file;
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
            Ok(content) => apply(&content),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(summary) => {
                metrics::counter!(counter, "outcome" => "ok").increment(1);
                tracing::info!(%summary, path = %path.display(), "reloaded the {holds}");
            }
            Err(e) => {
                metrics::counter!(counter, "outcome" => "error").increment(1);
                tracing::error!(error = %e, path = %path.display(), "cannot reload the {holds}; keeping the ones in use");
            }
        }
    }
}
