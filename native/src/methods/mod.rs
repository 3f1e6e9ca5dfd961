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
pub mod vicreg;

use crate::model::ModelConfig;
use crate::nn::heads::{parse_sizes, Projector};
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
        "vicreg" => Box::new(vicreg::VicReg::new(root, init, cfg, features)?),
        m => bail!("unknown --method {m:?}; choose simclr, byol, mocov3, barlowtwins or vicreg"),
    })
}

/// A backbone and a projector (`--projector-widths`), each view its own
/// forward pass: the online network of Barlow Twins and VICReg.
pub struct Projected {
    pub backbone: ResNet,
    projector: Projector,
}

impl Projected {
    /// `hidden_bias`: the projector's hidden Linears have a bias.
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64, widths: &str, hidden_bias: bool) -> Result<Self> {
        let sizes = parse_sizes(widths, "--projector-widths")?;
        Ok(Projected {
            backbone: ResNet::with_width(&(root / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width)?,
            projector: Projector::new(&(root / "head"), init, features, &sizes, hidden_bias)?,
        })
    }

    /// Images → (backbone features, embeddings).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, train)?;
        let z = self.projector.forward(&h, train)?;
        Ok((h, z))
    }
}

/// `loss` of the whole batch's embeddings: with several replicas every
/// replica's, gathered with gradient, so that the loss and its gradient
/// are the single-process ones (2×8 == 1×16).
pub fn on_global_batch(z1: &Tensor, z2: &Tensor, loss: impl Fn(&Tensor, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    match crate::dist::gather_views(z1, z2)? {
        Some((z1_all, z2_all, _)) => loss(&z1_all, &z2_all),
        None => loss(z1, z2),
    }
}
