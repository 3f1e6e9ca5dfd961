//! MoCo v3 (Chen, Xie, He 2021), the ResNet variant: the online network
//! (backbone, projector, predictor) makes queries, a momentum encoder
//! (backbone, projector) makes keys, and the loss is InfoNCE of each
//! view's queries against the other view's keys (losses::moco_v3).
//!
//! As the authors' code (facebookresearch/moco-v3, docs/METHODS.md): the
//! heads are their two-layer `_build_mlp` without biases, the projector
//! ending with a BatchNorm1d(affine=False), the predictor with its Linear;
//! the momentum encoder is [`Momentum`]'s target, following the online
//! weights by the momentum the caller passes per step. With several
//! replicas every replica's keys are negatives (gathered, no gradient), as
//! their `concat_all_gather`.
use super::momentum::{Momentum, PairLoss, WithMomentum};
use crate::losses::{moco_v3, Gathered};
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use anyhow::Result;
use serde::Deserialize;
use tch::{nn::Path, Tensor};

/// `--projection-size`, `--nce-temperature` (train/config.ts METHODS.mocov3;
/// the hidden width is the shared `--head-latent-size`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projection_size: i64,
    nce_temperature: f64,
}

/// The symmetrised InfoNCE of queries q against keys k, temperature τ.
pub struct MocoV3 {
    temperature: f64,
}

impl PairLoss for MocoV3 {
    fn loss(&self, q1: &Tensor, q2: &Tensor, k1: &Tensor, k2: &Tensor, train: bool) -> Result<Tensor> {
        let gathered = if train { crate::dist::gather_views(k1, k2)? } else { None };
        match gathered {
            Some((k1_all, k2_all, offset)) => {
                moco_v3(q1, q2, k1, k2, Some(Gathered { z1_all: &k1_all, z2_all: &k2_all, offset }), self.temperature)
            }
            None => moco_v3(q1, q2, k1, k2, None, self.temperature),
        }
    }
}

/// MoCo v3's networks under `root`.
pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<WithMomentum<MocoV3>> {
    let s: Settings = cfg.settings()?;
    let nets = Momentum::new(root, init, cfg, features, s.projection_size, Mlp::bias_free, true)?;
    Ok(WithMomentum { nets, loss: MocoV3 { temperature: s.nce_temperature } })
}
