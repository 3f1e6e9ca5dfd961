//! The self-supervised methods: each is one file here implementing
//! [`Method`], and [`build`] is the only place that matches on a method's
//! name (docs/DESIGN.md, "Adding a method"). What every method shares —
//! the optimizer, the online linear probe, the Polyak average, mixed
//! precision, checkpoints — is the [`crate::model::Model`] around it.
pub mod barlow_twins;
pub mod byol;
pub mod moco_v3;
pub mod momentum;
pub mod simclr;

use crate::model::ModelConfig;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::{bail, Result};
use tch::{nn::Path, nn::VarStore, Tensor};

/// A method's networks and its self-supervised loss. The variables it
/// creates under the model's root with `requires_grad` are the ones the
/// optimizer trains; a momentum target is frozen in [`Method::attach`].
pub trait Method: Send {
    /// A training batch's two augmented views → (SSL loss, view 1's and
    /// view 2's backbone features); the online probe reads the features
    /// detached.
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)>;

    /// A test batch in eval mode, the image as both views → (SSL loss,
    /// backbone features).
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// The online backbone: evaluation features and exports.
    fn backbone(&self) -> &ResNet;

    /// The momentum target's backbone (`--weights target`), for methods
    /// that keep one.
    fn target_backbone(&self) -> Option<&ResNet> {
        None
    }

    /// Once, when the online weights are final (after any
    /// re-initialisation), before the trained parameters are collected:
    /// a momentum target copies them here and is frozen.
    fn attach(&mut self, _vs: &VarStore) -> Result<()> {
        Ok(())
    }

    /// After each optimizer step: the momentum target moves towards the
    /// online weights, ξ ← τ·ξ + (1 − τ)·θ.
    fn update_target(&self, _tau: f64) -> Result<()> {
        Ok(())
    }
}

/// The method `cfg.method` names, its variables under `root`.
pub fn build(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Box<dyn Method>> {
    Ok(match cfg.method.as_str() {
        "simclr" => Box::new(simclr::SimClr::new(root, init, cfg, features)?),
        "byol" => Box::new(byol::new(root, init, cfg, features)?),
        "mocov3" => Box::new(moco_v3::new(root, init, cfg, features)?),
        "barlowtwins" => Box::new(barlow_twins::BarlowTwins::new(root, init, cfg, features)?),
        m => bail!("unknown --method {m:?}; choose simclr, byol, mocov3 or barlowtwins"),
    })
}
