//! The C ABI that Deno loads (ffi/symbols.ts lists the same functions).
//!
//! Objects live in a registry and cross the boundary as integer ids: a
//! stale or wrong id is an error message, never a dangling pointer.
//! Conventions are in status.rs: `i64` results, `< 0` is an error id.
//! The test and benchmark hooks' entry points are in hooks.rs and
//! bench.rs (`testing` feature only).
use crate::data::demo::{write_demo_dataset, DemoSpec};
use crate::data::imagefolder::ImageFolder;
use crate::data::loader::{Batch, Loader};
use crate::status::{guard, take_message};
use crate::thread::Owner;
use crate::trainer::{self, State, TrainerConfig, METRICS};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

enum Object {
    Trainer(Arc<Owner<State>>),
    Loader(Arc<Mutex<Loader>>),
    Batch(Box<Batch>),
}

static NEXT_ID: AtomicI64 = AtomicI64::new(1);
static OBJECTS: Mutex<Option<HashMap<i64, Object>>> = Mutex::new(None);

fn with_objects<R>(f: impl FnOnce(&mut HashMap<i64, Object>) -> R) -> R {
    let mut guard = OBJECTS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

fn insert(obj: Object) -> i64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    with_objects(|m| m.insert(id, obj));
    id
}

pub(crate) fn trainer(id: i64) -> Result<Arc<Owner<State>>> {
    with_objects(|m| match m.get(&id) {
        Some(Object::Trainer(t)) => Ok(t.clone()),
        _ => Err(anyhow!("no trainer with handle {id} (closed already?)")),
    })
}

fn loader(id: i64) -> Result<Arc<Mutex<Loader>>> {
    with_objects(|m| match m.get(&id) {
        Some(Object::Loader(l)) => Ok(l.clone()),
        _ => Err(anyhow!("no loader with handle {id} (closed already?)")),
    })
}

fn take_batch(id: i64) -> Result<Batch> {
    with_objects(|m| match m.remove(&id) {
        Some(Object::Batch(b)) => Ok(*b),
        Some(other) => {
            m.insert(id, other);
            Err(anyhow!("handle {id} is not a batch"))
        }
        None => Err(anyhow!("no batch with handle {id} (used or freed already?)")),
    })
}

/// Borrows `len` bytes at `ptr` as UTF-8.
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str> {
    if ptr.is_null() {
        bail!("null string argument");
    }
    std::str::from_utf8(std::slice::from_raw_parts(ptr, len)).context("argument is not UTF-8")
}

unsafe fn json<T: serde::de::DeserializeOwned>(ptr: *const u8, len: usize, what: &str) -> Result<T> {
    serde_json::from_str(text(ptr, len)?).map_err(|e| anyhow!("invalid {what} settings: {e}"))
}

/// Copies `s` into `buf` (truncated to `cap`); returns the full length.
unsafe fn write_text(s: &str, buf: *mut u8, cap: usize) -> i64 {
    if !buf.is_null() {
        let n = s.len().min(cap);
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf, n);
    }
    s.len() as i64
}

unsafe fn write_metrics(m: &[f64; METRICS], out: *mut f64) -> Result<()> {
    if out.is_null() {
        bail!("null metrics buffer");
    }
    std::ptr::copy_nonoverlapping(m.as_ptr(), out, METRICS);
    Ok(())
}

/// The message of error `id` (0: the newest), copied into `buf`; returns
/// its length, or -1 when there is no such message.
#[no_mangle]
pub unsafe extern "C" fn selfsup_last_error(id: i64, buf: *mut u8, cap: usize) -> i64 {
    match take_message(id) {
        Some(msg) => write_text(&msg, buf, cap),
        None => -1,
    }
}

/// JSON {selfsup, libtorch, cuda, cudaDevices, threads} into `buf`.
#[no_mangle]
pub unsafe extern "C" fn selfsup_version(buf: *mut u8, cap: usize) -> i64 {
    guard(|| {
        let v = serde_json::json!({
            "selfsup": env!("CARGO_PKG_VERSION"),
            "libtorch": crate::torch_version(),
            "cuda": tch::Cuda::is_available(),
            "cudaDevices": tch::Cuda::device_count(),
            "threads": tch::get_num_threads(),
        });
        Ok(write_text(&v.to_string(), buf, cap))
    })
}

/// Writes the built-in demo data set to `path` (which must not exist).
#[no_mangle]
pub unsafe extern "C" fn selfsup_demo_dataset(
    path: *const u8,
    path_len: usize,
    seed: u64,
    train_per_class: u32,
    test_per_class: u32,
    size: u32,
) -> i64 {
    guard(|| {
        let root = PathBuf::from(text(path, path_len)?);
        let spec = DemoSpec { seed, train_per_class: train_per_class as usize, test_per_class: test_per_class as usize, size };
        write_demo_dataset(&root, &spec)?;
        Ok(0)
    })
}

/// JSON {classes, samples, imageSize: [w, h] | null} of the ImageFolder at `path`, into `buf`
/// (no classes: unlabelled images; imageSize: a typical image's, from up to 32 headers).
#[no_mangle]
pub unsafe extern "C" fn selfsup_scan_folder(path: *const u8, path_len: usize, buf: *mut u8, cap: usize) -> i64 {
    guard(|| {
        let f = ImageFolder::scan(&PathBuf::from(text(path, path_len)?))?;
        let size = f.typical_size(32).map(|(w, h)| [w, h]);
        let v = serde_json::json!({ "classes": f.classes, "samples": f.samples.len(), "imageSize": size });
        Ok(write_text(&v.to_string(), buf, cap))
    })
}

/// A loader from JSON settings (data/loader.rs LoaderConfig); returns its id.
#[no_mangle]
pub unsafe extern "C" fn selfsup_loader_new(cfg: *const u8, len: usize) -> i64 {
    guard(|| Ok(insert(Object::Loader(Arc::new(Mutex::new(Loader::new(json(cfg, len, "loader")?)?))))))
}

/// Batches per epoch of this replica.
#[no_mangle]
pub extern "C" fn selfsup_loader_len(id: i64) -> i64 {
    guard(|| Ok(loader(id)?.lock().map_err(|_| anyhow!("loader poisoned"))?.batches_per_epoch() as i64))
}

#[no_mangle]
pub extern "C" fn selfsup_loader_start_epoch(id: i64, epoch: u64, first_batch: u64) -> i64 {
    guard(|| {
        loader(id)?.lock().map_err(|_| anyhow!("loader poisoned"))?.start_epoch(epoch, first_batch as usize)?;
        Ok(0)
    })
}

/// The next batch's id, or 0 at the end of the epoch. Blocks until ready.
#[no_mangle]
pub extern "C" fn selfsup_loader_next(id: i64) -> i64 {
    guard(|| {
        let l = loader(id)?;
        let next = l.lock().map_err(|_| anyhow!("loader poisoned"))?.next()?;
        Ok(next.map_or(0, |b| insert(Object::Batch(Box::new(b)))))
    })
}

/// JSON of the loader's report (data/loader.rs Report) into `buf`: sizes,
/// in-memory state and the unreadable files of the current pass.
#[no_mangle]
pub unsafe extern "C" fn selfsup_loader_report(id: i64, buf: *mut u8, cap: usize) -> i64 {
    guard(|| {
        let report = loader(id)?.lock().map_err(|_| anyhow!("loader poisoned"))?.report();
        Ok(write_text(&serde_json::to_string(&report)?, buf, cap))
    })
}

/// Writes Fashion-MNIST's IDX files in `source` as an ImageFolder at `out`
/// (which must not exist); returns the number of images written.
#[no_mangle]
pub unsafe extern "C" fn selfsup_fashion_mnist(source: *const u8, source_len: usize, out: *const u8, out_len: usize) -> i64 {
    guard(|| {
        let (src, out) = (PathBuf::from(text(source, source_len)?), PathBuf::from(text(out, out_len)?));
        let done = crate::data::idx::fashion_mnist_to_folder(&src, &out)?;
        Ok((done.train + done.test) as i64)
    })
}

/// Frees a loader, trainer or unused batch.
#[no_mangle]
pub extern "C" fn selfsup_free(id: i64) -> i64 {
    guard(|| {
        // Dropped outside the registry lock: a trainer joins its thread.
        let obj = with_objects(|m| m.remove(&id));
        Ok(obj.map_or(0, |o| {
            drop(o);
            1
        }))
    })
}

/// A trainer from JSON settings (trainer.rs TrainerConfig); returns its id.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_new(cfg: *const u8, len: usize) -> i64 {
    guard(|| {
        let cfg: TrainerConfig = json(cfg, len, "trainer")?;
        Ok(insert(Object::Trainer(Arc::new(trainer::spawn(cfg)?))))
    })
}

/// One training step on batch `batch` (consumed) at learning rate `lr`
/// and BYOL target decay `tau`; fills `metrics` (METRICS f64s). With a
/// null `metrics` the step's metrics stay on the device (no host
/// synchronisation) until `selfsup_trainer_take_metrics`.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_train_step(id: i64, batch: i64, lr: f64, tau: f64, metrics: *mut f64) -> i64 {
    guard(|| {
        let t = trainer(id)?;
        let b = take_batch(batch)?;
        if metrics.is_null() {
            t.call(move |s| s.train_step_deferred(b, lr, tau))?;
            return Ok(0);
        }
        let m = t.call(move |s| s.train_step(b, lr, tau))?;
        write_metrics(&m, metrics)?;
        Ok(0)
    })
}

/// The rows of the oldest `cap` steps run without a metrics buffer and
/// not taken yet, STEP_ROW f64s each (METRICS, loss scale, skipped), into
/// `out`; returns the number of rows. The host waits for the last of them
/// only: newer steps stay queued on the device.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_take_metrics(id: i64, out: *mut f64, cap: usize) -> i64 {
    guard(|| {
        let rows = trainer(id)?.call(move |s| s.take_rows(cap))?;
        if !rows.is_empty() {
            if out.is_null() {
                bail!("null metrics buffer");
            }
            let flat: Vec<f64> = rows.iter().flatten().copied().collect();
            std::ptr::copy_nonoverlapping(flat.as_ptr(), out, flat.len());
        }
        Ok(rows.len() as i64)
    })
}

/// Seconds the training steps read back since the last call spent copying
/// their batch to the device, augmenting it, and in forward, backward and
/// update, and how many steps that was: 4 f64s into `out`
/// (pipeline/mod.rs StageTimes: CUDA events on a GPU, wall clocks on the
/// trainer's thread on the CPU).
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_stage_times(id: i64, out: *mut f64) -> i64 {
    guard(|| {
        if out.is_null() {
            bail!("null stage times buffer");
        }
        let t = trainer(id)?.call(|s| Ok(s.pipe.take_times()))?;
        std::ptr::copy_nonoverlapping([t.copy, t.augment, t.step, t.steps as f64].as_ptr(), out, 4);
        Ok(0)
    })
}

/// Readies torch's profiler; called on the thread that loaded the library
/// (Kineto's client was registered there), before `selfsup_trainer_profile`.
#[no_mangle]
pub extern "C" fn selfsup_profile_prepare() -> i64 {
    guard(|| {
        crate::pipeline::profile::prepare()?;
        Ok(0)
    })
}

/// Starts torch's profiler on the trainer's thread (`path` empty), or
/// stops it and writes its Chrome trace to `path`; on stopping, the table
/// of the operators' self times goes into `buf` (up to `cap` bytes) and its
/// full length is returned.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_profile(id: i64, path: *const u8, len: usize, buf: *mut u8, cap: usize) -> i64 {
    guard(|| {
        let t = trainer(id)?;
        if len == 0 {
            t.call(|s| crate::pipeline::profile::start(s.model.device().is_cuda()))?;
            return Ok(0);
        }
        let p = PathBuf::from(text(path, len)?);
        let table = t.call(move |_| crate::pipeline::profile::stop(&p, 15))?;
        Ok(write_text(&table, buf, cap))
    })
}

/// Evaluation of a test batch (consumed); fills `metrics`.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_eval_step(id: i64, batch: i64, metrics: *mut f64) -> i64 {
    guard(|| {
        let t = trainer(id)?;
        let b = take_batch(batch)?;
        let m = t.call(move |s| s.eval_step(b))?;
        write_metrics(&m, metrics)?;
        Ok(0)
    })
}

/// Before a test pass, on every rank: rank 0's BatchNorm buffers everywhere
/// (a no-op with one replica).
#[no_mangle]
pub extern "C" fn selfsup_trainer_begin_eval(id: i64) -> i64 {
    guard(|| {
        trainer(id)?.call(|s| s.begin_eval())?;
        Ok(0)
    })
}

/// Reduces `len` f64s at `values` in place over the replicas: op 0 sum,
/// 1 max, 2 min (unchanged with one replica). Every rank must call it.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_all_reduce(id: i64, values: *mut f64, len: usize, op: u32) -> i64 {
    guard(|| {
        if values.is_null() && len > 0 {
            bail!("null values buffer");
        }
        let op = match op {
            0 => crate::dist::ReduceOp::Sum,
            1 => crate::dist::ReduceOp::Max,
            2 => crate::dist::ReduceOp::Min,
            other => bail!("unknown reduce op {other}; use 0 (sum), 1 (max) or 2 (min)"),
        };
        let host = if len == 0 { Vec::new() } else { std::slice::from_raw_parts(values, len).to_vec() };
        let reduced = trainer(id)?.call(move |s| {
            let mut v = host;
            s.all_reduce(&mut v, op)?;
            Ok(v)
        })?;
        if len > 0 {
            std::slice::from_raw_parts_mut(values, len).copy_from_slice(&reduced);
        }
        Ok(0)
    })
}

/// The views kept for the log's image grids (trainer.rs `shown_views`):
/// N, C, H, W into `dims` (4 i64), up to `cap` uint8 bytes into `buf`
/// (may be null); returns the byte length, 0 when nothing is kept yet.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_views(id: i64, which: u32, dims: *mut i64, buf: *mut u8, cap: usize) -> i64 {
    guard(|| {
        if dims.is_null() {
            bail!("null dims buffer");
        }
        let Some((shape, bytes)) = trainer(id)?.call(move |s| s.shown_views(which as usize))? else {
            return Ok(0);
        };
        std::ptr::copy_nonoverlapping(shape.as_ptr(), dims, 4);
        if !buf.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len().min(cap));
        }
        Ok(bytes.len() as i64)
    })
}

/// Runs `f` with the path argument on trainer `id`'s thread.
unsafe fn on_trainer_with_path<F>(id: i64, path: *const u8, len: usize, f: F) -> i64
where
    F: FnOnce(&mut State, &std::path::Path) -> Result<()> + Send + 'static,
{
    guard(|| {
        let p = PathBuf::from(text(path, len)?);
        trainer(id)?.call(move |s| f(s, &p))?;
        Ok(0)
    })
}

/// Every parameter and buffer, by name, as safetensors (no optimizer state).
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_save_weights(id: i64, path: *const u8, len: usize) -> i64 {
    on_trainer_with_path(id, path, len, |s, p| s.save_weights(&p.to_path_buf()))
}

#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_load_weights(id: i64, path: *const u8, len: usize) -> i64 {
    on_trainer_with_path(id, path, len, |s, p| s.load_weights(&p.to_path_buf()))
}

/// Everything needed to resume (weights, target, optimizer, Polyak),
/// written atomically; the file's SHA-256 goes to `sha256` as 64 hex digits.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_save_checkpoint(id: i64, path: *const u8, len: usize, sha256: *mut u8) -> i64 {
    guard(|| {
        let p = PathBuf::from(text(path, len)?);
        let digest = trainer(id)?.call(move |s| s.save_checkpoint(&p))?;
        if sha256.is_null() || digest.len() != 64 {
            bail!("internal error: no room for the checkpoint's checksum");
        }
        write_text(&digest, sha256, 64);
        Ok(0)
    })
}

/// Restores a checkpoint; a non-empty `sha256` (hex) must match the file's.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_load_checkpoint(id: i64, path: *const u8, len: usize, sha256: *const u8, sha_len: usize) -> i64 {
    guard(|| {
        let p = PathBuf::from(text(path, len)?);
        let want = if sha_len == 0 { None } else { Some(text(sha256, sha_len)?.to_string()) };
        trainer(id)?.call(move |s| s.load_checkpoint(&p, want.as_deref()))?;
        Ok(0)
    })
}

/// Backbone weights with torchvision's names (an export) into the online backbone.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_load_backbone(id: i64, path: *const u8, len: usize) -> i64 {
    on_trainer_with_path(id, path, len, |s, p| s.load_backbone(p))
}

/// Frozen features of a test-mode batch (consumed) into set 0 (train) or 1
/// (test), under weights 0 online, 1 polyak, 2 target; set -1 clears both.
#[no_mangle]
pub extern "C" fn selfsup_trainer_embed(id: i64, batch: i64, set: i64, weights: i64) -> i64 {
    guard(|| {
        let t = trainer(id)?;
        if set < 0 {
            t.call(|s| {
                s.clear_features();
                Ok(())
            })?;
            return Ok(0);
        }
        let which = match weights {
            0 => "online",
            1 => "polyak",
            2 => "target",
            _ => bail!("weights must be 0 (online), 1 (polyak) or 2 (target)"),
        };
        let b = take_batch(batch)?;
        t.call(move |s| s.embed(b, set as usize, which))?;
        Ok(0)
    })
}

/// Classifies the test features from the train features: `how` is JSON,
/// {"linear": {epochs, lr, weightDecay, batchSize, seed}} or {"knn": {k, temperature}};
/// fills out[0] = top-1, out[1] = top-5 (%).
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_classify(id: i64, classes: i64, how: *const u8, len: usize, out: *mut f64) -> i64 {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum How {
        Linear(crate::evaluate::LinearProbe),
        Knn { k: i64, temperature: f64 },
    }
    guard(|| {
        let how: How = json(how, len, "evaluation")?;
        let acc = trainer(id)?.call(move |s| match how {
            How::Linear(p) => s.linear_probe(classes, &p),
            How::Knn { k, temperature } => s.knn(classes, k, temperature),
        })?;
        if out.is_null() {
            bail!("null output buffer");
        }
        std::ptr::copy_nonoverlapping(acc.as_ptr(), out, 2);
        Ok(0)
    })
}
