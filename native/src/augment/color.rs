//! torchvision's colour ops on float images in [0, 1] (`transforms.v2.functional`'s tensor
//! kernels): the same blend formulas, grayscale weights and RGB↔HSV conversion. Factors are
//! per image, shaped [B, 1, 1, 1] (hue: [B]).
use anyhow::Result;
use tch::{Kind, Tensor};

/// torchvision's rgb_to_grayscale (ITU-R 601-2 luma, as PIL's "L"), one channel out, with its
/// scalar weights: a weight tensor would be a host→device copy (and a wait for the GPU) per call.
pub fn grayscale(x: &Tensor) -> Result<Tensor> {
    let c = |i: i64| x.f_narrow(1, i, 1);
    Ok(c(0)?.f_mul_scalar(0.2989)?.f_add(&c(1)?.f_mul_scalar(0.587)?)?.f_add(&c(2)?.f_mul_scalar(0.114)?)?)
}

/// torchvision's _blend: clamp(f·a + (1 − f)·b, 0, 1).
fn blend(a: &Tensor, b: &Tensor, f: &Tensor) -> Result<Tensor> {
    Ok((a * f + b * (f.f_neg()? + 1.0)).f_clamp(0.0, 1.0)?)
}

pub fn adjust_brightness(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    blend(x, &x.f_zeros_like()?, f)
}

/// Blends with the mean of the image's grayscale (one mean per image).
pub fn adjust_contrast(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    let mean = grayscale(x)?.f_mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float)?;
    blend(x, &mean, f)
}

pub fn adjust_saturation(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    blend(x, &grayscale(x)?, f)
}

/// Rotates the hue by `hue` (a fraction of the circle, [B]) in HSV space.
pub fn adjust_hue(x: &Tensor, hue: &Tensor) -> Result<Tensor> {
    let (h, s, v) = rgb_to_hsv(x)?;
    let h = (h + hue.f_view([-1, 1, 1])?).f_remainder(1.0)?;
    hsv_to_rgb(&h, &s, &v)
}

/// torchvision's _rgb_to_hsv, including its handling of grey pixels (max == min).
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

/// torchvision's _hsv_to_rgb: the six sectors picked with a one-hot mask.
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

/// torchvision's solarize for float images: pixels at or above `threshold` are inverted.
pub fn solarize(x: &Tensor, threshold: f64) -> Result<Tensor> {
    Ok(x.f_rsub_scalar(1.0)?.f_where_self(&x.f_ge(threshold)?, x)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(values: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = values.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([-1, 3]).transpose(0, 1).view([1, 3, 1, -1])
    }

    #[test]
    fn hue_round_trip_keeps_colours() {
        let x = pixels(&[[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.7], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]);
        let y = adjust_hue(&x, &Tensor::from_slice(&[0f32])).expect("hue");
        assert!(f64::try_from((y - &x).abs().max()).expect("max") < 1e-6);
        // A full turn is the identity too, and half a turn maps red to cyan.
        let red = pixels(&[[1.0, 0.0, 0.0]]);
        let cyan = adjust_hue(&red, &Tensor::from_slice(&[0.5f32])).expect("hue");
        assert_eq!(Vec::<f32>::try_from(cyan.flatten(0, -1)).expect("vec"), vec![0.0, 1.0, 1.0]);
    }

    #[test]
    fn solarize_inverts_the_bright_half() {
        let x = pixels(&[[0.0, 0.49, 0.5], [0.75, 1.0, 0.25]]);
        let y = Vec::<f32>::try_from(solarize(&x, 0.5).expect("solarize").flatten(0, -1)).expect("vec");
        // CHW order: R of both pixels, then G, then B.
        assert_eq!(y, vec![0.0, 0.25, 0.49, 0.0, 0.5, 0.25]);
    }
}
