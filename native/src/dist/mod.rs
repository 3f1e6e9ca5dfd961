//! Data-parallel training over torch's c10d, one process per replica (one
//! GPU each, or CPU): the process group (group.rs), DDP's gradient
//! averaging and buffer broadcasts (ddp.rs), SyncBN (batchnorm.rs), and
//! failures said plainly (faults.rs). docs/DISTRIBUTED.md is the user's
//! view.
//!
//! A trainer thread that joins a group installs it as that thread's
//! *current replica* (like torch.distributed's default group, and like
//! libtorch's own thread-local grad mode), so that the layers that need it
//! reach it without being rewired: BatchNorm (SyncBN) and SimCLR's NT-Xent
//! (negatives gathered from every replica).
pub mod batchnorm;
pub mod ddp;
pub mod faults;
pub mod group;

use crate::model::{Metrics, Model};
use crate::nn::layers::BatchNorm;
use anyhow::{bail, Error, Result};
use ddp::Ddp;
use group::{Group, Rendezvous};
pub use group::{has_nccl, ReduceOp};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tch::{Device, Tensor};

/// How this process takes part in training (TrainerConfig's `distributed`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistConfig {
    #[serde(default = "one")]
    pub world_size: usize,
    #[serde(default)]
    pub rank: usize,
    /// Rendezvous host (rank 0's), without a `tcp://` prefix.
    #[serde(default = "localhost")]
    pub master: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Rendezvous and every collective fail after this long.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// `--convert-to-sync-bn`: BatchNorm statistics over all replicas.
    #[serde(default)]
    pub sync_bn: bool,
    /// DDP's bucket_cap_mb.
    #[serde(default = "default_bucket_mb")]
    pub bucket_cap_mb: f64,
    /// At world size 1 only, for tests: BatchNorm statistics as k replicas
    /// without SyncBN compute them (batchnorm.rs `per_replica`).
    #[serde(default = "one")]
    pub bn_replicas: usize,
    /// Make the process group and DDP even at world size 1 (a backend's
    /// smoke test, e.g. NCCL on one GPU).
    #[serde(default)]
    pub always_group: bool,
}

fn one() -> usize {
    1
}
fn localhost() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    29300
}
fn default_timeout() -> f64 {
    600.0
}
fn default_bucket_mb() -> f64 {
    25.0
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            world_size: 1,
            rank: 0,
            master: localhost(),
            port: default_port(),
            timeout_secs: default_timeout(),
            sync_bn: false,
            bucket_cap_mb: default_bucket_mb(),
            bn_replicas: 1,
            always_group: false,
        }
    }
}

/// Under torchrun, its agent already serves a TCPStore at MASTER_ADDR:PORT
/// (TORCHELASTIC_USE_AGENT_STORE=True): Some(restart count) then, as
/// torch.distributed reads these variables.
fn torchrun_agent_store() -> Option<u32> {
    (std::env::var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Ok("True"))
        .then(|| std::env::var("TORCHELASTIC_RESTART_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// What the layers of this thread's model see of the replicas.
struct Context {
    group: Option<Rc<Group>>,
    sync_bn: bool,
    bn_replicas: i64,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

fn current_group() -> Option<Rc<Group>> {
    CONTEXT.with(|c| c.borrow().as_ref().and_then(|c| c.group.clone()))
}

/// BatchNorm's training-mode forward when replicas change it (SyncBN, or
/// per-replica statistics emulated in one process); None: the plain one.
pub fn batch_norm(bn: &BatchNorm, x: &Tensor) -> Result<Option<Tensor>> {
    let (group, sync_bn, k) = match CONTEXT.with(|c| c.borrow().as_ref().map(|c| (c.group.clone(), c.sync_bn, c.bn_replicas))) {
        Some(v) => v,
        None => return Ok(None),
    };
    match group {
        Some(g) if sync_bn => Ok(Some(batchnorm::synced(bn, x, &g)?)),
        _ if k > 1 => Ok(Some(batchnorm::per_replica(bn, x, k)?)),
        _ => Ok(None),
    }
}

/// Both views' embeddings of every replica, rows in rank order, and where
/// this replica's rows start; None with one replica. Differentiable: the
/// loss of every replica reaches every embedding (the reference gathers
/// without gradient, docs/REFERENCE-DEVIATIONS.md).
pub fn gather_views(z1: &Tensor, z2: &Tensor) -> Result<Option<(Tensor, Tensor, i64)>> {
    let Some(g) = current_group() else { return Ok(None) };
    let width = z1.size()[1];
    let all = g.all_gather(&Tensor::f_cat(&[z1, z2], 1)?)?;
    let offset = g.rank as i64 * z1.size()[0];
    Ok(Some((all.f_narrow(1, 0, width)?, all.f_narrow(1, width, width)?, offset)))
}

/// This process's replica: nothing at world size 1 (bar the per-replica
/// BN emulation), else its process group and DDP.
pub struct Replica {
    ddp: Option<Ddp>,
    group: Option<Rc<Group>>,
    cfg: DistConfig,
}

impl Replica {
    /// Joins the group (blocking until every rank arrived, at most the
    /// timeout) and installs it as this thread's current replica.
    pub fn start(cfg: &DistConfig, device: Device) -> Result<Replica> {
        if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            bail!("rank {} is not in [0, world size {})", cfg.rank, cfg.world_size);
        }
        if cfg.bn_replicas == 0 || (cfg.bn_replicas > 1 && cfg.world_size > 1) {
            bail!("bnReplicas (per-replica BatchNorm statistics in one process) needs world size 1 and a positive count");
        }
        if !(cfg.timeout_secs > 0.0) || !(cfg.bucket_cap_mb > 0.0) {
            bail!("the distributed timeout and bucket size must be positive");
        }
        let group = if cfg.world_size > 1 || cfg.always_group {
            let rv = Rendezvous {
                master: cfg.master.clone(),
                port: cfg.port,
                rank: cfg.rank,
                world: cfg.world_size,
                timeout: Duration::from_secs_f64(cfg.timeout_secs),
                agent_store: torchrun_agent_store(),
            };
            Some(Rc::new(Group::join(&rv, device)?))
        } else {
            None
        };
        CONTEXT.with(|c| {
            *c.borrow_mut() = Some(Context { group: group.clone(), sync_bn: cfg.sync_bn, bn_replicas: cfg.bn_replicas as i64 })
        });
        Ok(Replica { ddp: None, group, cfg: cfg.clone() })
    }

    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world)
    }

    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank)
    }

    /// Rank 0's model everywhere, and DDP's Reducer on its parameters.
    pub fn attach(&mut self, model: &Model) -> Result<()> {
        if let Some(g) = &self.group {
            let bucket = (self.cfg.bucket_cap_mb * (1 << 20) as f64) as i64;
            self.ddp = Some(Ddp::new(g, model, bucket, !self.cfg.sync_bn).map_err(|e| self.explain(e))?);
        }
        Ok(())
    }

    /// Before a training forward: DDP's bucket rebuild and buffer broadcast.
    pub fn before_forward(&mut self) -> Result<()> {
        if let (Some(d), Some(g)) = (self.ddp.as_mut(), self.group.as_ref()) {
            d.before_forward(g)?;
        }
        Ok(())
    }

    /// Before the backward of `loss`: arms the gradient all-reduce.
    pub fn before_backward(&self, loss: &Tensor) -> Result<()> {
        match &self.ddp {
            Some(d) => d.before_backward(loss),
            None => Ok(()),
        }
    }

    /// Before evaluation: rank 0's BatchNorm buffers everywhere.
    pub fn sync_buffers(&self) -> Result<()> {
        if let (Some(d), Some(g)) = (self.ddp.as_ref(), self.group.as_ref()) {
            d.sync_buffers(g).map_err(|e| self.explain(e))?;
        }
        Ok(())
    }

    /// A step's metrics averaged over replicas (equal batches in training).
    pub fn mean_metrics(&self, m: &Metrics) -> Result<Vec<f64>> {
        Ok(Vec::<f64>::try_from(&self.mean_metrics_row(m)?.f_to_device(Device::Cpu)?)?)
    }

    /// The same as five float64s left on the device (no host
    /// synchronisation; the all-reduce is queued on NCCL's stream).
    pub fn mean_metrics_row(&self, m: &Metrics) -> Result<Tensor> {
        let row = m.row()?;
        let Some(g) = &self.group else { return Ok(row) };
        g.all_reduce(&[&row], ReduceOp::Sum).map_err(|e| self.explain(e))?;
        Ok(row.f_div_scalar(g.world as f64)?)
    }

    /// Host values reduced over replicas (unchanged with one).
    pub fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce_host(values, op).map_err(|e| self.explain(e)),
            None => Ok(()),
        }
    }

    /// A tensor on this replica's device reduced in place over replicas.
    pub fn all_reduce_tensor(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce(&[t], op).map_err(|e| self.explain(e)),
            None => Ok(()),
        }
    }

    /// The Reducer's buckets (bytes each, reduction order); empty without DDP.
    pub fn buckets(&self) -> Vec<i64> {
        self.ddp.as_ref().map_or_else(Vec::new, |d| d.bucket_bytes())
    }

    /// A failure during a step, said as what happened to the replicas when
    /// it came from c10d.
    pub fn explain(&self, e: Error) -> Error {
        match &self.group {
            Some(g) if faults::is_collective_error(&e) => faults::collective_error(e, g.rank, self.cfg.timeout_secs),
            _ => e,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // The Reducer goes before the group it reduces over; then this
        // thread forgets the group.
        self.ddp.take();
        CONTEXT.with(|c| c.borrow_mut().take());
        self.group.take();
    }
}
