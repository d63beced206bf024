//! tch's build script links libtorch, but no rpath reaches the final cdylib (tch-rs issues 767, 787),
//! so `import fastembed_ext._native` would fail unless torch were imported first. Record where the
//! torch wheel keeps its libraries instead.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    // Wheel install: site-packages/fastembed_ext/_native*.so beside site-packages/torch/lib.
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
    if let Some(dir) = torch_lib_dir() {
        // Editable install: the module lives in the source tree, so also point at the wheel itself.
        println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,{dir}");
        println!("cargo:rustc-link-search=native={dir}");
    }
    // libtorch registers its CPU operators from static initialisers of libtorch_cpu: keep it
    // linked whatever symbols are referenced. Not `-ltorch`: in the CUDA wheel that stub pulls in
    // libtorch_cuda, cuBLAS, NVRTC and friends, about 260 MiB resident that a CPU engine never uses.
    println!("cargo:rustc-link-arg-cdylib=-Wl,--no-as-needed,-ltorch_cpu,--as-needed");
}

fn torch_lib_dir() -> Option<String> {
    if let Ok(root) = std::env::var("LIBTORCH") {
        return Some(format!("{root}/lib"));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
