//! `/livez`, `/readyz` and `/metrics` on a local HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the health endpoints report.
#[derive(Debug)]
pub struct HealthState {
    /// Set once every listener is up.
    pub ready: AtomicBool,
    /// Metrics to expose.
    pub registry: Registry,
    /// Gauges read from state at scrape time (set just before encoding).
    pub sampled: Vec<SampledGauge>,
}

/// A gauge whose value is read when `/metrics` is scraped.
pub struct SampledGauge {
    pub gauge: prometheus_client::metrics::gauge::Gauge,
    pub read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for SampledGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampledGauge").finish_non_exhaustive()
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    for sampled in &state.sampled {
        sampled.gauge.set((sampled.read)());
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

/// Binds the health server; returns its address and the serving task.
pub async fn serve(
    address: SocketAddr,
    state: Arc<HealthState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let task = signet_unix::spawn_named("health-endpoint", async move {
        signet_unix::serve_http(listener, app, signet_unix::EndpointBounds::PROBES, "health").await;
    });
    Ok((local, task))
}
