//! The three layer kinds selfsup's networks are made of, with PyTorch's
//! parameter names, shapes and default initialisation.
use super::init::Init;
use anyhow::Result;
use tch::{nn::Path, Kind, Tensor};

/// nn.Conv2d(bias=False), as in torchvision's ResNets.
pub struct Conv2d {
    pub weight: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(p: &Path, init: &mut Init, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Result<Self> {
        let w = init.kaiming_normal_fan_out(&[cout, cin, k, k])?;
        Ok(Conv2d { weight: p.add("weight", w, true), stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.f_conv2d(&self.weight, None::<&Tensor>, [self.stride], [self.padding], [1], 1)?;
        crate::amp::trace("conv", &y);
        Ok(y)
    }
}

/// nn.BatchNorm's defaults.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// nn.BatchNorm1d/2d (eps 1e-5, momentum 0.1, affine unless built
/// [`BatchNorm::without_affine`]) with PyTorch's `num_batches_tracked`
/// buffer, so state dicts load strictly in Python.
pub struct BatchNorm {
    /// γ and β; None for `affine=False`.
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm {
    pub fn new(p: &Path, init: &Init, c: i64) -> Result<Self> {
        Self::with_affine(p, init, c, true)
    }

    /// nn.BatchNorm1d(affine=False): no γ, β (MoCo v3's last projector layer).
    pub fn without_affine(p: &Path, init: &Init, c: i64) -> Result<Self> {
        Self::with_affine(p, init, c, false)
    }

    fn with_affine(p: &Path, init: &Init, c: i64, affine: bool) -> Result<Self> {
        let dev = init.device();
        let (weight, bias) = if affine {
            (Some(p.add("weight", init.constant(&[c], 1.0)?, true)), Some(p.add("bias", init.constant(&[c], 0.0)?, true)))
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: p.add("running_mean", init.constant(&[c], 0.0)?, false),
            running_var: p.add("running_var", init.constant(&[c], 1.0)?, false),
            num_batches_tracked: p.add("num_batches_tracked", Tensor::f_zeros([], (Kind::Int64, dev))?, false),
        })
    }

    /// In training mode: batch statistics, running statistics updated in
    /// place; over all replicas with SyncBN (dist::batch_norm).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.normalize(x, train)?;
        crate::amp::trace("bn", &y);
        Ok(y)
    }

    fn normalize(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            {
                let _g = tch::no_grad_guard();
                let _ = self.num_batches_tracked.shallow_clone().f_add_scalar_(1)?;
            }
            if let Some(y) = crate::dist::batch_norm(self, x)? {
                return Ok(y);
            }
        }
        Ok(Tensor::f_batch_norm(
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )?)
    }
}

/// nn.Linear with PyTorch's default init: weight and bias ~ U(±1/√fan_in)
/// (kaiming_uniform_ with a = √5 reduces to that bound).
pub struct Linear {
    pub weight: Tensor,
    /// None for nn.Linear(bias=False).
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &Path, init: &mut Init, fan_in: i64, fan_out: i64) -> Result<Self> {
        Self::with_bias(p, init, fan_in, fan_out, true)
    }

    pub fn with_bias(p: &Path, init: &mut Init, fan_in: i64, fan_out: i64, bias: bool) -> Result<Self> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = p.add("weight", init.uniform(&[fan_out, fan_in], bound)?, true);
        let bias = if bias { Some(p.add("bias", init.uniform(&[fan_out], bound)?, true)) } else { None };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.f_linear(&self.weight, self.bias.as_ref())?;
        crate::amp::trace("linear", &y);
        Ok(y)
    }
}

/// ReLU, traced.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let y = x.f_relu()?;
    crate::amp::trace("relu", &y);
    Ok(y)
}
