//! Optimizers, written as tensor ops under no_grad so their state is ours
//! to save and their arithmetic is PyTorch's (torch.optim, single-tensor
//! code path, default hyper-parameters as the reference programs use them).
//!
//! Parameter groups follow the reference (`add_weight_decay`): tensors
//! with ≥ 2 dims get weight decay; biases and BN parameters do not.
//! `lars_<base>` wraps `<base>` in LARS (You et al. 2017) as
//! optimizers/lars.py does: for the decay group, g ← g + wd·w, then
//! g ← η‖w‖/(‖g‖+ε)·g (1 if a norm is 0); biases and BN parameters get
//! neither; the inner optimizer then runs with weight decay 0.
use anyhow::{bail, Result};
use tch::Tensor;

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

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub base: Base,
    pub weight_decay: f64,
    /// LARS trust coefficient η and ε, when wrapped in LARS.
    pub lars: Option<(f64, f64)>,
    /// Steps taken (Adam's bias correction).
    pub steps: i64,
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
    Ok(Optimizer { base, weight_decay, lars: is_lars.then_some((0.001, 0.0)), steps: 0 })
}

/// The reference scales the learning rate by global batch / 256 for SGD
/// and momentum only (with or without LARS).
pub fn scales_lr(o: &Optimizer) -> bool {
    matches!(o.base, Base::Sgd { .. })
}

impl Optimizer {
    /// One update of every parameter that has a gradient.
    pub fn step(&mut self, params: &mut [Param], lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for p in params.iter_mut() {
            let grad = p.tensor.grad();
            if !grad.defined() {
                continue;
            }
            let wd = if p.decay { self.weight_decay } else { 0.0 };
            let mut g = grad.f_detach()?;
            let mut inner_wd = wd;
            if let Some((eta, eps)) = self.lars {
                if wd > 0.0 {
                    g = g.f_add(&p.tensor.f_mul_scalar(wd)?)?;
                }
                if p.decay {
                    g = g.f_mul(&trust_ratio(&p.tensor, &g, eta, eps)?)?;
                }
                inner_wd = 0.0;
            }
            self.update(p, g, inner_wd, lr)?;
        }
        Ok(())
    }

    fn update(&self, p: &mut Param, mut g: Tensor, wd: f64, lr: f64) -> Result<()> {
        let w = &mut p.tensor;
        let coupled = !matches!(self.base, Base::Adam { decoupled: true });
        if wd != 0.0 && coupled {
            g = g.f_add(&w.f_mul_scalar(wd)?)?;
        }
        match self.base {
            Base::Sgd { momentum } => {
                if momentum > 0.0 {
                    // torch: buf = clone(g) first, then buf·m + g
                    if p.state.is_empty() {
                        p.state.push(g.f_detach_copy()?);
                    } else {
                        let _ = p.state[0].f_mul_scalar_(momentum)?.f_add_(&g)?;
                    }
                    g = p.state[0].shallow_clone();
                }
                let _ = w.f_add_(&g.f_mul_scalar(-lr)?)?;
            }
            Base::Adam { decoupled } => {
                let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                if decoupled && wd != 0.0 {
                    let _ = w.f_mul_scalar_(1.0 - lr * wd)?;
                }
                if p.state.is_empty() {
                    p.state = vec![g.f_zeros_like()?, g.f_zeros_like()?];
                }
                let _ = p.state[0].f_lerp_(&g, 1.0 - b1)?;
                let _ = p.state[1].f_mul_scalar_(b2)?.f_addcmul_(&g, &g.f_mul_scalar(1.0 - b2)?)?;
                let t = self.steps as i32;
                let bc1 = 1.0 - b1.powi(t);
                let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
                let denom = p.state[1].f_sqrt()?.f_div_scalar(bc2_sqrt)?.f_add_scalar(eps)?;
                let _ = w.f_addcdiv_(&p.state[0].f_mul_scalar(-lr / bc1)?, &denom)?;
            }
            Base::RmsProp => {
                let (alpha, eps) = (0.99, 1e-8);
                if p.state.is_empty() {
                    p.state.push(g.f_zeros_like()?);
                }
                let _ = p.state[0].f_mul_scalar_(alpha)?.f_addcmul_(&g, &g.f_mul_scalar(1.0 - alpha)?)?;
                let avg = p.state[0].f_sqrt()?.f_add_scalar(eps)?;
                let _ = w.f_addcdiv_(&g.f_mul_scalar(-lr)?, &avg)?;
            }
            Base::Adadelta => {
                let (rho, eps) = (0.9, 1e-6);
                if p.state.is_empty() {
                    p.state = vec![g.f_zeros_like()?, g.f_zeros_like()?];
                }
                let _ = p.state[0].f_mul_scalar_(rho)?.f_addcmul_(&g, &g.f_mul_scalar(1.0 - rho)?)?;
                let std = p.state[0].f_add_scalar(eps)?.f_sqrt()?;
                let delta = p.state[1].f_add_scalar(eps)?.f_sqrt()?.f_div(&std)?.f_mul(&g)?;
                let _ = p.state[1].f_mul_scalar_(rho)?.f_addcmul_(&delta, &delta.f_mul_scalar(1.0 - rho)?)?;
                let _ = w.f_add_(&delta.f_mul_scalar(-lr)?)?;
            }
        }
        Ok(())
    }
}

/// η‖w‖/(‖g‖+ε) where both norms are positive, else 1, computed on the
/// device (no host sync).
fn trust_ratio(w: &Tensor, g: &Tensor, eta: f64, eps: f64) -> Result<Tensor> {
    let wn = w.f_norm()?;
    let gn = g.f_norm()?;
    let ratio = wn.f_mul_scalar(eta)?.f_div(&gn.f_add_scalar(eps)?)?;
    let ok = wn.f_gt(0.0)?.f_logical_and(&gn.f_gt(0.0)?)?;
    Ok(ratio.f_where_self(&ok, &ratio.f_ones_like()?)?)
}

pub fn zero_grad(params: &mut [Param]) -> Result<()> {
    for p in params.iter_mut() {
        let mut g = p.tensor.grad();
        if g.defined() {
            let _ = g.f_detach_()?;
            let _ = g.f_zero_()?;
        }
    }
    Ok(())
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
