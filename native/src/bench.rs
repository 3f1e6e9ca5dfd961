//! Hooks for bench/step: training steps on one fixed batch kept on the
//! trainer's thread and timed there, so that the benchmark measures the
//! step (not the loader) and can tell the FFI round trip apart from it.
//! Not used by training; bench/step/selfsup_step.ts declares the symbols.
//!
//! `selfsup_trainer_bench_setup` makes a synthetic batch (uint8 images,
//! labels, and photometric parameters drawn with the reference's recipe)
//! and its two views, augmented once, as float tensors on the device.
//! `selfsup_trainer_bench_step` then runs, by `mode`:
//!
//! - 0, nothing: a round trip to the trainer's thread;
//! - 1, the step on the fixed views: forward, backward, update and the
//!   metrics read back to the host, as `State::train_step` does after
//!   its views are made (what bench/step/torch_step.py times);
//! - 2, `State::train_step` itself on a copy of the uint8 batch, i.e. with
//!   the views made and augmented on the device as in training.
//!
//! and writes the seconds spent on the trainer's thread.
use crate::augment::Recipe;
use crate::data::buffer::HostBatch;
use crate::data::loader::Batch;
use crate::status::guard;
use crate::trainer::{State, METRICS};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::time::Instant;
use tch::Tensor;

/// The fixed batch of a trainer's thread.
struct Fixed {
    images: [Vec<u8>; 2],
    params: [Vec<f32>; 2],
    labels: Vec<i64>,
    size: u32,
    /// Its views after augmentation, and the labels, on the device.
    views: (Tensor, Tensor, Tensor),
}

thread_local! {
    // Lives on the trainer's own thread (calls are posted there), so each
    // trainer has its own, dropped with the thread.
    static FIXED: RefCell<Option<Fixed>> = const { RefCell::new(None) };
}

impl Fixed {
    /// A copy of the batch as a loader makes it (pinned for a GPU).
    fn batch(&self, pin: bool) -> Result<Batch> {
        let n = self.labels.len();
        let plane = 3 * (self.size as usize).pow(2);
        let mut host = HostBatch::new(n, self.size, 2, pin)?;
        for (v, images) in self.images.iter().enumerate() {
            for i in 0..n {
                host.image_mut(v, i).copy_from_slice(&images[i * plane..(i + 1) * plane]);
            }
        }
        Batch::new(host, n, self.params.to_vec(), self.labels.clone(), (0..n as u64).collect())
    }
}

/// Makes the fixed batch: `n` images of `size` px, smooth random colour
/// fields with noise (so crops, jitter and blur have something to act on).
fn setup(s: &mut State, n: usize, size: u32, classes: i64, seed: u64) -> Result<()> {
    if n == 0 || size == 0 || classes < 1 {
        bail!("bench setup: batch, size and classes must be positive");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let px = size as usize * size as usize;
    let image = |rng: &mut ChaCha8Rng| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * 3 * px);
        for _ in 0..n {
            for _ in 0..3 {
                let (a, b, c) = (rng.random::<f32>(), rng.random::<f32>() * 6.0, rng.random::<f32>() * 6.0);
                for i in 0..px {
                    let (y, x) = ((i / size as usize) as f32 / size as f32, (i % size as usize) as f32 / size as f32);
                    let v = 0.5 + 0.3 * (b * x + a * 6.0).sin() * (c * y).cos() + 0.1 * (rng.random::<f32>() - 0.5);
                    out.push((v.clamp(0.0, 1.0) * 255.0) as u8);
                }
            }
        }
        out
    };
    let images = [image(&mut rng), image(&mut rng)];
    let recipe = Recipe::simclr(1.0);
    let mut params = || -> Vec<f32> { (0..n).flat_map(|_| recipe.draw(&mut rng)).collect() };
    let params = [params(), params()];
    let labels: Vec<i64> = (0..n as i64).map(|i| i % classes).collect();
    let mut fixed = Fixed { images, params, labels, size, views: (Tensor::new(), Tensor::new(), Tensor::new()) };
    let (v1, v2, _, _) = s.views(&fixed.batch(s.model.device().is_cuda())?)?;
    let y = Tensor::from_slice(&fixed.labels).f_to_device(s.model.device())?;
    fixed.views = (v1, v2, y);
    FIXED.with(|f| *f.borrow_mut() = Some(fixed));
    Ok(())
}

/// One call of `mode` (see the module comment): metrics and seconds on this thread.
fn step(s: &mut State, mode: u32, lr: f64, tau: f64) -> Result<([f64; METRICS], f64)> {
    let mut out = [0.0; METRICS];
    if mode == 0 {
        let t = Instant::now();
        return Ok((out, t.elapsed().as_secs_f64()));
    }
    FIXED.with(|f| {
        let f = f.borrow();
        let fixed = f.as_ref().context("bench step before bench setup")?;
        match mode {
            1 => {
                let (v1, v2, y) = &fixed.views;
                let t = Instant::now();
                let values = s.replicated_step(v1, v2, y, lr, tau)?;
                let secs = t.elapsed().as_secs_f64();
                out[..values.len()].copy_from_slice(&values);
                out[METRICS - 1] = fixed.labels.len() as f64;
                Ok((out, secs))
            }
            2 => {
                let batch = fixed.batch(s.model.device().is_cuda())?;
                let t = Instant::now();
                let m = s.train_step(batch, lr, tau)?;
                Ok((m, t.elapsed().as_secs_f64()))
            }
            other => bail!("unknown bench mode {other}; use 0 (round trip), 1 (fixed views) or 2 (train_step)"),
        }
    })
}

/// Makes trainer `id`'s fixed batch of `n` images of `size` px with
/// labels below `classes`, from `seed`.
#[no_mangle]
pub extern "C" fn selfsup_trainer_bench_setup(id: i64, n: u32, size: u32, classes: i64, seed: u64) -> i64 {
    guard(|| {
        crate::ffi::trainer(id)?.call(move |s| setup(s, n as usize, size, classes, seed))?;
        Ok(0)
    })
}

/// One bench call of `mode` on trainer `id`; fills `metrics` (METRICS
/// f64s) and `seconds[0]` with the time spent on the trainer's thread.
///
/// # Safety
/// `metrics` and `seconds` must point to METRICS and 1 writable f64s.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_bench_step(id: i64, mode: u32, lr: f64, tau: f64, metrics: *mut f64, seconds: *mut f64) -> i64 {
    guard(|| {
        if metrics.is_null() || seconds.is_null() {
            bail!("null output buffer");
        }
        let (m, secs) = crate::ffi::trainer(id)?.call(move |s| step(s, mode, lr, tau))?;
        std::ptr::copy_nonoverlapping(m.as_ptr(), metrics, METRICS);
        *seconds = secs;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::{spawn, TrainerConfig};

    fn trainer(method: &str) -> crate::thread::Owner<State> {
        let cfg: TrainerConfig = serde_json::from_value(serde_json::json!({
            "method": method, "arch": "resnet18", "smallStem": true, "representationSize": 512,
            "baseWidth": 64, "headLatentSize": 64, "nceSize": 16, "nceTemperature": 0.1, "projectionSize": 16,
            "byolLoss": "paper", "projectorWidths": "32-32-16", "offDiagonalWeight": 0.005, "numClasses": 3, "precision": "fp32",
            "optimizer": "lars_momentum", "weightDecay": 1e-6, "threads": 1,
        }))
        .expect("config");
        spawn(cfg).expect("trainer")
    }

    #[test]
    fn steps_on_the_fixed_batch_train_and_report() {
        for method in ["simclr", "byol"] {
            let t = trainer(method);
            assert!(t.call(|s| step(s, 1, 0.1, 0.99)).is_err(), "a step before setup is an error");
            t.call(|s| setup(s, 4, 8, 3, 0)).expect("setup");
            for mode in [0, 1, 2, 1] {
                let (m, secs) = t.call(move |s| step(s, mode, 0.1, 0.99)).expect("step");
                assert!(secs >= 0.0);
                if mode > 0 {
                    assert!(m[0].is_finite() && m[0] > 0.0, "{method} mode {mode}: loss {}", m[0]);
                    assert_eq!(m[METRICS - 1], 4.0);
                }
            }
            assert!(t.call(|s| step(s, 3, 0.1, 0.99)).is_err());
        }
    }
}
