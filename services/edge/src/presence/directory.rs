//! The user directory feed: users become known from their JWT claims when they connect.
//! Connections hand their identity to a task that upserts them into PostgreSQL in batches,
//! so a slow or absent database never delays a connection.

use std::time::Duration;

use presence_auth::Identity;
use presence_store::{Store, UserRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handle to the directory writer.
#[derive(Clone)]
pub(crate) struct Directory {
    tx: mpsc::Sender<UserRecord>,
}

impl Directory {
    pub(crate) fn start(store: Store, tasks: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(10_000);
        tasks.spawn(write_users(rx, store, shutdown));
        Self { tx }
    }

    /// Records a connected user; dropped (and counted) if the writer is far behind.
    pub(crate) fn saw(&self, identity: &Identity) {
        let record = UserRecord {
            tenant: identity.tenant.clone(),
            user: identity.user.clone(),
            username: identity.username.clone(),
            class: identity.class.to_string(),
        };
        if self.tx.try_send(record).is_err() {
            metrics::counter!("presence_directory_dropped_total").increment(1);
        }
    }
}

async fn write_users(
    mut rx: mpsc::Receiver<UserRecord>,
    store: Store,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            n = rx.recv_many(&mut batch, 1_000) => {
                if n == 0 {
                    break;
                }
                if let Err(e) = store.upsert_users(&batch).await {
                    metrics::counter!("presence_directory_write_failures_total").increment(1);
                    tracing::warn!(error = %e, users = batch.len(), "could not record users in the directory");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                batch.clear();
            }
        }
    }
}
