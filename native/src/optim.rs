//! Optimizers, written as tensor ops under no_grad so their state is ours
//! to save and their arithmetic is the reference's.
//!
//! The reference programs (optimizers/lars.py) wrap SGD in LARS (You et
//! al. 2017): parameters with ≥ 2 dims get L2 weight decay added to the
//! gradient and are then rescaled by the trust ratio η‖w‖/(‖g‖+ε);
//! biases and BN parameters get neither. The inner SGD keeps PyTorch's
//! momentum form: buf ← m·buf + g, w ← w − lr·buf.
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// Weight decay and LARS adaptation apply (ndim ≥ 2).
    pub decay: bool,
    momentum_buffer: Option<Tensor>,
}

impl Param {
    pub fn new(name: String, tensor: Tensor) -> Self {
        let decay = tensor.dim() >= 2;
        Param { name, tensor, decay, momentum_buffer: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// LARS trust coefficient η and ε, when wrapped in LARS.
    pub lars: Option<(f64, f64)>,
}

/// Parses a reference `--optimizer` name: `lars_<base>` wraps `<base>`.
pub fn parse(name: &str, weight_decay: f64) -> Result<Sgd> {
    let full = name.trim().to_lowercase();
    let is_lars = full.contains("lars");
    let base = if is_lars { full.rsplit('_').next().unwrap_or("") } else { full.as_str() };
    let momentum = match base {
        "momentum" => 0.9,
        "sgd" => 0.0,
        "adam" | "adamw" | "rmsprop" | "adadelta" | "lamb" | "lbfgs" => {
            bail!("--optimizer {name} is not available yet; use lars_momentum, lars_sgd, momentum or sgd")
        }
        _ => bail!("unknown --optimizer {name:?}; choose lars_momentum, lars_sgd, momentum or sgd"),
    };
    // main.py builds LARS with eps=0.0 and the default trust coefficient.
    Ok(Sgd { momentum, weight_decay, lars: is_lars.then_some((0.001, 0.0)) })
}

impl Sgd {
    /// One update of every parameter that has a gradient.
    pub fn step(&self, params: &mut [Param], lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in params.iter_mut() {
            let grad = p.tensor.grad();
            if !grad.defined() {
                continue;
            }
            let mut d = grad;
            if p.decay && self.weight_decay > 0.0 {
                d = d.f_add(&p.tensor.f_mul_scalar(self.weight_decay)?)?;
            }
            if let (Some((eta, eps)), true) = (self.lars, p.decay) {
                d = d.f_mul(&trust_ratio(&p.tensor, &d, eta, eps)?)?;
            }
            if self.momentum > 0.0 {
                let buf = match p.momentum_buffer.take() {
                    None => d.f_detach_copy()?,
                    Some(mut b) => b.f_mul_scalar_(self.momentum)?.f_add_(&d)?,
                };
                d = buf.shallow_clone();
                p.momentum_buffer = Some(buf);
            }
            let _ = p.tensor.f_sub_(&d.f_mul_scalar(lr)?)?;
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
