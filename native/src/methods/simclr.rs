//! SimCLR (Chen et al. 2020) as the reference program builds it: a ResNet
//! backbone and a projection head; NT-Xent between the two views
//! (REFERENCE.md §2.2–2.3).
use super::Method;
use crate::losses::{nt_xent, Gathered};
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::Result;
use serde::Deserialize;
use tch::{nn::Path, Tensor};

/// `--nce-size`, `--nce-temperature` (train/config.ts METHODS.simclr).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    nce_size: i64,
    nce_temperature: f64,
}

pub struct SimClr {
    backbone: ResNet,
    head: Mlp,
    temperature: f64,
}

impl SimClr {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        Ok(SimClr {
            backbone: ResNet::with_width(&(root / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width)?,
            head: Mlp::new(&(root / "head"), init, features, cfg.head_latent_size, s.nce_size, true)?,
            temperature: s.nce_temperature,
        })
    }
}

impl Method for SimClr {
    /// Each view is its own forward pass, so BN statistics are per view,
    /// as in the reference.
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let h1 = self.backbone.forward(v1, true)?;
        let h2 = self.backbone.forward(v2, true)?;
        let z1 = self.head.forward(&h1, true)?;
        let z2 = self.head.forward(&h2, true)?;
        // With several replicas, every replica's embeddings are negatives.
        let loss = match crate::dist::gather_views(&z1, &z2)? {
            Some((z1_all, z2_all, offset)) => {
                nt_xent(&z1, &z2, Some(Gathered { z1_all: &z1_all, z2_all: &z2_all, offset }), self.temperature)?
            }
            None => nt_xent(&z1, &z2, None, self.temperature)?,
        };
        Ok((loss, h1, h2))
    }

    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, false)?;
        let z = self.head.forward(&h, false)?;
        Ok((nt_xent(&z, &z, None, self.temperature)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
}
