//! DDP on c10d's Reducer, two Gloo ranks as two threads: rank 0's weights
//! reach every rank, gradients come out averaged, and the buckets are
//! rebuilt after the first step within DDP's size caps.
use selfsup_native::dist::{DistConfig, ReduceOp, Replica};
use selfsup_native::model::{Model, ModelConfig};
use std::net::TcpListener;
use tch::{Device, Kind, Tensor};

fn model_config(seed: u64) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "method": "simclr", "arch": "resnet18", "smallStem": true, "representationSize": 512,
        "baseWidth": 64, "headLatentSize": 64, "nceSize": 16, "nceTemperature": 0.1, "numClasses": 3, "precision": "fp32", "optimizer": "momentum",
        "weightDecay": 0.0, "seed": seed
    }))
    .unwrap()
}

/// Rank `rank`'s batch of 4 images at 16 px.
fn batch(rank: usize) -> (Tensor, Tensor, Tensor) {
    let g = |k: f64| (Tensor::arange(4 * 3 * 16 * 16, (Kind::Float, Device::Cpu)) * (0.37 + k)).sin().view([4, 3, 16, 16]);
    let r = rank as f64;
    (g(r), g(r + 0.5), Tensor::from_slice(&[0i64, 1, 2, rank as i64]))
}

fn grads(m: &Model) -> Vec<Tensor> {
    m.params.iter().map(|p| p.tensor.grad().copy()).collect()
}

#[test]
fn ddp_broadcasts_rank_0_and_averages_gradients_in_rebuilt_buckets() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                let cfg = DistConfig { world_size: 2, rank, port, timeout_secs: 60.0, bucket_cap_mb: 4.0, ..Default::default() };
                let mut replica = Replica::start(&cfg, Device::Cpu).unwrap();
                // Different seeds: only the broadcast makes the ranks agree.
                let mut model = Model::new(model_config(rank as u64), Device::Cpu).unwrap();
                let conv1 = |m: &Model| m.params.iter().find(|p| p.name == "backbone.conv1.weight").unwrap().tensor.copy();
                let before = conv1(&model);
                replica.attach(&model).unwrap();
                let w = conv1(&model);
                let sum = w.copy();
                replica_sum(&replica, &sum);
                let same_weights = sum.allclose(&(&w * 2.0), 0.0, 0.0, false);
                let moved = !before.equal(&w);

                let (v1, v2, labels) = batch(rank);
                // Local gradients (the hooks are not armed), summed by hand.
                let m = model.train_losses(&v1, &v2, &labels).unwrap();
                model.backward(&m).unwrap();
                let local = grads(&model);
                for g in &local {
                    replica_sum(&replica, g);
                }
                // The same step through DDP.
                replica.before_forward().unwrap();
                let m = model.train_losses(&v1, &v2, &labels).unwrap();
                replica.before_backward(&m.loss).unwrap();
                model.backward(&m).unwrap();
                let averaged = grads(&model);
                let worst = local
                    .iter()
                    .zip(&averaged)
                    .map(|(s, a)| (s / 2.0 - a).abs().max().double_value(&[]) / (s / 2.0).abs().max().double_value(&[]).max(1e-12))
                    .fold(0.0f64, f64::max);
                let first_buckets = replica.buckets();
                // A second step rebuilds the buckets in gradient-arrival order.
                replica.before_forward().unwrap();
                let m = model.train_losses(&v1, &v2, &labels).unwrap();
                replica.before_backward(&m.loss).unwrap();
                model.backward(&m).unwrap();
                let total: i64 = model.params.iter().map(|p| p.tensor.numel() as i64 * 4).sum();
                let largest: i64 = model.params.iter().map(|p| p.tensor.numel() as i64 * 4).max().unwrap();
                (same_weights, moved, worst, first_buckets, replica.buckets(), total, largest, rank)
            })
        })
        .collect();
    for h in ranks {
        let (same_weights, moved, worst, first, rebuilt, total, largest, rank) = h.join().unwrap();
        assert!(same_weights, "rank {rank} holds rank 0's weights");
        assert_eq!(moved, rank == 1, "only rank 1's weights were replaced");
        assert!(worst < 1e-5, "rank {rank}: DDP gradient differs from the mean of local gradients by {worst} (relative)");
        assert_eq!(first, vec![total], "one bucket for the first step, as DDP without unused parameters");
        assert!(rebuilt.len() > 1, "rebuilt into several buckets: {rebuilt:?}");
        assert_eq!(rebuilt.iter().sum::<i64>(), total);
        // A bucket closes once it reaches its cap, so it may pass it by one tensor.
        assert!(rebuilt[0] < (1 << 20) + largest, "first bucket: 1 MiB cap: {rebuilt:?}");
        assert!(rebuilt.iter().all(|&b| b < (4 << 20) + largest), "buckets: 4 MiB cap: {rebuilt:?}");
    }
}

fn replica_sum(replica: &Replica, t: &Tensor) {
    let mut v = Vec::<f64>::try_from(&t.to_kind(Kind::Double).view([-1])).unwrap();
    replica.all_reduce_host(&mut v, ReduceOp::Sum).unwrap();
    let _ = t.shallow_clone().copy_(&Tensor::from_slice(&v).view(&t.size()[..]).to_kind(t.kind()));
}

/// A process group of world size 1 trains a few steps through DDP on the
/// CPU (Gloo): the same path as on a GPU, whatever this machine has.
#[test]
fn a_group_of_world_size_one_trains_a_few_steps_on_gloo() {
    world_of_one_trains(Device::Cpu);
}

/// The same on CUDA (NCCL): the project's NCCL smoke test.
#[test]
#[ignore = "needs a GPU; run where libtorch sees one (scripts/test-all.sh does)"]
fn a_group_of_world_size_one_trains_a_few_steps_on_nccl_with_a_gpu() {
    assert!(tch::Cuda::is_available(), "the NCCL smoke test needs a GPU that libtorch sees");
    world_of_one_trains(Device::Cuda(0));
}

fn world_of_one_trains(device: Device) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let cfg = DistConfig { world_size: 1, rank: 0, port, timeout_secs: 60.0, always_group: true, ..Default::default() };
        let mut replica = Replica::start(&cfg, device).unwrap();
        let mut model = Model::new(model_config(0), device).unwrap();
        replica.attach(&model).unwrap();
        let (v1, v2, labels) = batch(0);
        let (v1, v2, labels) = (v1.to_device(device), v2.to_device(device), labels.to_device(device));
        let w0 = model.params.iter().find(|p| p.name == "backbone.conv1.weight").unwrap().tensor.copy();
        let mut losses = Vec::new();
        for _ in 0..3 {
            replica.before_forward().unwrap();
            let m = model.train_losses(&v1, &v2, &labels).unwrap();
            replica.before_backward(&m.loss).unwrap();
            model.backward(&m).unwrap();
            model.update(0.05, 1.0).unwrap();
            losses.push(replica.mean_metrics(&m).unwrap()[0]);
        }
        let w1 = model.params.iter().find(|p| p.name == "backbone.conv1.weight").unwrap().tensor.copy();
        (losses, !w0.equal(&w1), replica.buckets().len())
    });
    let (losses, moved, buckets) = handle.join().unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(moved, "the weights were updated");
    assert!(buckets > 1, "the buckets were rebuilt after the first step");
}
