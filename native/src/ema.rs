//! Exponential moving averages of weights: the momentum targets of BYOL
//! and MoCo v3 and the Polyak average used for evaluation (`--polyak-ema`).
use crate::optim::Param;
use anyhow::{Context, Result};
use tch::{nn::VarStore, Tensor};

/// ξ ← τ·ξ + (1 − τ)·θ for every pair, in place.
pub fn ema_update(shadow: &[Tensor], online: &[Tensor], tau: f64) -> Result<()> {
    let _g = tch::no_grad_guard();
    for (s, o) in shadow.iter().zip(online) {
        // lerp_(o, w) = s + w·(o − s) = τ·s + (1 − τ)·o with w = 1 − τ
        let _ = s.shallow_clone().f_lerp_(o, 1.0 - tau)?;
    }
    Ok(())
}

/// A momentum target's parameters, each paired with its online twin:
/// the variables under `target.` of a model's store, whose names without
/// that prefix are the online ones.
#[derive(Default)]
pub struct Target {
    pairs: Vec<(Tensor, Tensor)>,
}

impl Target {
    /// The target becomes an exact copy of its online twins (weights and BN
    /// buffers) and is frozen: it never receives gradients.
    pub fn attach(vs: &VarStore) -> Result<Self> {
        let vars = vs.variables();
        let mut pairs = Vec::new();
        let _g = tch::no_grad_guard();
        for (name, t) in vars.iter().filter(|(n, _)| n.starts_with("target.")) {
            let online = vars.get(&name["target.".len()..]).with_context(|| format!("no online twin of {name}"))?;
            let mut t = t.shallow_clone();
            t.f_copy_(online)?;
            if online.requires_grad() {
                pairs.push((t.set_requires_grad(false), online.shallow_clone()));
            }
        }
        pairs.sort_by_key(|(t, _)| t.numel());
        Ok(Target { pairs })
    }

    /// ξ ← τ·ξ + (1 − τ)·θ for the parameters; BN statistics stay the
    /// target's own.
    pub fn update(&self, tau: f64) -> Result<()> {
        let (shadow, online): (Vec<Tensor>, Vec<Tensor>) = self.pairs.iter().map(|(a, b)| (a.shallow_clone(), b.shallow_clone())).unzip();
        ema_update(&shadow, &online, tau)
    }
}

/// A Polyak average of all trainable parameters. It starts as a copy of
/// the initial weights (the reference starts it at zero with no bias
/// correction, so early evaluations ran on (1 − d)-scaled weights).
pub struct Polyak {
    pub decay: f64,
    pub shadow: Vec<Tensor>,
}

impl Polyak {
    pub fn new(params: &[Param], decay: f64) -> Result<Self> {
        let _g = tch::no_grad_guard();
        let shadow = params.iter().map(|p| Ok(p.tensor.f_detach_copy()?)).collect::<Result<_>>()?;
        Ok(Polyak { decay, shadow })
    }

    pub fn update(&self, params: &[Param]) -> Result<()> {
        let online: Vec<Tensor> = params.iter().map(|p| p.tensor.shallow_clone()).collect();
        ema_update(&self.shadow, &online, self.decay)
    }

    /// Runs `f` with the averaged weights in place of the live ones (BN
    /// running statistics are not averaged, as in the reference).
    pub fn swapped<R>(&self, params: &[Param], f: impl FnOnce() -> Result<R>) -> Result<R> {
        let _g = tch::no_grad_guard();
        let live: Vec<Tensor> = params.iter().map(|p| p.tensor.f_detach_copy()).collect::<Result<_, _>>()?;
        for (p, s) in params.iter().zip(&self.shadow) {
            p.tensor.shallow_clone().f_copy_(s)?;
        }
        let r = f();
        for (p, l) in params.iter().zip(&live) {
            p.tensor.shallow_clone().f_copy_(l)?;
        }
        r
    }
}
