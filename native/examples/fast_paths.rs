//! CPU timings behind the step's defaults (docs/DESIGN.md, "Precision and
//! fast paths"): the multi-tensor optimizer update against the former
//! per-tensor one, and a whole training step in fp32/bf16 with contiguous
//! or channels_last layout. Configurations are interleaved round by round
//! and the median reported, since the machine may be shared.
//!
//! cargo run --release --example fast_paths [-- <rounds> <batch> <image px>]
use selfsup_native::amp::{channels_last, make_channels_last};
use selfsup_native::model::{Model, ModelConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn config(arch: &str, features: i64, precision: &str) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "method": "simclr", "arch": arch, "representationSize": features, "headLatentSize": 1024,
        "baseWidth": 64, "nceSize": 128, "nceTemperature": 0.1, "numClasses": 10, "optimizer": "lars_momentum", "weightDecay": 1e-6, "seed": 0, "precision": precision,
    }))
    .expect("config")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let rounds = args.first().copied().unwrap_or(5);
    let batch = args.get(1).copied().unwrap_or(32) as i64;
    let px = args.get(2).copied().unwrap_or(64) as i64;
    println!("threads {}, {rounds} rounds", tch::get_num_threads());

    // 1. The optimizer update alone on ResNet-50's parameters.
    for opt in ["lars_momentum", "momentum", "adam"] {
        let mut cfg = config("resnet50", 2048, "fp32");
        cfg.optimizer = opt.into();
        let mut m = Model::new(cfg, Device::Cpu)?;
        for p in &m.params {
            let _ = p.tensor.f_mul(&Tensor::f_randn_like(&p.tensor)?)?.f_sum(Kind::Float)?.f_backward();
        }
        let (mut multi, mut single) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            m.opt.step(&mut m.params, 0.1)?;
            multi.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            m.opt.step_per_tensor(&mut m.params, 0.1)?;
            single.push(t.elapsed().as_secs_f64());
        }
        println!(
            "optimizer {opt:14} on resnet50 ({} tensors): multi-tensor {:.1} ms, per-tensor {:.1} ms",
            m.params.len(),
            median(multi) * 1e3,
            median(single) * 1e3
        );
    }

    // 2. Whole steps of SimCLR ResNet-18: forward, backward, update.
    let cases = [("fp32", false), ("fp32", true), ("bf16", false), ("bf16", true)];
    let mut models: Vec<Model> = Vec::new();
    for (precision, cl) in cases {
        let m = Model::new(config("resnet18", 512, precision), Device::Cpu)?;
        if cl {
            for (_, v) in m.vs.variables() {
                make_channels_last(&v)?;
            }
        }
        models.push(m);
    }
    let v1 = Tensor::f_rand([batch, 3, px, px], (Kind::Float, Device::Cpu))?;
    let v2 = v1.f_flip([3])?;
    let labels = Tensor::f_zeros([batch], (Kind::Int64, Device::Cpu))?;
    let mut times = vec![Vec::new(); cases.len()];
    for round in 0..rounds + 1 {
        for (i, ((_, cl), m)) in cases.iter().zip(models.iter_mut()).enumerate() {
            let (a, b) = if *cl { (channels_last(&v1)?, channels_last(&v2)?) } else { (v1.shallow_clone(), v2.shallow_clone()) };
            let t = Instant::now();
            let metrics = m.train_losses(&a, &b, &labels)?;
            m.backward(&metrics)?;
            m.update(0.1, 0.99)?;
            let _ = metrics.loss.f_double_value(&[])?;
            if round > 0 {
                times[i].push(t.elapsed().as_secs_f64()); // round 0 warms up
            }
        }
    }
    for ((precision, cl), t) in cases.iter().zip(times) {
        let layout = if *cl { "channels_last" } else { "contiguous" };
        println!("step resnet18 batch {batch} {px}px {precision} {layout:13}: {:.3} s", median(t));
    }
    Ok(())
}
