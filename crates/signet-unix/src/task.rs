//! Background tasks with a name: each runs inside a `tracing` span naming it, so every log line
//! says which task wrote it.

use std::future::Future;

use tracing::Instrument as _;

/// `tokio::spawn` inside a span `task{name=...}`.
pub fn spawn_named<F>(name: &'static str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.instrument(tracing::info_span!("task", name)))
}
