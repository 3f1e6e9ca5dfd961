//! Gaussian blur with one σ per image, batched: torchvision's `gaussian_blur` (reflect padding,
//! kernel from `_get_gaussian_kernel1d`) computed as two grouped 1-D convolutions.
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// The reference's kernel size: `int(0.1 * image_size)` made odd (`k // 2 * 2 + 1`), 23 for 224.
pub fn kernel_size(image_size: i64) -> i64 {
    (image_size / 10) / 2 * 2 + 1
}

/// torchvision's `_get_gaussian_kernel1d` for every σ: x = linspace(−(k−1)/2, (k−1)/2, k),
/// exp(−x²/2σ²) normalised to sum 1. σ: [B] → kernels [B, k].
pub fn gaussian_kernels(sigma: &Tensor, k: i64) -> Result<Tensor> {
    let half = (k - 1) as f64 / 2.0;
    let x = Tensor::f_linspace(-half, half, k, (Kind::Float, sigma.device()))?.f_view([1, k])?;
    let pdf = (x.f_div(&sigma.f_view([-1, 1])?)?.f_pow_tensor_scalar(2)? * -0.5).f_exp()?;
    Ok(pdf.f_div(&pdf.f_sum_dim_intlist(1, true, Kind::Float)?)?)
}

/// Blurs images [B, C, H, W] with per-image σ [B] and a k×k kernel, k odd.
pub fn gaussian_blur(x: &Tensor, sigma: &Tensor, k: i64) -> Result<Tensor> {
    let (b, c, h, w) = x.size4()?;
    if k % 2 == 0 || k < 1 {
        bail!("Gaussian blur kernel size must be odd and positive, got {k}");
    }
    if k == 1 {
        return Ok(x.shallow_clone()); // a 1-tap kernel is the identity
    }
    let pad = k / 2;
    if pad >= h || pad >= w {
        bail!("a {k}x{k} blur kernel does not fit a {h}x{w} image (reflect padding needs pad < size)");
    }
    // One group per (image, channel): the image's kernel repeated for each of its channels.
    let kernels = gaussian_kernels(sigma, k)?.f_repeat_interleave_self_int(c, 0, None)?; // [B·C, k]
    let planes = x.f_reshape([1, b * c, h, w])?.f_pad([pad, pad, pad, pad], "reflect", None)?;
    let rows = planes.f_conv2d(&kernels.f_view([b * c, 1, 1, k])?, None::<Tensor>, [1, 1], [0, 0], [1, 1], b * c)?;
    let both = rows.f_conv2d(&kernels.f_view([b * c, 1, k, 1])?, None::<Tensor>, [1, 1], [0, 0], [1, 1], b * c)?;
    Ok(both.f_reshape([b, c, h, w])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes_follow_the_reference() {
        assert_eq!([224, 96, 64, 32, 28, 9].map(kernel_size), [23, 9, 7, 3, 3, 1]);
    }

    #[test]
    fn kernels_are_normalised_symmetric_and_sharpen_with_small_sigma() {
        let k = gaussian_kernels(&Tensor::from_slice(&[0.1f32, 2.0]), 23).expect("kernels");
        let sums = Vec::<f32>::try_from(k.sum_dim_intlist(1, false, Kind::Float)).expect("sums");
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
        assert!(f64::try_from((&k - k.flip([1])).abs().max()).expect("max") < 1e-7);
        assert!(f64::try_from(k.get(0).get(11)).expect("centre") > 0.999); // σ 0.1: almost a delta
    }

    #[test]
    fn blur_keeps_constants_and_mean_and_differs_per_image() {
        let flat = Tensor::full([2, 3, 16, 16], 0.25, (Kind::Float, tch::Device::Cpu));
        let out = gaussian_blur(&flat, &Tensor::from_slice(&[0.5f32, 2.0]), 7).expect("blur");
        assert!(f64::try_from((out - 0.25).abs().max()).expect("max") < 1e-6);
        // Seeded noise (not torch's global generator, which other test threads share).
        let noise = crate::nn::init::Init::new(3, tch::Device::Cpu).uniform(&[1, 3, 16, 16], 0.5).expect("noise").repeat([2, 1, 1, 1]);
        let out = gaussian_blur(&noise, &Tensor::from_slice(&[0.3f32, 2.0]), 7).expect("blur");
        let var = |t: Tensor| f64::try_from(t.var(false)).expect("var");
        assert!(var(out.get(1)) < var(out.get(0)) && var(out.get(0)) < var(noise.get(0)));
        assert!(gaussian_blur(&noise, &Tensor::from_slice(&[1f32, 1.0]), 4).is_err());
    }
}
