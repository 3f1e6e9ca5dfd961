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
use super::Method;
use crate::losses::{vicreg, VicRegWeights};
use crate::model::ModelConfig;
use crate::nn::heads::{parse_sizes, Projector};
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
    backbone: ResNet,
    expander: Projector,
    weights: VicRegWeights,
}

impl VicReg {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        let sizes = parse_sizes(&s.projector_widths, "--projector-widths")?;
        Ok(VicReg {
            backbone: ResNet::with_width(&(root / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width)?,
            expander: Projector::new(&(root / "head"), init, features, &sizes, true)?,
            weights: VicRegWeights { sim: s.invariance_weight, std: s.variance_weight, cov: s.covariance_weight },
        })
    }
}

impl Method for VicReg {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let h1 = self.backbone.forward(v1, true)?;
        let h2 = self.backbone.forward(v2, true)?;
        let z1 = self.expander.forward(&h1, true)?;
        let z2 = self.expander.forward(&h2, true)?;
        let loss = match crate::dist::gather_views(&z1, &z2)? {
            Some((z1_all, z2_all, _)) => vicreg(&z1_all, &z2_all, self.weights)?,
            None => vicreg(&z1, &z2, self.weights)?,
        };
        Ok((loss, h1, h2))
    }

    /// Eval mode; the test image is both views, so the invariance term is
    /// 0 and the loss shows the variance and covariance terms.
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, false)?;
        let z = self.expander.forward(&h, false)?;
        Ok((vicreg(&z, &z, self.weights)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
}
