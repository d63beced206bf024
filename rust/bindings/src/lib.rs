//! `fastembed_ext._native`: a thin PyO3 layer over fastembed-ext-core. It converts arguments,
//! releases the GIL around the Rust work and maps core errors to the package's exceptions.

use pyo3::prelude::*;

mod encoder;
mod errors;

/// Sets libtorch's intra-op thread count for this process.
#[pyfunction]
fn set_num_threads(threads: i64) -> PyResult<()> {
    fastembed_core::set_num_threads(encoder::positive("threads", threads)?);
    Ok(())
}

/// libtorch's intra-op thread count for this process.
#[pyfunction]
fn num_threads() -> usize {
    fastembed_core::num_threads()
}

/// The content fingerprint of the bundle at `bundle`, as its files are now.
#[pyfunction]
fn fingerprint(py: Python<'_>, bundle: std::path::PathBuf) -> PyResult<String> {
    py.detach(|| fastembed_core::fingerprint(&bundle))
        .map_err(errors::to_py_err)
}

/// The kernel `fastembed::packed_linear` runs: "avx512", "avx2" or "aten".
#[pyfunction]
fn linear_kernel() -> &'static str {
    fastembed_core::ops::linear_kernel()
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Before anything can load or export a bundle that calls `fastembed::packed_linear`.
    fastembed_core::ops::register().map_err(errors::to_py_err)?;
    module.add_class::<encoder::PyEncoder>()?;
    module.add_function(wrap_pyfunction!(set_num_threads, module)?)?;
    module.add_function(wrap_pyfunction!(num_threads, module)?)?;
    module.add_function(wrap_pyfunction!(linear_kernel, module)?)?;
    module.add_function(wrap_pyfunction!(fingerprint, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
