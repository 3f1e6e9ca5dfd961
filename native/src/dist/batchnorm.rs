//! BatchNorm in training mode across replicas.
//!
//! - **SyncBN** (`--convert-to-sync-bn`, PyTorch's `SyncBatchNorm`): the
//!   statistics of the batch of all replicas. Each rank's per-channel mean
//!   and biased variance and its row count are all-gathered (differentiably:
//!   the gather's backward is a reduce-scatter, so each rank's input gets
//!   the gradient of every rank's loss, as SyncBatchNorm's backward
//!   all-reduces `sum_dy`/`sum_dy_xmu`), then combined exactly (Chan et al.'s
//!   pairwise variance). Composed from ATen ops, so it runs on CPU too,
//!   where torch's fused `batch_norm_stats`/`batch_norm_elemt` do not exist.
//! - **Per-replica statistics in one process** (`bnReplicas` k > 1 at world
//!   size 1): rows r, r+k, r+2k, … of the batch are normalised together,
//!   which is what replica r of k computes without SyncBN (the sampler
//!   deals global positions round-robin, as DistributedSampler does). Only
//!   group 0 updates the running statistics, because DDP broadcasts rank
//!   0's buffers before every forward. It exists so that a one-process run
//!   can be compared exactly with a k-process run (tests/dist_equivalence_test.ts).
use super::group::Group;
use crate::nn::layers::{BatchNorm, BN_EPS, BN_MOMENTUM};
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// The shape that broadcasts a per-channel vector over `x` (N, C, …).
fn channel_shape(x: &Tensor) -> Vec<i64> {
    let mut s = vec![1i64; x.dim()];
    s[1] = -1;
    s
}

/// SyncBatchNorm's forward (and, through autograd, its backward).
/// Under autocast the statistics are taken in fp32 and the output has
/// the input's (reduced) type.
pub fn synced(bn: &BatchNorm, x: &Tensor, group: &Group) -> Result<Tensor> {
    let out_kind = x.kind();
    let x = &crate::amp::full(x)?;
    let c = x.size()[1];
    let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != 1).collect();
    let rows = (x.numel() as i64 / c.max(1)) as f64;
    // Checked on the host, without a device sync: batches are equal across
    // replicas in training (drop_last).
    ensure!(rows * group.world as f64 > 1.0, "SyncBatchNorm needs more than one value per channel over all replicas");
    let (var, mean) = x.f_var_mean_correction(&dims[..], 0, false)?;
    let count = Tensor::f_full([1], rows, (var.kind(), var.device()))?;
    let local = Tensor::f_cat(&[&mean, &var, &count], 0)?.f_unsqueeze(0)?;
    let all = group.all_gather(&local)?; // world × (2C + 1)
    let means = all.f_narrow(1, 0, c)?;
    let vars = all.f_narrow(1, c, c)?;
    let counts = all.f_narrow(1, 2 * c, 1)?.f_detach()?;
    let total = counts.f_sum(x.kind())?;
    let weights = counts.f_div(&total)?;
    let mean = means.f_mul(&weights)?.f_sum_dim_intlist(0, false, x.kind())?;
    let spread = means.f_sub(&mean.f_unsqueeze(0)?)?.f_square()?;
    let var = vars.f_add(&spread)?.f_mul(&weights)?.f_sum_dim_intlist(0, false, x.kind())?;
    {
        let _g = tch::no_grad_guard();
        let unbiased = var.f_detach()?.f_mul(&total)?.f_div(&total.f_sub_scalar(1.0)?)?;
        // As ATen's update: (1 − momentum)·running + momentum·batch.
        let _ = bn.running_mean.shallow_clone().f_mul_scalar_(1.0 - BN_MOMENTUM)?.f_add_(&mean.f_detach()?.f_mul_scalar(BN_MOMENTUM)?)?;
        let _ = bn.running_var.shallow_clone().f_mul_scalar_(1.0 - BN_MOMENTUM)?.f_add_(&unbiased.f_mul_scalar(BN_MOMENTUM)?)?;
    }
    let shape = channel_shape(x);
    let mut scale = var.f_add_scalar(BN_EPS)?.f_rsqrt()?;
    if let Some(w) = &bn.weight {
        scale = scale.f_mul(w)?;
    }
    let mut y = x.f_sub(&mean.f_view(&shape[..])?)?.f_mul(&scale.f_view(&shape[..])?)?;
    if let Some(b) = &bn.bias {
        y = y.f_add(&b.f_view(&shape[..])?)?;
    }
    Ok(y.f_to_kind(out_kind)?)
}

/// Batch statistics per replica, emulated in one process (see the module doc).
pub fn per_replica(bn: &BatchNorm, x: &Tensor, replicas: i64) -> Result<Tensor> {
    let n = x.size()[0];
    ensure!(n % replicas == 0, "a batch of {n} rows cannot be dealt to {replicas} replicas");
    let mut outs = Vec::new();
    let mut rows = Vec::new();
    for r in 0..replicas {
        let idx = Tensor::f_arange_start_step(r, n, replicas, (Kind::Int64, x.device()))?;
        let (rm, rv) = if r == 0 { (Some(&bn.running_mean), Some(&bn.running_var)) } else { (None, None) };
        let xr = x.f_index_select(0, &idx)?;
        outs.push(Tensor::f_batch_norm(&xr, bn.weight.as_ref(), bn.bias.as_ref(), rm, rv, true, BN_MOMENTUM, BN_EPS, true)?);
        rows.push(idx);
    }
    // Row j of the concatenation is row order[j] of the batch.
    let order = Tensor::f_cat(&rows, 0)?;
    Ok(Tensor::f_cat(&outs, 0)?.f_index_select(0, &order.f_argsort(0, false)?)?)
}
