//! `--profile`: torch's own profiler (Kineto, as `torch.profiler.profile`)
//! over a few training steps on the trainer's thread, written as a Chrome
//! trace, with a table of operator self times; and named ranges for the
//! pipeline's stages in that trace.
use crate::shim::shim;
use anyhow::{Context, Result};
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;

extern "C" {
    fn selfsup_profiler_prepare(cuda: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_profiler_start(cuda: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_profiler_stop(
        path: *const c_char,
        top: c_int,
        table: *mut c_char,
        table_cap: usize,
        table_len: *mut usize,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_range_begin(name: *const c_char) -> *mut c_void;
    fn selfsup_range_end(range: *mut c_void);
}

/// Readies the profiler for the CPU and, when libtorch sees a GPU, CUDA.
/// On the thread that loaded libtorch (Kineto's client lives there).
pub fn prepare() -> Result<()> {
    let cuda = tch::Cuda::is_available() as c_int;
    shim(|err, cap| unsafe { selfsup_profiler_prepare(cuda, err, cap) })
}

/// Starts profiling this thread's operators (and with `cuda` the GPU's
/// kernels and copies), after `prepare`.
pub fn start(cuda: bool) -> Result<()> {
    shim(|err, cap| unsafe { selfsup_profiler_start(cuda as c_int, err, cap) })
}

/// Stops profiling, writes the Chrome trace to `trace`; returns the table
/// of the `top` operators and kernels by self time.
pub fn stop(trace: &Path, top: usize) -> Result<String> {
    let path = CString::new(trace.to_string_lossy().as_bytes()).context("trace path holds a NUL byte")?;
    let mut table = vec![0u8; 16 << 10];
    let mut len = 0usize;
    shim(|err, cap| unsafe {
        selfsup_profiler_stop(path.as_ptr(), top as c_int, table.as_mut_ptr() as *mut c_char, table.len(), &mut len, err, cap)
    })?;
    let end = table.iter().position(|&b| b == 0).unwrap_or(len.min(table.len()));
    Ok(String::from_utf8_lossy(&table[..end]).into_owned())
}

/// A named range in the profiler's trace while it lives; nothing when no
/// profiler runs.
pub struct Range(*mut c_void);

impl Range {
    pub fn new(name: &'static std::ffi::CStr) -> Self {
        Range(unsafe { selfsup_range_begin(name.as_ptr()) })
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { selfsup_range_end(self.0) }
        }
    }
}
