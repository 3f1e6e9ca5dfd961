//! BYOL (Grill et al. 2020): an online network (backbone, projector,
//! predictor) regresses the target network's projection of the other view.
//!
//! Done as the paper does, not as the reference (REFERENCE.md §2.4, §8
//! defects 1–5): the target starts as an exact copy of the online backbone
//! and projector, has its own BN statistics, runs under no_grad, is never
//! trained, and follows the online weights by an EMA applied after each
//! optimizer step with the decay the caller passes (τ per step); the
//! networks are [`Momentum`]'s, with the reference's heads.
use super::momentum::{Momentum, PairLoss, WithMomentum};
use crate::losses::{byol_loss, LossNorm};
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use anyhow::{bail, Result};
use serde::Deserialize;
use tch::{nn::Path, Tensor};

/// `--projection-size`, `--byol-loss` (train/config.ts METHODS.byol).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projection_size: i64,
    byol_loss: String,
}

/// The symmetric regression loss, `--byol-loss`'s normalisation.
pub struct Byol {
    norm: LossNorm,
}

impl PairLoss for Byol {
    fn loss(&self, p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor, _train: bool) -> Result<Tensor> {
        byol_loss(p1, p2, z1, z2, self.norm)
    }
}

/// BYOL's networks under `root` (the reference's heads: Linear with bias,
/// BN, ReLU, Linear).
pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<WithMomentum<Byol>> {
    let s: Settings = cfg.settings()?;
    let norm = match s.byol_loss.as_str() {
        "paper" => LossNorm::Paper,
        "reference" => LossNorm::Reference,
        other => bail!("unknown --byol-loss {other:?}; choose paper or reference"),
    };
    let nets = Momentum::new(root, init, cfg, features, s.projection_size, Mlp::new, false)?;
    Ok(WithMomentum { nets, loss: Byol { norm } })
}
