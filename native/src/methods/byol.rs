//! BYOL (Grill et al. 2020): an online network (backbone, projector,
//! predictor) regresses the target network's projection of the other view.
//!
//! Done as the paper does, not as the reference (REFERENCE.md §2.4, §8
//! defects 1–5): the target starts as an exact copy of the online backbone
//! and projector, has its own BN statistics, runs under no_grad, is never
//! trained, and follows the online weights by an EMA applied after each
//! optimizer step with the decay the caller passes (τ per step).
use super::Method;
use crate::ema;
use crate::losses::{byol_loss, LossNorm};
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::{bail, Result};
use serde::Deserialize;
use tch::{nn::Path, nn::VarStore, Tensor};

/// `--projection-size`, `--byol-loss` (train/config.ts METHODS.byol).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projection_size: i64,
    byol_loss: String,
}

struct Target {
    backbone: ResNet,
    projector: Mlp,
    /// Its parameters paired with the online ones; filled by `attach`.
    ema: ema::Target,
}

pub struct Byol {
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    target: Target,
    norm: LossNorm,
}

impl Byol {
    /// The online network under `root`, and the target's variables under
    /// `root/target` with a scratch initialisation (`attach` overwrites
    /// them with the online weights).
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        let norm = match s.byol_loss.as_str() {
            "paper" => LossNorm::Paper,
            "reference" => LossNorm::Reference,
            other => bail!("unknown --byol-loss {other:?}; choose paper or reference"),
        };
        let (hidden, proj) = (cfg.head_latent_size, s.projection_size);
        let tp = root / "target";
        let mut scratch = Init::new(0, root.device());
        let resnet = |p: &Path, init: &mut Init| ResNet::with_width(&(p / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width);
        Ok(Byol {
            backbone: resnet(root, init)?,
            projector: Mlp::new(&(root / "head"), init, features, hidden, proj, false)?,
            predictor: Mlp::new(&(root / "predictor"), init, proj, hidden, proj, false)?,
            target: Target {
                backbone: resnet(&tp, &mut scratch)?,
                projector: Mlp::new(&(&tp / "head"), &mut scratch, features, hidden, proj, false)?,
                ema: ema::Target::default(),
            },
            norm,
        })
    }

    fn online(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, train)?;
        let p = self.predictor.forward(&self.projector.forward(&h, train)?, train)?;
        Ok((h, p))
    }

    fn target_projection(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let t = &self.target;
        t.projector.forward(&t.backbone.forward(x, train)?, train)
    }
}

impl Method for Byol {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h1, p1) = self.online(v1, true)?;
        let (h2, p2) = self.online(v2, true)?;
        let z1t = self.target_projection(v1, true)?;
        let z2t = self.target_projection(v2, true)?;
        Ok((byol_loss(&p1, &p2, &z1t, &z2t, self.norm)?, h1, h2))
    }

    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, p) = self.online(x, false)?;
        let zt = self.target_projection(x, false)?;
        Ok((byol_loss(&p, &p, &zt, &zt, self.norm)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn target_backbone(&self) -> Option<&ResNet> {
        Some(&self.target.backbone)
    }

    /// The target becomes an exact copy of the online backbone and
    /// projector (weights and BN buffers), frozen.
    fn attach(&mut self, vs: &VarStore) -> Result<()> {
        self.target.ema = ema::Target::attach(vs)?;
        Ok(())
    }

    fn update_target(&self, tau: f64) -> Result<()> {
        self.target.ema.update(tau)
    }
}
