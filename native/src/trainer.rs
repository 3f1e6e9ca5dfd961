//! A trainer: the model and optimizer living on their owning thread, fed
//! host batches, returning metrics.
use crate::augment;
use crate::data::loader::Batch;
use crate::simclr::{images_to_device, labels_to_device, SimClr, SimClrConfig};
use crate::thread::Owner;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerConfig {
    #[serde(default = "default_method")]
    pub method: String,
    /// "cpu" or "cuda" (device index from the local rank later).
    #[serde(default = "default_device")]
    pub device: String,
    /// Intra-op threads; 0 keeps libtorch's default (all cores).
    #[serde(default)]
    pub threads: i32,
    #[serde(flatten)]
    pub simclr: SimClrConfig,
}

fn default_method() -> String {
    "simclr".into()
}
fn default_device() -> String {
    "cpu".into()
}

/// Number of f64 slots a step fills: loss, ssl loss, linear loss, top-1,
/// top-5, samples in the batch.
pub const METRICS: usize = 6;

pub struct State {
    model: SimClr,
}

fn device_of(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => bail!("CUDA was asked for but libtorch sees no GPU; run with --no-cuda"),
        other => bail!("unknown device {other:?}; use cpu or cuda"),
    }
}

pub fn spawn(cfg: TrainerConfig) -> Result<Owner<State>> {
    if cfg.method != "simclr" {
        bail!("--method {} is not available yet; use simclr", cfg.method);
    }
    Owner::spawn("selfsup-trainer", move || {
        if cfg.threads > 0 {
            tch::set_num_threads(cfg.threads);
        }
        let device = device_of(&cfg.device)?;
        Ok(State { model: SimClr::new(cfg.simclr, device)? })
    })
}

fn fill(out: &mut [f64; METRICS], values: Vec<f64>, n: usize) {
    out[..values.len()].copy_from_slice(&values);
    out[METRICS - 1] = n as f64;
}

impl State {
    fn views(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        if batch.views.len() != 2 {
            bail!("a training step needs a batch with two augmented views");
        }
        let dev = self.model.device();
        let mut out = Vec::new();
        for (bytes, params) in batch.views.iter().zip(&batch.params) {
            let x = images_to_device(bytes, batch.n, batch.size, dev)?;
            let p = Tensor::from_slice(params).f_view([batch.n as i64, augment::NPARAMS as i64])?.f_to_device(dev)?;
            out.push(augment::apply(&x, &p)?);
        }
        let v2 = out.pop().context("missing view")?;
        Ok((out.pop().context("missing view")?, v2))
    }

    pub fn train_step(&mut self, batch: Batch, lr: f64) -> Result<[f64; METRICS]> {
        let (v1, v2) = self.views(&batch)?;
        let labels = labels_to_device(&batch.labels, self.model.device())?;
        let m = self.model.train_losses(&v1, &v2, &labels)?;
        self.model.apply_gradients(&m, lr)?;
        let mut out = [0.0; METRICS];
        fill(&mut out, m.to_vec()?, batch.n);
        Ok(out)
    }

    pub fn eval_step(&mut self, batch: Batch) -> Result<[f64; METRICS]> {
        let dev = self.model.device();
        let x = images_to_device(&batch.views[0], batch.n, batch.size, dev)?.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
        let labels = labels_to_device(&batch.labels, dev)?;
        let m = self.model.eval_losses(&x, &labels)?;
        let mut out = [0.0; METRICS];
        fill(&mut out, m.to_vec()?, batch.n);
        Ok(out)
    }

    /// Every parameter and buffer, by name, to a safetensors file.
    pub fn save_weights(&self, path: &PathBuf) -> Result<()> {
        self.model.vs.save(path).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn load_weights(&mut self, path: &PathBuf) -> Result<()> {
        if !path.exists() {
            bail!("no such file: {}", path.display());
        }
        self.model.vs.load(path).with_context(|| format!("cannot load weights from {}", path.display()))
    }

    /// For parity tests: loss and gradients for given (already augmented)
    /// views, without an update. `input` holds view1, view2 (float NCHW)
    /// and labels (int64); `output` receives loss, ssl_loss, linear_loss
    /// and grad.<name> for every parameter.
    pub fn debug_gradients(&mut self, input: &PathBuf, output: &PathBuf) -> Result<()> {
        let named = Tensor::read_safetensors(input).with_context(|| format!("cannot read {}", input.display()))?;
        let get = |k: &str| -> Result<Tensor> {
            let t = named.iter().find(|(n, _)| n == k).with_context(|| format!("{} has no tensor {k:?}", input.display()))?;
            Ok(t.1.f_to_device(self.model.device())?)
        };
        let (v1, v2, labels) = (get("view1")?, get("view2")?, get("labels")?.f_to_kind(Kind::Int64)?);
        let m = self.model.train_losses(&v1, &v2, &labels)?;
        crate::optim::zero_grad(&mut self.model.params)?;
        m.loss.f_backward()?;
        let mut out = vec![
            ("loss".to_string(), m.loss.f_detach()?),
            ("ssl_loss".to_string(), m.ssl_loss.f_detach()?),
            ("linear_loss".to_string(), m.linear_loss.f_detach()?),
        ];
        for p in &self.model.params {
            out.push((format!("grad.{}", p.name), p.tensor.grad().f_contiguous()?));
        }
        Tensor::write_safetensors(&out, output).with_context(|| format!("cannot write {}", output.display()))?;
        crate::optim::zero_grad(&mut self.model.params)
    }
}
