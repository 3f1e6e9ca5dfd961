//! The networks BYOL and MoCo v3 share: an online backbone, projector and
//! predictor, and a momentum target (backbone and projector) that starts
//! as an exact copy of the online ones, has its own BN statistics, runs
//! under no_grad, is never trained and follows the online weights by an
//! EMA after each optimizer step. The methods differ in their heads and
//! their loss: each is a [`WithMomentum`] of its [`PairLoss`].
use super::Method;
use crate::ema;
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::Result;
use tch::{nn::Path, nn::VarStore, Tensor};


/// Builds a head: (path, init, input, hidden, output, final BN).
pub type Head = fn(&Path, &mut Init, i64, i64, i64, bool) -> Result<Mlp>;

pub struct Momentum {
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    target_backbone: ResNet,
    target_projector: Mlp,
    /// The target's parameters paired with the online ones; filled by `attach`.
    ema: ema::Target,
}

impl Momentum {
    /// The online network under `root` (`backbone`, `head`, `predictor`),
    /// the target under `root/target` with a scratch initialisation
    /// (`attach` overwrites it with the online weights). The projector
    /// maps the backbone's `features` to `output` through
    /// `--head-latent-size`, the predictor `output` to `output`;
    /// `projector_bn`: the projector ends with a BN.
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64, output: i64, head: Head, projector_bn: bool) -> Result<Self> {
        let hidden = cfg.head_latent_size;
        let tp = root / "target";
        let mut scratch = Init::new(0, root.device());
        let resnet = |p: &Path, init: &mut Init| ResNet::with_width(&(p / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width);
        Ok(Momentum {
            backbone: resnet(root, init)?,
            projector: head(&(root / "head"), init, features, hidden, output, projector_bn)?,
            predictor: head(&(root / "predictor"), init, output, hidden, output, false)?,
            target_backbone: resnet(&tp, &mut scratch)?,
            target_projector: head(&(&tp / "head"), &mut scratch, features, hidden, output, projector_bn)?,
            ema: ema::Target::default(),
        })
    }

    /// (backbone features, prediction) of the online network.
    pub fn online(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, train)?;
        let p = self.predictor.forward(&self.projector.forward(&h, train)?, train)?;
        Ok((h, p))
    }

    /// The target's projection, without gradient.
    pub fn target(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        self.target_projector.forward(&self.target_backbone.forward(x, train)?, train)
    }

    pub fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    pub fn target_backbone(&self) -> &ResNet {
        &self.target_backbone
    }

    /// The target becomes an exact copy of the online backbone and
    /// projector (weights and BN buffers), frozen.
    pub fn attach(&mut self, vs: &VarStore) -> Result<()> {
        self.ema = ema::Target::attach(vs)?;
        Ok(())
    }

    /// ξ ← τ·ξ + (1 − τ)·θ for the target's parameters.
    pub fn update(&self, tau: f64) -> Result<()> {
        self.ema.update(tau)
    }
}

/// A method's loss between the online network's predictions of the two
/// views and the target's projections of them (no gradient through those).
/// `train`: a training batch (replicas may gather), else a test batch in
/// eval mode with the image as both views.
pub trait PairLoss: Send {
    fn loss(&self, p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor, train: bool) -> Result<Tensor>;
}

/// A method made of [`Momentum`]'s networks and a [`PairLoss`].
pub struct WithMomentum<L> {
    pub nets: Momentum,
    pub loss: L,
}

impl<L: PairLoss> Method for WithMomentum<L> {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h1, p1) = self.nets.online(v1, true)?;
        let (h2, p2) = self.nets.online(v2, true)?;
        let (z1, z2) = (self.nets.target(v1, true)?, self.nets.target(v2, true)?);
        Ok((self.loss.loss(&p1, &p2, &z1, &z2, true)?, h1, h2))
    }

    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, p) = self.nets.online(x, false)?;
        let z = self.nets.target(x, false)?;
        Ok((self.loss.loss(&p, &p, &z, &z, false)?, h))
    }

    fn backbone(&self) -> &ResNet {
        self.nets.backbone()
    }

    fn target_backbone(&self) -> Option<&ResNet> {
        Some(self.nets.target_backbone())
    }

    fn attach(&mut self, vs: &VarStore) -> Result<()> {
        self.nets.attach(vs)
    }

    fn update_target(&self, tau: f64) -> Result<()> {
        self.nets.update(tau)
    }
}
