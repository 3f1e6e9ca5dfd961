//! BYOL (Grill et al. 2020): an online network (backbone, projector,
//! predictor) regresses the target network's projection of the other view.
//!
//! Done as the paper does, not as the reference (REFERENCE.md §2.4, §8
//! defects 1–5): the target starts as an exact copy of the online backbone
//! and projector, has its own BN statistics, runs under no_grad, is never
//! trained, and follows the online weights by an EMA applied after each
//! optimizer step with the decay the caller passes (τ per step).
use crate::losses::l2_normalize;
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::{bail, Context, Result};
use tch::{nn::Path, nn::VarStore, Tensor};

/// How the regression loss normalises its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossNorm {
    /// Per row: 2 − 2·cos(p, z), the paper's loss.
    Paper,
    /// The reference's whole-matrix norms: −2·Σ(p·z)/(‖P‖_F‖Z‖_F) per row.
    Reference,
}

/// The BYOL regression loss for a batch, mean over rows.
/// Under mixed precision it runs in fp32, autocast suspended (amp.rs).
pub fn regression_loss(p: &Tensor, z: &Tensor, norm: LossNorm) -> Result<Tensor> {
    let _fp32 = crate::amp::Autocast::suspend(p.device())?;
    let (p, z) = (&crate::amp::full(p)?, &crate::amp::full(z)?);
    let loss = match norm {
        LossNorm::Paper => {
            let cos = (l2_normalize(p)? * l2_normalize(z)?).f_sum_dim_intlist(-1, false, p.kind())?;
            (cos * -2.0 + 2.0).f_mean(p.kind())?
        }
        LossNorm::Reference => {
            let dot = (p * z).f_sum_dim_intlist(-1, false, p.kind())?;
            (dot * -2.0 / (p.f_norm()? * z.f_norm()?)).f_mean(p.kind())?
        }
    };
    crate::amp::trace("regression", &loss);
    Ok(loss)
}

/// The symmetric BYOL loss: view 1's prediction against view 2's target
/// projection, and the other way round.
pub fn byol_loss(p1: &Tensor, p2: &Tensor, z1t: &Tensor, z2t: &Tensor, norm: LossNorm) -> Result<Tensor> {
    Ok(regression_loss(p1, &z2t.f_detach()?, norm)? + regression_loss(p2, &z1t.f_detach()?, norm)?)
}

struct Target {
    backbone: ResNet,
    projector: Mlp,
    /// (target, online) parameter pairs the EMA updates.
    pairs: Vec<(Tensor, Tensor)>,
}

pub struct Byol {
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    target: Option<Target>,
    norm: LossNorm,
    arch: String,
    small_stem: bool,
    base_width: i64,
    sizes: (i64, i64, i64),
}

impl Byol {
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let norm = match cfg.byol_loss.as_str() {
            "paper" => LossNorm::Paper,
            "reference" => LossNorm::Reference,
            other => bail!("unknown --byol-loss {other:?}; choose paper or reference"),
        };
        let (hidden, proj) = (cfg.head_latent_size, cfg.projection_size);
        Ok(Byol {
            backbone: ResNet::with_width(&(root / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width)?,
            projector: Mlp::new(&(root / "head"), init, features, hidden, proj, false)?,
            predictor: Mlp::new(&(root / "predictor"), init, proj, hidden, proj, false)?,
            target: None,
            norm,
            arch: cfg.arch.clone(),
            small_stem: cfg.small_stem,
            base_width: cfg.base_width,
            sizes: (features, hidden, proj),
        })
    }

    /// Builds the target as a copy of the online backbone and projector
    /// (weights and BN buffers) under `target.` in the same store.
    pub fn make_target(&mut self, vs: &VarStore) -> Result<()> {
        let root = vs.root();
        let tp = &root / "target";
        let mut scratch = Init::new(0, vs.device());
        let (features, hidden, proj) = self.sizes;
        let backbone = ResNet::with_width(&(&tp / "backbone"), &mut scratch, &self.arch, self.small_stem, self.base_width)?;
        let projector = Mlp::new(&(&tp / "head"), &mut scratch, features, hidden, proj, false)?;
        let vars = vs.variables();
        let mut pairs = Vec::new();
        let _g = tch::no_grad_guard();
        for (name, t) in vars.iter().filter(|(n, _)| n.starts_with("target.")) {
            let online = vars.get(&name["target.".len()..]).with_context(|| format!("no online twin of {name}"))?;
            let mut t = t.shallow_clone();
            t.f_copy_(online)?;
            if online.requires_grad() {
                pairs.push((t.set_requires_grad(false), online.shallow_clone()));
            }
        }
        pairs.sort_by_key(|(t, _)| t.numel());
        self.target = Some(Target { backbone, projector, pairs });
        Ok(())
    }

    fn target(&self) -> Result<&Target> {
        self.target.as_ref().context("the BYOL target network was not built")
    }

    /// ξ ← τ·ξ + (1 − τ)·θ after an optimizer step.
    pub fn update_target(&self, _vs: &VarStore, tau: f64) -> Result<()> {
        let t = self.target()?;
        let (shadow, online): (Vec<Tensor>, Vec<Tensor>) =
            t.pairs.iter().map(|(a, b)| (a.shallow_clone(), b.shallow_clone())).unzip();
        crate::ema::ema_update(&shadow, &online, tau)
    }

    fn online(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, train)?;
        let p = self.predictor.forward(&self.projector.forward(&h, train)?, train)?;
        Ok((h, p))
    }

    fn target_projection(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let t = self.target()?;
        t.projector.forward(&t.backbone.forward(x, train)?, train)
    }

    pub fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h1, p1) = self.online(v1, true)?;
        let (h2, p2) = self.online(v2, true)?;
        let z1t = self.target_projection(v1, true)?;
        let z2t = self.target_projection(v2, true)?;
        Ok((byol_loss(&p1, &p2, &z1t, &z2t, self.norm)?, h1, h2))
    }

    /// Eval mode; the test image is both views.
    pub fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, p) = self.online(x, false)?;
        let zt = self.target_projection(x, false)?;
        Ok((byol_loss(&p, &p, &zt, &zt, self.norm)?, h))
    }

    pub fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    pub fn target_backbone(&self) -> Result<&ResNet> {
        Ok(&self.target()?.backbone)
    }
}
