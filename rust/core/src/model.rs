//! The TorchScript backbone: `(input_ids, attention_mask)` → token embeddings `[rows, tokens, dim]`.

use std::path::Path;

use tch::{CModule, Device, Kind, Tensor};

use crate::error::{Error, Result};

pub struct Backbone {
    module: CModule,
}

impl Backbone {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::bundle(
                path,
                "missing: the bundle has no TorchScript backbone",
            ));
        }
        Self::load_named(path, path)
    }

    /// Loads the module at `source` (a path to the same file, such as /proc/self/fd/N), naming
    /// `path` in errors.
    pub fn load_named(source: &Path, path: &Path) -> Result<Self> {
        // Bundles call `fastembed::packed_linear`; the operator must exist before the graph is read.
        crate::ops::register()?;
        Self::ready(path, CModule::load_on_device(source, Device::Cpu))
    }

    /// As [`Self::load`], from the bytes of `model.pt` read from `path` (named in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        crate::ops::register()?;
        let mut reader = std::io::Cursor::new(bytes);
        Self::ready(path, CModule::load_data_on_device(&mut reader, Device::Cpu))
    }

    fn ready(path: &Path, loaded: std::result::Result<CModule, tch::TchError>) -> Result<Self> {
        let mut module = loaded.map_err(|err| {
            Error::bundle(
                path,
                format!(
                    "not a loadable TorchScript module: {}",
                    first_line(&err.to_string())
                ),
            )
        })?;
        module.set_eval();
        Ok(Self { module })
    }

    /// Token embeddings of a padded batch, float32 `[rows, tokens, dim]`. Call under `no_grad`.
    pub fn token_embeddings(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let output = self.module.forward_ts(&[input_ids, attention_mask])?;
        let (rows, tokens) = input_ids.size2()?;
        match output.size().as_slice() {
            [r, t, _] if *r == rows && *t == tokens => Ok(output.to_kind(Kind::Float)),
            shape => Err(Error::Forward(format!(
                "the backbone returned shape {shape:?} for input [{rows}, {tokens}]; expected [{rows}, {tokens}, dim]"
            ))),
        }
    }
}

impl Backbone {
    /// The module's `head` method (sentence-transformers Dense modules), on pooled vectors
    /// `[rows, width]`. Call under `no_grad`.
    pub fn head(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self
            .module
            .method_ts("head", &[pooled])
            .map_err(|err| {
                Error::Forward(format!(
                    "the model's head: {}",
                    first_line(&err.to_string())
                ))
            })?
            .to_kind(Kind::Float))
    }
}

fn first_line(message: &str) -> &str {
    message
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(message)
}
