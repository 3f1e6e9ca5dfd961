//! Optimizers with torch.optim's arithmetic and default hyper-parameters
//! (as the reference programs use them), their state kept as our own
//! tensors so that checkpoints hold it.
//!
//! Updates are multi-tensor, through the C++ shim: torch's fused kernels
//! for SGD/momentum and Adam/AdamW (`_fused_sgd_`, `_fused_adam(w)_`: one
//! pass over every parameter), its `_foreach_*` ops for RMSprop and
//! Adadelta, and LARS's norms and trust ratios as `_foreach_norm` plus one
//! small vector, instead of a handful of kernels per parameter. With a
//! GradScaler's `found_inf` flag the fused kernels skip a step on the
//! device, without a host synchronisation. `step_per_tensor` (optim/
//! per_tensor.rs, `testing` feature) keeps the former one-parameter-at-a-
//! time form as a reference for tests and timings.
//!
//! Parameter groups follow the reference (`add_weight_decay`): tensors
//! with ≥ 2 dims get weight decay; biases and BN parameters do not.
//! `lars_<base>` wraps `<base>` in LARS (You et al. 2017) as
//! optimizers/lars.py does: for the decay group, g ← g + wd·w, then
//! g ← η‖w‖/(‖g‖+ε)·g (1 if a norm is 0); biases and BN parameters get
//! neither; the inner optimizer then runs with weight decay 0.
use crate::shim::{handles, shim};
use anyhow::{bail, Result};
use std::ffi::{c_char, c_int};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

#[cfg(feature = "testing")]
mod per_tensor;

extern "C" {
    fn selfsup_grads_set_none(params: *const *mut C_tensor, n: usize, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_lars_adapt(weights: *const *mut C_tensor, grads: *const *mut C_tensor, n: usize, wd: f64, eta: f64, eps: f64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_fused_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: usize,
        wd: f64,
        momentum: f64,
        lr: f64,
        found_inf: *const C_tensor,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_fused_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        n: usize,
        step: *const C_tensor,
        lr: f64,
        wd: f64,
        decoupled: c_int,
        found_inf: *const C_tensor,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_foreach_rmsprop(params: *const *mut C_tensor, grads: *const *mut C_tensor, square_avgs: *const *mut C_tensor, n: usize, lr: f64, wd: f64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_foreach_adadelta(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        square_avgs: *const *mut C_tensor,
        acc_deltas: *const *mut C_tensor,
        n: usize,
        lr: f64,
        wd: f64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
}

pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// Weight decay and LARS adaptation apply (ndim ≥ 2).
    pub decay: bool,
    /// Optimizer state, by slot (momentum buffer, exp_avg, …).
    pub state: Vec<Tensor>,
}

impl Param {
    pub fn new(name: String, tensor: Tensor) -> Self {
        let decay = tensor.dim() >= 2;
        Param { name, tensor, decay, state: Vec::new() }
    }
}

/// The base algorithm, with torch.optim's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    /// SGD; `momentum` 0 is plain SGD, the reference's "momentum" is 0.9.
    Sgd { momentum: f64 },
    Adam { decoupled: bool },
    RmsProp,
    Adadelta,
}

#[derive(Debug)]
pub struct Optimizer {
    pub base: Base,
    pub weight_decay: f64,
    /// LARS trust coefficient η and ε, when wrapped in LARS.
    pub lars: Option<(f64, f64)>,
    /// Steps taken, skipped ones not counted (Adam's bias correction): a
    /// float32 scalar on the parameters' device, as torch's fused Adam
    /// keeps it (exact up to 2^24 steps); made by the first step.
    step_count: Option<Tensor>,
}

pub const CHOICES: &str = "sgd, momentum, adam, adamw, rmsprop, adadelta, or lars_<one of them>";

/// Parses a reference `--optimizer` name: any name containing "lars"
/// wraps the optimizer named by its last `_`-token.
pub fn parse(name: &str, weight_decay: f64) -> Result<Optimizer> {
    let full = name.trim().to_lowercase();
    let is_lars = full.contains("lars");
    let base_name = if is_lars { full.rsplit('_').next().unwrap_or("") } else { full.as_str() };
    let base = match base_name {
        "sgd" => Base::Sgd { momentum: 0.0 },
        "momentum" => Base::Sgd { momentum: 0.9 },
        "adam" => Base::Adam { decoupled: false },
        "adamw" => Base::Adam { decoupled: true },
        "rmsprop" => Base::RmsProp,
        "adadelta" => Base::Adadelta,
        "lamb" => bail!("--optimizer {name}: LAMB (apex FusedLAMB in the reference) is not available; choose {CHOICES}"),
        "lbfgs" => bail!("--optimizer {name}: L-BFGS needs a closure and fails in the reference too; choose {CHOICES}"),
        _ => bail!("unknown --optimizer {name:?}; choose {CHOICES}"),
    };
    // main.py builds LARS with eps=0.0 and the default trust coefficient.
    Ok(Optimizer { base, weight_decay, lars: is_lars.then_some((0.001, 0.0)), step_count: None })
}

/// The reference scales the learning rate by global batch / 256 for SGD
/// and momentum only (with or without LARS).
pub fn scales_lr(o: &Optimizer) -> bool {
    matches!(o.base, Base::Sgd { .. })
}

impl Optimizer {
    /// One update of every parameter that has a gradient.
    pub fn step(&mut self, params: &mut [Param], lr: f64) -> Result<()> {
        self.step_amp(params, lr, None)
    }

    /// One multi-tensor update of every parameter that has a gradient.
    /// With `found_inf` (a GradScaler's flag, on the device) a step whose
    /// gradients held an inf or NaN leaves parameters and state untouched
    /// and is not counted; SGD and Adam decide that on the device,
    /// RMSprop and Adadelta (no fused kernels in torch) read the flag.
    pub fn step_amp(&mut self, params: &mut [Param], lr: f64, found_inf: Option<&Tensor>) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let live: Vec<usize> = (0..params.len()).filter(|&i| params[i].tensor.grad().defined()).collect();
        let Some(&first) = live.first() else { return Ok(()) };
        let steps = self.advance(params[first].tensor.device())?;
        if let Some((eta, eps)) = self.lars {
            let decay: Vec<&Param> = live.iter().map(|&i| &params[i]).filter(|p| p.decay).collect();
            let w = handles(decay.iter().map(|p| &p.tensor));
            let grads: Vec<Tensor> = decay.iter().map(|p| p.tensor.grad()).collect();
            let g = handles(&grads);
            // SAFETY: the tensors outlive the call.
            shim(|err, cap| unsafe { selfsup_lars_adapt(w.as_ptr(), g.as_ptr(), w.len(), self.weight_decay, eta, eps, err, cap) })?;
        }
        // Weight decay per group: none for biases and BN parameters, and
        // none inside LARS (which applied it above).
        let wd = if self.lars.is_some() { 0.0 } else { self.weight_decay };
        let skip_on_host = match (self.base, found_inf) {
            (Base::RmsProp | Base::Adadelta, Some(f)) => f.f_double_value(&[0])? != 0.0,
            _ => false,
        };
        for decay in [true, false] {
            let group: Vec<usize> = live.iter().copied().filter(|&i| params[i].decay == decay).collect();
            if group.is_empty() || skip_on_host {
                continue;
            }
            self.update_group(params, &group, if decay { wd } else { 0.0 }, lr, &steps, found_inf)?;
        }
        if let Some(f) = found_inf {
            let _ = steps.shallow_clone().f_sub_(&f.f_reshape([])?.f_to_kind(Kind::Float)?)?;
        }
        Ok(())
    }

    /// Counts a step (taken back by `step_amp` when it was skipped).
    fn advance(&mut self, device: Device) -> Result<Tensor> {
        let steps = match &self.step_count {
            Some(t) => t.shallow_clone(),
            None => {
                let t = Tensor::f_zeros([], (Kind::Float, device))?;
                self.step_count = Some(t.shallow_clone());
                t
            }
        };
        let _ = steps.shallow_clone().f_add_scalar_(1.0)?;
        Ok(steps)
    }

    /// Steps taken so far (reads the device counter back).
    pub fn steps(&self) -> Result<i64> {
        Ok(match &self.step_count {
            Some(t) => t.f_double_value(&[])? as i64,
            None => 0,
        })
    }

    /// Sets the step count (a resumed checkpoint's).
    pub fn set_steps(&mut self, n: i64, device: Device) -> Result<()> {
        self.step_count = Some(Tensor::f_full([], n as f64, (Kind::Float, device))?);
        Ok(())
    }

    fn update_group(&self, params: &mut [Param], group: &[usize], wd: f64, lr: f64, steps: &Tensor, found_inf: Option<&Tensor>) -> Result<()> {
        let slots = match self.base {
            Base::Sgd { momentum } if momentum > 0.0 => 1,
            Base::Sgd { .. } => 0,
            Base::Adam { .. } | Base::Adadelta => 2,
            Base::RmsProp => 1,
        };
        for &i in group {
            let p = &mut params[i];
            while p.state.len() < slots {
                // zeros_like keeps the parameter's layout (channels_last
                // too), which the fused kernels rely on.
                p.state.push(p.tensor.f_zeros_like()?);
            }
        }
        let w = handles(group.iter().map(|&i| &params[i].tensor));
        let grads: Vec<Tensor> = group.iter().map(|&i| params[i].tensor.grad()).collect();
        let g = handles(&grads);
        let slot = |k: usize| handles(group.iter().map(|&i| &params[i].state[k]));
        let n = w.len();
        let inf = found_inf.map_or(std::ptr::null(), |t| t.as_ptr());
        // SAFETY (every call below): the tensors outlive the call.
        match self.base {
            Base::Sgd { momentum } => {
                let bufs = if momentum > 0.0 { slot(0) } else { Vec::new() };
                let b = if momentum > 0.0 { bufs.as_ptr() } else { std::ptr::null() };
                shim(|err, cap| unsafe { selfsup_fused_sgd(w.as_ptr(), g.as_ptr(), b, n, wd, momentum, lr, inf, err, cap) })
            }
            Base::Adam { decoupled } => {
                let (m, v) = (slot(0), slot(1));
                shim(|err, cap| unsafe {
                    selfsup_fused_adam(w.as_ptr(), g.as_ptr(), m.as_ptr(), v.as_ptr(), n, steps.as_ptr(), lr, wd, decoupled as c_int, inf, err, cap)
                })
            }
            Base::RmsProp => {
                let sq = slot(0);
                shim(|err, cap| unsafe { selfsup_foreach_rmsprop(w.as_ptr(), g.as_ptr(), sq.as_ptr(), n, lr, wd, err, cap) })
            }
            Base::Adadelta => {
                let (sq, acc) = (slot(0), slot(1));
                shim(|err, cap| unsafe { selfsup_foreach_adadelta(w.as_ptr(), g.as_ptr(), sq.as_ptr(), acc.as_ptr(), n, lr, wd, err, cap) })
            }
        }
    }
}

/// `optimizer.zero_grad()` as torch does it by default (set_to_none): the
/// gradients are dropped rather than zeroed, so backward hands each
/// parameter its fresh gradient (laid out as the parameter) instead of
/// adding it to a zeroed one: no memset and no extra pass over every
/// gradient. DDP's Reducer (no bucket views) and the optimizers take
/// parameters without a gradient as torch's do.
pub fn zero_grad(params: &mut [Param]) -> Result<()> {
    let w = handles(params.iter().map(|p| &p.tensor));
    // SAFETY: the tensors outlive the call.
    shim(|err, cap| unsafe { selfsup_grads_set_none(w.as_ptr(), w.len(), err, cap) })
}

/// torch.nn.utils.clip_grad_value_: element-wise clamp to [−clip, clip].
pub fn clip_grad_value(params: &[Param], clip: f64) -> Result<()> {
    for p in params {
        let mut g = p.tensor.grad();
        if g.defined() {
            let _ = g.f_clamp_(-clip, clip)?;
        }
    }
    Ok(())
}
