//! The self-supervised losses (NT-Xent, BYOL's regression, MoCo v3's
//! InfoNCE, Barlow Twins') and the probe's top-k accuracy. Under mixed precision each runs in fp32,
//! autocast suspended (amp.rs).
use crate::amp::{full, Autocast};
use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

/// Large negative logit that removes a sample's similarity with itself,
/// as in SimCLR's reference code (LARGE_NUM).
const LARGE_NUM: f64 = 1e9;

/// Rows scaled to unit L2 norm: x · rsqrt(max(Σx², 1e-12)), the
/// reference's form (it differs from F.normalize only below 1e-6).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let ss = x.f_pow_tensor_scalar(2)?.f_sum_dim_intlist(-1, true, x.kind())?;
    let y = x * ss.f_clamp_min(1e-12)?.f_rsqrt()?;
    crate::amp::trace("normalize", &y);
    Ok(y)
}

/// The views of every replica, concatenated in rank order, and where this
/// replica's rows start in them.
pub struct Gathered<'a> {
    pub z1_all: &'a Tensor,
    pub z2_all: &'a Tensor,
    pub offset: i64,
}

/// NT-Xent (SimCLR, Chen et al. 2020, eq. 1) in the reference programs'
/// form: for anchors of view 1, the positive is the same image's view 2
/// and the negatives are every other image of both views (across
/// replicas when `gathered` is given); the same with the views swapped;
/// returns mean(loss_a + loss_b), ≈ 2·log(2N−1) at chance.
/// Under mixed precision it runs in fp32, autocast suspended (amp.rs).
pub fn nt_xent(z1: &Tensor, z2: &Tensor, gathered: Option<Gathered>, temperature: f64) -> Result<Tensor> {
    let _fp32 = Autocast::suspend(z1.device())?;
    let e1 = l2_normalize(&full(z1)?)?;
    let e2 = l2_normalize(&full(z2)?)?;
    let b = e1.size()[0];
    let (e1_all, e2_all, offset) = match gathered {
        Some(g) => (l2_normalize(&full(g.z1_all)?)?, l2_normalize(&full(g.z2_all)?)?, g.offset),
        None => (e1.shallow_clone(), e2.shallow_clone(), 0),
    };
    let n = e1_all.size()[0];
    let labels = Tensor::f_arange(b, (Kind::Int64, e1.device()))?.f_add_scalar(offset)?;
    let masks = labels.f_one_hot(n)?.f_to_kind(e1.kind())?;
    let sim = |a: &Tensor, c: &Tensor| -> Result<Tensor> {
        let s = a.f_matmul(&c.f_transpose(0, 1)?)?.f_div_scalar(temperature)?;
        crate::amp::trace("similarity", &s);
        Ok(s)
    };
    let aa = sim(&e1, &e1_all)? - &masks * LARGE_NUM;
    let bb = sim(&e2, &e2_all)? - &masks * LARGE_NUM;
    let ab = sim(&e1, &e2_all)?;
    let ba = sim(&e2, &e1_all)?;
    let ce = |pos: &Tensor, neg: &Tensor| -> Result<Tensor> {
        let logits = Tensor::f_cat(&[pos, neg], 1)?;
        let l = logits.f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::None, -100, 0.0)?;
        crate::amp::trace("cross_entropy", &l);
        Ok(l)
    };
    let loss_a = ce(&ab, &aa)?;
    let loss_b = ce(&ba, &bb)?;
    Ok((loss_a + loss_b).f_mean(e1.kind())?)
}

/// Top-k accuracies in percent, as helpers.metrics.topk of the reference.
pub fn topk_percent(logits: &Tensor, labels: &Tensor, ks: &[i64]) -> Result<Vec<Tensor>> {
    let classes = logits.size()[1];
    let kmax = ks.iter().copied().max().unwrap_or(1).min(classes);
    let (_, pred) = logits.f_topk(kmax, 1, true, true)?;
    let hit = pred.f_eq_tensor(&labels.f_unsqueeze(1)?)?;
    let n = labels.size()[0] as f64;
    ks.iter()
        .map(|&k| {
            let k = k.min(classes);
            Ok(hit.f_narrow(1, 0, k)?.f_sum(Kind::Float)?.f_mul_scalar(100.0 / n)?)
        })
        .collect()
}

/// How the regression loss normalises its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossNorm {
    /// Per row: 2 − 2·cos(p, z), the paper's loss.
    Paper,
    /// The reference's whole-matrix norms: −2·Σ(p·z)/(‖P‖_F‖Z‖_F) per row.
    Reference,
}

/// The BYOL regression loss for a batch, mean over rows.
/// Under mixed precision it runs in fp32, autocast suspended (amp.rs).
pub fn regression_loss(p: &Tensor, z: &Tensor, norm: LossNorm) -> Result<Tensor> {
    let _fp32 = Autocast::suspend(p.device())?;
    let (p, z) = (&full(p)?, &full(z)?);
    let loss = match norm {
        LossNorm::Paper => {
            let cos = (l2_normalize(p)? * l2_normalize(z)?).f_sum_dim_intlist(-1, false, p.kind())?;
            (cos * -2.0 + 2.0).f_mean(p.kind())?
        }
        LossNorm::Reference => {
            let dot = (p * z).f_sum_dim_intlist(-1, false, p.kind())?;
            (dot * -2.0 / (p.f_norm()? * z.f_norm()?)).f_mean(p.kind())?
        }
    };
    crate::amp::trace("regression", &loss);
    Ok(loss)
}

/// The symmetric BYOL loss: view 1's prediction against view 2's target
/// projection, and the other way round.
pub fn byol_loss(p1: &Tensor, p2: &Tensor, z1t: &Tensor, z2t: &Tensor, norm: LossNorm) -> Result<Tensor> {
    Ok(regression_loss(p1, &z2t.f_detach()?, norm)? + regression_loss(p2, &z1t.f_detach()?, norm)?)
}

/// MoCo v3's contrastive loss (Chen, Xie, He 2021, Algorithm 1, as the
/// authors' `contrastive_loss`): ctr(q, k) = CE(q̂·k̂ᵀ/τ, positives)·2τ with
/// q̂, k̂ unit rows, symmetrised as ctr(q1, k2) + ctr(q2, k1). The keys
/// (momentum encoder) carry no gradient. With `keys` (every replica's keys
/// in rank order, this replica's from `offset`) the negatives are the whole
/// global batch's keys; the queries are this replica's.
/// Under mixed precision it runs in fp32, autocast suspended (amp.rs).
pub fn moco_v3(q1: &Tensor, q2: &Tensor, k1: &Tensor, k2: &Tensor, keys: Option<Gathered>, temperature: f64) -> Result<Tensor> {
    let _fp32 = Autocast::suspend(q1.device())?;
    let (k1_all, k2_all, offset) = match keys {
        Some(g) => (g.z1_all, g.z2_all, g.offset),
        None => (k1, k2, 0),
    };
    let ctr = |q: &Tensor, k: &Tensor| -> Result<Tensor> {
        let q = l2_normalize(&full(q)?)?;
        let k = l2_normalize(&full(&k.f_detach()?)?)?;
        let logits = q.f_matmul(&k.f_transpose(0, 1)?)?.f_div_scalar(temperature)?;
        crate::amp::trace("similarity", &logits);
        let labels = Tensor::f_arange(q.size()[0], (Kind::Int64, q.device()))?.f_add_scalar(offset)?;
        let ce = logits.f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0)?;
        crate::amp::trace("cross_entropy", &ce);
        Ok(ce * (2.0 * temperature))
    };
    Ok(ctr(q1, k2_all)? + ctr(q2, k1_all)?)
}

/// Each column standardised over the batch, as BatchNorm1d(affine=False)
/// in training mode: biased variance, ε = 1e-5.
fn batch_standardise(z: &Tensor) -> Result<Tensor> {
    let centred = z - z.f_mean_dim(0, true, z.kind())?;
    let var = centred.f_pow_tensor_scalar(2)?.f_mean_dim(0, true, z.kind())?;
    Ok(centred * var.f_add_scalar(crate::nn::layers::BN_EPS)?.f_rsqrt()?)
}

/// Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, eq. 1 and
/// Algorithm 1, in the authors' code's form: docs/METHODS.md): c is the
/// cross-correlation of the batch-standardised embeddings of the two views,
/// loss = Σᵢ (1 − cᵢᵢ)² + λ·Σᵢ≠ⱼ cᵢⱼ². `z1`, `z2` are the whole (global)
/// batch: with several replicas, the gathered embeddings, so the loss and
/// its gradient are the single-process ones.
pub fn barlow_twins(z1: &Tensor, z2: &Tensor, lambda: f64) -> Result<Tensor> {
    let _fp32 = Autocast::suspend(z1.device())?;
    let (z1, z2) = (full(z1)?, full(z2)?);
    let (n, d) = (z1.size()[0], z1.size()[1]);
    let c = batch_standardise(&z1)?.f_transpose(0, 1)?.f_matmul(&batch_standardise(&z2)?)?.f_div_scalar(n as f64)?;
    crate::amp::trace("cross_correlation", &c);
    let eye = Tensor::f_eye(d, (z1.kind(), z1.device()))?;
    let on_diag = (c.f_diagonal(0, 0, 1)? - 1.0).f_pow_tensor_scalar(2)?.f_sum(z1.kind())?;
    let off_diag = (c.f_pow_tensor_scalar(2)? * (eye.f_neg()? + 1.0)).f_sum(z1.kind())?;
    Ok(on_diag + off_diag * lambda)
}
