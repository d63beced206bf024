//! Compiles the `fastembed::` linear-layer operators (csrc/) against the libtorch that tch links.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    // torch-sys (links = "tch") reports the libtorch it found; its headers sit beside it.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report DEP_TCH_LIBTORCH_LIB (libtorch not found)"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .to_path_buf();
    let includes = [
        root.join("include"),
        root.join("include/torch/csrc/api/include"),
    ];
    // Same ABI as torch-sys's own C++ (and the torch wheel: the C++11 std::string ABI).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");

    let base = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .std("c++17")
            .opt_level(3)
            .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str());
        build
    };
    // Each instruction set in its own object, compiled for it alone; the dispatcher (linear.cpp)
    // is built for the baseline and calls one only after asking the CPU.
    base()
        .file("csrc/packed_avx512.cpp")
        .flag("-mavx512f")
        .flag("-mfma")
        // GCC 12's own AVX-512 intrinsics trip -Wuninitialized when inlined (GCC bug 105593).
        .flag_if_supported("-Wno-uninitialized")
        .compile("fastembed_packed_avx512");
    base()
        .file("csrc/packed_avx2.cpp")
        .flag("-mavx2")
        .flag("-mfma")
        .compile("fastembed_packed_avx2");
    base()
        .includes(&includes)
        .warnings(false)
        .define("GLOG_USE_GLOG_EXPORT", None)
        // at::parallel_for is OpenMP pragmas inlined from the headers: without this it runs on
        // one thread. libgomp itself is linked by torch-sys (the torch wheel's own copy at run time).
        .flag("-fopenmp")
        .file("csrc/linear.cpp")
        .compile("fastembed_linear_op");
}
