//! A trainer: the model and optimizer living on their owning thread, fed
//! host batches, returning metrics.
use crate::augment;
use crate::data::loader::Batch;
use crate::model::{Model, ModelConfig};
use crate::pipeline::profile::Range;
use crate::pipeline::{Marks, Pipeline};
use crate::thread::Owner;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerConfig {
    /// "cpu", "cuda" or "cuda:<index>" (a replica's GPU: its local rank
    /// modulo the visible GPUs).
    #[serde(default = "default_device")]
    pub device: String,
    /// Intra-op threads; 0 keeps libtorch's default (all cores).
    #[serde(default)]
    pub threads: i32,
    /// Replicas: rank, world size, rendezvous, SyncBN (dist/mod.rs).
    #[serde(default)]
    pub distributed: crate::dist::DistConfig,
    /// Tests only: weights and views in float64, so that runs which differ
    /// only in summation order (e.g. 1 vs 2 replicas) agree to ~1e-12.
    #[serde(default)]
    pub float64: bool,
    /// Conv weights and input views laid out channels_last (what cuDNN's
    /// and oneDNN's fastest convolutions read); default: on, except for
    /// float64 weights (docs/DESIGN.md has the measurements).
    #[serde(default)]
    pub channels_last: Option<bool>,
    #[serde(flatten)]
    pub model: ModelConfig,
}

fn default_device() -> String {
    "cpu".into()
}

/// Number of f64 slots a step fills: loss, ssl loss, linear loss, top-1,
/// top-5, samples in the batch.
pub const METRICS: usize = 6;

/// Number of f64 slots of a deferred step's row: the METRICS, then the
/// loss scale the step used (0 without a scaler), whether the scaler
/// skipped it (1) or not (0), and whether a weight, buffer or optimizer
/// state was non-finite after it (1, on any replica) or not (0).
pub const STEP_ROW: usize = 9;

/// How many views of a batch are kept for the log's image grids (the
/// reference shows the first min(64, B) of the last batch of a pass).
pub const SHOWN_VIEWS: i64 = 64;

pub struct State {
    pub(crate) model: Model,
    /// Frozen-backbone features of the train and test splits (evaluation).
    pub(crate) features: [crate::evaluate::FeatureSet; 2],
    /// The first views of the last train batch (view 1, view 2) and of the
    /// last test batch, as uint8 on the device: small, and copied to the
    /// host only when the log asks, once an epoch.
    shown: [Option<Tensor>; 3],
    /// This process's replica: process group and DDP when there are several.
    pub(crate) replica: crate::dist::Replica,
    /// Views go to the model channels_last.
    channels_last: bool,
    /// Batches to the device, deferred steps' rows (7 values: loss …
    /// top-5, loss scale, skipped) back, stage timings.
    pub(crate) pipe: Pipeline,
}

fn device_of(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => bail!("CUDA was asked for but libtorch sees no GPU; run with --no-cuda"),
        _ if name.starts_with("cuda:") => {
            let i: usize = name[5..].parse().map_err(|_| anyhow::anyhow!("unknown device {name:?}; use cpu, cuda or cuda:<index>"))?;
            let n = tch::Cuda::device_count() as usize;
            if i >= n {
                bail!("{name} was asked for but libtorch sees {n} GPU(s)");
            }
            Ok(Device::Cuda(i))
        }
        other => bail!("unknown device {other:?}; use cpu or cuda"),
    }
}

pub fn spawn(cfg: TrainerConfig) -> Result<Owner<State>> {
    Owner::spawn("selfsup-trainer", move || {
        if cfg.threads > 0 {
            tch::set_num_threads(cfg.threads);
        }
        let device = device_of(&cfg.device)?;
        if device == Device::Cpu && cfg.model.precision == "bf16" {
            crate::amp::check_cpu_bf16()?;
        }
        if cfg.float64 && cfg.model.precision != "fp32" {
            bail!("float64 weights (tests) and --precision {} exclude each other", cfg.model.precision);
        }
        if device.is_cuda() {
            // cuDNN times its algorithms for each new shape once and keeps
            // the fastest (torch.backends.cudnn.benchmark = True); a step's
            // shapes repeat, so only the first steps pay.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        // The group first: its rendezvous is what other ranks wait for.
        let mut replica = crate::dist::Replica::start(&cfg.distributed, device)?;
        let mut model = Model::new(cfg.model, device)?;
        if cfg.float64 {
            model.vs.double();
            if let Some(p) = model.polyak.as_mut() {
                p.shadow = p.shadow.iter().map(|s| s.f_to_kind(Kind::Double)).collect::<Result<_, _>>()?;
            }
        }
        // Measured faster on the CPU as well (docs/DESIGN.md); float64
        // (tests) has no NHWC kernels to gain from.
        let channels_last = cfg.channels_last.unwrap_or(!cfg.float64);
        if channels_last {
            // Before DDP: its buckets follow the parameters' layout.
            for (_, var) in model.vs.variables() {
                crate::amp::make_channels_last(&var)?;
            }
            if let Some(p) = model.polyak.as_mut() {
                p.shadow = p.shadow.iter().map(|s| if s.dim() == 4 { crate::amp::channels_last(s) } else { Ok(s.shallow_clone()) }).collect::<Result<_>>()?;
            }
        }
        replica.attach(&model)?;
        let pipe = Pipeline::new(device)?;
        Ok(State { model, features: Default::default(), shown: [None, None, None], replica, channels_last, pipe })
    })
}

fn fill(out: &mut [f64; METRICS], values: Vec<f64>, n: usize) {
    out[..values.len()].copy_from_slice(&values);
    out[METRICS - 1] = n as f64;
}

impl State {
    /// A training batch's two augmented views on the device, in the model's
    /// dtype and layout; with the marks of its copy and augmentation.
    pub(crate) fn views(&mut self, batch: &Batch) -> Result<(Tensor, Tensor, Tensor, Marks)> {
        let (on, mut marks) = self.pipe.upload(batch)?;
        let _range = Range::new(c"selfsup::augment");
        let (v1, v2) = augment::training_views(batch, &on)?;
        let kind = self.model.params.first().map_or(Kind::Float, |p| p.tensor.kind());
        let (v1, v2) = (self.layout(v1.f_to_kind(kind)?)?, self.layout(v2.f_to_kind(kind)?)?);
        self.shown[0] = Some(shown(&v1)?);
        self.shown[1] = Some(shown(&v2)?);
        self.pipe.mark(&mut marks)?;
        Ok((v1, v2, on.labels, marks))
    }

    /// Images in the layout the model's convolutions want.
    fn layout(&self, x: Tensor) -> Result<Tensor> {
        if self.channels_last {
            crate::amp::channels_last(&x)
        } else {
            Ok(x)
        }
    }

    /// A training step from the uint8 batch to its row of metrics on its
    /// way to the host, with its stage marks; no host synchronisation.
    fn staged_step(&mut self, batch: &Batch, lr: f64, tau: f64) -> Result<(Tensor, Marks)> {
        let (v1, v2, labels, mut marks) = self.views(batch)?;
        let row = {
            let _range = Range::new(c"selfsup::step");
            let row = self.step_row(&v1, &v2, &labels, lr, tau).map_err(|e| self.replica.explain(e))?;
            self.pipe.to_host(&row)?
        };
        self.pipe.mark(&mut marks)?;
        Ok((row, marks))
    }

    /// One step at learning rate `lr`; `tau` is BYOL's target decay. With
    /// several replicas the metrics (and the sample count) are over all of
    /// them.
    pub fn train_step(&mut self, batch: Batch, lr: f64, tau: f64) -> Result<[f64; METRICS]> {
        let (row, marks) = self.staged_step(&batch, lr, tau)?;
        let values = self.pipe.read_now(row, marks)?;
        let mut out = [0.0; METRICS];
        fill(&mut out, values[..5].to_vec(), batch.n * self.replica.world());
        Ok(out)
    }

    /// A training step whose metrics stay on their way to the host until
    /// `take_rows`: no host synchronisation, so the host can queue the
    /// next step while the GPU still runs this one.
    pub fn train_step_deferred(&mut self, batch: Batch, lr: f64, tau: f64) -> Result<()> {
        let (row, marks) = self.staged_step(&batch, lr, tau)?;
        self.pipe.defer(row, batch.n * self.replica.world(), marks);
        Ok(())
    }

    /// Steps run with deferred metrics and not yet taken.
    pub fn pending_steps(&self) -> usize {
        self.pipe.pending()
    }

    /// The oldest `count` deferred steps' rows (STEP_ROW values each, in
    /// step order); the host waits for the last of them only, so newer
    /// steps can keep the GPU busy meanwhile.
    pub fn take_rows(&mut self, count: usize) -> Result<Vec<[f64; STEP_ROW]>> {
        let rows = self.pipe.take(count)?;
        // Device rows: the five metrics, the non-finite flag, scale, skipped.
        Ok(rows.iter().map(|(v, n)| [v[0], v[1], v[2], v[3], v[4], *n as f64, v[6], v[7], v[5]]).collect())
    }

    /// Forward, backward (gradients averaged over replicas by DDP), update;
    /// the metrics read back to the host (bench.rs).
    #[cfg(feature = "testing")]
    pub(crate) fn replicated_step(&mut self, v1: &Tensor, v2: &Tensor, labels: &Tensor, lr: f64, tau: f64) -> Result<Vec<f64>> {
        let row = self.step_row(v1, v2, labels, lr, tau)?;
        let host = Vec::<f64>::try_from(&row.f_to_device(Device::Cpu)?)?;
        Ok(host[..5].to_vec())
    }

    /// Forward, backward, update; the step's metrics and non-finite flag
    /// (averaged over replicas, so a flag raised on any replica reaches
    /// all of them), loss scale and skip flag as 8 float64s on the device.
    fn step_row(&mut self, v1: &Tensor, v2: &Tensor, labels: &Tensor, lr: f64, tau: f64) -> Result<Tensor> {
        self.replica.before_forward()?;
        let mut m = self.model.train_losses(v1, v2, labels)?;
        self.replica.before_backward(&m.loss)?;
        self.model.backward(&m)?;
        self.model.update(lr, tau)?;
        m.nonfinite = self.model.nonfinite()?;
        let metrics = self.replica.mean_metrics_row(&m)?;
        Ok(Tensor::f_cat(&[metrics, self.model.amp_record()?], 0)?)
    }

    /// Before a pass over the test set: every replica evaluates rank 0's
    /// BatchNorm statistics (DDP's buffer broadcast). All ranks call it.
    pub fn begin_eval(&mut self) -> Result<()> {
        self.replica.sync_buffers()
    }

    /// Sums (or max/min) of host values over replicas, e.g. a pass's
    /// metric sums. All ranks call it.
    pub fn all_reduce(&self, values: &mut [f64], op: crate::dist::ReduceOp) -> Result<()> {
        self.replica.all_reduce_host(values, op)
    }

    pub fn eval_step(&mut self, batch: Batch) -> Result<[f64; METRICS]> {
        let (on, _) = self.pipe.upload(&batch)?;
        let x = self.layout(augment::test_images(&on)?)?;
        self.shown[2] = Some(shown(&x)?);
        let m = self.model.eval_losses(&x, &on.labels)?;
        let mut out = [0.0; METRICS];
        fill(&mut out, m.to_vec()?, batch.n);
        Ok(out)
    }

    /// The kept views `which` (0, 1: the last train batch's views; 2: the
    /// last test batch) as N, C, H, W and uint8 bytes; None before any.
    pub fn shown_views(&self, which: usize) -> Result<Option<([i64; 4], Vec<u8>)>> {
        let Some(t) = self.shown.get(which).context("views: which must be 0, 1 (train) or 2 (test)")? else {
            return Ok(None);
        };
        let dims: [i64; 4] = t.size().try_into().map_err(|_| anyhow::anyhow!("kept views are not N,C,H,W"))?;
        let host = t.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        Ok(Some((dims, Vec::<u8>::try_from(&host)?)))
    }

    /// Every parameter and buffer, by name, to a safetensors file.
    pub fn save_weights(&self, path: &PathBuf) -> Result<()> {
        // Plain contiguous copies: safetensors has no strides (channels_last).
        let mut vars: Vec<(String, Tensor)> = self.model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let _g = tch::no_grad_guard();
        let vars = vars.into_iter().map(|(n, t)| Ok((n, t.f_detach()?.f_contiguous()?))).collect::<Result<Vec<_>>>()?;
        Tensor::write_safetensors(&vars, path).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn load_weights(&mut self, path: &PathBuf) -> Result<()> {
        if !path.exists() {
            bail!("no such file: {}", path.display());
        }
        self.model.vs.load(path).with_context(|| format!("cannot load weights from {}", path.display()))
    }

    /// Tests of the non-finite stop: variable `name` (the first parameter
    /// when empty) gets a NaN.
    #[cfg(feature = "testing")]
    pub fn debug_poison(&self, name: &str) -> Result<()> {
        self.model.poison(name)
    }

    /// For parity tests: loss and gradients for given (already augmented)
    /// views. `input` holds view1, view2 (float NCHW) and labels (int64),
    /// and optionally the scalars lr and tau: then the step's update
    /// follows (optimizer, momentum target); without them, none.
    /// `output` receives loss, ssl_loss, linear_loss and grad.<name> for
    /// every parameter.
    #[cfg(feature = "testing")]
    pub fn debug_gradients(&mut self, input: &std::path::Path, output: &std::path::Path) -> Result<()> {
        let named = Tensor::read_safetensors(input).with_context(|| format!("cannot read {}", input.display()))?;
        let device = self.model.device();
        let get = |k: &str| -> Result<Tensor> {
            let t = named.iter().find(|(n, _)| n == k).with_context(|| format!("{} has no tensor {k:?}", input.display()))?;
            Ok(t.1.f_to_device(device)?)
        };
        let (v1, v2, labels) = (self.layout(get("view1")?)?, self.layout(get("view2")?)?, get("labels")?.f_to_kind(Kind::Int64)?);
        let update = match named.iter().any(|(n, _)| n == "lr") {
            true => Some((get("lr")?.f_double_value(&[])?, get("tau")?.f_double_value(&[])?)),
            false => None,
        };
        let m = self.model.train_losses(&v1, &v2, &labels)?;
        self.model.backward(&m)?;
        let mut out = vec![
            ("loss".to_string(), m.loss.f_detach()?),
            ("ssl_loss".to_string(), m.ssl_loss.f_detach()?),
            ("linear_loss".to_string(), m.linear_loss.f_detach()?),
        ];
        for p in &self.model.params {
            out.push((format!("grad.{}", p.name), p.tensor.grad().f_contiguous()?));
        }
        Tensor::write_safetensors(&out, output).with_context(|| format!("cannot write {}", output.display()))?;
        if let Some((lr, tau)) = update {
            self.model.update(lr, tau)?;
        }
        crate::optim::zero_grad(&mut self.model.params)
    }
}

/// The first SHOWN_VIEWS images of float views in [0, 1], as uint8.
fn shown(views: &Tensor) -> Result<Tensor> {
    let k = views.size()[0].min(SHOWN_VIEWS);
    let x = views.f_narrow(0, 0, k)?.f_detach()?.f_mul_scalar(255.0)?.f_round()?;
    Ok(x.f_clamp(0.0, 255.0)?.f_to_kind(Kind::Uint8)?)
}
