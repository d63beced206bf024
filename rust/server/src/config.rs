//! What the server is told at start: the models, where it listens, and its bounds.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    /// Models loaded at start, by name.
    pub models: Vec<(String, PathBuf)>,
    /// A directory of bundles loaded on first use, each named by its subdirectory.
    pub models_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    /// Engine workers, each computing one batch at a time (None: see [`Config::engine_shape`]).
    pub workers: Option<usize>,
    /// libtorch threads inside each worker's forward pass (None: see [`Config::engine_shape`]).
    pub threads: Option<usize>,
    /// Tokens (before padding) gathered from queued requests into one call of the engine, which
    /// then splits them into forward passes by its own padded-token budget.
    pub max_batch_tokens: usize,
    /// Requests being served at once; past it the server answers 429.
    pub max_concurrent_requests: usize,
    /// Texts waiting for a model at once; past it the server answers 503.
    pub max_queued_texts: usize,
    /// Texts in one request; past it 413.
    pub max_inputs: usize,
    /// Characters in one text; past it 413 (the tokenizer truncates long texts anyway).
    pub max_input_chars: usize,
    /// Bytes of one request body; past it 413.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            models_dir: None,
            socket: None,
            tcp: None,
            workers: None,
            threads: None,
            max_batch_tokens: 16_384,
            max_concurrent_requests: 512,
            max_queued_texts: 16_384,
            max_inputs: 2_048,
            max_input_chars: 1_000_000,
            max_body_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.socket.is_none() && self.tcp.is_none() {
            return Err(ConfigError("nothing to listen on: give a socket path or a port".to_owned()));
        }
        if self.models.is_empty() && self.models_dir.is_none() {
            return Err(ConfigError("no models: give at least one NAME=PATH or a models directory".to_owned()));
        }
        for (name, _) in &self.models {
            if !valid_name(name) {
                return Err(ConfigError(format!(
                    "invalid model name {name:?}: letters, digits and _ . @ + -, not starting with . @ + -"
                )));
            }
        }
        let bounds = [
            ("max_batch_tokens", self.max_batch_tokens),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_queued_texts", self.max_queued_texts),
            ("max_inputs", self.max_inputs),
            ("max_input_chars", self.max_input_chars),
            ("max_body_bytes", self.max_body_bytes),
        ];
        for (what, value) in bounds {
            if value == 0 {
                return Err(ConfigError(format!("{what} must be at least 1")));
            }
        }
        for (what, value, most) in [("workers", self.workers, MAX_WORKERS), ("threads", self.threads, MAX_THREADS)] {
            if let Some(value) = value {
                if value == 0 || value > most {
                    return Err(ConfigError(format!("{what} must be between 1 and {most}")));
                }
            }
        }
        Ok(())
    }

    /// Workers × libtorch threads each. Unless told otherwise, one single-threaded worker per
    /// core up to `DEFAULT_MAX_WORKERS`, the cores then shared out among the workers: small
    /// requests (a backend's one text) run best each on one core, batched a few at a time, and
    /// more workers than that would only multiply the activations' memory.
    pub fn engine_shape(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        match (self.workers, self.threads) {
            (Some(workers), Some(threads)) => (workers, threads),
            (Some(workers), None) => (workers, (cores / workers).max(1)),
            (None, Some(threads)) => ((cores / threads).clamp(1, DEFAULT_MAX_WORKERS), threads),
            (None, None) => {
                let workers = cores.min(DEFAULT_MAX_WORKERS);
                (workers, (cores / workers).max(1))
            }
        }
    }
}

const DEFAULT_MAX_WORKERS: usize = 8;
const MAX_WORKERS: usize = 256;
const MAX_THREADS: usize = 1024;

/// The names a registry accepts (the PostgreSQL registry's rule): never a path.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.@+-".contains(c))
        && name.len() <= 57
}
