use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "fastembed_ext.json";

/// The only manifest layout this engine reads; the exporter writes the same number.
const FORMAT_VERSION: u32 = 1;

/// How vectors of a model are meant to be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    Cosine,
    Dot,
}

impl Similarity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Dot => "dot",
        }
    }
}

/// What the exporter recorded about a bundle (`fastembed_ext.json`). Unknown keys are ignored so
/// that provenance fields can grow without a format bump.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub architecture: String,
    pub dim: usize,
    /// Truncation length in tokens, special tokens included.
    pub max_seq_length: usize,
    pub pooling: String,
    pub normalize: bool,
    pub similarity: Similarity,
    pub pad_token_id: u32,
    pub input_names: Vec<String>,
    #[serde(default)]
    pub torch_version: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default = "default_dtype")]
    pub dtype: String,
}

fn default_dtype() -> String {
    "float32".to_owned()
}

impl Manifest {
    /// Reads and checks the manifest of the bundle at `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|err| Error::bundle(&path, err))?;
        Self::from_bytes(&path, &bytes)
    }

    /// Parses and checks manifest bytes read from `path` (named in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let manifest: Self = serde_json::from_slice(bytes)
            .map_err(|err| Error::bundle(path, format!("not a valid manifest: {err}")))?;
        manifest.check(path)?;
        Ok(manifest)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let unsupported = |what: String| {
            Err(Error::Unsupported {
                path: path.to_owned(),
                what,
            })
        };
        if self.format_version != FORMAT_VERSION {
            return unsupported(format!(
                "format_version {} (this build reads {FORMAT_VERSION}; re-export the model)",
                self.format_version
            ));
        }
        if self.pooling != "mean" {
            return unsupported(format!(
                "pooling {:?} (only \"mean\" is implemented)",
                self.pooling
            ));
        }
        if self.input_names != ["input_ids", "attention_mask"] {
            return unsupported(format!(
                "input_names {:?} (expected [\"input_ids\", \"attention_mask\"])",
                self.input_names
            ));
        }
        if self.dim == 0 || self.max_seq_length < 2 {
            return Err(Error::bundle(
                path,
                format!(
                    "dim {} / max_seq_length {} are not usable",
                    self.dim, self.max_seq_length
                ),
            ));
        }
        Ok(())
    }
}
