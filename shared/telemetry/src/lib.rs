//! Logs, metrics and the admin listener every role serves: Prometheus text at `/metrics`,
//! liveness at `/livez`, readiness at `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The process-wide metrics recorder could not be installed (one is already).
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    /// The admin listener could not be bound.
    #[error("cannot listen for the admin endpoints on {addr} (PRESENCE_ADMIN_ADDR): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the process-wide metrics recorder; its handle renders the Prometheus text.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

/// A counter exported from start-up: its help text, and 0 until it counts.
pub fn zero_counter(name: &'static str, help: &'static str) {
    metrics::describe_counter!(name, help);
    metrics::counter!(name).absolute(0);
}

/// A counter family exported from start-up: its help text, and a series at 0 for each known
/// value of its one label.
pub fn zero_counters(name: &'static str, help: &'static str, label: &'static str, values: &[&str]) {
    metrics::describe_counter!(name, help);
    for value in values {
        metrics::counter!(name, label => (*value).to_owned()).absolute(0);
    }
}

/// A gauge exported from start-up: its help text, and 0 until it is set.
pub fn zero_gauge(name: &'static str, help: &'static str) {
    metrics::describe_gauge!(name, help);
    metrics::gauge!(name).set(0.0);
}

/// A gauge family exported from start-up: its help text, and a series at 0 for each known
/// value of its one label.
pub fn zero_gauges(name: &'static str, help: &'static str, label: &'static str, values: &[&str]) {
    metrics::describe_gauge!(name, help);
    for value in values {
        metrics::gauge!(name, label => (*value).to_owned()).set(0.0);
    }
}

/// Whether a role is ready for traffic, as the load balancer asks at `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks ready or not ready (also exported as the `presence_ready` gauge).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
        metrics::gauge!("presence_ready").set(if ready { 1.0 } else { 0.0 });
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    readiness: Readiness,
}

/// Binds the admin listener and serves it until `shutdown`; returns the bound address.
pub async fn serve_admin(
    addr: &str,
    metrics: PrometheusHandle,
    readiness: Readiness,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, TelemetryError> {
    let bind_error = |source| TelemetryError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    metrics::describe_gauge!(
        "presence_ready",
        "1 while the role is ready for traffic (as /readyz answers), else 0"
    );
    readiness.set(readiness.is_ready());
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/livez", get(async || "ok"))
        .route("/readyz", get(ready))
        .with_state(AdminState { metrics, readiness });
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok(local)
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
