//! Backbones, losses and the optimizer, checked against known values.
use selfsup_native::losses::nt_xent;
use selfsup_native::nn::init::Init;
use selfsup_native::nn::resnet::{feature_size, feature_size_width, ResNet};
use selfsup_native::optim::{self, Param};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn count(arch: &str) -> (i64, i64) {
    let vs = VarStore::new(Device::Cpu);
    let mut init = Init::new(0, Device::Cpu);
    let net = ResNet::new(&vs.root(), &mut init, arch, false).unwrap();
    let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    (params, net.features)
}

/// torchvision's published parameter totals minus the final fc layer.
#[test]
fn backbones_have_torchvision_parameter_counts() {
    let fc = |f: i64| f * 1000 + 1000;
    for (arch, total) in [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("wide_resnet50_2", 68_883_240),
    ] {
        let (params, features) = count(arch);
        assert_eq!(features, feature_size(arch).unwrap());
        assert_eq!(params, total - fc(features), "{arch}");
    }
}

/// --base-width scales every channel count (stem included) and keeps the names.
#[test]
fn base_width_scales_channels_and_keeps_names() {
    let shapes = |w: i64| {
        let vs = VarStore::new(Device::Cpu);
        let mut init = Init::new(0, Device::Cpu);
        let net = ResNet::with_width(&vs.root(), &mut init, "resnet18", true, w).unwrap();
        let x = Tensor::rand([2, 3, 28, 28], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward(&x, true).unwrap().size(), [2, 8 * w]);
        assert_eq!(net.features, feature_size_width("resnet18", w).unwrap());
        vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect::<std::collections::BTreeMap<_, _>>()
    };
    let (full, narrow) = (shapes(64), shapes(16));
    assert_eq!(full.keys().collect::<Vec<_>>(), narrow.keys().collect::<Vec<_>>());
    for (name, size) in &full {
        let want: Vec<i64> = size
            .iter()
            .enumerate()
            .map(|(i, &d)| if i < 2 && !(name == "conv1.weight" && i == 1) { d / 4 } else { d })
            .collect();
        assert_eq!(narrow[name], want, "{name}");
    }
    assert_eq!(feature_size_width("resnet50", 16).unwrap(), 512);
    let vs = VarStore::new(Device::Cpu);
    let err = ResNet::with_width(&vs.root(), &mut Init::new(0, Device::Cpu), "resnet18", false, 0).err().unwrap();
    assert!(err.to_string().contains("--base-width must be between 1 and 1024"), "{err}");
}

#[test]
fn resnet18_names_and_buffers_follow_torchvision() {
    let vs = VarStore::new(Device::Cpu);
    let mut init = Init::new(0, Device::Cpu);
    ResNet::new(&vs.root(), &mut init, "resnet18", false).unwrap();
    let vars = vs.variables();
    for name in ["conv1.weight", "bn1.running_var", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.num_batches_tracked"] {
        assert!(vars.contains_key(name), "missing {name}");
    }
    assert_eq!(vars["layer2.0.downsample.1.num_batches_tracked"].kind(), Kind::Int64);
    assert_eq!(vars["layer3.0.conv1.weight"].size(), vec![256, 128, 3, 3]);
    // 20 convs... every name has a torchvision counterpart (no fc, no __N renames)
    assert!(vars.keys().all(|k| !k.contains("__") && !k.starts_with("fc")));
}

#[test]
fn init_is_deterministic_per_seed_with_kaiming_fan_out_scale() {
    let w = |seed| {
        let vs = VarStore::new(Device::Cpu);
        let mut init = Init::new(seed, Device::Cpu);
        ResNet::new(&vs.root(), &mut init, "resnet18", false).unwrap();
        let t = vs.variables()["layer4.0.conv2.weight"].copy();
        t
    };
    let (a, b, c) = (w(1), w(1), w(2));
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
    // std = sqrt(2 / fan_out), fan_out = 512 * 3 * 3
    let std = a.std(true).double_value(&[]);
    let expected = (2.0f64 / (512.0 * 9.0)).sqrt();
    assert!((std / expected - 1.0).abs() < 0.01, "std {std} vs {expected}");
}

#[test]
fn nt_xent_is_near_chance_for_unrelated_views_and_small_for_equal_ones() {
    let n = 64;
    let mut init = Init::new(0, Device::Cpu); // not torch's global generator, which other test threads draw from
    let z1 = init.normal(&[n, 128], 1.0).unwrap();
    let z2 = init.normal(&[n, 128], 1.0).unwrap();
    let chance = 2.0 * ((2 * n - 1) as f64).ln();
    let unrelated = nt_xent(&z1, &z2, None, 1.0).unwrap().double_value(&[]);
    assert!((unrelated - chance).abs() < 0.3, "{unrelated} vs {chance}");
    let same = nt_xent(&z1, &z1, None, 0.1).unwrap().double_value(&[]);
    assert!(same < 0.5, "{same}");
}

#[test]
fn lars_adapts_and_decays_weights_but_not_biases() {
    let w = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]).set_requires_grad(true);
    let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
    // loss = 0.6·w0 + 0.8·w1 + 2·b → grad w = [0.6, 0.8] (norm 1), grad b = 2
    let loss = (&w * Tensor::from_slice(&[0.6f32, 0.8]).view([1, 2])).sum(Kind::Float) + &b * 2.0;
    let loss = loss.sum(Kind::Float);
    loss.backward();
    let mut params = vec![Param::new("w".into(), w.shallow_clone()), Param::new("b".into(), b.shallow_clone())];
    assert!(params[0].decay && !params[1].decay);
    let mut opt = optim::parse("lars_momentum", 0.1).unwrap();
    opt.step(&mut params, 0.5).unwrap();
    // g' = g + 0.1·w = [0.9, 1.2] (norm 1.5); trust = 0.001·5/1.5; w -= 0.5·trust·g'
    let trust = 0.001 * 5.0 / 1.5;
    let want = [3.0 - 0.5 * trust * 0.9, 4.0 - 0.5 * trust * 1.2];
    let got: Vec<f32> = Vec::try_from(w.detach().view([-1])).unwrap();
    for (g, e) in got.iter().zip(want) {
        assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // the bias: plain momentum SGD, no decay, no trust ratio
    assert!((b.double_value(&[0]) - (1.0 - 0.5 * 2.0)).abs() < 1e-6);
    // second step: momentum buffer 0.9·buf + g for the bias
    optim::zero_grad(&mut params).unwrap();
    (&b * 2.0).sum(Kind::Float).backward();
    opt.step(&mut params, 0.5).unwrap();
    assert!((b.double_value(&[0]) - (0.0 - 0.5 * (0.9 * 2.0 + 2.0))).abs() < 1e-6);
}

#[test]
fn small_stem_keeps_32_pixel_resolution_into_layer1() {
    let vs = VarStore::new(Device::Cpu);
    let mut init = Init::new(0, Device::Cpu);
    let net = ResNet::new(&vs.root(), &mut init, "resnet18", true).unwrap();
    assert_eq!(vs.variables()["conv1.weight"].size(), vec![64, 3, 3, 3]);
    let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let _g = tch::no_grad_guard();
    assert_eq!(net.forward(&x, false).unwrap().size(), vec![2, 512]);
    // 3x3/1 stem without max-pool: 32 px reach layer4 as 4x4, not 1x1
    let std = ResNet::new(&VarStore::new(Device::Cpu).root(), &mut init, "resnet18", false).unwrap();
    assert_eq!(std.forward(&x, false).unwrap().size(), vec![2, 512]);
}

#[test]
fn clip_is_element_wise_value_clipping() {
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]).set_requires_grad(true);
    (&w * Tensor::from_slice(&[-5.0f32, 0.25, 9.0]).view([1, 3])).sum(Kind::Float).backward();
    let params = vec![Param::new("w".into(), w.shallow_clone())];
    optim::clip_grad_value(&params, 1.0).unwrap();
    let g: Vec<f32> = Vec::try_from(w.grad().view([-1])).unwrap();
    assert_eq!(g, vec![-1.0, 0.25, 1.0]);
}
