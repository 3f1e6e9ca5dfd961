//! Links the cdylib (and its tests) against the torch 2.11.0 that
//! scripts/bootstrap.sh found, and refuses any other torch version with a
//! one-line message: tch 0.24.0 is compiled for exactly 2.11.0, and
//! `LIBTORCH=` skips torch-sys's own version check.
use std::path::PathBuf;

const TORCH_VERSION: &str = "2.11.0";

fn torch_version(dir: &std::path::Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=']).trim_matches(['\'', '"', ' ']);
                return Some(v.split('+').next().unwrap_or(v).to_string());
            }
        }
    }
    let bv = std::fs::read_to_string(dir.join("build-version")).ok()?;
    Some(bv.trim().split('+').next().unwrap_or("").to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // torch-sys exports its lib dir through `links = "tch"`.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch lib dir"),
    );
    let torch_dir = lib.parent().map(PathBuf::from).unwrap_or_default();
    match torch_version(&torch_dir) {
        Some(v) if v == TORCH_VERSION => {}
        found => panic!(
            "selfsup needs torch {TORCH_VERSION}; {} is torch {}",
            torch_dir.display(),
            found.unwrap_or_else(|| "of unknown version".into())
        ),
    }
    // The C++ shim, against the same headers and ABI as tch's own C++.
    println!("cargo:rerun-if-changed=shim/shim.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(torch_dir.join("include"))
        .include(torch_dir.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .file("shim/shim.cpp")
        .compile("selfsup_shim");
    // Link arguments are not inherited from torch-sys, so emit them here:
    // without --no-as-needed the linker drops libtorch(_cuda) and CUDA is
    // silently unavailable at run time.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    // Test executables link against libtorch_cuda without the CUDA runtime
    // libraries on the link line; their symbols resolve at load time.
    println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
}
