use std::path::PathBuf;

/// Everything that can go wrong between a bundle on disk and a batch of vectors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bundle file is missing, unreadable, corrupt, or disagrees with the rest of the bundle.
    #[error("{}: {message}", path.display())]
    Bundle { path: PathBuf, message: String },
    /// The bundle's files no longer give the fingerprint it was pinned to.
    #[error("{}: content fingerprint {actual} differs from the pinned {expected}; the bundle changed since it was pinned", path.display())]
    Changed {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The bundle asks for something this engine does not implement.
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// A caller passed an argument that cannot be honoured.
    #[error("{0}")]
    InvalidArgument(String),
    /// The tokenizer failed on an input.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// libtorch failed while running the backbone or pooling.
    #[error("forward pass failed: {0}")]
    Forward(String),
    /// The engine's own libtorch operators could not be registered.
    #[error("{0}")]
    Operator(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn bundle(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::Bundle {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Self {
        Self::Forward(err.to_string())
    }
}
