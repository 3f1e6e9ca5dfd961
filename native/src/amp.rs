//! Mixed precision (`--precision fp32|fp16|bf16`, `--half` = fp16), as
//! torch.autocast and torch.amp.GradScaler do it:
//!
//! - **Autocast** on the trainer's owning thread (libtorch keeps its state
//!   per thread) around each forward and loss: convolutions and matrix
//!   products run in fp16/bf16; parameters, gradients, optimizer state and
//!   BatchNorm running statistics stay fp32. The losses (NT-Xent, BYOL's
//!   regression, the classifier's cross-entropy), with their
//!   normalisations and softmaxes, run in fp32 with autocast suspended
//!   ([`Autocast::suspend`], [`full`]): the `autocast(enabled=False)`
//!   idiom of torch AMP code. Autocast alone would keep the softmaxes in
//!   fp32 on CUDA but leave the similarity matrix product in fp16, and CPU
//!   autocast would leave the normalisations in bf16.
//! - **A dynamic loss scale** for fp16 only ([`GradScaler`]): the loss is
//!   multiplied by the scale before backward; after backward (and DDP's
//!   all-reduce, which ends with it) the gradients are unscaled in one
//!   multi-tensor kernel that also flags inf/NaN; the optimizer's fused
//!   update skips itself on the device when the flag is set; the scale is
//!   halved after a skipped step and doubled after `growth_interval`
//!   clean ones. Nothing is read back to the host.
use anyhow::{bail, Result};
use serde::Deserialize;
use std::ffi::{c_char, c_int};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn selfsup_autocast_enter(cuda: c_int, enabled: c_int, dtype: c_int, prev_enabled: *mut c_int, prev_dtype: *mut c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_autocast_state(cuda: c_int, enabled: *mut c_int, dtype: *mut c_int) -> c_int;
    fn selfsup_amp_unscale(grads: *const *mut C_tensor, n: usize, found_inf: *mut C_tensor, inv_scale: *const C_tensor, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_channels_last(t: *const C_tensor, out: *mut *mut C_tensor, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_is_channels_last(t: *const C_tensor) -> c_int;
}

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

/// The arithmetic of a training step's forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// Autocast to fp16, with a dynamic loss scale.
    Fp16,
    /// Autocast to bf16; its fp32-sized exponent needs no loss scale.
    Bf16,
}

impl Precision {
    pub fn parse(name: &str) -> Result<Precision> {
        match name {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            other => bail!("unknown --precision {other:?}; choose fp32, fp16 or bf16"),
        }
    }

    /// The dtype autocast casts to, None for fp32.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(Kind::Half),
            Precision::Bf16 => Some(Kind::BFloat16),
        }
    }
}

/// c10::ScalarType's numbers of the kinds autocast deals in (tch keeps
/// its own mapping private).
fn scalar_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        other => bail!("autocast to {other:?} is not supported; use fp16 or bf16"),
    })
}

fn is_cuda(device: Device) -> c_int {
    matches!(device, Device::Cuda(_)) as c_int
}

/// An autocast region on this thread; leaving it (drop) restores the
/// previous state and, when it was the outermost, empties autocast's cache
/// of lower-precision weight copies (the next step must cast the updated
/// weights again).
pub struct Autocast {
    cuda: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl Autocast {
    /// Enters autocast to `kind` for `device`'s type; None (no region) for
    /// fp32.
    pub fn enter(device: Device, kind: Option<Kind>) -> Result<Option<Autocast>> {
        let Some(kind) = kind else { return Ok(None) };
        let cuda = is_cuda(device);
        let dtype = scalar_type(kind)?;
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain values and out pointers valid for the call.
        shim(|err, cap| unsafe { selfsup_autocast_enter(cuda, 1, dtype, &mut prev_enabled, &mut prev_dtype, err, cap) })?;
        Ok(Some(Autocast { cuda, prev_enabled, prev_dtype }))
    }

    /// Suspends autocast for `device`'s type when it is on (None when it
    /// is not): `torch.autocast(enabled=False)` around a loss.
    pub fn suspend(device: Device) -> Result<Option<Autocast>> {
        if autocast_state(device).is_none() {
            return Ok(None);
        }
        let cuda = is_cuda(device);
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain values and out pointers valid for the call.
        shim(|err, cap| unsafe { selfsup_autocast_enter(cuda, 0, 0, &mut prev_enabled, &mut prev_dtype, err, cap) })?;
        Ok(Some(Autocast { cuda, prev_enabled, prev_dtype }))
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: plain values; a failure here would only leave the state
        // of a region that is being left anyway.
        let _ = shim(|err, cap| unsafe { selfsup_autocast_exit(self.cuda, self.prev_enabled, self.prev_dtype, err, cap) });
    }
}

/// This thread's autocast state for `device`'s type: the dtype when
/// enabled (tests).
pub fn autocast_state(device: Device) -> Option<Kind> {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: out pointers valid for the call.
    unsafe { selfsup_autocast_state(is_cuda(device), &mut enabled, &mut dtype) };
    if enabled == 0 {
        return None;
    }
    [Kind::Half, Kind::BFloat16, Kind::Float].into_iter().find(|&k| scalar_type(k).ok() == Some(dtype))
}

/// `t` in fp32 when autocast left it in fp16/bf16 (other kinds, e.g. the
/// float64 of exactness tests, unchanged): what the losses start with.
pub fn full(t: &Tensor) -> Result<Tensor> {
    Ok(match t.kind() {
        Kind::Half | Kind::BFloat16 => t.f_to_kind(Kind::Float)?,
        _ => t.shallow_clone(),
    })
}

/// `t` (N, C, H, W) laid out channels_last: what cuDNN's fastest
/// convolutions read.
pub fn channels_last(t: &Tensor) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: t is live; the shim hands back a new tensor we own.
    shim(|err, cap| unsafe { selfsup_channels_last(t.as_ptr(), &mut out, err, cap) })?;
    // SAFETY: a tensor allocated by the shim, owned from here on.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Re-lays a 4-d variable (a conv weight) out as channels_last in place,
/// keeping its identity (VarStore, optimizer and DDP hold the same one).
pub fn make_channels_last(var: &Tensor) -> Result<()> {
    if var.dim() == 4 {
        let _g = tch::no_grad_guard();
        let data = channels_last(&var.f_detach()?)?;
        var.shallow_clone().f_set_data(&data)?;
    }
    Ok(())
}

pub fn is_channels_last(t: &Tensor) -> bool {
    // SAFETY: t is live for the call.
    unsafe { selfsup_is_channels_last(t.as_ptr()) == 1 }
}

/// GradScaler's settings (torch.amp.GradScaler's defaults).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalerConfig {
    #[serde(default = "init_scale")]
    pub init_scale: f64,
    #[serde(default = "growth_factor")]
    pub growth_factor: f64,
    #[serde(default = "backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "growth_interval")]
    pub growth_interval: i64,
}

fn init_scale() -> f64 {
    65536.0
}
fn growth_factor() -> f64 {
    2.0
}
fn backoff_factor() -> f64 {
    0.5
}
fn growth_interval() -> i64 {
    2000
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            init_scale: init_scale(),
            growth_factor: growth_factor(),
            backoff_factor: backoff_factor(),
            growth_interval: growth_interval(),
        }
    }
}

/// A dynamic loss scale with torch.amp.GradScaler's semantics, its state
/// on the device: the scale (fp32), the count of clean steps since the
/// last change (int32, "growth tracker"), and this run's skipped steps.
pub struct GradScaler {
    pub cfg: ScalerConfig,
    pub scale: Tensor,
    pub growth_tracker: Tensor,
    pub skipped: Tensor,
    /// Set by `unscale` when a gradient holds an inf or NaN.
    pub found_inf: Tensor,
}

impl GradScaler {
    pub fn new(cfg: ScalerConfig, device: Device) -> Result<GradScaler> {
        if !(cfg.init_scale > 0.0 && cfg.growth_factor > 1.0 && cfg.backoff_factor > 0.0 && cfg.backoff_factor < 1.0 && cfg.growth_interval > 0) {
            bail!("loss scaler: the scale must be > 0, growth > 1, backoff in (0, 1) and the interval > 0, got {cfg:?}");
        }
        Ok(GradScaler {
            cfg,
            scale: Tensor::f_full([1], cfg.init_scale, (Kind::Float, device))?,
            growth_tracker: Tensor::f_zeros([1], (Kind::Int, device))?,
            skipped: Tensor::f_zeros([1], (Kind::Float, device))?,
            found_inf: Tensor::f_zeros([1], (Kind::Float, device))?,
        })
    }

    /// The loss times the scale, to back-propagate (fp32, as the scale).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul(&self.scale.f_to_kind(loss.kind())?.f_reshape([])?)?)
    }

    /// Divides every gradient of `params` by the scale in place and sets
    /// `found_inf` when any holds an inf or NaN; returns the flag (on the
    /// device). The reciprocal is taken in float64 and rounded to fp32, as
    /// GradScaler.unscale_ does.
    pub fn unscale(&self, params: &[crate::optim::Param]) -> Result<&Tensor> {
        let _g = tch::no_grad_guard();
        let _ = self.found_inf.shallow_clone().f_zero_()?;
        let inv = self.scale.f_to_kind(Kind::Double)?.f_reciprocal()?.f_to_kind(Kind::Float)?;
        let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
        let raw = handles(&grads);
        // SAFETY: the tensors outlive the call.
        shim(|err, cap| unsafe { selfsup_amp_unscale(raw.as_ptr(), raw.len(), self.found_inf.as_ptr() as *mut C_tensor, inv.as_ptr(), err, cap) })?;
        Ok(&self.found_inf)
    }

    /// After the (possibly skipped) step: skipped += found_inf, then
    /// torch's _amp_update_scale_ (backoff on inf, growth after the
    /// interval).
    pub fn update(&mut self) -> Result<()> {
        let _g = tch::no_grad_guard();
        let _ = self.skipped.f_add_(&self.found_inf)?;
        let c = self.cfg;
        let _ = self.scale.f_internal_amp_update_scale_(&self.growth_tracker, &self.found_inf, c.growth_factor, c.backoff_factor, c.growth_interval)?;
        Ok(())
    }

    /// The state a checkpoint keeps, by name.
    pub fn state(&self) -> Vec<(&'static str, &Tensor)> {
        vec![("amp.scale", &self.scale), ("amp.growth_tracker", &self.growth_tracker), ("amp.skipped", &self.skipped)]
    }
}
