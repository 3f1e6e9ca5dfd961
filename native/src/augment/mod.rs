//! Photometric augmentations, batched on the training device, with
//! parameters drawn per image on the loader threads (so the randomness is
//! keyed by sample, see data/loader.rs) and turned there into a plan of
//! which images each op touches (plan.rs), shipped with the batch.
//!
//! The order is the reference's train transform after the crop
//! (REFERENCE.md §3.3): horizontal flip, colour jitter (its four ops in
//! each image's own random order, as torchvision's ColorJitter), random
//! grayscale, Gaussian blur; then the optional solarisation of BYOL-style
//! asymmetric views. Each op follows torchvision's tensor kernels.
pub mod blur;
pub mod color;
pub mod plan;

use crate::data::buffer::DeviceBatch;
use crate::data::loader::Batch;
use anyhow::{bail, Result};
pub use plan::Plan;
use rand::Rng;
use tch::{Kind, Tensor};

pub use blur::{gaussian_blur, kernel_size};
pub use color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale, solarize};

/// Per-image parameter vector layout (f32 each). Flags are 0 or 1.
pub const FLIP: usize = 0;
pub const JITTER: usize = 1;
pub const BRIGHTNESS: usize = 2;
pub const CONTRAST: usize = 3;
pub const SATURATION: usize = 4;
/// Hue offset as a fraction of the hue circle.
pub const HUE: usize = 5;
/// Index (0..24) of the permutation of the four jitter ops.
pub const ORDER: usize = 6;
pub const GRAY: usize = 7;
pub const BLUR: usize = 8;
pub const SIGMA: usize = 9;
pub const SOLARIZE: usize = 10;
pub const NPARAMS: usize = 11;

/// Solarisation threshold on [0, 1] images (BYOL's).
pub const SOLARIZE_THRESHOLD: f64 = 0.5;

/// Probabilities and strengths of one view's train transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub flip_p: f64,
    pub jitter_p: f64,
    /// s in ColorJitter(0.8s, 0.8s, 0.8s, 0.2s).
    pub strength: f64,
    pub gray_p: f64,
    pub blur_p: f64,
    /// σ ~ U[sigma.0, sigma.1].
    pub sigma: (f64, f64),
    pub solarize_p: f64,
}

impl Recipe {
    /// The reference's train transform: RandomHorizontalFlip(0.5) ·
    /// RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p=0.8) · RandomGrayscale(0.2) ·
    /// GaussianBlur(p=0.5, σ ~ U[0.1, 2.0]) (the reference draws σ from a normal: a defect), no solarisation.
    pub fn simclr(strength: f64) -> Self {
        Recipe { flip_p: 0.5, jitter_p: 0.8, strength, gray_p: 0.2, blur_p: 0.5, sigma: (0.1, 2.0), solarize_p: 0.0 }
    }

    /// Rejects what torchvision would reject, naming the flag.
    pub fn check(&self) -> Result<()> {
        let probs = [("flip", self.flip_p), ("jitter", self.jitter_p), ("grayscale", self.gray_p)];
        let flags = [("--blur-prob", self.blur_p), ("--solarize-prob", self.solarize_p)];
        for (name, p) in probs.iter().chain(flags.iter()) {
            if !(0.0..=1.0).contains(p) {
                bail!("{name} probability must be within [0, 1], got {p}");
            }
        }
        if !(self.strength >= 0.0 && 0.2 * self.strength <= 0.5) {
            bail!("--color-jitter-strength must be within [0, 2.5] (hue 0.2s must stay within 0.5), got {}", self.strength);
        }
        Ok(())
    }

    /// Draws one image's parameters from `rng`. Every parameter is always
    /// drawn, in a fixed order, so changing one probability does not shift
    /// the others' random numbers.
    pub fn draw<R: Rng>(&self, rng: &mut R) -> [f32; NPARAMS] {
        let mut p = [0f32; NPARAMS];
        let s = self.strength;
        // torch's uniform_(lo, hi): lo + (hi − lo)·U[0, 1), which also allows lo == hi.
        let uniform = |rng: &mut R, lo: f64, hi: f64| (lo + (hi - lo) * rng.random::<f64>()) as f32;
        let coin = |rng: &mut R, prob: f64| (rng.random::<f64>() < prob) as u8 as f32;
        p[FLIP] = coin(rng, self.flip_p);
        p[JITTER] = coin(rng, self.jitter_p);
        p[BRIGHTNESS] = uniform(rng, (1.0 - 0.8 * s).max(0.0), 1.0 + 0.8 * s);
        p[CONTRAST] = uniform(rng, (1.0 - 0.8 * s).max(0.0), 1.0 + 0.8 * s);
        p[SATURATION] = uniform(rng, (1.0 - 0.8 * s).max(0.0), 1.0 + 0.8 * s);
        p[HUE] = uniform(rng, -0.2 * s, 0.2 * s);
        p[ORDER] = rng.random_range(0..24) as f32;
        p[GRAY] = coin(rng, self.gray_p);
        p[BLUR] = coin(rng, self.blur_p);
        p[SIGMA] = uniform(rng, self.sigma.0, self.sigma.1);
        p[SOLARIZE] = coin(rng, self.solarize_p);
        p
    }
}

/// The k-th permutation of [0, 1, 2, 3] (ops: brightness, contrast, saturation, hue).
pub fn permutation(mut k: usize) -> [usize; 4] {
    let mut pool = vec![0, 1, 2, 3];
    let mut out = [0; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let f = [6, 2, 1, 1][i];
        *slot = pool.remove(k / f);
        k %= f;
    }
    out
}

/// uint8 views [B,3,H,W] plus their parameters (B × NPARAMS) → float
/// views in [0, 1] after flip, colour jitter, grayscale, blur and
/// solarisation: the plan of `params` (plan.rs), its data copied to the
/// views' device. Training gets plans with its batches instead
/// (`training_views`); this is for tests and the parity checks.
pub fn apply(views: &Tensor, params: &[f32]) -> Result<Tensor> {
    let (mut ints, mut floats) = (Vec::new(), Vec::new());
    let plan = Plan::new(params, views.size4()?.0 as usize, &mut ints, &mut floats)?;
    let dev = views.device();
    plan.apply(views, &Tensor::from_slice(&ints).f_to_device(dev)?, &Tensor::from_slice(&floats).f_to_device(dev)?)
}

/// A training batch's two views, augmented by their plans: float [n,3,s,s] each.
pub fn training_views(batch: &Batch, on: &DeviceBatch) -> Result<(Tensor, Tensor)> {
    if on.images.len() != 2 || batch.plans.len() != 2 {
        bail!("a training step needs a batch with two augmented views (got a test batch?)");
    }
    let view = |v: usize| batch.plans[v].apply(&on.images[v], &on.ints, &on.floats);
    Ok((view(0)?, view(1)?))
}

/// A test batch's images as float [n,3,s,s] in [0, 1] (no augmentation).
pub fn test_images(on: &DeviceBatch) -> Result<Tensor> {
    let Some(images) = on.images.first() else { bail!("empty batch") };
    Ok(images.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::Device;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn permutations_are_all_distinct() {
        let mut seen: Vec<[usize; 4]> = (0..24).map(permutation).collect();
        for p in &seen {
            let mut q = p.to_vec();
            q.sort();
            assert_eq!(q, vec![0, 1, 2, 3]);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 24);
    }

    #[test]
    fn draws_follow_the_recipe() {
        let recipe = Recipe { solarize_p: 0.2, ..Recipe::simclr(1.0) };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let draws: Vec<[f32; NPARAMS]> = (0..20_000).map(|_| recipe.draw(&mut rng)).collect();
        let rate = |k: usize| draws.iter().filter(|p| p[k] > 0.5).count() as f64 / draws.len() as f64;
        for (k, want) in [(FLIP, 0.5), (JITTER, 0.8), (GRAY, 0.2), (BLUR, 0.5), (SOLARIZE, 0.2)] {
            assert!((rate(k) - want).abs() < 0.015, "param {k}: rate {} vs {want}", rate(k));
        }
        let within = |k: usize, lo: f32, hi: f32| draws.iter().all(|p| p[k] >= lo && p[k] < hi);
        assert!(within(BRIGHTNESS, 0.2, 1.8) && within(HUE, -0.2, 0.2) && within(SIGMA, 0.1, 2.0));
        // σ is uniform: its mean is the midpoint (the reference's normal draw has mean 0.1).
        let mean_sigma = draws.iter().map(|p| p[SIGMA] as f64).sum::<f64>() / draws.len() as f64;
        assert!((mean_sigma - 1.05).abs() < 0.02, "{mean_sigma}");
        let mut orders: Vec<u32> = draws.iter().map(|p| p[ORDER] as u32).collect();
        orders.sort();
        orders.dedup();
        assert_eq!(orders, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn recipes_outside_torchvision_ranges_are_refused() {
        assert!(Recipe::simclr(1.0).check().is_ok());
        let msg = Recipe::simclr(3.0).check().unwrap_err().to_string();
        assert!(msg.starts_with("--color-jitter-strength must be within [0, 2.5]"), "{msg}");
        let msg = Recipe { blur_p: 1.5, ..Recipe::simclr(1.0) }.check().unwrap_err().to_string();
        assert!(msg.starts_with("--blur-prob probability must be within [0, 1]"), "{msg}");
    }

    #[test]
    fn apply_touches_only_the_images_whose_flags_are_set() {
        // Seeded bytes (not torch's global generator, which other test threads share).
        let u = crate::nn::init::Init::new(5, Device::Cpu).uniform(&[4, 3, 20, 20], 0.5).expect("noise");
        let views = ((u + 0.5) * 255.0).round().to_kind(Kind::Uint8);
        let mut params = vec![0f32; 4 * NPARAMS];
        params[NPARAMS + FLIP] = 1.0; // image 1: flipped only
        params[2 * NPARAMS + GRAY] = 1.0; // image 2: grayscale only
        params[3 * NPARAMS + SOLARIZE] = 1.0; // image 3: solarised only
        let out = apply(&views, &params).expect("apply");
        let x = views.to_kind(Kind::Float) / 255.0;
        let close = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).expect("max") < 1e-6;
        assert!(close(&out.get(0), &x.get(0)));
        assert!(close(&out.get(1), &x.get(1).flip([2])));
        let g = grayscale(&x.narrow(0, 2, 1)).expect("gray").expand([1, 3, 20, 20], false);
        assert!(close(&out.narrow(0, 2, 1), &g));
        assert!(close(&out.get(3), &solarize(&x.get(3), 0.5).expect("solarize")));
        assert!(apply(&views, &params[..NPARAMS]).is_err());
    }
}
