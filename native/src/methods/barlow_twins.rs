//! Barlow Twins (Zbontar et al. 2021): a backbone and a projector, trained
//! so that the cross-correlation of the two views' embeddings is the
//! identity (losses::barlow_twins). No momentum target, no predictor.
//!
//! As the authors' code (docs/METHODS.md): a bias-free projector
//! (`--projector-widths`, 8192-8192-8192 in the paper), λ on the
//! off-diagonal terms (`--off-diagonal-weight`, 5e-3); with several replicas the
//! embeddings are gathered, so the statistics and the cross-correlation are
//! the global batch's, as their SyncBatchNorm and all_reduce make them (the
//! gradient here is the exact global one; theirs is 1/replicas of it).
use super::{on_global_batch, Method, Projected};
use crate::losses::barlow_twins;
use crate::model::ModelConfig;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::Result;
use serde::Deserialize;
use tch::{nn::Path, Tensor};

/// `--projector-widths`, `--off-diagonal-weight` (train/config.ts METHODS.barlowtwins).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projector_widths: String,
    off_diagonal_weight: f64,
}

pub struct BarlowTwins {
    net: Projected,
    lambda: f64,
}

impl BarlowTwins {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        Ok(BarlowTwins { net: Projected::new(root, init, cfg, features, &s.projector_widths, false)?, lambda: s.off_diagonal_weight })
    }
}

impl Method for BarlowTwins {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let ((h1, z1), (h2, z2)) = (self.net.forward(v1, true)?, self.net.forward(v2, true)?);
        Ok((on_global_batch(&z1, &z2, |a, b| barlow_twins(a, b, self.lambda))?, h1, h2))
    }

    /// Eval mode; the test image is both views. The loss standardises with
    /// the batch's own statistics (the authors never evaluate it).
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, z) = self.net.forward(x, false)?;
        Ok((barlow_twins(&z, &z, self.lambda)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.net.backbone
    }
}
