use std::collections::BTreeMap;
use std::path::PathBuf;

use fastembed_core::{Embeddings, EncodeOptions, Encoder, Prompt};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::to_py_err;

/// A loaded model bundle. Safe to share between threads: `encode` runs without the GIL.
#[pyclass(name = "Encoder", module = "fastembed_ext._native", frozen)]
pub struct PyEncoder {
    inner: Encoder,
}

#[pymethods]
impl PyEncoder {
    #[new]
    #[pyo3(signature = (bundle, threads = None, fingerprint = None))]
    fn new(
        py: Python<'_>,
        bundle: PathBuf,
        threads: Option<i64>,
        fingerprint: Option<String>,
    ) -> PyResult<Self> {
        if let Some(threads) = threads {
            fastembed_core::set_num_threads(positive("threads", threads)?);
        }
        let inner = py
            .detach(|| match &fingerprint {
                Some(pinned) => Encoder::load_pinned(&bundle, pinned),
                None => Encoder::load(&bundle),
            })
            .map_err(to_py_err)?;
        Ok(Self { inner })
    }

    /// Embeds a sequence of str; returns float32 `(len(texts), dim)`, C-contiguous, and how many
    /// texts were longer than max_seq_length (embedded from their beginning only). `prompt`
    /// (a text) wins over `prompt_name`; with neither, the model's default prompt applies.
    #[pyo3(signature = (texts, batch_size = None, normalize = None, batch_tokens = None,
                        truncate_dim = None, normalize_embeddings = false, prompt = None,
                        prompt_name = None))]
    #[allow(clippy::too_many_arguments)]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: Option<i64>,
        normalize: Option<bool>,
        batch_tokens: Option<i64>,
        truncate_dim: Option<i64>,
        normalize_embeddings: bool,
        prompt: Option<String>,
        prompt_name: Option<String>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, usize)> {
        let texts = owned_texts(texts)?;
        let options = EncodeOptions {
            batch_size: batch_size
                .map(|size| positive("batch_size", size))
                .transpose()?,
            batch_tokens: batch_tokens
                .map(|tokens| positive("batch_tokens", tokens))
                .transpose()?,
            normalize,
            truncate_dim: truncate_dim
                .map(|dim| positive("truncate_dim", dim))
                .transpose()?,
            normalize_embeddings,
            prompt: match (&prompt, &prompt_name) {
                (Some(text), _) => Prompt::Text(text),
                (None, Some(name)) => Prompt::Named(name),
                (None, None) => Prompt::Default,
            },
        };
        let Embeddings {
            data,
            rows,
            dim,
            truncated,
        } = py
            .detach(|| self.inner.encode(&texts, &options))
            .map_err(to_py_err)?;
        // The Vec becomes the array's buffer as it is; reshape only makes a view.
        Ok((
            PyArray1::from_vec(py, data).reshape([rows, dim])?,
            truncated,
        ))
    }

    /// Token ids each text is embedded with: special tokens added, truncated at max_seq_length.
    fn tokenize(&self, py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
        let texts = owned_texts(texts)?;
        py.detach(|| self.inner.tokenize(&texts)).map_err(to_py_err)
    }

    /// Character spans `(start, end)` of token windows that cover `text` (see the core's
    /// `Encoder::windows`): `window` tokens each (default: all the model embeds whole),
    /// overlapping by `overlap`.
    #[pyo3(signature = (text, window = None, overlap = 0))]
    fn windows(
        &self,
        py: Python<'_>,
        text: &str,
        window: Option<i64>,
        overlap: i64,
    ) -> PyResult<Vec<(usize, usize)>> {
        let window = window.map(|w| positive("window", w)).transpose()?;
        if overlap < 0 {
            return Err(PyValueError::new_err(format!(
                "overlap must be 0 or more tokens, got {overlap}"
            )));
        }
        let overlap = usize::try_from(overlap).unwrap_or(usize::MAX);
        py.detach(|| self.inner.windows(text, window, overlap))
            .map_err(to_py_err)
    }

    /// The most tokens of a text one vector sees: max_seq_length less the special tokens.
    #[getter]
    fn window_tokens(&self) -> usize {
        self.inner.window_tokens()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.manifest().max_seq_length
    }

    #[getter]
    fn similarity(&self) -> &'static str {
        self.inner.manifest().similarity.as_str()
    }

    #[getter]
    fn normalize(&self) -> bool {
        self.inner.manifest().normalize
    }

    /// Prompt name -> the text put before every text encoded with that name.
    #[getter]
    fn prompts(&self) -> BTreeMap<String, String> {
        self.inner.manifest().prompts.clone()
    }

    #[getter]
    fn default_prompt_name(&self) -> Option<String> {
        self.inner.manifest().default_prompt_name.clone()
    }

    /// The model's Matryoshka truncation, if it has one.
    #[getter]
    fn truncate_dim(&self) -> Option<usize> {
        self.inner.manifest().truncate_dim
    }

    /// Width of the vectors before any truncation.
    #[getter]
    fn full_dim(&self) -> usize {
        self.inner.full_dim()
    }

    /// The pooling modes, in the order their vectors are concatenated.
    #[getter]
    fn pooling(&self) -> Vec<&'static str> {
        self.inner
            .manifest()
            .pooling
            .iter()
            .map(|mode| mode.as_str())
            .collect()
    }

    #[getter]
    fn architecture(&self) -> &str {
        &self.inner.manifest().architecture
    }

    #[getter]
    fn dtype(&self) -> &str {
        &self.inner.manifest().dtype
    }

    /// The bundle's content fingerprint, `blake3:<64 hex digits>` (computed on first access
    /// unless the bundle was loaded pinned to it).
    #[getter]
    fn fingerprint(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner.fingerprint().map(str::to_owned))
            .map_err(to_py_err)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_owned()
    }

    fn __repr__(&self) -> String {
        let manifest = self.inner.manifest();
        format!(
            "Encoder(path={:?}, architecture={:?}, dim={}, max_seq_length={}, similarity={:?})",
            self.inner.dir(),
            manifest.architecture,
            manifest.dim,
            manifest.max_seq_length,
            manifest.similarity.as_str()
        )
    }
}

/// Copies the texts out of Python objects so the encoder can run without the GIL.
fn owned_texts(texts: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if texts.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "texts must be a sequence of str, not a single str",
        ));
    }
    let items = texts.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "texts must be a sequence of str, not {}",
            type_name(texts)
        ))
    })?;
    let mut owned = Vec::with_capacity(texts.len().unwrap_or(0));
    for (index, item) in items.enumerate() {
        let item = item?;
        let Ok(text) = item.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "texts[{index}] is {}, expected str",
                type_name(&item)
            )));
        };
        let text = text.to_str().map_err(|err| {
            PyValueError::new_err(format!("texts[{index}] cannot be encoded as UTF-8: {err}"))
        })?;
        owned.push(text.to_owned());
    }
    Ok(owned)
}

fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "an object".to_owned())
}

pub fn positive(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&value| value > 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive integer, got {value}"))
        })
}
