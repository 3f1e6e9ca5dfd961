//! Evaluation of a frozen backbone: features of a data split, a linear
//! classifier trained on the train features (the linear-evaluation
//! protocol on precomputed features), and a weighted kNN classifier
//! (Wu et al. 2018: cosine similarity, k neighbours voting with weight
//! exp(s/T)).
use crate::losses::{l2_normalize, topk_percent};
use crate::nn::init::Init;
use crate::nn::layers::Linear;
use crate::optim::{self, Param};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tch::{nn::VarStore, Kind, Reduction, Tensor};

/// Features and labels of one split, gathered batch by batch.
#[derive(Default)]
pub struct FeatureSet {
    feats: Vec<Tensor>,
    labels: Vec<Tensor>,
}

impl FeatureSet {
    pub fn push(&mut self, feats: Tensor, labels: Tensor) {
        self.feats.push(feats);
        self.labels.push(labels);
    }

    pub fn len(&self) -> i64 {
        self.labels.iter().map(|l| l.size()[0]).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tensors(&self) -> Result<(Tensor, Tensor)> {
        if self.feats.is_empty() {
            bail!("no features were extracted for this split");
        }
        Ok((Tensor::f_cat(&self.feats, 0)?, Tensor::f_cat(&self.labels, 0)?))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinearProbe {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
}

/// Trains Linear(d → classes) on standardised train features with
/// SGD-momentum and a cosine schedule; returns test (top-1, top-5) in %.
pub fn linear_probe(train: &FeatureSet, test: &FeatureSet, classes: i64, p: &LinearProbe) -> Result<[f64; 2]> {
    let (xtr, ytr) = train.tensors()?;
    let (xte, yte) = test.tensors()?;
    let dev = xtr.device();
    let mean = xtr.f_mean_dim([0i64].as_slice(), true, Kind::Float)?;
    let std = xtr.f_std_dim([0i64].as_slice(), true, true)?.f_clamp_min(1e-6)?;
    let (xtr, xte) = ((&xtr - &mean) / &std, (&xte - &mean) / &std);
    let vs = VarStore::new(dev);
    let mut init = Init::new(p.seed, dev);
    let fc = Linear::new(&vs.root(), &mut init, xtr.size()[1], classes)?;
    let mut params = vec![Param::new("weight".into(), fc.weight.shallow_clone()), Param::new("bias".into(), fc.bias.as_ref().context("the linear classifier has a bias")?.shallow_clone())];
    let mut opt = optim::parse("momentum", p.weight_decay)?;
    let n = xtr.size()[0] as usize;
    let steps_per_epoch = n.div_ceil(p.batch_size.max(1));
    let total = (p.epochs * steps_per_epoch).max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut step = 0.0;
    for _ in 0..p.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(p.batch_size.max(1)) {
            let idx = Tensor::from_slice(chunk).f_to_device(dev)?;
            let logits = fc.forward(&xtr.f_index_select(0, &idx)?)?;
            let loss = logits.f_cross_entropy_loss::<Tensor>(&ytr.f_index_select(0, &idx)?, None, Reduction::Mean, -100, 0.0)?;
            optim::zero_grad(&mut params)?;
            loss.f_backward()?;
            let lr = p.lr * 0.5 * (1.0 + (std::f64::consts::PI * step / total).cos());
            opt.step(&mut params, lr)?;
            step += 1.0;
        }
    }
    let _g = tch::no_grad_guard();
    let acc = topk_percent(&fc.forward(&xte)?, &yte, &[1, 5])?;
    Ok([acc[0].f_double_value(&[])?, acc[1].f_double_value(&[])?])
}

/// Weighted kNN on cosine similarity: the k nearest train features vote
/// for their class with weight exp(similarity / temperature).
pub fn knn(train: &FeatureSet, test: &FeatureSet, classes: i64, k: i64, temperature: f64) -> Result<[f64; 2]> {
    let (xtr, ytr) = train.tensors()?;
    let (xte, yte) = test.tensors()?;
    let (xtr, xte) = (l2_normalize(&xtr)?, l2_normalize(&xte)?);
    let k = k.min(xtr.size()[0]);
    let mut hits = [0.0f64; 2];
    let n = xte.size()[0];
    let chunk = 1024;
    let _g = tch::no_grad_guard();
    for start in (0..n).step_by(chunk as usize) {
        let len = chunk.min(n - start);
        let q = xte.f_narrow(0, start, len)?;
        let (sim, idx) = q.f_matmul(&xtr.f_t_copy()?)?.f_topk(k, 1, true, true)?;
        let votes = ytr.f_index_select(0, &idx.f_flatten(0, -1)?)?.f_view([len, k])?;
        let weights = sim.f_div_scalar(temperature)?.f_exp()?;
        let scores = Tensor::f_zeros([len, classes], (Kind::Float, q.device()))?.f_scatter_add(1, &votes, &weights)?;
        let acc = topk_percent(&scores, &yte.f_narrow(0, start, len)?, &[1, 5])?;
        for (h, a) in hits.iter_mut().zip(acc) {
            *h += a.f_double_value(&[])? * len as f64 / 100.0;
        }
    }
    Ok([100.0 * hits[0] / n as f64, 100.0 * hits[1] / n as f64])
}
