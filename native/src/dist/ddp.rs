//! DistributedDataParallel, as PyTorch's DDP does it: rank 0's parameters
//! and buffers copied to every rank at the start, gradients averaged by
//! c10d's own Reducer (bucketed all-reduces that start during backward as
//! soon as a bucket's gradients are ready), and rank 0's BatchNorm buffers
//! broadcast before every forward (`broadcast_buffers=True`).
use super::group::{shim, Group, RawGroup};
use crate::model::Model;
use anyhow::{Context, Result};
use std::ffi::{c_char, c_int, CString};
use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
struct RawDdp {
    _private: [u8; 0],
}

extern "C" {
    fn selfsup_ddp_new(
        g: *mut RawGroup,
        params: *const *const C_tensor,
        names: *const *const c_char,
        n: usize,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        out: *mut *mut RawDdp,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_ddp_before_forward(d: *mut RawDdp, rebuilt: *mut c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_ddp_before_backward(d: *mut RawDdp, loss: *const C_tensor, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_ddp_buckets(d: *mut RawDdp, bytes: *mut i64, max: usize) -> i64;
    fn selfsup_ddp_free(d: *mut RawDdp);
}

/// torch.distributed's default first bucket (dist._DEFAULT_FIRST_BUCKET_BYTES).
pub const FIRST_BUCKET_BYTES: i64 = 1 << 20;

/// BatchNorm's buffers, by the names PyTorch gives them.
pub fn is_bn_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"].iter().any(|b| name.ends_with(b))
}

pub struct Ddp {
    raw: *mut RawDdp,
    bucket_bytes: i64,
    /// BatchNorm running statistics (online and BYOL target), in name order.
    buffers: Vec<Tensor>,
    /// Broadcast `buffers` from rank 0 before each forward (off with SyncBN,
    /// where every rank computes the same statistics anyway).
    broadcast_buffers: bool,
}

impl Ddp {
    /// Copies rank 0's whole state (every parameter and buffer, BYOL's
    /// target, the Polyak average) to this rank, then hooks the Reducer to
    /// the trainable parameters, in the same (name) order on every rank.
    pub fn new(group: &Group, model: &Model, bucket_bytes: i64, broadcast_buffers: bool) -> Result<Ddp> {
        let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state: Vec<Tensor> = vars.iter().map(|(_, t)| t.shallow_clone()).collect();
        if let Some(p) = &model.polyak {
            state.extend(p.shadow.iter().map(|t| t.shallow_clone()));
        }
        group.broadcast(&state, 0, bucket_bytes).context("broadcasting rank 0's weights")?;
        let buffers = vars.iter().filter(|(n, _)| is_bn_buffer(n)).map(|(_, t)| t.shallow_clone()).collect();

        let names: Vec<CString> = model.params.iter().map(|p| CString::new(p.name.clone())).collect::<Result<_, _>>()?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let params: Vec<*const C_tensor> = model.params.iter().map(|p| p.tensor.as_ptr()).collect();
        let mut raw = std::ptr::null_mut();
        // SAFETY: the arrays outlive the call; the Reducer keeps its own
        // handles to the parameter tensors.
        shim(|err, cap| unsafe {
            selfsup_ddp_new(group.raw(), params.as_ptr(), name_ptrs.as_ptr(), params.len(), bucket_bytes, FIRST_BUCKET_BYTES.min(bucket_bytes), &mut raw, err, cap)
        })?;
        Ok(Ddp { raw, bucket_bytes, buffers, broadcast_buffers })
    }

    /// What DDP does at the start of its forward. Returns true when the
    /// buckets were rebuilt (once, before the second step).
    pub fn before_forward(&mut self, group: &Group) -> Result<bool> {
        let mut rebuilt: c_int = 0;
        // SAFETY: raw is live; rebuilt is a valid out pointer.
        shim(|err, cap| unsafe { selfsup_ddp_before_forward(self.raw, &mut rebuilt, err, cap) })?;
        if self.broadcast_buffers {
            self.sync_buffers(group)?;
        }
        Ok(rebuilt == 1)
    }

    /// Rank 0's BatchNorm buffers, here (also before evaluation, so that
    /// every rank evaluates the same model).
    pub fn sync_buffers(&self, group: &Group) -> Result<()> {
        group.broadcast(&self.buffers, 0, self.bucket_bytes)
    }

    /// Arms the Reducer's hooks for the backward of `loss`.
    pub fn before_backward(&self, loss: &Tensor) -> Result<()> {
        // SAFETY: raw and loss are live for the call.
        shim(|err, cap| unsafe { selfsup_ddp_before_backward(self.raw, loss.as_ptr(), err, cap) })
    }

    /// The Reducer's current buckets, in bytes, in reduction order.
    pub fn bucket_bytes(&self) -> Vec<i64> {
        let mut out = vec![0i64; 4096];
        // SAFETY: out has room for `max` values.
        let n = unsafe { selfsup_ddp_buckets(self.raw, out.as_mut_ptr(), out.len()) };
        out.truncate(n.max(0) as usize);
        out
    }
}

impl Drop for Ddp {
    fn drop(&mut self) {
        // SAFETY: raw came from selfsup_ddp_new and is freed once.
        unsafe { selfsup_ddp_free(self.raw) }
    }
}
