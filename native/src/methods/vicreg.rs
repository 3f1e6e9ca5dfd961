//! VICReg (Bardes, Ponce, LeCun 2022): a backbone and an expander, trained
//! so that the two views' embeddings agree (invariance) while each
//! dimension keeps a standard deviation of at least 1 over the batch
//! (variance) and the dimensions are decorrelated (covariance):
//! losses::vicreg. No momentum target, no predictor.
//!
//! As the authors' code (docs/METHODS.md): the expander `--projector-widths`
//! (8192-8192-8192 in the paper) with biases on its hidden Linears and none
//! on the last; the weights `--invariance-weight`, `--variance-weight`,
//! `--covariance-weight` (25, 25, 1: the authors' `--sim-coeff`,
//! `--std-coeff`, `--cov-coeff`). With several replicas the embeddings are
//! gathered with gradient and the whole loss is the global batch's; the
//! authors take the invariance per replica, which has the same mean and
//! gradient when the replicas' batches are equal-sized, as selfsup's are.
use super::{on_global_batch, Method, Projected};
use crate::losses::{vicreg, VicRegWeights};
use crate::model::ModelConfig;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::Result;
use serde::Deserialize;
use tch::{nn::Path, Tensor};

/// `--projector-widths`, `--invariance-weight`, `--variance-weight`,
/// `--covariance-weight` (train/config.ts METHODS.vicreg).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projector_widths: String,
    invariance_weight: f64,
    variance_weight: f64,
    covariance_weight: f64,
}

pub struct VicReg {
    /// The backbone and the expander, biases on its hidden Linears.
    net: Projected,
    weights: VicRegWeights,
}

impl VicReg {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        let weights = VicRegWeights { sim: s.invariance_weight, std: s.variance_weight, cov: s.covariance_weight };
        Ok(VicReg { net: Projected::new(root, init, cfg, features, &s.projector_widths, true)?, weights })
    }
}

impl Method for VicReg {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let ((h1, z1), (h2, z2)) = (self.net.forward(v1, true)?, self.net.forward(v2, true)?);
        Ok((on_global_batch(&z1, &z2, |a, b| vicreg(a, b, self.weights))?, h1, h2))
    }

    /// Eval mode; the test image is both views, so the invariance term is
    /// 0 and the loss shows the variance and covariance terms.
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, z) = self.net.forward(x, false)?;
        Ok((vicreg(&z, &z, self.weights)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.net.backbone
    }
}
