//! selfsup's native core: self-supervised training (SimCLR, BYOL) on libtorch
//! through tch, loaded by the Deno front end over a plain C ABI (ffi.rs).
//! The test and benchmark hooks (debug, bench, hooks, and a few methods
//! elsewhere) are compiled only with the `testing` feature (Cargo.toml).
pub mod amp;
pub mod augment;
#[cfg(feature = "testing")]
pub mod bench;
pub mod checkpoint;
pub mod data;
#[cfg(feature = "testing")]
pub mod debug;
pub mod dist;
pub mod ema;
pub mod evaluate;
pub mod ffi;
#[cfg(feature = "testing")]
pub mod hooks;
pub mod losses;
pub mod methods;
pub mod model;
pub mod nn;
pub mod optim;
pub mod pipeline;
pub mod shim;
pub mod status;
pub mod thread;
pub mod trainer;
pub mod trainer_io;

extern "C" {
    fn selfsup_shim_torch_version() -> *const std::os::raw::c_char;
}

/// The libtorch version this library was built against (torch/version.h).
pub fn torch_version() -> String {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(selfsup_shim_torch_version()) }.to_string_lossy().into_owned()
}
