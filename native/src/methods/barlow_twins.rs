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
use super::Method;
use crate::losses::barlow_twins;
use crate::model::ModelConfig;
use crate::nn::heads::{parse_sizes, Projector};
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
    backbone: ResNet,
    projector: Projector,
    lambda: f64,
}

impl BarlowTwins {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        let sizes = parse_sizes(&s.projector_widths, "--projector-widths")?;
        Ok(BarlowTwins {
            backbone: ResNet::with_width(&(root / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width)?,
            projector: Projector::new(&(root / "head"), init, features, &sizes, false)?,
            lambda: s.off_diagonal_weight,
        })
    }

    fn loss(&self, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        match crate::dist::gather_views(z1, z2)? {
            Some((z1_all, z2_all, _)) => barlow_twins(&z1_all, &z2_all, self.lambda),
            None => barlow_twins(z1, z2, self.lambda),
        }
    }
}

impl Method for BarlowTwins {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let h1 = self.backbone.forward(v1, true)?;
        let h2 = self.backbone.forward(v2, true)?;
        let z1 = self.projector.forward(&h1, true)?;
        let z2 = self.projector.forward(&h2, true)?;
        Ok((self.loss(&z1, &z2)?, h1, h2))
    }

    /// Eval mode; the test image is both views. The loss standardises with
    /// the batch's own statistics (the authors never evaluate it).
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, false)?;
        let z = self.projector.forward(&h, false)?;
        Ok((barlow_twins(&z, &z, self.lambda)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
}
