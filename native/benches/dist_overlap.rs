//! How much of DDP's gradient all-reduce hides behind the backward pass:
//! one replica of a SimCLR training step on c10d's Reducer (Gloo on CPU,
//! NCCL on CUDA). Run one process per rank (bench/dist/bench.py does):
//!
//!   cargo bench --bench dist_overlap -- <rank> <world> <port> [key=value …]
//!
//! keys: steps (12), batch per replica (32), size px (64), arch (resnet18),
//! threads (1), device (cpu | cuda:<i>). Each step times, with a barrier
//! before each phase:
//! - `local`: forward + backward without communication (hooks disarmed);
//! - `ddp`: forward + backward through DDP (all-reduces start as buckets
//!   fill, and backward returns once the last one finished);
//! - `comm`: the same buckets all-reduced alone, one after the other.
//!
//! Hidden communication = (local + comm − ddp) / comm. Prints one JSON
//! line of medians (ms) over the steps after the first two (the first
//! uses one bucket, the second rebuilds them).
use selfsup_native::dist::{DistConfig, ReduceOp, Replica};
use selfsup_native::model::{Model, ModelConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], key: &str, default: T) -> T {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok()))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let rank: usize = args.first().and_then(|a| a.parse().ok()).expect("usage: <rank> <world> <port> [key=value …]");
    let world: usize = args[1].parse()?;
    let port: u16 = args[2].parse()?;
    let steps: usize = arg(&args, "steps", 12);
    let batch: i64 = arg(&args, "batch", 32);
    let size: i64 = arg(&args, "size", 64);
    let arch: String = arg(&args, "arch", "resnet18".to_string());
    let threads: i32 = arg(&args, "threads", 1);
    let device = match arg(&args, "device", "cpu".to_string()).as_str() {
        "cpu" => Device::Cpu,
        d => Device::Cuda(d.trim_start_matches("cuda:").parse()?),
    };
    tch::set_num_threads(threads);
    let features = if arch == "resnet18" || arch == "resnet34" { 512 } else { 2048 };
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "method": "simclr", "arch": arch, "representationSize": features, "headLatentSize": 1024,
        "baseWidth": 64, "nceSize": 128, "nceTemperature": 0.1, "precision": "fp32", "numClasses": 10, "optimizer": "momentum", "weightDecay": 0.0, "seed": 0
    }))?;
    let dist = DistConfig { world_size: world, rank, port, timeout_secs: 300.0, always_group: true, ..Default::default() };
    let mut replica = Replica::start(&dist, device)?;
    let mut model = Model::new(cfg, device)?;
    replica.attach(&model)?;
    let gen = |k: f64| (Tensor::arange(batch * 3 * size * size, (Kind::Float, device)) * (0.01 + k + rank as f64)).sin().view([batch, 3, size, size]);
    let (v1, v2) = (gen(0.1), gen(0.2));
    let labels = Tensor::arange(batch, (Kind::Int64, device)).remainder(10);
    let sync = |replica: &Replica| -> anyhow::Result<()> {
        if device != Device::Cpu {
            tch::Cuda::synchronize(match device {
                Device::Cuda(i) => i as i64,
                _ => 0,
            });
        }
        let mut one = [1.0];
        replica.all_reduce_host(&mut one, ReduceOp::Sum)
    };
    let (mut local, mut ddp, mut comm) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..steps {
        // Forward + backward, hooks disarmed: the compute alone.
        sync(&replica)?;
        let t = Instant::now();
        let m = model.train_losses(&v1, &v2, &labels)?;
        model.backward(&m)?;
        sync(&replica)?;
        let t_local = t.elapsed().as_secs_f64() * 1e3;
        // The same through DDP.
        replica.before_forward()?;
        sync(&replica)?;
        let t = Instant::now();
        let m = model.train_losses(&v1, &v2, &labels)?;
        replica.before_backward(&m.loss)?;
        model.backward(&m)?;
        sync(&replica)?;
        let t_ddp = t.elapsed().as_secs_f64() * 1e3;
        // The Reducer's buckets, all-reduced alone.
        let buckets: Vec<Tensor> = replica.buckets().iter().map(|b| Tensor::zeros([b / 4], (Kind::Float, device))).collect();
        sync(&replica)?;
        let t = Instant::now();
        for b in &buckets {
            replica.all_reduce_tensor(b, ReduceOp::Sum)?;
        }
        sync(&replica)?;
        let t_comm = t.elapsed().as_secs_f64() * 1e3;
        model.update(0.0, 1.0)?;
        if step >= 2 {
            local.push(t_local);
            ddp.push(t_ddp);
            comm.push(t_comm);
        }
    }
    let (l, d, c) = (median(local), median(ddp), median(comm));
    let bucket_mb: Vec<f64> = replica.buckets().iter().map(|b| (*b as f64 / (1 << 20) as f64 * 10.0).round() / 10.0).collect();
    if rank == 0 {
        println!(
            "{}",
            serde_json::json!({
                "impl": "selfsup", "world": world, "batch": batch, "size": size, "arch": arch, "threads": threads,
                "local_ms": l, "ddp_ms": d, "comm_ms": c, "hidden": ((l + c - d) / c).clamp(-1.0, 1.0), "buckets_mb": bucket_mb,
            })
        );
    }
    Ok(())
}
