//! Calling the C++ shim (native/shim/): its functions report failure as 1
//! plus a message in a caller's buffer, and take tensor lists as arrays of
//! raw handles. Shared by mixed precision (amp.rs), the optimizers
//! (optim.rs) and the pipeline (pipeline/); the distributed calls keep
//! their own, longer messages (dist/group.rs).
use anyhow::{bail, Result};
use std::ffi::{c_char, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

/// Runs a shim call that reports failure as 1 plus a message.
pub(crate) fn shim(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = vec![0u8; 1024];
    if f(buf.as_mut_ptr() as *mut c_char, buf.len()) == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    bail!("{}", crate::status::first_line(&String::from_utf8_lossy(&buf[..end])))
}

/// Raw tensor handles of `ts`, for a shim call that takes a list. The C++
/// side may change the tensors' data in place (not the handles).
pub(crate) fn handles<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> Vec<*mut C_tensor> {
    ts.into_iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}
