//! What every method (methods/) shares: the online parameters and their optimizer,
//! the online linear classifier on detached features (its cross-entropy
//! is added to the loss, REFERENCE.md §2.6), the Polyak average for
//! evaluation, and the update.
use crate::amp::{full, Autocast, GradScaler, Precision, ScalerConfig};
use crate::ema::Polyak;
use crate::losses::topk_percent;
use crate::methods::{self, Method};
use crate::nn::init::{Init, Scheme};
use crate::nn::layers::Linear;
use crate::nn::resnet::feature_size_width;
use crate::optim::{self, Optimizer, Param};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tch::{nn::VarStore, Device, Reduction, Tensor};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    pub method: String,
    pub arch: String,
    #[serde(default)]
    pub small_stem: bool,
    /// Channels of the stem; the stages have 1, 2, 4 and 8 times as many (torchvision: 64).
    pub base_width: i64,
    pub representation_size: i64,
    pub head_latent_size: i64,
    pub num_classes: i64,
    pub optimizer: String,
    pub weight_decay: f64,
    #[serde(default)]
    pub clip: f64,
    #[serde(default)]
    pub polyak_ema: f64,
    #[serde(default)]
    pub weight_initialization: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// fp32, fp16 (autocast and a dynamic loss scale) or bf16 (autocast).
    pub precision: String,
    /// The loss scaler's settings (torch's GradScaler defaults when
    /// omitted). Given with fp32 it scales fp32 gradients, as a
    /// GradScaler can: tests use that to exercise skipped steps quickly.
    #[serde(default)]
    pub loss_scaler: Option<ScalerConfig>,
    /// Every other key of the config, among them the method's own settings,
    /// which only its file reads ([`ModelConfig::settings`]). Settings have
    /// no default values here: the front end sends them all
    /// (train/config.ts holds the defaults, METHODS a method's own).
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl ModelConfig {
    /// The method's own settings (a struct of its file), read from the
    /// config's other keys.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.rest.clone()))
            .with_context(|| format!("the settings of --method {}", self.method))
    }
}

/// Scalars of one step, as the FFI hands them to TypeScript.
pub struct Metrics {
    pub loss: Tensor,
    pub ssl_loss: Tensor,
    pub linear_loss: Tensor,
    pub top1: Tensor,
    pub top5: Tensor,
    /// 1 when a weight, buffer or optimizer state held an inf or NaN after
    /// the step's update ([`Model::nonfinite`]), else 0.
    pub nonfinite: Tensor,
}

impl Metrics {
    /// The five metrics read back to the host.
    pub fn to_vec(&self) -> Result<Vec<f64>> {
        Ok(Vec::<f64>::try_from(&self.row()?.f_narrow(0, 0, 5)?.f_to_device(tch::Device::Cpu)?)?)
    }

    /// The five metrics and the non-finite flag as one float64 vector on
    /// the device, to read back later (no host synchronisation now).
    pub fn row(&self) -> Result<Tensor> {
        let parts: Vec<Tensor> = [&self.loss, &self.ssl_loss, &self.linear_loss, &self.top1, &self.top5, &self.nonfinite]
            .iter()
            .map(|t| t.f_detach()?.f_to_kind(tch::Kind::Double)?.f_reshape([1]))
            .collect::<Result<_, _>>()?;
        Ok(Tensor::f_cat(&parts, 0)?)
    }
}

pub struct Model {
    pub vs: VarStore,
    pub params: Vec<Param>,
    /// The self-supervised method (methods/): its networks and loss.
    pub method: Box<dyn Method>,
    classifier: Linear,
    pub opt: Optimizer,
    pub polyak: Option<Polyak>,
    pub precision: Precision,
    /// The dynamic loss scale of fp16 training.
    pub scaler: Option<GradScaler>,
    /// The loss scale the last step used and whether it was skipped (1.0)
    /// or not, on the device; zeros without a scaler.
    amp_record: Option<Tensor>,
    cfg: ModelConfig,
}

impl Model {
    pub fn new(cfg: ModelConfig, device: Device) -> Result<Self> {
        let features = feature_size_width(&cfg.arch, cfg.base_width)?;
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
        let scheme = cfg.weight_initialization.as_deref().map(Scheme::parse).transpose()?;
        let precision = Precision::parse(&cfg.precision)?;
        let scaler = match (precision, cfg.loss_scaler) {
            (Precision::Fp16, c) => Some(GradScaler::new(c.unwrap_or_default(), device)?),
            (_, Some(c)) => Some(GradScaler::new(c, device)?),
            (_, None) => None,
        };
        let opt = optim::parse(&cfg.optimizer, cfg.weight_decay)?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let mut init = Init::new(cfg.seed, device);
        let mut method = methods::build(&root, &mut init, &cfg, features)?;
        let classifier = Linear::new(&(&root / "linear_classifier"), &mut init, features, cfg.num_classes)?;
        if let Some(s) = scheme {
            reinitialise(&vs, &mut init, s)?;
        }
        // Copies are made after any re-initialisation (the reference seeded
        // its EMAs before it, defect 23); a momentum target is frozen here,
        // so it is not among the trained parameters.
        method.attach(&vs)?;
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<Param> = named.into_iter().map(|(n, t)| Param::new(n, t)).collect();
        let polyak = if cfg.polyak_ema > 0.0 { Some(Polyak::new(&params, cfg.polyak_ema)?) } else { None };
        Ok(Model { vs, params, method, classifier, opt, polyak, precision, scaler, amp_record: None, cfg })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// An autocast region for this model's precision (None for fp32).
    fn autocast(&self) -> Result<Option<Autocast>> {
        Autocast::enter(self.device(), self.precision.autocast_kind())
    }

    /// Forward of a training batch (two augmented views), classifier on
    /// both views' detached features; under autocast with fp16/bf16.
    pub fn train_losses(&mut self, v1: &Tensor, v2: &Tensor, labels: &Tensor) -> Result<Metrics> {
        let _autocast = self.autocast()?;
        let (ssl, h1, h2) = self.method.train_forward(v1, v2)?;
        let feats = Tensor::f_cat(&[h1.f_detach()?, h2.f_detach()?], 0)?;
        let targets = Tensor::f_cat(&[labels, labels], 0)?;
        self.with_classifier(ssl, &feats, &targets)
    }

    /// Forward of a test batch in eval mode, under the Polyak weights when
    /// kept; the single resized image is both views, as in the reference.
    pub fn eval_losses(&mut self, x: &Tensor, labels: &Tensor) -> Result<Metrics> {
        let _g = tch::no_grad_guard();
        let _autocast = self.autocast()?;
        let run = |m: &Model| -> Result<Metrics> {
            let (ssl, h) = m.method.eval_forward(x)?;
            m.with_classifier(ssl, &h, labels)
        };
        match &self.polyak {
            Some(p) => p.swapped(&self.params, || run(self)),
            None => run(self),
        }
    }

    fn with_classifier(&self, ssl: Tensor, feats: &Tensor, targets: &Tensor) -> Result<Metrics> {
        let logits = self.classifier.forward(feats)?;
        let _fp32 = Autocast::suspend(logits.device())?;
        let logits = full(&logits)?;
        let ce = logits.f_cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, 0.0)?;
        crate::amp::trace("cross_entropy", &ce);
        let acc = topk_percent(&logits.f_detach()?, targets, &[1, 5])?;
        let loss = &ssl + &ce;
        let nonfinite = ce.f_zeros_like()?.f_detach()?;
        Ok(Metrics { loss, ssl_loss: ssl, linear_loss: ce, top1: acc[0].shallow_clone(), top5: acc[1].shallow_clone(), nonfinite })
    }

    /// Eval-mode backbone features of `x` under the chosen weights (fp32
    /// whatever the precision).
    pub fn features(&mut self, x: &Tensor, weights: &str) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let _autocast = self.autocast()?;
        let backbone = |m: &Model, target: bool| -> Result<Tensor> {
            let net = match target {
                false => m.method.backbone(),
                true => m.method.target_backbone().with_context(|| format!("--weights target needs a method with a momentum target (byol), not {}", m.cfg.method))?,
            };
            net.forward(x, false)
        };
        let f = match weights {
            "online" => backbone(self, false),
            "target" => backbone(self, true),
            "polyak" => match &self.polyak {
                Some(p) => p.swapped(&self.params, || backbone(self, false)),
                None => bail!("--weights polyak needs a run trained with --polyak-ema"),
            },
            other => bail!("unknown --weights {other:?}; choose online, polyak or target"),
        }?;
        full(&f)
    }

    /// Gradients of the loss (times the loss scale with a scaler).
    pub fn backward(&mut self, m: &Metrics) -> Result<()> {
        optim::zero_grad(&mut self.params)?;
        match &self.scaler {
            Some(s) => s.scale_loss(&m.loss)?.f_backward()?,
            None => m.loss.f_backward()?,
        }
        Ok(())
    }

    /// With a scaler, gradients unscaled (after DDP's all-reduce, which
    /// ends with backward, so every replica makes the same decision);
    /// then value clipping, the optimizer step (LARS's trust ratio sees
    /// unscaled gradients; a step with inf/NaN gradients is skipped on the
    /// device), the scale's update, then the averages that follow the
    /// weights (BYOL's target with decay `tau`, the Polyak EMA), which
    /// move even after a skipped step, as in a torch loop.
    pub fn update(&mut self, lr: f64, tau: f64) -> Result<()> {
        let found_inf = match &self.scaler {
            Some(s) => Some(s.unscale(&self.params)?.shallow_clone()),
            None => None,
        };
        if self.cfg.clip > 0.0 {
            optim::clip_grad_value(&self.params, self.cfg.clip)?;
        }
        self.opt.step_amp(&mut self.params, lr, found_inf.as_ref())?;
        if let Some(s) = &mut self.scaler {
            // A copy of the scale this step used and its skip flag, before
            // the update changes the scale in place.
            self.amp_record = Some(Tensor::f_cat(&[&s.scale, &s.found_inf], 0)?.f_to_kind(tch::Kind::Double)?);
            s.update()?;
        }
        self.method.update_target(tau)?;
        if let Some(p) = &self.polyak {
            p.update(&self.params)?;
        }
        Ok(())
    }

    /// 1.0 (on the device, no host synchronisation) when any weight, buffer
    /// (BN statistics), BYOL target weight, optimizer state or Polyak
    /// average holds an inf or NaN, else 0.0: what must never reach a
    /// checkpoint. One norm per tensor (multi-tensor kernels on CUDA).
    pub fn nonfinite(&self) -> Result<Tensor> {
        let vars = self.vs.variables();
        let state = self.params.iter().flat_map(|p| p.state.iter());
        let polyak = self.polyak.iter().flat_map(|p| p.shadow.iter());
        let like = &self.params.first().context("the model has no parameters")?.tensor;
        crate::amp::nonfinite(vars.values().chain(state).chain(polyak), like)
    }

    /// Sets the first element of variable `name` (any parameter or buffer;
    /// the first parameter when empty) to NaN: tests of the non-finite stop.
    #[cfg(feature = "testing")]
    pub fn poison(&self, name: &str) -> Result<()> {
        let vars = self.vs.variables();
        let t = if name.is_empty() { &self.params.first().context("no parameters")?.tensor } else { vars.get(name).with_context(|| format!("no variable {name:?}"))? };
        let _g = tch::no_grad_guard();
        let _ = t.f_view([-1])?.f_narrow(0, 0, 1)?.f_fill_(f64::NAN)?;
        Ok(())
    }

    /// [loss scale used, skipped (1) or not (0)] of the last step, on the
    /// device, float64; zeros without a scaler or before any step.
    pub fn amp_record(&self) -> Result<Tensor> {
        match &self.amp_record {
            Some(r) => Ok(r.shallow_clone()),
            None => Ok(Tensor::f_zeros([2], (tch::Kind::Double, self.device()))?),
        }
    }
}

/// Applies `scheme` to every conv/linear weight (ndim ≥ 2) and zeroes the
/// bias beside it, as the reference's init_weights.
fn reinitialise(vs: &VarStore, init: &mut Init, scheme: Scheme) -> Result<()> {
    let _g = tch::no_grad_guard();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().filter(|n| n.ends_with(".weight") && vars[*n].dim() >= 2).collect();
    names.sort();
    for name in names {
        let w = &vars[name];
        w.shallow_clone().f_copy_(&init.scheme(scheme, &w.size())?)?;
        if let Some(b) = vars.get(&format!("{}.bias", name.trim_end_matches(".weight"))) {
            let _ = b.shallow_clone().f_zero_()?;
        }
    }
    Ok(())
}
