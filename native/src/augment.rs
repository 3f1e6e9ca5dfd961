//! Photometric augmentations, batched on the training device, with
//! parameters drawn per image on the loader threads (so the randomness is
//! keyed by sample, see data/loader.rs) and shipped with the batch.
//!
//! Each op follows torchvision's tensor implementation
//! (`torchvision.transforms.v2.functional`): the same blend formulas,
//! grayscale weights and RGB↔HSV conversion.
use anyhow::Result;
use rand::Rng;
use tch::{Kind, Tensor};

/// Per-image parameter vector layout.
pub const FLIP: usize = 0;
pub const JITTER: usize = 1;
pub const BRIGHTNESS: usize = 2;
pub const CONTRAST: usize = 3;
pub const SATURATION: usize = 4;
pub const HUE: usize = 5;
/// Index (0..24) of the permutation of the four jitter ops.
pub const ORDER: usize = 6;
pub const GRAY: usize = 7;
pub const NPARAMS: usize = 8;

/// Probabilities and strengths of the reference programs' train transform.
#[derive(Clone, Copy, Debug)]
pub struct Recipe {
    pub flip_p: f64,
    pub jitter_p: f64,
    pub strength: f64,
    pub gray_p: f64,
}

impl Recipe {
    /// RandomHorizontalFlip(0.5) · RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p=0.8) · RandomGrayscale(0.2).
    pub fn simclr(strength: f64) -> Self {
        Recipe { flip_p: 0.5, jitter_p: 0.8, strength, gray_p: 0.2 }
    }

    /// Draws one image's parameters in a fixed order from `rng`.
    pub fn draw<R: Rng>(&self, rng: &mut R) -> [f32; NPARAMS] {
        let mut p = [0f32; NPARAMS];
        let s = self.strength;
        let factor = |rng: &mut R, x: f64| -> f32 {
            let lo = (1.0 - x).max(0.0);
            rng.random_range(lo..=1.0 + x) as f32
        };
        p[FLIP] = (rng.random::<f64>() < self.flip_p) as u8 as f32;
        p[JITTER] = (rng.random::<f64>() < self.jitter_p) as u8 as f32;
        p[BRIGHTNESS] = factor(rng, 0.8 * s);
        p[CONTRAST] = factor(rng, 0.8 * s);
        p[SATURATION] = factor(rng, 0.8 * s);
        let h = (0.2 * s).min(0.5);
        p[HUE] = rng.random_range(-h..=h) as f32;
        p[ORDER] = rng.random_range(0..24) as f32;
        p[GRAY] = (rng.random::<f64>() < self.gray_p) as u8 as f32;
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

fn column(params: &Tensor, i: usize) -> Result<Tensor> {
    Ok(params.f_select(1, i as i64)?.f_view([-1, 1, 1, 1])?)
}

/// torchvision's rgb_to_grayscale weights, one channel.
pub fn grayscale(x: &Tensor) -> Result<Tensor> {
    let w = Tensor::from_slice(&[0.2989f32, 0.587, 0.114]).f_to_device(x.device())?.f_view([1, 3, 1, 1])?;
    Ok((x * w).f_sum_dim_intlist(1, true, Kind::Float)?)
}

/// torchvision's _blend: clamp(f·a + (1 − f)·b, 0, 1).
fn blend(a: &Tensor, b: &Tensor, f: &Tensor) -> Result<Tensor> {
    Ok((a * f + b * (f.f_neg()? + 1.0)).f_clamp(0.0, 1.0)?)
}

pub fn adjust_brightness(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    blend(x, &x.f_zeros_like()?, f)
}

pub fn adjust_contrast(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    let mean = grayscale(x)?.f_mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float)?;
    blend(x, &mean, f)
}

pub fn adjust_saturation(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    blend(x, &grayscale(x)?, f)
}

fn rgb_to_hsv(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (r, g, b) = (x.f_select(1, 0)?, x.f_select(1, 1)?, x.f_select(1, 2)?);
    let maxc = x.f_amax([1i64].as_slice(), false)?;
    let minc = x.f_amin([1i64].as_slice(), false)?;
    let eqc = maxc.f_eq_tensor(&minc)?;
    let cr = &maxc - &minc;
    let ones = maxc.f_ones_like()?;
    let s = &cr / ones.f_where_self(&eqc, &maxc)?;
    let crd = ones.f_where_self(&eqc, &cr)?;
    let rc = (&maxc - &r) / &crd;
    let gc = (&maxc - &g) / &crd;
    let bc = (&maxc - &b) / &crd;
    let is_r = maxc.f_eq_tensor(&r)?;
    let is_g = maxc.f_eq_tensor(&g)?.f_logical_and(&is_r.f_logical_not()?)?;
    let is_b = is_r.f_logical_or(&maxc.f_eq_tensor(&g)?)?.f_logical_not()?;
    let hr = is_r.f_to_kind(Kind::Float)? * (&bc - &gc);
    let hg = is_g.f_to_kind(Kind::Float)? * ((&rc - &bc) + 2.0);
    let hb = is_b.f_to_kind(Kind::Float)? * ((&gc - &rc) + 4.0);
    let h = ((hr + hg + hb) / 6.0 + 1.0).f_fmod(1.0)?;
    Ok((h, s, maxc))
}

fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Result<Tensor> {
    let h6 = h * 6.0;
    let i = h6.f_floor()?;
    let f = &h6 - &i;
    let i = i.f_to_kind(Kind::Int64)?.f_remainder(6)?;
    let p = (v * (s.f_neg()? + 1.0)).f_clamp(0.0, 1.0)?;
    let q = (v * ((s * &f).f_neg()? + 1.0)).f_clamp(0.0, 1.0)?;
    let t = (v * ((s * (f.f_neg()? + 1.0)).f_neg()? + 1.0)).f_clamp(0.0, 1.0)?;
    let sectors = Tensor::f_arange(6, (Kind::Int64, h.device()))?.f_view([1, 6, 1, 1])?;
    let mask = i.f_unsqueeze(1)?.f_eq_tensor(&sectors)?.f_to_kind(Kind::Float)?; // [B,6,H,W]
    let pick = |c: [&Tensor; 6]| -> Result<Tensor> {
        Ok((Tensor::f_stack(&c, 1)? * &mask).f_sum_dim_intlist(1, false, Kind::Float)?)
    };
    let r = pick([v, &q, &p, &p, &t, v])?;
    let g = pick([&t, v, v, &q, &p, &p])?;
    let b = pick([&p, &p, &t, v, v, &q])?;
    Ok(Tensor::f_stack(&[r, g, b], 1)?)
}

pub fn adjust_hue(x: &Tensor, hue: &Tensor) -> Result<Tensor> {
    let (h, s, v) = rgb_to_hsv(x)?;
    let h = (h + hue.f_view([-1, 1, 1])?).f_remainder(1.0)?;
    hsv_to_rgb(&h, &s, &v)
}

fn select(mask: &Tensor, yes: &Tensor, no: &Tensor) -> Result<Tensor> {
    Ok(yes.f_where_self(&mask.f_gt(0.5)?, no)?)
}

/// uint8 views [B,3,H,W] plus per-image parameters [B, NPARAMS] → float
/// views in [0,1] after flip, colour jitter (ops in each image's own
/// random order) and grayscale.
pub fn apply(views: &Tensor, params: &Tensor) -> Result<Tensor> {
    let x = views.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
    let mut x = select(&column(params, FLIP)?, &x.f_flip([3i64].as_slice())?, &x)?;
    let factors = [
        column(params, BRIGHTNESS)?,
        column(params, CONTRAST)?,
        column(params, SATURATION)?,
        params.f_select(1, HUE as i64)?,
    ];
    let order = params.f_select(1, ORDER as i64)?.f_to_kind(Kind::Int64)?;
    let jittered = {
        let mut y = x.shallow_clone();
        for round in 0..4 {
            // The op each image applies in this round, by its permutation.
            let table: Vec<i64> = (0..24).map(|k| permutation(k)[round] as i64).collect();
            let op = Tensor::from_slice(&table).f_to_device(x.device())?.f_index_select(0, &order)?;
            let mut next = y.shallow_clone();
            for (k, f) in factors.iter().enumerate() {
                let out = match k {
                    0 => adjust_brightness(&y, f)?,
                    1 => adjust_contrast(&y, f)?,
                    2 => adjust_saturation(&y, f)?,
                    _ => adjust_hue(&y, f)?,
                };
                let m = op.f_eq(k as i64)?.f_view([-1, 1, 1, 1])?.f_to_kind(Kind::Float)?;
                next = select(&m, &out, &next)?;
            }
            y = next;
        }
        y
    };
    x = select(&column(params, JITTER)?, &jittered, &x)?;
    let gray = grayscale(&x)?.f_expand([-1, 3, -1, -1], false)?;
    x = select(&column(params, GRAY)?, &gray, &x)?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
