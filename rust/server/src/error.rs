//! The server's errors: those that stop it from starting, and those a request gets as a JSON
//! body with an HTTP status (text-embeddings-inference's shape: `{"error", "error_type"}`).

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("model {name:?}: {source}")]
    Model {
        name: String,
        source: fastembed_core::Error,
    },
    #[error("{what}: {source}")]
    Listen { what: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a request did wrong, or why the server could not serve it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unknown_model(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_model", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}
