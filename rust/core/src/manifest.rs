use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pool::PoolingMode;

/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "fastembed_ext.json";

/// The newest manifest layout this engine reads (1: mean pooling only; 2 adds the pooling modes,
/// a Dense head, prompts and truncate_dim). The exporter writes this number.
pub const FORMAT_VERSION: u32 = 2;

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
    /// One mode, or several joined by `+` (their vectors concatenated, as sentence-transformers does).
    #[serde(deserialize_with = "pooling_modes")]
    pub pooling: Vec<PoolingMode>,
    /// false: prompt tokens are left out of pooling (INSTRUCTOR-style models).
    #[serde(default = "yes")]
    pub include_prompt: bool,
    /// model.pt has a `head` method: the sentence-transformers Dense modules after pooling.
    #[serde(default)]
    pub head: bool,
    pub normalize: bool,
    /// Matryoshka: vectors keep their first `truncate_dim` dimensions (after the Normalize step).
    #[serde(default)]
    pub truncate_dim: Option<usize>,
    /// Prompt name -> text prepended to every text encoded with that name.
    #[serde(default)]
    pub prompts: BTreeMap<String, String>,
    #[serde(default)]
    pub default_prompt_name: Option<String>,
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

fn yes() -> bool {
    true
}

fn pooling_modes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<PoolingMode>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.split('+')
        .map(|name| name.parse::<PoolingMode>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(serde::de::Error::custom)
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
        // The version first: a newer layout may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|err| Error::bundle(path, format!("not a valid manifest: {err}")))?;
        if version.format_version == 0 || version.format_version > FORMAT_VERSION {
            return Err(Error::Unsupported {
                path: path.to_owned(),
                what: format!(
                    "bundle format_version {} (this fastembed_ext reads format_version 1 to {FORMAT_VERSION}; \
                     the bundle was made by a newer fastembed_ext: upgrade fastembed_ext, or export the \
                     model with this one)",
                    version.format_version
                ),
            });
        }
        let manifest: Self = serde_json::from_slice(bytes).map_err(|err| {
            let message = err.to_string();
            if message.starts_with("pooling ") {
                Error::Unsupported {
                    path: path.to_owned(),
                    what: message,
                }
            } else {
                Error::bundle(path, format!("not a valid manifest: {message}"))
            }
        })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// The text of prompt `name`.
    pub fn prompt(&self, name: &str) -> Result<&str> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            Error::InvalidArgument(format!(
                "prompt name {name:?} is not one of this model's prompts ({})",
                if known.is_empty() {
                    "it has none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    fn check(&self, path: &Path) -> Result<()> {
        let unsupported = |what: String| {
            Err(Error::Unsupported {
                path: path.to_owned(),
                what,
            })
        };
        if self.format_version < 2
            && (self.pooling != [PoolingMode::Mean] || self.head || self.truncate_dim.is_some())
        {
            return unsupported(format!(
                "format_version {} with pooling, head or truncate_dim settings it does not have",
                self.format_version
            ));
        }
        if self.pooling.is_empty() {
            return unsupported("pooling \"\"".to_owned());
        }
        if let Some(name) = &self.default_prompt_name {
            if !self.prompts.contains_key(name) {
                return Err(Error::bundle(
                    path,
                    format!("default_prompt_name {name:?} is not one of its prompts"),
                ));
            }
        }
        if self.input_names != ["input_ids", "attention_mask"] {
            return unsupported(format!(
                "input_names {:?} (expected [\"input_ids\", \"attention_mask\"])",
                self.input_names
            ));
        }
        if self.dim == 0 || self.max_seq_length < 2 || self.truncate_dim == Some(0) {
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
