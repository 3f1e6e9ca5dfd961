//! Batches from an ImageFolder split, made by a pool of worker threads.
//!
//! Batch b of an epoch is made by worker b mod W and handed over through
//! that worker's bounded channel, so batches come out in order and only a
//! few finished batches wait in memory, whatever the data set size. The
//! workers live as long as the loader and take passes in order: a
//! training loader queues the next epoch behind the current one, so its
//! first batches are made while the current epoch ends and the test pass
//! runs, not while the trainer waits.
//! Each image is decoded once; both training views are cut from it, their
//! crops and photometric parameters drawn from the sample's own random
//! stream (sampler.rs), so workers and replicas do not change the views.
use super::buffer::HostBatch;
use super::crop::{crop_resize_chw, random_resized_crop_box, resize_chw, RATIO, SCALE};
use super::imagefolder::ImageFolder;
use super::sampler::{sample_rng, shard, Pick};
use super::source::{default_limit, InMemory, Skipped, Source};
use crate::augment::{Plan, Recipe, NPARAMS};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
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
    /// The run's augmentation settings (no defaults here: cli/config.ts
    /// holds them); read for training views only.
    pub color_jitter_strength: f64,
    /// Blur probability of view 1 and view 2.
    pub blur_prob: [f64; 2],
    /// Solarisation probability of view 1 and view 2 (BYOL-style asymmetric views).
    pub solarize_prob: [f64; 2],
    /// Finished batches kept ready (at least one per worker).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Unreadable images are fatal instead of skipped.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub in_memory: InMemory,
    /// Budget of decoded images kept in memory, shared by all loaders (default: a quarter of RAM).
    #[serde(default)]
    pub in_memory_limit_mb: Option<u64>,
    /// Batches in page-locked memory for asynchronous copies to CUDA (ignored without CUDA).
    #[serde(default)]
    pub pin_memory: bool,
}

fn one() -> usize {
    1
}
fn default_prefetch() -> usize {
    2
}

/// A training sample whose file is unreadable is replaced by the next
/// readable one in dataset order (the batch keeps its size, which
/// multi-replica training needs); after this many failures in a row the
/// data set is declared broken.
const MAX_SUBSTITUTES: usize = 64;

/// One batch in host memory: uint8 CHW images, per-image augmentation
/// parameters and their plans (training views only), labels and global
/// sample positions.
pub struct Batch {
    pub n: usize,
    pub size: u32,
    /// What the device gets, in one buffer: images, labels, the plans' data.
    pub host: HostBatch,
    /// Per view: which images each photometric op touches.
    pub plans: Vec<Plan>,
    pub params: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
    /// Position of each sample in the epoch's global order (sampler.rs).
    pub positions: Vec<u64>,
    /// Unreadable files met making it (dataset index, why), recorded in the
    /// pass's report when the batch is handed over.
    pub skipped: Vec<(usize, String)>,
}

impl Batch {
    /// A batch of the first `n` images of `host` (written already), their
    /// labels, positions and, for training views, parameters (n × NPARAMS
    /// per view, none for test images): the plans are made here and their
    /// data written into `host` beside the labels.
    pub fn new(mut host: HostBatch, n: usize, params: Vec<Vec<f32>>, labels: Vec<i64>, positions: Vec<u64>) -> Result<Self> {
        let size = host.size();
        let mut ints = labels.clone();
        let mut floats = Vec::new();
        let plans = params.iter().map(|p| Plan::new(p, n, &mut ints, &mut floats)).collect::<Result<_>>()?;
        host.write_data(&ints, &floats)?;
        Ok(Batch { n, size, host, plans, params, labels, positions, skipped: Vec::new() })
    }
}

/// What a loader reports about itself and its current pass.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub samples: usize,
    pub classes: usize,
    pub in_memory: bool,
    pub cached_images: usize,
    pub cached_bytes: u64,
    pub skipped: Skipped,
}

/// A pass (an epoch from a first batch on) as the workers' queue holds it.
struct Pass {
    epoch: u64,
    first: usize,
    channels: Vec<Receiver<Result<Batch>>>,
    stop: Arc<AtomicBool>,
    next: usize,
    total: usize,
}

impl Pass {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
    }
}

/// One worker's share of a pass: batches w, w + W, … of `batches`.
struct Job {
    epoch: u64,
    batches: Arc<Vec<Vec<Pick>>>,
    tx: SyncSender<Result<Batch>>,
    stop: Arc<AtomicBool>,
}

pub struct Loader {
    cfg: LoaderConfig,
    source: Arc<Source>,
    recipes: [Recipe; 2],
    pin: bool,
    /// The workers' job queues, started with the first pass.
    workers: Vec<Sender<Job>>,
    pass: Option<Pass>,
    /// Training: the next epoch, queued behind `pass`.
    upcoming: Option<Pass>,
}

impl Loader {
    pub fn new(cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.image_size == 0 || cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            bail!("invalid loader settings: batch size, image size and world size must be positive and rank < world size");
        }
        let recipes = [0, 1].map(|v| Recipe {
            blur_p: cfg.blur_prob[v],
            solarize_p: cfg.solarize_prob[v],
            ..Recipe::simclr(cfg.color_jitter_strength)
        });
        recipes.iter().try_for_each(Recipe::check)?;
        let root = cfg.data_dir.join(&cfg.split);
        if !root.is_dir() {
            bail!(
                "no folder {}: --data-dir must hold train/ and test/ with one sub-folder of images per class",
                root.display()
            );
        }
        let folder = ImageFolder::scan(&root)?;
        if cfg.drop_last && folder.samples.len().div_ceil(cfg.world_size) < cfg.batch_size {
            bail!(
                "{} has {} images, fewer than one batch of {} per replica; lower --batch-size",
                root.display(),
                folder.samples.len(),
                cfg.batch_size
            );
        }
        let limit = cfg.in_memory_limit_mb.map_or_else(default_limit, |mb| mb << 20);
        let source = Arc::new(Source::new(folder, cfg.in_memory, limit));
        let pin = cfg.pin_memory && tch::Cuda::is_available();
        Ok(Loader { cfg, source, recipes, pin, workers: Vec::new(), pass: None, upcoming: None })
    }

    pub fn classes(&self) -> &[String] {
        &self.source.folder.classes
    }

    pub fn len_samples(&self) -> usize {
        self.source.folder.samples.len()
    }

    fn picks(&self, epoch: u64) -> Vec<Pick> {
        let c = &self.cfg;
        // Training pads to a multiple of the replicas (DistributedSampler); evaluation
        // shards without padding so that every test image counts exactly once overall.
        shard(self.len_samples(), c.seed, epoch, c.shuffle, c.augment, c.rank, c.world_size)
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

    /// Starts making the batches of `epoch` from batch `first` on (a resumed
    /// run skips what it already trained on), stopping any other pass under
    /// way; a training loader then queues the next epoch behind it.
    pub fn start_epoch(&mut self, epoch: u64, first: usize) -> Result<()> {
        self.source.start_pass(epoch);
        if let Some(p) = self.pass.take() {
            p.stop();
        }
        self.pass = Some(match self.upcoming.take() {
            Some(p) if p.epoch == epoch && p.first == first => p,
            other => {
                if let Some(p) = other {
                    p.stop();
                }
                self.queue(epoch, first)?
            }
        });
        if self.cfg.augment {
            self.upcoming = Some(self.queue(epoch + 1, 0)?);
        }
        Ok(())
    }

    /// Hands each worker its share of a pass, behind what it has queued already.
    fn queue(&mut self, epoch: u64, first: usize) -> Result<Pass> {
        let b = self.cfg.batch_size;
        let mut batches: Vec<Vec<Pick>> = self.picks(epoch).chunks(b).map(|c| c.to_vec()).collect();
        if self.cfg.drop_last && batches.last().is_some_and(|l| l.len() < b) {
            batches.pop();
        }
        batches.drain(..first.min(batches.len()));
        let total = batches.len();
        let workers = self.cfg.workers.max(1);
        while self.workers.len() < workers {
            self.workers.push(self.spawn_worker(self.workers.len(), workers)?);
        }
        // Ready batches: about `prefetch` in all, at least one per worker.
        let capacity = self.cfg.prefetch.div_ceil(workers).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(batches);
        let mut channels = Vec::new();
        for w in &self.workers {
            let (tx, rx) = sync_channel(capacity);
            let job = Job { epoch, batches: batches.clone(), tx, stop: stop.clone() };
            w.send(job).map_err(|_| anyhow!("a loader worker stopped unexpectedly"))?;
            channels.push(rx);
        }
        Ok(Pass { epoch, first, channels, stop, next: 0, total })
    }

    /// Worker `w` of `workers`: makes its share of each pass it is handed, in order.
    fn spawn_worker(&self, w: usize, workers: usize) -> Result<Sender<Job>> {
        let (jobs, queue) = channel::<Job>();
        let maker = BatchMaker { cfg: self.cfg.clone(), source: self.source.clone(), recipes: self.recipes, pin: self.pin };
        std::thread::Builder::new().name(format!("selfsup-loader-{w}")).spawn(move || {
            while let Ok(job) = queue.recv() {
                for picks in job.batches.iter().skip(w).step_by(workers) {
                    if job.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let batch = crate::status::catch(|| maker.make(picks, job.epoch));
                    if job.tx.send(batch).is_err() {
                        break;
                    }
                }
            }
        })?;
        Ok(jobs)
    }

    /// The next batch of the epoch, or None at its end. Test batches whose
    /// every image was unreadable are passed over.
    pub fn next(&mut self) -> Result<Option<Batch>> {
        let Some(pass) = self.pass.as_mut() else { bail!("start an epoch before asking for batches") };
        while pass.next < pass.total {
            let rx = &pass.channels[pass.next % pass.channels.len()];
            let mut batch = rx.recv().context("a loader worker stopped unexpectedly")??;
            pass.next += 1;
            for (index, why) in batch.skipped.drain(..) {
                self.source.record_skip(pass.epoch, index, &anyhow!("{why}"));
            }
            if batch.n > 0 {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    pub fn report(&self) -> Report {
        let (cached_images, cached_bytes) = self.source.cached();
        Report {
            samples: self.len_samples(),
            classes: self.classes().len(),
            in_memory: self.source.in_memory(),
            cached_images,
            cached_bytes,
            skipped: self.source.skipped(),
        }
    }

    fn stop(&mut self) {
        for p in [self.pass.take(), self.upcoming.take()].into_iter().flatten() {
            p.stop();
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
        // Dropping the job queues ends the workers once their jobs stop.
    }
}

/// What a worker thread needs to make batches.
struct BatchMaker {
    cfg: LoaderConfig,
    source: Arc<Source>,
    recipes: [Recipe; 2],
    pin: bool,
}

impl BatchMaker {
    fn make(&self, picks: &[Pick], epoch: u64) -> Result<Batch> {
        let s = self.cfg.image_size;
        let nviews = if self.cfg.augment { 2 } else { 1 };
        // Crops are written straight into the (pinned) buffer the device copy reads.
        let mut host = HostBatch::new(picks.len(), s, nviews, self.pin)?;
        let mut params = if self.cfg.augment { vec![Vec::with_capacity(picks.len() * NPARAMS); 2] } else { Vec::new() };
        let (mut labels, mut positions, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for pick in picks {
            let Some((index, img)) = self.readable(pick, &mut skipped)? else { continue };
            let i = labels.len();
            labels.push(self.source.folder.samples[index].1);
            positions.push(pick.position);
            if !self.cfg.augment {
                resize_chw(&img, s, host.image_mut(0, i))?;
                continue;
            }
            let mut rng = sample_rng(self.cfg.seed, epoch, pick.position);
            for (v, recipe) in self.recipes.iter().enumerate() {
                let bx = random_resized_crop_box(&mut rng, img.width(), img.height(), SCALE, RATIO);
                crop_resize_chw(&img, bx, s, host.image_mut(v, i))?;
                params[v].extend_from_slice(&recipe.draw(&mut rng));
            }
        }
        // Test samples that were skipped leave room at the end.
        Ok(Batch { skipped, ..Batch::new(host, labels.len(), params, labels, positions)? })
    }

    /// The image of `pick`, or for an unreadable file: an error (--strict),
    /// nothing (evaluation: the sample is left out), or the next readable
    /// image in dataset order (training). Skips go to `skipped`, for the report.
    fn readable(&self, pick: &Pick, skipped: &mut Vec<(usize, String)>) -> Result<Option<(usize, Arc<image::RgbImage>)>> {
        let n = self.source.folder.samples.len();
        let mut last_err = None;
        for index in (0..MAX_SUBSTITUTES.min(n)).map(|k| (pick.index + k) % n) {
            match self.source.image(index) {
                Ok(img) => return Ok(Some((index, img))),
                Err(e) if self.cfg.strict => return Err(anyhow!("{e} (--strict makes unreadable images fatal)")),
                Err(e) => {
                    skipped.push((index, e.to_string()));
                    if !self.cfg.augment {
                        return Ok(None);
                    }
                    last_err = Some(e);
                }
            }
        }
        let root = self.source.folder.root.display();
        Err(anyhow!(
            "{} images in a row in {root} are unreadable, the last: {}",
            MAX_SUBSTITUTES.min(n),
            last_err.map_or_else(String::new, |e| e.to_string())
        ))
    }
}
