//! BYOL's target network, Barlow Twins' projector, the Polyak average
//! and the init schemes.
use selfsup_native::model::{Model, ModelConfig};
use selfsup_native::nn::init::{Init, Scheme};
use tch::{Device, Kind, Tensor};

fn config(method: &str) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "method": method, "arch": "resnet18", "representationSize": 512, "headLatentSize": 32,
        "baseWidth": 64, "precision": "fp32", "nceSize": 16, "nceTemperature": 0.1, "projectionSize": 16, "byolLoss": "paper",
        "projectorWidths": "24-24-8", "offDiagonalWeight": 0.005,
        "numClasses": 3, "optimizer": "momentum",
        "weightDecay": 0.0, "seed": 4, "polyakEma": 0.5
    }))
    .unwrap()
}

fn batch() -> (Tensor, Tensor, Tensor) {
    // Uniform in [0, 1) from the test's own generator (torch's global one is shared by the test threads).
    let mut init = Init::new(1, Device::Cpu);
    let mut rand = || init.uniform(&[4, 3, 32, 32], 0.5).unwrap() + 0.5;
    let (v1, v2) = (rand(), rand());
    (v1, v2, Tensor::from_slice(&[0i64, 1, 2, 0]))
}

fn var(m: &Model, name: &str) -> Tensor {
    m.vs.variables()[name].detach().copy()
}

/// One training step with decay `tau`; each target.<name> must then be
/// τ·(its value before) + (1 − τ)·(the online <name> after the step).
fn step_and_check_target_follows(m: &mut Model, names: &[&str], tau: f64) {
    let (v1, v2, labels) = batch();
    let before: Vec<Tensor> = names.iter().map(|n| var(m, &format!("target.{n}"))).collect();
    let metrics = m.train_losses(&v1, &v2, &labels).unwrap();
    let ssl = metrics.ssl_loss.double_value(&[]);
    assert!(ssl.is_finite() && ssl > 0.0, "{ssl}");
    m.backward(&metrics).unwrap();
    m.update(0.1, tau).unwrap();
    for (n, old) in names.iter().zip(before) {
        let online = var(m, n);
        let want = &old * tau + &online * (1.0 - tau);
        let got = var(m, &format!("target.{n}"));
        assert!(got.allclose(&want, 1e-6, 1e-7, false), "{n}: target = τ·old + (1−τ)·online");
        assert!(!got.equal(&online), "{n}: target lags the online weights");
    }
}

#[test]
fn byol_target_starts_as_a_copy_and_follows_by_ema_after_each_step() {
    let mut m = Model::new(config("byol"), Device::Cpu).unwrap();
    let names = ["backbone.conv1.weight", "head.3.bias", "backbone.layer4.1.bn2.weight"];
    for n in names {
        assert!(var(&m, n).equal(&var(&m, &format!("target.{n}"))), "{n} copied");
        assert!(!m.vs.variables()[&format!("target.{n}")].requires_grad(), "target {n} is not trained");
    }
    // the target has no predictor and its own BN buffers
    assert!(!m.vs.variables().contains_key("target.predictor.0.weight"));
    let rm = m.vs.variables()["backbone.bn1.running_mean"].shallow_clone();
    let trm = m.vs.variables()["target.backbone.bn1.running_mean"].shallow_clone();
    assert_ne!(rm.data_ptr(), trm.data_ptr());

    step_and_check_target_follows(&mut m, &names, 0.9);
    // the online and target BN statistics now evolve apart
    let (v1, v2, labels) = batch();
    let metrics = m.train_losses(&v1, &v2, &labels).unwrap();
    m.backward(&metrics).unwrap();
    assert!(!rm.allclose(&trm, 1e-6, 1e-7, false));
}

#[test]
fn polyak_average_is_used_for_evaluation_and_the_live_weights_come_back() {
    let mut m = Model::new(config("simclr"), Device::Cpu).unwrap();
    let (v1, v2, labels) = batch();
    let w0 = var(&m, "linear_classifier.weight");
    let metrics = m.train_losses(&v1, &v2, &labels).unwrap();
    m.backward(&metrics).unwrap();
    m.update(0.5, 1.0).unwrap();
    let w1 = var(&m, "linear_classifier.weight");
    let shadow_index = m.params.iter().position(|p| p.name == "linear_classifier.weight").unwrap();
    let shadow = m.polyak.as_ref().unwrap().shadow[shadow_index].copy();
    assert!(shadow.allclose(&(&w0 * 0.5 + &w1 * 0.5), 1e-6, 1e-7, false), "EMA from a copy of the start");
    let with_ema = m.eval_losses(&v1, &labels).unwrap().linear_loss.double_value(&[]);
    assert!(var(&m, "linear_classifier.weight").equal(&w1), "live weights restored after evaluation");
    m.polyak = None;
    let live = m.eval_losses(&v1, &labels).unwrap().linear_loss.double_value(&[]);
    assert_ne!(with_ema, live);
}

#[test]
fn init_schemes_have_torch_nn_init_statistics() {
    let mut init = Init::new(9, Device::Cpu);
    let dims = [256, 128, 3, 3];
    let (fan_in, fan_out) = (128.0 * 9.0, 256.0 * 9.0);
    let std = |t: &Tensor| t.std(true).double_value(&[]);
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 0.02;
    assert!(close(std(&init.scheme(Scheme::XavierNormal, &dims).unwrap()), (2.0f64 / (fan_in + fan_out)).sqrt()));
    assert!(close(std(&init.scheme(Scheme::KaimingNormal, &dims).unwrap()), (2.0f64 / fan_in).sqrt()));
    let xu = init.scheme(Scheme::XavierUniform, &dims).unwrap();
    let bound = (6.0f64 / (fan_in + fan_out)).sqrt();
    assert!(xu.abs().max().double_value(&[]) <= bound && close(std(&xu), bound / 3f64.sqrt()));
    let ku = init.scheme(Scheme::KaimingUniform, &dims).unwrap();
    assert!(ku.abs().max().double_value(&[]) <= (6.0f64 / fan_in).sqrt());
    // orthogonal: rows of the flattened weight are orthonormal (rows < cols)
    let w = init.scheme(Scheme::Orthogonal, &[64, 32, 3, 3]).unwrap().view([64, -1]);
    assert!(w.matmul(&w.tr()).allclose(&Tensor::eye(64, (Kind::Float, Device::Cpu)), 1e-4, 1e-5, false));
    assert!(Scheme::parse("he").is_err());
}

#[test]
fn barlow_twins_has_a_bias_free_projector_as_the_authors_and_no_target() {
    let mut m = Model::new(config("barlowtwins"), Device::Cpu).unwrap();
    let vars = m.vs.variables();
    for (name, shape) in [("head.0.weight", vec![24, 512]), ("head.1.weight", vec![24]), ("head.3.weight", vec![24, 24]), ("head.6.weight", vec![8, 24])] {
        assert_eq!(vars[name].size(), shape, "{name}");
    }
    for name in ["head.0.bias", "head.3.bias", "head.6.bias", "head.7.weight"] {
        assert!(!vars.contains_key(name), "{name} should not exist");
    }
    assert!(!vars.keys().any(|n| n.starts_with("target.")), "no momentum target");
    assert!(m.features(&batch().0, "target").is_err(), "--weights target is refused");
    let (v1, v2, labels) = batch();
    let metrics = m.train_losses(&v1, &v2, &labels).unwrap();
    let ssl = metrics.ssl_loss.double_value(&[]);
    // Σ(1 − c_ii)² over 8 features: between 0 and 8·4 for correlations in [−1, 1], plus λ·off-diagonal.
    assert!(ssl.is_finite() && ssl > 0.0, "{ssl}");
    m.backward(&metrics).unwrap();
    let before = var(&m, "head.6.weight");
    m.update(0.1, 0.0).unwrap();
    assert!(var(&m, "head.6.weight").not_equal_tensor(&before).any().int64_value(&[]) == 1, "the projector is trained");
}

#[test]
fn moco_v3_has_the_authors_heads_and_a_frozen_momentum_encoder_that_follows_by_ema() {
    let mut m = Model::new(config("mocov3"), Device::Cpu).unwrap();
    let vars = m.vs.variables();
    // Projector 512 → 32 → 16 ending with a BN without γ, β; predictor 16 → 32 → 16; no biases.
    for (name, shape) in [("head.0.weight", vec![32, 512]), ("head.3.weight", vec![16, 32]), ("head.4.running_var", vec![16]), ("predictor.0.weight", vec![32, 16]), ("predictor.3.weight", vec![16, 32])] {
        assert_eq!(vars[name].size(), shape, "{name}");
    }
    for name in ["head.0.bias", "head.3.bias", "head.4.weight", "head.4.bias", "predictor.0.bias", "predictor.3.bias", "predictor.4.running_var", "target.predictor.0.weight"] {
        assert!(!vars.contains_key(name), "{name} should not exist");
    }
    let names = ["backbone.conv1.weight", "head.3.weight", "backbone.layer4.1.bn2.weight", "head.4.running_var"];
    for n in names {
        assert!(var(&m, n).equal(&var(&m, &format!("target.{n}"))), "{n} copied");
        assert!(!vars[&format!("target.{n}")].requires_grad(), "target {n} is not trained");
    }
    assert!(m.params.iter().all(|p| !p.name.starts_with("target.")), "the momentum encoder is not among the trained parameters");
    // Parameters follow by the momentum; BN statistics are the encoder's own.
    step_and_check_target_follows(&mut m, &names[..3], 0.99);
    let (v1, _, labels) = batch();
    assert!(m.features(&v1, "target").is_ok(), "--weights target reads the momentum encoder");
    // Eval mode (the image as both views) gives a finite loss without a gradient.
    let eval = m.eval_losses(&v1, &labels).unwrap();
    assert!(eval.ssl_loss.double_value(&[]).is_finite() && !eval.ssl_loss.requires_grad());
}
