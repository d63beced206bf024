//! fastembed-ext-server: one process per machine that holds each model once and serves every
//! PostgreSQL backend, worker and application on it.
//!
//! Requests that arrive while a model computes join its next call to the engine, up to a token
//! budget (continuous batching, as in text-embeddings-inference); a vector never depends on what
//! else is in its batch, because the engine masks each row. The server speaks
//! text-embeddings-inference's `POST /embed`, OpenAI's `POST /v1/embeddings`, `GET /health`,
//! `GET /models` and `GET /metrics` (Prometheus), over a unix socket and optionally TCP. It
//! refuses work past bounded queues (429 / 503) instead of growing, and stops on SIGTERM after
//! answering what it accepted.
//!
//! This crate is a thin layer: the engine is `fastembed-ext-core`, and the Python package starts
//! the server (`fastembed-ext serve`).

mod api;
mod batcher;
mod config;
mod error;
mod metrics;
mod models;

use std::sync::Arc;

pub use config::{Config, ConfigError};
pub use error::ServerError;

/// Runs the server until SIGTERM or SIGINT. `ready` is called once every listener is bound, with
/// a line per listener and per model loaded.
pub fn run(config: Config, ready: impl FnOnce(Vec<String>)) -> Result<(), ServerError> {
    config.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Requests only parse JSON and wait; the engine runs on its own threads.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::Io)?;
    runtime.block_on(async move {
        let metrics = Arc::new(metrics::Metrics::default());
        let registry = models::Registry::load(&config, metrics.clone()).await?;
        let state = Arc::new(api::State::new(config.clone(), registry, metrics));
        api::serve(state, &config, ready).await
    })
}
