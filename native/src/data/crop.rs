//! torchvision's `RandomResizedCrop`: the box sampling of `get_params`, and the crop + resize
//! with antialiased bilinear (PIL's BILINEAR, torchvision's `resize(antialias=True)`) into CHW u8.

use std::cell::RefCell;

use anyhow::{bail, Result};
use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// torchvision's defaults: scale=(0.08, 1.0), ratio=(3/4, 4/3).
pub const SCALE: (f64, f64) = (0.08, 1.0);
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A crop rectangle in pixels; the argument order of torchvision's `crop(img, top, left, height, width)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox { pub top: u32, pub left: u32, pub height: u32, pub width: u32 }

/// torchvision.transforms.RandomResizedCrop.get_params, same algorithm: 10 tries of
/// area = A * U(scale), log-uniform aspect ratio in ratio, w = round(sqrt(area*r)), h = round(sqrt(area/r)),
/// accept if 0 < w <= W and 0 < h <= H, then top = U{0..H-h}, left = U{0..W-w};
/// fallback: centre crop clamped to the ratio bounds (exactly torchvision's fallback code).
pub fn random_resized_crop_box<R: rand::Rng>(
    rng: &mut R, width: u32, height: u32, scale: (f64, f64), ratio: (f64, f64),
) -> CropBox {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        // Python's round() is round-half-to-even; f64::round would differ on exact .5 values.
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        // Written so that NaN (from non-positive ratios) is rejected.
        if 0.0 < w && w <= width as f64 && 0.0 < h && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h); // drawn before `left`, like torchvision
            return CropBox { top, left: rng.random_range(0..=width - w), height: h, width: w };
        }
    }
    center_crop_fallback(width, height, ratio)
}

/// torch's `uniform_(lo, hi)`: lo + (hi - lo) * U[0, 1). Unlike `random_range` it accepts lo == hi.
fn uniform<R: rand::Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision's fallback: the whole image, narrowed to the nearest ratio bound when it is outside.
/// Sides are kept within 1..=size so degenerate ratios cannot produce an empty box (torchvision would
/// return one and crash later in the resize).
fn center_crop_fallback(width: u32, height: u32, ratio: (f64, f64)) -> CropBox {
    let in_ratio = width as f64 / height as f64;
    let (lo, hi) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let side = |v: f64, max: u32| (v.round_ties_even() as u32).max(1).min(max);
    let (w, h) = if in_ratio < lo {
        (width, side(width as f64 / lo, height))
    } else if in_ratio > hi {
        (side(height as f64 * hi, width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

thread_local! {
    /// The resizer keeps its coefficient/row buffers and the HWC scratch image between calls,
    /// so steady-state loading does not allocate per image.
    static RESIZE_STATE: RefCell<(Resizer, Vec<u8>)> = RefCell::new((Resizer::new(), Vec::new()));
}

/// Crops `bx` out of `img` and resizes it to out_size x out_size with antialiased bilinear
/// (like torchvision's resize(antialias=True) / PIL BILINEAR; fast_image_resize's Convolution(Bilinear) matches PIL),
/// writing planar CHW u8 (3*out*out bytes) into `out`.
pub fn crop_resize_chw(img: &RgbImage, bx: CropBox, out_size: u32, out: &mut [u8]) -> Result<()> {
    check_args(img, bx, out_size, out)?;
    if bx.width == out_size && bx.height == out_size {
        // PIL returns a copy when the size already matches; resampling would only risk blur.
        let (stride, start) = (3 * img.width() as usize, 3 * bx.left as usize);
        let rows = (bx.top..bx.top + bx.height).map(|y| y as usize * stride + start);
        rows_to_chw(rows.map(|at| &img.as_raw()[at..at + 3 * bx.width as usize]), out);
        return Ok(());
    }
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)?;
    // A cropped *view* (not ResizeOptions::crop) so the filter never reads pixels outside the box,
    // matching torchvision, which crops first and then resizes the cropped image.
    let view = CroppedImage::new(&src, bx.left, bx.top, bx.width, bx.height)?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZE_STATE.with(|state| {
        let (resizer, hwc) = &mut *state.borrow_mut();
        hwc.resize(3 * (out_size as usize).pow(2), 0);
        let mut dst = Image::from_slice_u8(out_size, out_size, hwc, PixelType::U8x3)?;
        resizer.resize(&view, &mut dst, &options)?;
        rows_to_chw(hwc.chunks_exact(3 * out_size as usize), out);
        Ok(())
    })
}

/// Whole image resized to out_size x out_size (aspect ratio NOT kept, like Resize((s,s))), CHW into `out`.
pub fn resize_chw(img: &RgbImage, out_size: u32, out: &mut [u8]) -> Result<()> {
    let full = CropBox { top: 0, left: 0, height: img.height(), width: img.width() };
    crop_resize_chw(img, full, out_size, out)
}

/// Rejects boxes outside the image and wrong output lengths up front, with readable messages.
fn check_args(img: &RgbImage, bx: CropBox, out_size: u32, out: &[u8]) -> Result<()> {
    let (w, h) = img.dimensions();
    let fits = |start: u32, len: u32, size: u32| len > 0 && start as u64 + len as u64 <= size as u64;
    if !fits(bx.left, bx.width, w) || !fits(bx.top, bx.height, h) {
        bail!("crop box {bx:?} is empty or outside the {w}x{h} image");
    }
    let need = 3 * (out_size as usize).pow(2);
    if out_size == 0 || out.len() != need {
        bail!("output buffer has {} bytes, need {need} for 3x{out_size}x{out_size}", out.len());
    }
    Ok(())
}

/// Interleaved RGB rows (HWC) to planar CHW; the rows hold exactly `out.len() / 3` pixels in total.
fn rows_to_chw<'a>(rows: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) {
    let plane = out.len() / 3;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    let pixels = rows.flat_map(|row| row.chunks_exact(3));
    for (((px, r), g), b) in pixels.zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
        (*r, *g, *b) = (px[0], px[1], px[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testing::gradient;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crop_boxes_stay_inside_and_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (scale, ratio) = ((0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0));
        for (w, h) in [(224, 224), (500, 375), (375, 500), (33, 17), (3, 2), (1, 1), (2000, 40)] {
            for _ in 0..2000 {
                let b = random_resized_crop_box(&mut rng, w, h, scale, ratio);
                assert!(b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h, "{b:?}");
                if b == center_crop_fallback(w, h, ratio) {
                    continue; // may be the fallback, which ignores the scale bounds
                }
                // Rounding moves each side by at most half a pixel.
                let (bw, bh, full) = (b.width as f64, b.height as f64, (w * h) as f64);
                assert!((bw - 0.5) * (bh - 0.5) <= scale.1 * full && (bw + 0.5) * (bh + 0.5) >= scale.0 * full, "{b:?}");
                assert!((bw - 0.5) / (bh + 0.5) <= ratio.1 && (bw + 0.5) / (bh - 0.5) >= ratio.0, "{b:?}");
            }
        }
    }

    #[test]
    fn fallback_matches_torchvision_formula() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let r = (3.0 / 4.0, 4.0 / 3.0);
        let bx = |top, left, height, width| CropBox { top, left, height, width };
        // Shapes that reject all 10 tries; expected boxes computed with torchvision's get_params.
        let cases = [((1000, 1), r, bx(0, 499, 1, 1)), ((1, 1000), r, bx(499, 0, 1, 1)), ((300, 10), r, bx(0, 143, 10, 13)),
            ((10, 300), r, bx(143, 0, 13, 10)),
            // 1 * 2.5 rounds half to even (2) as Python does; f64::round would give 3.
            ((100, 1), (0.75, 2.5), bx(0, 49, 1, 2))];
        for ((w, h), ratio, want) in cases {
            for _ in 0..50 {
                assert_eq!(random_resized_crop_box(&mut rng, w, h, (0.08, 1.0), ratio), want, "{w}x{h}");
            }
        }
        assert_eq!(center_crop_fallback(40, 30, r), bx(0, 0, 30, 40)); // ratio in bounds: whole image
    }

    #[test]
    fn identity_resize_and_plain_crop_are_exact() {
        let img = gradient(16, 12);
        let mut out = vec![0; 3 * 12 * 12];
        crop_resize_chw(&img, CropBox { top: 0, left: 4, height: 12, width: 12 }, 12, &mut out).expect("crop");
        let sq = RgbImage::from_fn(12, 12, |x, y| *img.get_pixel(x + 4, y));
        let planes: Vec<u8> = (0..3).flat_map(|c| sq.pixels().map(move |p| p[c])).collect();
        assert_eq!(out, planes);
        resize_chw(&sq, 12, &mut out).expect("resize");
        assert_eq!(out, planes);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, Rgb([12, 200, 77]));
        for (bx, size) in [(CropBox { top: 2, left: 3, height: 20, width: 30 }, 9), (CropBox { top: 0, left: 0, height: 5, width: 3 }, 64)] {
            let mut out = vec![0; 3 * size * size];
            crop_resize_chw(&img, bx, size as u32, &mut out).expect("resize");
            assert!(out.chunks(size * size).zip([12, 200, 77]).all(|(plane, v)| plane.iter().all(|&p| p == v)));
        }
    }

    #[test]
    fn bad_boxes_and_buffers_are_errors() {
        let (img, mut out) = (gradient(8, 8), vec![0; 3 * 4 * 4]);
        assert!(crop_resize_chw(&img, CropBox { top: 5, left: 0, height: 4, width: 4 }, 4, &mut out).is_err());
        assert!(crop_resize_chw(&img, CropBox { top: 0, left: 0, height: 0, width: 4 }, 4, &mut out).is_err());
        assert!(resize_chw(&img, 5, &mut out).is_err());
    }
}
