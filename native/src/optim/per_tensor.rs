//! The former update, one parameter at a time with single-tensor ops
//! (torch.optim's `foreach=False` code path): a reference for tests
//! (native/tests/amp_test.rs) and for timing the multi-tensor form
//! (examples/fast_paths.rs). Built with the `testing` feature only.
use super::{Base, Optimizer, Param};
use anyhow::Result;
use tch::Tensor;

impl Optimizer {
    /// One step, parameter by parameter (see the module comment).
    pub fn step_per_tensor(&mut self, params: &mut [Param], lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let Some(device) = params.iter().find(|p| p.tensor.grad().defined()).map(|p| p.tensor.device()) else { return Ok(()) };
        let t = {
            let steps = self.advance(device)?;
            steps.f_double_value(&[])? as i32
        };
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
            self.update(p, g, inner_wd, lr, t)?;
        }
        Ok(())
    }

    fn update(&self, p: &mut Param, mut g: Tensor, wd: f64, lr: f64, t: i32) -> Result<()> {
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
