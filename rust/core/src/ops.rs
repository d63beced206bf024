//! `fastembed::packed_linear` and its companions, the libtorch operators exported bundles call for
//! their linear layers (C++ in `csrc/`). They have to be registered in the process before such a
//! bundle is loaded.

use std::ffi::{c_char, CStr};

use crate::error::{Error, Result};

extern "C" {
    fn fastembed_register_ops() -> *const c_char;
    fn fastembed_linear_kernel() -> *const c_char;
}

/// Registers the project's libtorch operators with the dispatcher. The C++ side registers once per
/// process and answers every later call with that first outcome. [`crate::Encoder::load`] calls
/// it, Python calls it on import so that export can trace the operator.
pub fn register() -> Result<()> {
    // SAFETY: the C++ side catches every exception and returns null or a pointer to a
    // NUL-terminated string that lives until the process ends.
    let error = unsafe { fastembed_register_ops() };
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: as above.
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy();
    Err(Error::Operator(format!(
        "cannot register the fastembed:: linear-layer operators: {message}"
    )))
}

/// Which kernel `fastembed::packed_linear` uses: `"avx512"`, `"avx2"` (up to 64 rows), or
/// `"aten"` (MKL on the unpacked weight for everything, on CPUs without AVX2 or when
/// `FASTEMBED_EXT_LINEAR_KERNEL=aten` was set before registration).
pub fn linear_kernel() -> &'static str {
    // The choice is made at registration; without it every call would be aten::linear anyway.
    if register().is_err() {
        return "aten";
    }
    // SAFETY: returns a pointer to a static NUL-terminated ASCII string.
    let name = unsafe { CStr::from_ptr(fastembed_linear_kernel()) };
    match name.to_bytes() {
        b"avx512" => "avx512",
        b"avx2" => "avx2",
        _ => "aten",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_idempotent_and_names_a_kernel() {
        assert!(register().is_ok());
        assert!(register().is_ok());
        assert!(["avx512", "avx2", "aten"].contains(&linear_kernel()));
    }
}
