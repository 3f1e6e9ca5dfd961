//! Where a loader's images come from: the files of an ImageFolder, decoded
//! on demand, optionally kept in memory once decoded (the in-memory mode),
//! and the record of files that could not be read.
use super::decode::decode_rgb;
use super::imagefolder::ImageFolder;
use anyhow::{anyhow, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Whether decoded images are kept in memory.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InMemory {
    /// When the estimated decoded size fits the memory budget.
    #[default]
    Auto,
    Always,
    Never,
}

/// Bad files named in a pass's report; the count covers all of them.
const EXAMPLES: usize = 5;
/// Files whose headers are read to estimate a split's decoded size.
const ESTIMATE_FILES: usize = 64;
/// Per-image bookkeeping on top of the pixels (Arc, Vec and image headers).
const OVERHEAD: u64 = 96;

/// Bytes of decoded images reserved by all in-memory loaders of this process.
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// Bad files met during one pass (an epoch of a split).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Skipped {
    pub epoch: u64,
    /// Distinct unreadable files met in this pass.
    pub count: usize,
    /// "path: reason" of the first few.
    pub examples: Vec<String>,
    #[serde(skip)]
    seen: HashSet<usize>,
}

struct Cache {
    slots: Vec<OnceLock<Arc<RgbImage>>>,
    /// Bytes this cache may hold (its reservation in RESERVED).
    budget: u64,
    used: AtomicU64,
}

pub struct Source {
    pub folder: ImageFolder,
    cache: Option<Cache>,
    /// Files found unreadable, with the reason: never read again.
    bad: Mutex<HashMap<usize, String>>,
    skipped: Mutex<Skipped>,
}

impl Source {
    /// `limit`: the process-wide budget for decoded images, shared by all loaders.
    pub fn new(folder: ImageFolder, mode: InMemory, limit: u64) -> Source {
        let cache = match mode {
            InMemory::Never => None,
            InMemory::Always => Some(u64::MAX),
            InMemory::Auto => reserve(estimate_bytes(&folder), limit),
        }
        .map(|budget| Cache { slots: (0..folder.samples.len()).map(|_| OnceLock::new()).collect(), budget, used: 0.into() });
        Source { folder, cache, bad: Mutex::new(HashMap::new()), skipped: Mutex::new(Skipped::default()) }
    }

    pub fn in_memory(&self) -> bool {
        self.cache.is_some()
    }

    /// Decoded images held in memory now, and their bytes.
    pub fn cached(&self) -> (usize, u64) {
        self.cache.as_ref().map_or((0, 0), |c| {
            (c.slots.iter().filter(|s| s.get().is_some()).count(), c.used.load(Ordering::Relaxed))
        })
    }

    /// The decoded image of sample `index`, or why it cannot be read. A
    /// decoder panic on a hostile file counts as unreadable, never as a crash.
    pub fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        if let Some(img) = self.cache.as_ref().and_then(|c| c.slots[index].get()) {
            return Ok(img.clone());
        }
        if let Some(why) = lock(&self.bad).get(&index) {
            return Err(anyhow!("{why}"));
        }
        let path = &self.folder.samples[index].0;
        match crate::status::catch(|| decode_rgb(path)) {
            Ok(img) => Ok(self.keep(index, Arc::new(img))),
            Err(e) => {
                lock(&self.bad).insert(index, e.to_string());
                Err(e)
            }
        }
    }

    /// Stores `img` when the cache has room left; returns it either way.
    fn keep(&self, index: usize, img: Arc<RgbImage>) -> Arc<RgbImage> {
        if let Some(c) = &self.cache {
            let bytes = img.as_raw().len() as u64 + OVERHEAD;
            let fits = c.used.fetch_add(bytes, Ordering::Relaxed) + bytes <= c.budget;
            if fits && c.slots[index].set(img.clone()).is_ok() {
                return img;
            }
            c.used.fetch_sub(bytes, Ordering::Relaxed); // over budget, or another thread stored it first
        }
        img
    }

    /// Starts the record of bad files of a new pass.
    pub fn start_pass(&self, epoch: u64) {
        *lock(&self.skipped) = Skipped { epoch, ..Skipped::default() };
    }

    /// Records that sample `index` was skipped in pass `epoch` because of `err`.
    pub fn record_skip(&self, epoch: u64, index: usize, err: &anyhow::Error) {
        let mut s = lock(&self.skipped);
        if s.epoch == epoch && s.seen.insert(index) {
            s.count += 1;
            if s.examples.len() < EXAMPLES {
                s.examples.push(err.to_string().trim_start_matches("cannot decode ").to_string());
            }
        }
    }

    /// The bad files of the current pass.
    pub fn skipped(&self) -> Skipped {
        lock(&self.skipped).clone()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            if c.budget != u64::MAX {
                RESERVED.fetch_sub(c.budget, Ordering::Relaxed);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reserves `estimate` bytes (plus a quarter for estimation error) of the
/// shared budget; None when they do not fit.
fn reserve(estimate: u64, limit: u64) -> Option<u64> {
    let want = estimate.saturating_add(estimate / 4);
    RESERVED
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(want).filter(|&t| t <= limit))
        .ok()
        .map(|_| want)
}

/// Decoded size of the whole split, from the headers of up to
/// ESTIMATE_FILES evenly spaced files (unreadable ones are left out).
pub fn estimate_bytes(folder: &ImageFolder) -> u64 {
    let n = folder.samples.len();
    let step = n.div_ceil(ESTIMATE_FILES).max(1);
    let sizes: Vec<u64> = (0..n)
        .step_by(step)
        .filter_map(|i| image::ImageReader::open(&folder.samples[i].0).ok()?.with_guessed_format().ok()?.into_dimensions().ok())
        .map(|(w, h)| 3 * w as u64 * h as u64 + OVERHEAD)
        .collect();
    if sizes.is_empty() {
        return 0;
    }
    sizes.iter().sum::<u64>() / sizes.len() as u64 * n as u64
}

/// The default budget: a quarter of the machine's memory (from /proc/meminfo), else 2 GiB.
pub fn default_limit() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    total_kb.map_or(2 << 30, |kb| kb * 1024 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testing::{gradient, temp_dir};
    use std::fs;

    fn folder(name: &str, files: usize) -> ImageFolder {
        let root = temp_dir(name);
        fs::create_dir_all(root.join("a")).expect("mkdir");
        for i in 0..files {
            gradient(20, 10).save(root.join(format!("a/{i}.png"))).expect("save");
        }
        fs::write(root.join("a/bad.png"), b"").expect("write");
        ImageFolder::scan(&root).expect("scan")
    }

    #[test]
    fn estimate_counts_decoded_bytes() {
        let f = folder("estimate", 7);
        let want = 8 * (3 * 20 * 10 + OVERHEAD); // 7 good files, the empty one counted at their mean
        assert_eq!(estimate_bytes(&f), want);
        let _ = fs::remove_dir_all(&f.root);
    }

    #[test]
    fn cached_images_are_decoded_once_and_bad_files_remembered() {
        let f = folder("cache", 3);
        let root = f.root.clone();
        let src = Source::new(f, InMemory::Always, 0);
        assert!(src.in_memory());
        let bad = src.folder.samples.iter().position(|(p, _)| p.ends_with("bad.png")).expect("bad file");
        let first = src.image(0).expect("decode");
        fs::remove_file(&src.folder.samples[0].0).expect("rm"); // later reads must come from memory
        assert!(Arc::ptr_eq(&first, &src.image(0).expect("cached")));
        assert_eq!(src.cached(), (1, 600 + OVERHEAD));
        let msg = src.image(bad).unwrap_err().to_string();
        assert!(msg.contains("bad.png") && msg.contains("empty"), "{msg}");
        fs::remove_file(&src.folder.samples[bad].0).expect("rm");
        assert_eq!(src.image(bad).unwrap_err().to_string(), msg); // remembered, not re-read
        src.start_pass(4);
        src.record_skip(4, bad, &anyhow!("cannot decode x.png: empty"));
        src.record_skip(4, bad, &anyhow!("cannot decode x.png: empty"));
        src.record_skip(3, 1, &anyhow!("a late report from the previous pass"));
        let s = src.skipped();
        assert_eq!((s.epoch, s.count, s.examples), (4, 1, vec!["x.png: empty".to_string()]));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn auto_mode_needs_the_split_to_fit_the_budget() {
        let f = folder("auto", 2);
        let root = f.root.clone();
        assert!(!Source::new(f.clone(), InMemory::Auto, 100).in_memory());
        assert!(!Source::new(f.clone(), InMemory::Never, u64::MAX / 2).in_memory());
        // Other tests reserve concurrently: leave them room.
        assert!(Source::new(f, InMemory::Auto, RESERVED.load(Ordering::Relaxed) + (1 << 30)).in_memory());
        let _ = fs::remove_dir_all(&root);
    }
}
