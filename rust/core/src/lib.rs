//! fastembed-ext-core: sentence embeddings with the same values as sentence-transformers.
//!
//! The path reads in one direction: text → [`tokenize`] → [`batching`] (which texts share a
//! forward pass) → [`model`] (TorchScript backbone) → [`pool`] (the pooling modes, optional L2
//! normalisation) → `f32` rows. [`Encoder`] ties the steps
//! together over a model bundle: a directory with `model.pt`, `tokenizer.json` and a
//! [`Manifest`] (`fastembed_ext.json`), identified by its content [`fingerprint`].

pub mod batching;
mod encoder;
mod error;
pub mod fingerprint;
mod manifest;
pub mod model;
pub mod ops;
pub mod pool;
pub mod tokenize;

pub use encoder::{
    release_memory, tokens_since_release, Embeddings, EncodeOptions, Encoder, Prompt,
};
pub use error::{Error, Result};
pub use fingerprint::fingerprint;
pub use manifest::{Manifest, Similarity, FORMAT_VERSION, MANIFEST_FILE};
pub use pool::PoolingMode;

/// Sets the number of threads libtorch uses inside one operator. Process-wide, as in libtorch.
pub fn set_num_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
}

/// The number of threads libtorch currently uses inside one operator.
pub fn num_threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1)
}
