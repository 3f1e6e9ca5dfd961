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
    println!("cargo:rerun-if-changed=shim");
    // ProcessGroupNCCL's headers pull in the CUDA runtime's, which need the
    // header-only wheels nvidia-cuda-crt and nvidia-cuda-cccl (bootstrap.sh).
    let nvidia = torch_dir.parent().map(|p| p.join("nvidia")).unwrap_or_default();
    let cuda_headers = ["cu13/include/crt/host_config.h", "cu13/include/nv/target", "nccl/include/nccl.h"];
    let has_cuda = lib.join("libtorch_cuda.so").exists();
    let nccl = has_cuda && cuda_headers.iter().all(|h| nvidia.join(h).exists());
    if has_cuda && !nccl {
        println!(
            "cargo:warning=building without NCCL: {} lacks the CUDA headers (pip install nvidia-cuda-crt nvidia-cuda-cccl of the wheel's CUDA version)",
            nvidia.display()
        );
    }
    let mut shim = cc::Build::new();
    shim.cpp(true)
        .pic(true)
        .std("c++17")
        .include(torch_dir.join("include"))
        .include(torch_dir.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_DISTRIBUTED", None)
        // c10d's headers warn about their own unused parameters.
        .flag_if_supported("-Wno-unused-parameter")
        .file("shim/shim.cpp")
        .file("shim/dist_core.cpp")
        .file("shim/amp.cpp")
        .file("shim/pipeline.cpp");
    if nccl {
        shim.define("SELFSUP_WITH_NCCL", None);
    }
    shim.compile("selfsup_shim");
    // Gloo's headers are not in the wheel: shim/gloo/ holds five stubs
    // (see shim/gloo/README.md); only this translation unit sees them.
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include("shim")
        .include(torch_dir.join("include"))
        .include(torch_dir.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None)
        .flag_if_supported("-Wno-unused-parameter")
        .file("shim/dist_gloo.cpp")
        .compile("selfsup_shim_gloo");
    // ProcessGroupNCCL only where libtorch has CUDA: NCCL's and the CUDA
    // runtime's headers come from the wheel's nvidia/* packages; nothing
    // CUDA is linked directly (torch_cuda and c10_cuda bring it).
    println!("cargo:rustc-check-cfg=cfg(selfsup_nccl)");
    if nccl {
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .std("c++17")
            .include(torch_dir.join("include"))
            .include(torch_dir.join("include/torch/csrc/api/include"))
            .include(nvidia.join("nccl/include"))
            .include(nvidia.join("cu13/include"))
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .define("USE_DISTRIBUTED", None)
            .define("USE_C10D_NCCL", None)
            .flag_if_supported("-Wno-unused-parameter")
            // c10/cuda/CUDAEvent.h aligns to the destructive interference
            // size; x86-64's 64 bytes is also what torch was built with.
            .flag_if_supported("-Wno-interference-size")
            .file("shim/dist_nccl.cpp")
            .compile("selfsup_shim_nccl");
        println!("cargo:rustc-cfg=selfsup_nccl");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
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
