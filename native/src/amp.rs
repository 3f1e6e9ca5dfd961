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
use crate::shim::{handles, shim};
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
    fn selfsup_nonfinite(ts: *const *mut C_tensor, n: usize, like: *const C_tensor, out: *mut *mut C_tensor, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_cpu_capability(buf: *mut c_char, cap: usize) -> c_int;
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

/// 1.0 (a float scalar on `like`'s device) when any floating tensor of
/// `ts` holds an inf or NaN, else 0.0; no host synchronisation.
pub fn nonfinite<'a>(ts: impl IntoIterator<Item = &'a Tensor>, like: &Tensor) -> Result<Tensor> {
    let floating: Vec<&Tensor> = ts.into_iter().filter(|t| t.is_floating_point() && t.numel() > 0).collect();
    let raw = handles(floating);
    let mut out = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; the shim hands back a new tensor we own.
    shim(|err, cap| unsafe { selfsup_nonfinite(raw.as_ptr(), raw.len(), like.as_ptr(), &mut out, err, cap) })?;
    // SAFETY: allocated by the shim, owned from here on.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// ATen's CPU kernel level ("DEFAULT", "AVX2", "AVX512", …), fixed by
/// libtorch at its first use (ATEN_CPU_CAPABILITY can lower it).
pub fn cpu_capability() -> String {
    let mut buf = vec![0u8; 64];
    // SAFETY: a buffer of the given size.
    if unsafe { selfsup_cpu_capability(buf.as_mut_ptr() as *mut c_char, buf.len()) } != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The CPU's AMX flags (`amx_bf16`, `amx_tile`) in a /proc/cpuinfo text.
pub fn amx_flags(cpuinfo: &str) -> Vec<String> {
    let Some(line) = cpuinfo.lines().find(|l| l.starts_with("flags")) else { return Vec::new() };
    let flags = line.split_once(':').map_or("", |(_, f)| f);
    let mut amx: Vec<String> = flags.split_whitespace().filter(|f| *f == "amx_bf16" || *f == "amx_tile").map(String::from).collect();
    amx.sort();
    amx
}

/// Why `--precision bf16` is refused on this CPU, if it is: on CPUs with
/// AMX, libtorch 2.11's AVX-512 kernel level turned a short bf16 run NaN
/// from its second step (selfsup issue 13, seen on a Xeon with amx_bf16,
/// amx_tile and avx512_bf16), while the AVX2 level trained finitely. It
/// could not be reproduced on a CPU without AMX, so the run is refused
/// rather than left to fail; `ATEN_CPU_CAPABILITY=avx2` (read by
/// libtorch at its first kernel) or `SELFSUP_ALLOW_AMX_BF16=1` lifts it.
pub fn cpu_bf16_refusal(amx: &[String], capability: &str, allowed: bool) -> Option<String> {
    if amx.is_empty() || allowed || !capability.to_uppercase().starts_with("AVX512") {
        return None;
    }
    Some(format!(
        "--precision bf16 on this CPU ({}) with libtorch's {capability} kernels is refused: it produced NaN losses from the second step (selfsup issue 13); \
         rerun with ATEN_CPU_CAPABILITY=avx2 in the environment (reported to train normally), use --precision fp32, \
         or set SELFSUP_ALLOW_AMX_BF16=1 to try anyway",
        amx.join(", ")
    ))
}

/// Refuses bf16 on this CPU when [`cpu_bf16_refusal`] says so.
pub fn check_cpu_bf16() -> Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let allowed = std::env::var("SELFSUP_ALLOW_AMX_BF16").is_ok_and(|v| v == "1");
    match cpu_bf16_refusal(&amx_flags(&cpuinfo), &cpu_capability(), allowed) {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

thread_local! {
    /// The (layer kind, output dtype) of each traced layer while a trace
    /// runs on this thread ([`traced`]); None otherwise.
    static TRACE: std::cell::RefCell<Option<Vec<(&'static str, Kind)>>> = const { std::cell::RefCell::new(None) };
}

/// Notes `t`'s dtype as the output of a layer of kind `what` ("conv",
/// "bn", "relu", "linear", "similarity", …) when a trace runs.
pub fn trace(what: &'static str, t: &Tensor) {
    TRACE.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push((what, t.kind()));
        }
    });
}

/// Runs `f` and returns what it traced, in order: the dtype policy as the
/// model applies it (tests compare it with torch.autocast's).
pub fn traced<R>(f: impl FnOnce() -> Result<R>) -> Result<(R, Vec<(&'static str, Kind)>)> {
    TRACE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let t = TRACE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    Ok((r?, t))
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
