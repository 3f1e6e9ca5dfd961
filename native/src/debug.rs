//! Entry points for the parity tests against PyTorch: each reads tensors
//! from a safetensors file, runs one piece of selfsup on them, and writes
//! the results to another, so a Python script can compare.
use crate::losses::{barlow_twins, byol_loss, moco_v3, nt_xent, Gathered, LossNorm};
use crate::nn::init::Init;
use crate::nn::resnet::ResNet;
use crate::optim::{self, Param};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path).with_context(|| format!("cannot read {}", path.display()))?.into_iter().collect())
}

fn write(path: &Path, out: Vec<(String, Tensor)>) -> Result<()> {
    let out = out.into_iter().map(|(n, t)| Ok((n, t.f_detach()?.f_contiguous()?))).collect::<Result<Vec<_>>>()?;
    Tensor::write_safetensors(&out, path).with_context(|| format!("cannot write {}", path.display()))
}

fn get<'a>(m: &'a BTreeMap<String, Tensor>, k: &str) -> Result<&'a Tensor> {
    m.get(k).with_context(|| format!("input has no tensor {k:?}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", tag = "loss")]
enum LossSpec {
    /// z1, z2 (and the gathered z1_all, z2_all with `offset` when present).
    NtXent { temperature: f64, offset: Option<i64> },
    /// p1, p2, z1t, z2t.
    Byol { norm: String },
    /// q1, q2, k1, k2 (and the gathered keys k1_all, k2_all with `offset` when present).
    MocoV3 { temperature: f64, offset: Option<i64> },
    /// z1, z2: the whole batch.
    BarlowTwins { lambd: f64 },
}

/// A loss and its gradients with respect to every input.
pub fn loss(spec: &str, input: &Path, output: &Path) -> Result<()> {
    let spec: LossSpec = serde_json::from_str(spec).context("invalid loss spec")?;
    let t = read(input)?;
    let leaf = |k: &str| -> Result<Tensor> { Ok(get(&t, k)?.f_detach_copy()?.set_requires_grad(true)) };
    let (value, inputs) = match spec {
        LossSpec::NtXent { temperature, offset } => {
            let (z1, z2) = (leaf("z1")?, leaf("z2")?);
            match offset {
                Some(offset) => {
                    let (a1, a2) = (leaf("z1_all")?, leaf("z2_all")?);
                    let g = Gathered { z1_all: &a1, z2_all: &a2, offset };
                    (nt_xent(&z1, &z2, Some(g), temperature)?, vec![("z1", z1), ("z2", z2), ("z1_all", a1), ("z2_all", a2)])
                }
                None => (nt_xent(&z1, &z2, None, temperature)?, vec![("z1", z1), ("z2", z2)]),
            }
        }
        LossSpec::Byol { norm } => {
            let norm = match norm.as_str() {
                "paper" => LossNorm::Paper,
                "reference" => LossNorm::Reference,
                _ => bail!("unknown norm {norm}"),
            };
            let (p1, p2, z1, z2) = (leaf("p1")?, leaf("p2")?, leaf("z1t")?, leaf("z2t")?);
            (byol_loss(&p1, &p2, &z1, &z2, norm)?, vec![("p1", p1), ("p2", p2), ("z1t", z1), ("z2t", z2)])
        }
        LossSpec::MocoV3 { temperature, offset } => {
            let (q1, q2, k1, k2) = (leaf("q1")?, leaf("q2")?, leaf("k1")?, leaf("k2")?);
            let mut inputs = vec![("q1", q1), ("q2", q2), ("k1", k1), ("k2", k2)];
            let (q1, q2, k1, k2) = (&inputs[0].1, &inputs[1].1, &inputs[2].1, &inputs[3].1);
            let value = match offset {
                Some(offset) => {
                    let (a1, a2) = (leaf("k1_all")?, leaf("k2_all")?);
                    let v = moco_v3(q1, q2, k1, k2, Some(Gathered { z1_all: &a1, z2_all: &a2, offset }), temperature)?;
                    inputs.extend([("k1_all", a1), ("k2_all", a2)]);
                    v
                }
                None => moco_v3(q1, q2, k1, k2, None, temperature)?,
            };
            (value, inputs)
        }
        LossSpec::BarlowTwins { lambd } => {
            let (z1, z2) = (leaf("z1")?, leaf("z2")?);
            (barlow_twins(&z1, &z2, lambd)?, vec![("z1", z1), ("z2", z2)])
        }
    };
    value.f_backward()?;
    let mut out = vec![("loss".to_string(), value)];
    for (name, x) in inputs {
        let g = x.grad();
        out.push((format!("grad.{name}"), if g.defined() { g } else { x.f_zeros_like()? }));
    }
    write(output, out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OptimizerSpec {
    optimizer: String,
    weight_decay: f64,
    lr: f64,
    steps: usize,
}

/// `steps` updates of the tensors `param.<name>` with gradients
/// `grad<k>.<name>`; writes the parameters after each step as
/// `step<k>.<name>`.
pub fn optimizer(spec: &str, input: &Path, output: &Path) -> Result<()> {
    let spec: OptimizerSpec = serde_json::from_str(spec).context("invalid optimizer spec")?;
    let t = read(input)?;
    let mut opt = optim::parse(&spec.optimizer, spec.weight_decay)?;
    let mut params: Vec<Param> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v)))
        .map(|(n, v)| Ok(Param::new(n, v.f_detach_copy()?.set_requires_grad(true))))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for k in 0..spec.steps {
        for p in &params {
            let mut g = p.tensor.grad();
            let new = get(&t, &format!("grad{k}.{}", p.name))?;
            if g.defined() {
                g.f_copy_(new)?;
            } else {
                // Give the leaf a gradient: backward of Σ w·g is g.
                (&p.tensor * new).f_sum(tch::Kind::Float)?.f_backward()?;
            }
        }
        opt.step(&mut params, spec.lr)?;
        for p in &params {
            out.push((format!("step{k}.{}", p.name), p.tensor.f_detach_copy()?));
        }
    }
    write(output, out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackboneSpec {
    arch: String,
    #[serde(default)]
    small_stem: bool,
    #[serde(default)]
    seed: u64,
}

/// Builds a backbone, writes its initial state (`state.<name>`), its eval
/// features, its train-mode features, and its BN buffers after that
/// forward (`after.<name>`: running statistics updated), for `images`.
pub fn backbone(spec: &str, input: &Path, output: &Path) -> Result<()> {
    let spec: BackboneSpec = serde_json::from_str(spec).context("invalid backbone spec")?;
    let images = get(&read(input)?, "images")?.shallow_clone();
    let vs = VarStore::new(Device::Cpu);
    let mut init = Init::new(spec.seed, Device::Cpu);
    let net = ResNet::new(&vs.root(), &mut init, &spec.arch, spec.small_stem)?;
    let state = |prefix: &str, buffers_only: bool| -> Result<Vec<(String, Tensor)>> {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| !(buffers_only && t.requires_grad()))
            .map(|(n, t)| Ok((format!("{prefix}.{n}"), t.f_detach_copy()?)))
            .collect::<Result<_>>()?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    };
    let mut out = state("state", false)?;
    let _g = tch::no_grad_guard();
    out.push(("features.eval".into(), net.forward(&images, false)?));
    out.push(("features.train".into(), net.forward(&images, true)?));
    out.extend(state("after", true)?);
    write(output, out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AmpSpec {
    device: String,
    precision: String,
}

/// Checks autocast's dtype policy on a small model (both methods) for a
/// device ("cpu", "cuda") and precision ("fp16", "bf16"); an error names
/// the first tensor of the wrong type. Writes the step's loss to `output`.
pub fn amp_policy(spec: &str, output: &Path) -> Result<()> {
    let spec: AmpSpec = serde_json::from_str(spec).context("invalid amp spec")?;
    let device = match spec.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        other => bail!("amp policy: no device {other:?} here"),
    };
    let loss = check_amp_policy(device, &spec.precision)?;
    write(output, vec![("loss".into(), loss)])
}

/// What autocast must do inside a model for `precision`: convolutions and
/// linear layers in the reduced type, BatchNorm running statistics,
/// losses, parameters, gradients and optimizer state in fp32, evaluation
/// features in fp32, a loss scaler for fp16 only. Returns the last loss.
pub fn check_amp_policy(device: Device, precision: &str) -> Result<Tensor> {
    use crate::amp::{Autocast, Precision};
    use crate::model::{Model, ModelConfig};
    use tch::Kind;
    let low = Precision::parse(precision)?.autocast_kind().context("the dtype policy is about fp16 or bf16")?;
    let want = |what: String, got: Kind, want: Kind| -> Result<()> {
        if got != want {
            bail!("{precision} on {device:?}: {what} is {got:?}, expected {want:?}");
        }
        Ok(())
    };
    let mut last = Tensor::f_zeros([], (Kind::Float, Device::Cpu))?;
    for method in ["simclr", "byol", "mocov3", "barlowtwins"] {
        let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
            "method": method, "arch": "resnet18", "representationSize": 512, "headLatentSize": 32,
            "baseWidth": 64, "nceSize": 16, "nceTemperature": 0.1, "projectionSize": 16, "byolLoss": "paper",
            "projectorWidths": "32-32-16", "offDiagonalWeight": 0.005, "numClasses": 4, "optimizer": "lars_momentum",
            "weightDecay": 1e-4, "seed": 1, "precision": precision,
        }))?;
        let mut m = Model::new(cfg, device)?;
        let x = Tensor::f_rand([4, 3, 16, 16], (Kind::Float, device))?;
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]).f_to_device(device)?;
        {
            let _ac = Autocast::enter(device, Some(low))?;
            let backbone = m.method.backbone();
            want(format!("{method}'s backbone output"), backbone.forward(&x, true)?.kind(), low)?;
            let vars = m.vs.variables();
            for v in ["backbone.bn1.running_mean", "backbone.bn1.running_var", "backbone.layer4.1.bn2.running_var"] {
                want(v.into(), vars[v].kind(), Kind::Float)?;
            }
        }
        let metrics = m.train_losses(&x, &x.f_flip([3])?, &labels)?;
        for (what, t) in [("the loss", &metrics.loss), ("the SSL loss", &metrics.ssl_loss), ("the classifier's loss", &metrics.linear_loss)] {
            want(format!("{method}: {what}"), t.kind(), Kind::Float)?;
            if !t.f_double_value(&[])?.is_finite() {
                bail!("{precision} on {device:?}: {method}: {what} is not finite");
            }
        }
        m.backward(&metrics)?;
        m.update(0.1, 0.99)?;
        for p in &m.params {
            want(format!("parameter {}", p.name), p.tensor.kind(), Kind::Float)?;
            want(format!("the gradient of {}", p.name), p.tensor.grad().kind(), Kind::Float)?;
            for s in &p.state {
                want(format!("optimizer state of {}", p.name), s.kind(), Kind::Float)?;
            }
        }
        want(format!("{method}: evaluation features"), m.features(&x, "online")?.kind(), Kind::Float)?;
        if m.scaler.is_some() != (precision == "fp16") {
            bail!("{precision}: a loss scaler is for fp16 only");
        }
        last = metrics.loss.f_detach()?.f_to_device(Device::Cpu)?;
    }
    Ok(last)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TraceSpec {
    method: String,
    precision: String,
    /// "cpu" (default) or "cuda".
    #[serde(default)]
    device: Option<String>,
}

/// The dtype of every layer's output in one training forward (loss and
/// online classifier included) of a small model under `precision`'s
/// autocast on the CPU or CUDA, in execution order, as JSON
/// `{"trace": [[kind, dtype], …]}` (dtype as torch names it, e.g.
/// "bfloat16"): tests compare it with what torch.autocast gives for the
/// same layers (tests/python/amp_trace.py).
pub fn amp_trace(spec: &str, _input: &Path, output: &Path) -> Result<()> {
    use crate::model::{Model, ModelConfig};
    use tch::Kind;
    let spec: TraceSpec = serde_json::from_str(spec).context("invalid trace spec")?;
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "method": spec.method, "arch": "resnet18", "representationSize": 512, "headLatentSize": 32,
        "baseWidth": 64, "nceSize": 16, "nceTemperature": 0.1, "projectionSize": 16, "byolLoss": "paper",
        "projectorWidths": "32-32-16", "offDiagonalWeight": 0.005, "numClasses": 4, "optimizer": "momentum",
        "weightDecay": 1e-4, "seed": 1, "precision": spec.precision,
    }))?;
    let device = match spec.device.as_deref().unwrap_or("cpu") {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        other => bail!("amp trace: no device {other:?} here"),
    };
    let mut m = Model::new(cfg, device)?;
    let x = Tensor::f_rand([4, 3, 16, 16], (Kind::Float, device))?;
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3]).f_to_device(device)?;
    let (_, trace) = crate::amp::traced(|| m.train_losses(&x, &x.f_flip([3])?, &labels))?;
    let name = |k: Kind| match k {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Float => "float32",
        Kind::Double => "float64",
        _ => "other",
    };
    let rows: Vec<(&str, &str)> = trace.into_iter().map(|(what, k)| (what, name(k))).collect();
    std::fs::write(output, serde_json::json!({ "trace": rows }).to_string()).with_context(|| format!("cannot write {}", output.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuardSpec {
    /// A /proc/cpuinfo text; this machine's when absent.
    cpuinfo: Option<String>,
    /// ATen's CPU capability; libtorch's own when absent.
    capability: Option<String>,
    #[serde(default)]
    allowed: bool,
}

/// The CPU bf16 guard's decision for the given (or this machine's) CPU
/// flags and kernel level, as JSON {amx, capability, refusal}.
pub fn cpu_bf16_guard(spec: &str, output: &Path) -> Result<()> {
    let spec: GuardSpec = serde_json::from_str(spec).context("invalid guard spec")?;
    let cpuinfo = spec.cpuinfo.unwrap_or_else(|| std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let capability = spec.capability.unwrap_or_else(crate::amp::cpu_capability);
    let amx = crate::amp::amx_flags(&cpuinfo);
    let refusal = crate::amp::cpu_bf16_refusal(&amx, &capability, spec.allowed);
    let out = serde_json::json!({ "amx": amx, "capability": capability, "refusal": refusal });
    std::fs::write(output, out.to_string()).with_context(|| format!("cannot write {}", output.display()))
}
