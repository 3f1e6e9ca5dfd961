//! SimCLR (Chen et al. 2020) as the reference program trains it: a ResNet
//! backbone, the projection head, NT-Xent between the two views, and an
//! online linear classifier on detached features whose cross-entropy is
//! added to the loss (REFERENCE.md §2.2–2.7).
use crate::losses::{nt_xent, topk_percent};
use crate::nn::heads::SimClrHead;
use crate::nn::init::Init;
use crate::nn::layers::Linear;
use crate::nn::resnet::{feature_size, ResNet};
use crate::optim::{self, Param, Sgd};
use anyhow::{bail, Result};
use serde::Deserialize;
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimClrConfig {
    pub arch: String,
    #[serde(default)]
    pub small_stem: bool,
    pub representation_size: i64,
    pub head_latent_size: i64,
    pub nce_size: i64,
    pub nce_temperature: f64,
    pub num_classes: i64,
    pub optimizer: String,
    pub weight_decay: f64,
    #[serde(default)]
    pub clip: f64,
    #[serde(default)]
    pub seed: u64,
}

/// Scalars of one step, in the order the FFI hands them to TypeScript.
pub struct Metrics {
    pub loss: Tensor,
    pub ssl_loss: Tensor,
    pub linear_loss: Tensor,
    pub top1: Tensor,
    pub top5: Tensor,
}

impl Metrics {
    pub fn to_vec(&self) -> Result<Vec<f64>> {
        [&self.loss, &self.ssl_loss, &self.linear_loss, &self.top1, &self.top5]
            .iter()
            .map(|t| Ok(t.f_double_value(&[])?))
            .collect()
    }
}

pub struct SimClr {
    pub vs: VarStore,
    pub params: Vec<Param>,
    backbone: ResNet,
    head: SimClrHead,
    classifier: Linear,
    opt: Sgd,
    cfg: SimClrConfig,
}

impl SimClr {
    pub fn new(cfg: SimClrConfig, device: Device) -> Result<Self> {
        let features = feature_size(&cfg.arch)?;
        if cfg.representation_size != features {
            bail!(
                "--representation-size {} does not match {}'s {} features; use --representation-size {}",
                cfg.representation_size,
                cfg.arch,
                features,
                features
            );
        }
        if cfg.num_classes < 1 {
            bail!("the data set has no classes");
        }
        let opt = optim::parse(&cfg.optimizer, cfg.weight_decay)?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let mut init = Init::new(cfg.seed, device);
        let backbone = ResNet::new(&(&root / "backbone"), &mut init, &cfg.arch, cfg.small_stem)?;
        let head = SimClrHead::new(&(&root / "head"), &mut init, features, cfg.head_latent_size, cfg.nce_size)?;
        let classifier = Linear::new(&(&root / "linear_classifier"), &mut init, features, cfg.num_classes)?;
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params = named.into_iter().map(|(n, t)| Param::new(n, t)).collect();
        Ok(SimClr { vs, params, backbone, head, classifier, opt, cfg })
    }

    /// Forward of a training batch: two views through backbone and head
    /// (two passes, so BN statistics are per view as in the reference),
    /// NT-Xent, and the classifier on both views' detached features.
    pub fn train_losses(&self, v1: &Tensor, v2: &Tensor, labels: &Tensor) -> Result<Metrics> {
        let h1 = self.backbone.forward(v1, true)?;
        let h2 = self.backbone.forward(v2, true)?;
        let z1 = self.head.forward(&h1, true)?;
        let z2 = self.head.forward(&h2, true)?;
        let ssl = nt_xent(&z1, &z2, None, self.cfg.nce_temperature)?;
        let feats = Tensor::f_cat(&[h1.f_detach()?, h2.f_detach()?], 0)?;
        let targets = Tensor::f_cat(&[labels, labels], 0)?;
        self.with_classifier(ssl, &feats, &targets)
    }

    /// Forward of a test batch in eval mode: the single resized image is
    /// both views (as the reference's test loader yields it twice).
    pub fn eval_losses(&self, x: &Tensor, labels: &Tensor) -> Result<Metrics> {
        let _g = tch::no_grad_guard();
        let h = self.backbone.forward(x, false)?;
        let z = self.head.forward(&h, false)?;
        let ssl = nt_xent(&z, &z, None, self.cfg.nce_temperature)?;
        self.with_classifier(ssl, &h, labels)
    }

    fn with_classifier(&self, ssl: Tensor, feats: &Tensor, targets: &Tensor) -> Result<Metrics> {
        let logits = self.classifier.forward(feats)?;
        let ce = logits.f_cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, 0.0)?;
        let acc = topk_percent(&logits.f_detach()?, targets, &[1, 5])?;
        let loss = &ssl + &ce;
        Ok(Metrics { loss, ssl_loss: ssl, linear_loss: ce, top1: acc[0].shallow_clone(), top5: acc[1].shallow_clone() })
    }

    /// Backward of the summed loss, optional value clipping, one update.
    pub fn apply_gradients(&mut self, m: &Metrics, lr: f64) -> Result<()> {
        optim::zero_grad(&mut self.params)?;
        m.loss.f_backward()?;
        if self.cfg.clip > 0.0 {
            optim::clip_grad_value(&self.params, self.cfg.clip)?;
        }
        self.opt.step(&mut self.params, lr)
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

/// Host uint8 CHW images → a [n,3,s,s] uint8 tensor on `device`.
pub fn images_to_device(bytes: &[u8], n: usize, size: u32, device: Device) -> Result<Tensor> {
    let s = size as i64;
    Ok(Tensor::from_slice(bytes).f_view([n as i64, 3, s, s])?.f_to_device(device)?)
}

pub fn labels_to_device(labels: &[i64], device: Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(labels).f_to_kind(Kind::Int64)?.f_to_device(device)?)
}
