//! Mixed precision: the loss scaler's skips and growth, the multi-tensor
//! optimizers against the per-tensor ones, channels_last state, and
//! autocast regions. Autocast's dtype policy inside a model
//! (debug::check_amp_policy) runs from tests/precision_test.ts, on the CPU
//! and, when a GPU is present, on CUDA.
use selfsup_native::amp::{autocast_state, Autocast, GradScaler, ScalerConfig};
use selfsup_native::nn::init::Init;
use selfsup_native::optim::{self, Param};
use tch::{Device, Kind, Tensor};

/// Parameters drawn from the test's own generator: torch's global one is
/// shared with every other test thread, so two calls with one seed could
/// differ when tests run in parallel.
fn params(seed: u64) -> Vec<Param> {
    let mut init = Init::new(seed, Device::Cpu);
    let mut randn = |dims: &[i64]| init.normal(dims, 1.0).unwrap().set_requires_grad(true);
    let w = randn(&[4, 3]);
    let c = randn(&[2, 3, 3, 3]);
    let b = randn(&[3]);
    vec![Param::new("w".into(), w), Param::new("c".into(), c), Param::new("b".into(), b)]
}

/// Gradients of a fixed quadratic loss, times `scale` as after a scaled
/// backward; `inf` puts an infinity into the first parameter's gradient.
fn backward(ps: &mut [Param], scale: Option<&GradScaler>, inf: bool) {
    optim::zero_grad(ps).unwrap();
    let loss = ps.iter().map(|p| (&p.tensor * &p.tensor).sum(Kind::Float) * 0.5 + p.tensor.sum(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b);
    match scale {
        Some(s) => s.scale_loss(&loss).unwrap().backward(),
        None => loss.backward(),
    }
    if inf {
        let g = ps[0].tensor.grad();
        let _ = g.flatten(0, -1).get(1).fill_(f64::INFINITY);
    }
}

fn snapshot(ps: &[Param]) -> Vec<Tensor> {
    ps.iter().flat_map(|p| std::iter::once(p.tensor.detach().copy()).chain(p.state.iter().map(|s| s.copy()))).collect()
}

fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
}

fn scale_of(s: &GradScaler) -> f64 {
    s.scale.double_value(&[0])
}

#[test]
fn the_scaler_skips_a_step_with_inf_gradients_and_halves_the_scale() {
    for name in ["sgd", "momentum", "lars_momentum", "adam", "adamw", "lars_adam", "rmsprop", "adadelta"] {
        let mut ps = params(1);
        let mut opt = optim::parse(name, 1e-3).unwrap();
        let mut scaler = GradScaler::new(ScalerConfig::default(), Device::Cpu).unwrap();
        assert_eq!(scale_of(&scaler), 65536.0);

        // A clean step: the gradients come back unscaled (exactly: the
        // scale is a power of 2), here w + 1.
        backward(&mut ps, Some(&scaler), false);
        let found = scaler.unscale(&ps).unwrap().shallow_clone();
        assert_eq!(found.double_value(&[0]), 0.0);
        let w = ps[0].tensor.detach();
        let off = (ps[0].tensor.grad() - (&w + 1.0)).abs().max().double_value(&[]);
        assert!(off < 1e-6, "{name}: unscaled gradient off by {off}");
        opt.step_amp(&mut ps, 0.1, Some(&found)).unwrap();
        scaler.update().unwrap();
        assert_eq!((scale_of(&scaler), scaler.growth_tracker.int64_value(&[0])), (65536.0, 1), "{name}");
        assert_eq!(opt.steps().unwrap(), 1);

        // A step whose gradients hold an inf: nothing moves, the scale halves.
        let before = snapshot(&ps);
        backward(&mut ps, Some(&scaler), true);
        let found = scaler.unscale(&ps).unwrap().shallow_clone();
        assert_eq!(found.double_value(&[0]), 1.0, "{name}: the inf is found");
        opt.step_amp(&mut ps, 0.1, Some(&found)).unwrap();
        scaler.update().unwrap();
        assert!(same(&before, &snapshot(&ps)), "{name}: parameters or optimizer state changed on a skipped step");
        assert_eq!(opt.steps().unwrap(), 1, "{name}: a skipped step is not counted");
        assert_eq!((scale_of(&scaler), scaler.growth_tracker.int64_value(&[0])), (32768.0, 0), "{name}");
        assert_eq!(scaler.skipped.double_value(&[0]), 1.0);

        // The next clean step goes on as if the skipped one never happened.
        let mut reference = params(1);
        let mut ref_opt = optim::parse(name, 1e-3).unwrap();
        for _ in 0..2 {
            backward(&mut reference, None, false);
            ref_opt.step(&mut reference, 0.1).unwrap();
        }
        backward(&mut ps, Some(&scaler), false);
        let found = scaler.unscale(&ps).unwrap().shallow_clone();
        opt.step_amp(&mut ps, 0.1, Some(&found)).unwrap();
        scaler.update().unwrap();
        assert!(same(&snapshot(&reference), &snapshot(&ps)), "{name}: the run with a skipped step differs from one without");
        assert_eq!(opt.steps().unwrap(), 2);
    }
}

#[test]
fn the_scale_grows_after_the_interval_and_backs_off_on_nan() {
    let mut ps = params(2);
    let mut opt = optim::parse("lars_momentum", 1e-4).unwrap();
    let cfg = ScalerConfig { init_scale: 8.0, growth_interval: 3, ..ScalerConfig::default() };
    let mut scaler = GradScaler::new(cfg, Device::Cpu).unwrap();
    let mut scales = Vec::new();
    for step in 0..8 {
        backward(&mut ps, Some(&scaler), false);
        if step == 4 {
            let _ = ps[2].tensor.grad().get(0).fill_(f64::NAN);
        }
        let found = scaler.unscale(&ps).unwrap().shallow_clone();
        opt.step_amp(&mut ps, 0.1, Some(&found)).unwrap();
        scaler.update().unwrap();
        scales.push(scale_of(&scaler));
    }
    // 3 clean steps double it; the NaN at step 4 halves it and restarts the count.
    assert_eq!(scales, [8.0, 8.0, 16.0, 16.0, 8.0, 8.0, 8.0, 16.0]);
    assert_eq!(scaler.skipped.double_value(&[0]), 1.0);
    assert_eq!(opt.steps().unwrap(), 7);
}

#[test]
fn multi_tensor_updates_match_the_per_tensor_ones() {
    for name in ["sgd", "momentum", "lars_momentum", "lars_sgd", "adam", "adamw", "lars_adam", "rmsprop", "adadelta"] {
        let (mut a, mut b) = (params(3), params(3));
        let (mut oa, mut ob) = (optim::parse(name, 1e-2).unwrap(), optim::parse(name, 1e-2).unwrap());
        for _ in 0..3 {
            backward(&mut a, None, false);
            oa.step(&mut a, 0.05).unwrap();
            backward(&mut b, None, false);
            ob.step_per_tensor(&mut b, 0.05).unwrap();
        }
        for (x, y) in snapshot(&a).iter().zip(snapshot(&b)) {
            let diff = (x - &y).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{name}: multi-tensor and per-tensor differ by {diff}");
        }
    }
}

#[test]
fn channels_last_parameters_keep_their_layout_through_fused_updates() {
    let mut ps = params(4);
    selfsup_native::amp::make_channels_last(&ps[1].tensor).unwrap();
    assert!(selfsup_native::amp::is_channels_last(&ps[1].tensor));
    let mut reference = params(4);
    let (mut o, mut r) = (optim::parse("momentum", 1e-2).unwrap(), optim::parse("momentum", 1e-2).unwrap());
    for _ in 0..2 {
        backward(&mut ps, None, false);
        o.step(&mut ps, 0.1).unwrap();
        backward(&mut reference, None, false);
        r.step(&mut reference, 0.1).unwrap();
    }
    assert!(selfsup_native::amp::is_channels_last(&ps[1].state[0]), "the momentum buffer follows the weight's layout");
    let diff = (&ps[1].tensor - &reference[1].tensor).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn autocast_regions_nest_and_restore_this_threads_state() {
    assert_eq!(autocast_state(Device::Cpu), None);
    {
        let _outer = Autocast::enter(Device::Cpu, Some(Kind::BFloat16)).unwrap();
        assert_eq!(autocast_state(Device::Cpu), Some(Kind::BFloat16));
        {
            let _island = Autocast::suspend(Device::Cpu).unwrap();
            assert_eq!(autocast_state(Device::Cpu), None);
        }
        assert_eq!(autocast_state(Device::Cpu), Some(Kind::BFloat16));
        // Another thread has its own state.
        std::thread::spawn(|| assert_eq!(autocast_state(Device::Cpu), None)).join().unwrap();
    }
    assert_eq!(autocast_state(Device::Cpu), None);
    assert!(Autocast::enter(Device::Cpu, None).unwrap().is_none(), "fp32 enters no region");
}

/// Two Gloo ranks (threads) with a loss scaler and LARS: one rank's
/// overflow reaches the other through DDP's all-reduce, so both skip the
/// same step, back off to the same scale, and stay identical.
#[test]
fn ddp_replicas_skip_together_when_one_overflows() {
    use selfsup_native::dist::{DistConfig, Replica};
    use selfsup_native::model::{Model, ModelConfig};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                let cfg = DistConfig { world_size: 2, rank, port, timeout_secs: 60.0, ..Default::default() };
                let mut replica = Replica::start(&cfg, Device::Cpu).unwrap();
                let model_cfg: ModelConfig = serde_json::from_value(serde_json::json!({
                    "method": "simclr", "arch": "resnet18", "smallStem": true, "representationSize": 512,
                    "baseWidth": 64, "headLatentSize": 32, "nceSize": 16, "nceTemperature": 0.1, "numClasses": 3, "precision": "fp32", "optimizer": "lars_momentum",
                    "weightDecay": 1e-4, "seed": 3, "lossScaler": {}
                }))
                .unwrap();
                let mut model = Model::new(model_cfg, Device::Cpu).unwrap();
                replica.attach(&model).unwrap();
                let x = |k: f64| (Tensor::arange(4 * 3 * 16 * 16, (Kind::Float, Device::Cpu)) * (0.31 + k + rank as f64)).sin().view([4, 3, 16, 16]);
                let labels = Tensor::from_slice(&[0i64, 1, 2, rank as i64]);
                let weights = |m: &Model| m.params.iter().map(|p| p.tensor.detach().copy()).collect::<Vec<_>>();
                let mut record = Vec::new();
                for step in 0..2 {
                    let before = weights(&model);
                    replica.before_forward().unwrap();
                    let mut m = model.train_losses(&x(0.0), &x(0.5), &labels).unwrap();
                    if step == 0 && rank == 1 {
                        m.loss = &m.loss * f64::INFINITY; // this rank's gradients overflow
                    }
                    replica.before_backward(&m.loss).unwrap();
                    model.backward(&m).unwrap();
                    model.update(0.5, 0.99).unwrap();
                    let rec = Vec::<f64>::try_from(&model.amp_record().unwrap()).unwrap();
                    let unchanged = before.iter().zip(weights(&model)).all(|(a, b)| a.equal(&b));
                    record.push((rec, unchanged, model.scaler.as_ref().map(|s| s.scale.double_value(&[0])).unwrap()));
                }
                let conv = model.params.iter().find(|p| p.name == "backbone.layer1.0.conv1.weight").unwrap().tensor.detach().copy();
                let sum = conv.copy();
                let mut v = Vec::<f64>::try_from(&sum.to_kind(Kind::Double).view([-1])).unwrap();
                replica.all_reduce_host(&mut v, selfsup_native::dist::ReduceOp::Sum).unwrap();
                let same = Tensor::from_slice(&v).view(&conv.size()[..]).to_kind(Kind::Float).allclose(&(&conv * 2.0), 0.0, 0.0, false);
                (rank, record, same)
            })
        })
        .collect();
    for h in ranks {
        let (rank, record, same) = h.join().unwrap();
        // Step 1: scale 65536, skipped on both ranks, nothing moved, scale halved.
        assert_eq!(record[0].0, vec![65536.0, 1.0], "rank {rank}");
        assert!(record[0].1, "rank {rank}: weights moved on a skipped step");
        assert_eq!(record[0].2, 32768.0);
        // Step 2: a clean step at the halved scale.
        assert_eq!(record[1].0, vec![32768.0, 0.0], "rank {rank}");
        assert!(!record[1].1, "rank {rank}: a clean step updates");
        assert!(same, "rank {rank}: replicas hold the same weights after the skip");
    }
}
