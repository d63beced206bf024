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

/// Runs the embedding server until SIGTERM or SIGINT (see fastembed_server). `ready` is called
/// with the lines describing what it listens on and the models it loaded.
#[pyfunction]
#[pyo3(signature = (models, *, models_dir = None, socket = None, host = None, port = None, workers = None, threads = None,
                    max_batch_tokens = None, max_concurrent_requests = None, max_queued_texts = None,
                    max_inputs = None, ready = None))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    models: Vec<(String, std::path::PathBuf)>,
    models_dir: Option<std::path::PathBuf>,
    socket: Option<std::path::PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    workers: Option<i64>,
    threads: Option<i64>,
    max_batch_tokens: Option<i64>,
    max_concurrent_requests: Option<i64>,
    max_queued_texts: Option<i64>,
    max_inputs: Option<i64>,
    ready: Option<Py<PyAny>>,
) -> PyResult<()> {
    let mut config = fastembed_server::Config {
        models,
        models_dir,
        socket,
        ..fastembed_server::Config::default()
    };
    if let Some(port) = port {
        let host = host.unwrap_or_else(|| "127.0.0.1".to_owned());
        let addr = format!("{host}:{port}");
        config.tcp = Some(addr.parse().or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&addr)
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("cannot resolve {addr}")))
        })?);
    }
    let positive = encoder::positive;
    config.workers = workers.map(|n| positive("workers", n)).transpose()?;
    config.threads = threads.map(|n| positive("threads", n)).transpose()?;
    for (value, slot, name) in [
        (max_batch_tokens, &mut config.max_batch_tokens, "max_batch_tokens"),
        (max_concurrent_requests, &mut config.max_concurrent_requests, "max_concurrent_requests"),
        (max_queued_texts, &mut config.max_queued_texts, "max_queued_texts"),
        (max_inputs, &mut config.max_inputs, "max_inputs"),
    ] {
        if let Some(value) = value {
            *slot = positive(name, value)?;
        }
    }
    let announce = |lines: Vec<String>| {
        if let Some(ready) = &ready {
            Python::attach(|py| {
                if let Err(err) = ready.call1(py, (lines,)) {
                    err.print(py);
                }
            });
        }
    };
    py.detach(|| fastembed_server::run(config, announce)).map_err(errors::server_err)
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
    module.add_function(wrap_pyfunction!(serve, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
