//! MoCo v3 (Chen, Xie, He 2021), the ResNet variant: the online network
//! (backbone, projector, predictor) makes queries, a momentum encoder
//! (backbone, projector) makes keys, and the loss is InfoNCE of each
//! view's queries against the other view's keys (losses::moco_v3).
//!
//! As the authors' code (facebookresearch/moco-v3, docs/METHODS.md): the
//! heads are their two-layer `_build_mlp` without biases, the projector
//! ending with a BatchNorm1d(affine=False), the predictor with its Linear;
//! the momentum encoder starts as an exact copy, has its own BN
//! statistics, runs under no_grad and follows the online weights by the
//! momentum the caller passes per step. With several replicas every
//! replica's keys are negatives (gathered, no gradient), as their
//! `concat_all_gather`.
use super::Method;
use crate::ema;
use crate::losses::{moco_v3, Gathered};
use crate::model::ModelConfig;
use crate::nn::heads::Mlp;
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use anyhow::Result;
use serde::Deserialize;
use tch::{nn::Path, nn::VarStore, Tensor};

/// `--projection-size`, `--nce-temperature` (train/config.ts METHODS.mocov3;
/// the hidden width is the shared `--head-latent-size`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    projection_size: i64,
    nce_temperature: f64,
}

struct Momentum {
    backbone: ResNet,
    projector: Mlp,
    ema: ema::Target,
}

pub struct MocoV3 {
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    momentum: Momentum,
    temperature: f64,
}

impl MocoV3 {
    /// The online network under `root`, the momentum encoder under
    /// `root/target` with a scratch initialisation (`attach` overwrites it
    /// with the online weights).
    pub fn new(root: &Path, init: &mut Init, cfg: &ModelConfig, features: i64) -> Result<Self> {
        let s: Settings = cfg.settings()?;
        let (hidden, dim) = (cfg.head_latent_size, s.projection_size);
        let tp = root / "target";
        let mut scratch = Init::new(0, root.device());
        let resnet = |p: &Path, init: &mut Init| ResNet::with_width(&(p / "backbone"), init, &cfg.arch, cfg.small_stem, cfg.base_width);
        Ok(MocoV3 {
            backbone: resnet(root, init)?,
            projector: Mlp::bias_free(&(root / "head"), init, features, hidden, dim, true)?,
            predictor: Mlp::bias_free(&(root / "predictor"), init, dim, hidden, dim, false)?,
            momentum: Momentum {
                backbone: resnet(&tp, &mut scratch)?,
                projector: Mlp::bias_free(&(&tp / "head"), &mut scratch, features, hidden, dim, true)?,
                ema: ema::Target::default(),
            },
            temperature: s.nce_temperature,
        })
    }

    /// (backbone features, query).
    fn query(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.forward(x, train)?;
        let q = self.predictor.forward(&self.projector.forward(&h, train)?, train)?;
        Ok((h, q))
    }

    fn key(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let m = &self.momentum;
        m.projector.forward(&m.backbone.forward(x, train)?, train)
    }
}

impl Method for MocoV3 {
    fn train_forward(&self, v1: &Tensor, v2: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h1, q1) = self.query(v1, true)?;
        let (h2, q2) = self.query(v2, true)?;
        let (k1, k2) = (self.key(v1, true)?, self.key(v2, true)?);
        let loss = match crate::dist::gather_views(&k1, &k2)? {
            Some((k1_all, k2_all, offset)) => {
                moco_v3(&q1, &q2, &k1, &k2, Some(Gathered { z1_all: &k1_all, z2_all: &k2_all, offset }), self.temperature)?
            }
            None => moco_v3(&q1, &q2, &k1, &k2, None, self.temperature)?,
        };
        Ok((loss, h1, h2))
    }

    /// Eval mode; the test image is both views.
    fn eval_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, q) = self.query(x, false)?;
        let k = self.key(x, false)?;
        Ok((moco_v3(&q, &q, &k, &k, None, self.temperature)?, h))
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn target_backbone(&self) -> Option<&ResNet> {
        Some(&self.momentum.backbone)
    }

    /// The momentum encoder becomes an exact copy of the online backbone
    /// and projector (weights and BN buffers), frozen.
    fn attach(&mut self, vs: &VarStore) -> Result<()> {
        self.momentum.ema = ema::Target::attach(vs)?;
        Ok(())
    }

    fn update_target(&self, tau: f64) -> Result<()> {
        self.momentum.ema.update(tau)
    }
}
