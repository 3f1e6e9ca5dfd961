//! Batches from an ImageFolder split, made by a pool of worker threads.
//!
//! Batch b of an epoch is made by worker b mod W and handed over through
//! that worker's bounded channel, so batches come out in order and at most
//! W × `prefetch` finished batches wait in memory, whatever the data size.
use super::imagefolder::{crop_resize_chw, decode_rgb, random_resized_crop_box, resize_chw, ImageFolder};
use super::sampler::{sample_rng, shard, Pick};
use crate::augment::{Recipe, NPARAMS};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoaderConfig {
    /// The data directory (holding train/ and test/).
    pub data_dir: PathBuf,
    /// "train", "test" or "valid".
    pub split: String,
    /// Per-replica batch size.
    pub batch_size: usize,
    pub image_size: u32,
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(default)]
    pub seed: u64,
    /// Two augmented views per image (training) or one resized image.
    pub augment: bool,
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default)]
    pub drop_last: bool,
    #[serde(default)]
    pub rank: usize,
    #[serde(default = "one")]
    pub world_size: usize,
    #[serde(default = "default_strength")]
    pub color_jitter_strength: f64,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
}

fn one() -> usize {
    1
}
fn default_strength() -> f64 {
    1.0
}
fn default_prefetch() -> usize {
    2
}

/// One batch in host memory: uint8 CHW images, per-image augmentation
/// parameters (training views only) and labels.
pub struct Batch {
    pub n: usize,
    pub size: u32,
    pub views: Vec<Vec<u8>>,
    pub params: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
}

struct Epoch {
    channels: Vec<Receiver<Result<Batch>>>,
    stop: Arc<AtomicBool>,
    next: usize,
    total: usize,
}

pub struct Loader {
    cfg: LoaderConfig,
    folder: Arc<ImageFolder>,
    epoch: Option<Epoch>,
}

impl Loader {
    pub fn new(cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.image_size == 0 || cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            bail!("invalid loader settings: batch size, image size and world size must be positive and rank < world size");
        }
        let root = cfg.data_dir.join(&cfg.split);
        let folder = ImageFolder::scan(&root)?;
        let per_replica = folder.samples.len() / cfg.world_size;
        if cfg.drop_last && per_replica < cfg.batch_size {
            bail!(
                "{} has {} images, fewer than one batch of {} per replica",
                root.display(),
                folder.samples.len(),
                cfg.batch_size
            );
        }
        Ok(Loader { cfg, folder: Arc::new(folder), epoch: None })
    }

    pub fn classes(&self) -> &[String] {
        &self.folder.classes
    }

    pub fn len_samples(&self) -> usize {
        self.folder.samples.len()
    }

    fn picks(&self, epoch: u64) -> Vec<Pick> {
        let c = &self.cfg;
        shard(self.folder.samples.len(), c.seed, epoch, c.shuffle, c.augment, c.rank, c.world_size)
    }

    /// Number of batches this replica gets per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.picks(0).len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Starts making the batches of `epoch` (stopping any epoch under way).
    pub fn start_epoch(&mut self, epoch: u64) -> Result<()> {
        self.stop();
        let picks = self.picks(epoch);
        let b = self.cfg.batch_size;
        let mut batches: Vec<Vec<Pick>> = picks.chunks(b).map(|c| c.to_vec()).collect();
        if self.cfg.drop_last && batches.last().is_some_and(|l| l.len() < b) {
            batches.pop();
        }
        let total = batches.len();
        let workers = self.cfg.workers.max(1).min(total.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(batches);
        let mut channels = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
            let (cfg, folder, batches, stop) = (self.cfg.clone(), self.folder.clone(), batches.clone(), stop.clone());
            std::thread::Builder::new().name(format!("selfsup-loader-{w}")).spawn(move || {
                for picks in batches.iter().skip(w).step_by(workers) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let batch = crate::status::catch(|| make_batch(&cfg, &folder, epoch, picks));
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })?;
            channels.push(rx);
        }
        self.epoch = Some(Epoch { channels, stop, next: 0, total });
        Ok(())
    }

    /// The next batch of the epoch, or None at its end.
    pub fn next(&mut self) -> Result<Option<Batch>> {
        let Some(ep) = self.epoch.as_mut() else { bail!("start an epoch before asking for batches") };
        if ep.next >= ep.total {
            return Ok(None);
        }
        let rx = &ep.channels[ep.next % ep.channels.len()];
        let batch = rx.recv().context("a loader worker stopped unexpectedly")??;
        ep.next += 1;
        Ok(Some(batch))
    }

    fn stop(&mut self) {
        if let Some(ep) = self.epoch.take() {
            ep.stop.store(true, Ordering::Relaxed);
            // Dropping the receivers unblocks workers waiting to send.
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}

fn make_batch(cfg: &LoaderConfig, folder: &ImageFolder, epoch: u64, picks: &[Pick]) -> Result<Batch> {
    let n = picks.len();
    let s = cfg.image_size;
    let plane = 3 * (s as usize) * (s as usize);
    let nviews = if cfg.augment { 2 } else { 1 };
    let mut views = vec![vec![0u8; n * plane]; nviews];
    let mut params = vec![vec![0f32; if cfg.augment { n * NPARAMS } else { 0 }]; nviews];
    let mut labels = Vec::with_capacity(n);
    let recipe = Recipe::simclr(cfg.color_jitter_strength);
    for (i, pick) in picks.iter().enumerate() {
        let (path, label) = &folder.samples[pick.index];
        labels.push(*label);
        // Decoded once; both views are cut from the same pixels.
        let img = decode_rgb(path)?;
        if !cfg.augment {
            resize_chw(&img, s, &mut views[0][i * plane..(i + 1) * plane])?;
            continue;
        }
        let mut rng = sample_rng(cfg.seed, epoch, pick.position);
        for v in 0..2 {
            let bx = random_resized_crop_box(&mut rng, img.width(), img.height(), (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0));
            crop_resize_chw(&img, bx, s, &mut views[v][i * plane..(i + 1) * plane])?;
            params[v][i * NPARAMS..(i + 1) * NPARAMS].copy_from_slice(&recipe.draw(&mut rng));
        }
    }
    Ok(Batch { n, size: s, views, params, labels })
}
