//! The one place where core errors become Python exceptions.

use fastembed_core::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::PyErr;

// Defined in Python (fastembed_ext/errors.py) so the exporter raises the very same classes.
pyo3::import_exception!(fastembed_ext.errors, ModelLoadError);
pyo3::import_exception!(fastembed_ext.errors, BundleChangedError);
pyo3::import_exception!(fastembed_ext.errors, UnsupportedModelError);
pyo3::import_exception!(fastembed_ext.errors, EncodeError);
pyo3::import_exception!(fastembed_ext.errors, ServerError);

/// A server that could not start (or stopped with an error).
pub fn server_err(err: fastembed_server::ServerError) -> PyErr {
    ServerError::new_err(err.to_string())
}

pub fn to_py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Bundle { .. } => ModelLoadError::new_err(message),
        Error::Changed { .. } => BundleChangedError::new_err(message),
        Error::Unsupported { .. } => UnsupportedModelError::new_err(message),
        Error::InvalidArgument(_) => PyValueError::new_err(message),
        Error::Tokenize(_) | Error::Forward(_) => EncodeError::new_err(message),
        Error::Operator(_) => PyRuntimeError::new_err(message),
    }
}
