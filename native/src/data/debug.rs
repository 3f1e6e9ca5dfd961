//! Entry points for the data pipeline's parity tests against torchvision
//! (tests/data_parity_test.ts, tests/python/augment_reference.py): each
//! runs one piece of the pipeline on tensors or files named by the test
//! and writes the result as safetensors for Python to compare.
use super::crop::{crop_resize_chw, random_resized_crop_box, CropBox, RATIO, SCALE};
use super::decode::decode_rgb;
use crate::augment;
use anyhow::{bail, Context, Result};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    op: String,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    count: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    boxes: Vec<[u32; 4]>,
    #[serde(default)]
    size: u32,
    #[serde(default)]
    kernel: i64,
    #[serde(default)]
    strength: f64,
}

/// A piece of the pipeline: the tensor it makes for a spec and an input
/// file (hooks.rs gives each its own symbol).
pub type Piece = fn(&Spec, &Path) -> Result<Tensor>;

/// Runs `piece` with the JSON `spec` on the input file, writing its result
/// as the tensor `name` to `output`.
pub fn run(piece: Piece, name: &str, spec: &str, input: &Path, output: &Path) -> Result<()> {
    let spec: Spec = serde_json::from_str(spec).context("invalid debug spec")?;
    let out = [(name.to_string(), piece(&spec, input)?)];
    Tensor::write_safetensors(&out, output).with_context(|| format!("cannot write {}", output.display()))
}

fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let named = Tensor::read_safetensors(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(named.into_iter().collect())
}

fn get<'a>(t: &'a BTreeMap<String, Tensor>, k: &str) -> Result<&'a Tensor> {
    t.get(k).with_context(|| format!("input has no tensor {k:?}"))
}

/// `count` boxes of RandomResizedCrop's default scale and ratio for a width × height image: [count, 4] (top, left, h, w).
pub fn crop_boxes(spec: &Spec, _: &Path) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let flat: Vec<i64> = (0..spec.count)
        .flat_map(|_| {
            let b = random_resized_crop_box(&mut rng, spec.width, spec.height, SCALE, RATIO);
            [b.top, b.left, b.height, b.width].map(i64::from)
        })
        .collect();
    Ok(Tensor::from_slice(&flat).f_view([spec.count as i64, 4])?)
}

/// `count` photometric parameter vectors drawn as the loader draws them for
/// the reference's train transform at colour-jitter `strength`: [count, NPARAMS].
pub fn augment_params(spec: &Spec, _: &Path) -> Result<Tensor> {
    let recipe = augment::Recipe::simclr(spec.strength);
    recipe.check()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let flat: Vec<f32> = (0..spec.count).flat_map(|_| recipe.draw(&mut rng)).collect();
    Ok(Tensor::from_slice(&flat).f_view([spec.count as i64, augment::NPARAMS as i64])?)
}

fn decoded(spec: &Spec) -> Result<RgbImage> {
    decode_rgb(spec.path.as_deref().context("the spec needs a path")?)
}

/// The file decoded like PIL's convert("RGB"): float [H, W, 3] holding 0..255.
pub fn decode(spec: &Spec, _: &Path) -> Result<Tensor> {
    let img = decoded(spec)?;
    let (w, h) = img.dimensions();
    Ok(Tensor::from_slice(img.as_raw()).f_view([h as i64, w as i64, 3])?.f_to_kind(Kind::Float)?)
}

/// Each box (top, left, h, w) of the decoded file cropped and resized to size × size: float [boxes, 3, size, size].
pub fn crop_resize(spec: &Spec, _: &Path) -> Result<Tensor> {
    let img = decoded(spec)?;
    let plane = 3 * (spec.size as usize).pow(2);
    let mut out = vec![0u8; spec.boxes.len() * plane];
    for (b, chunk) in spec.boxes.iter().zip(out.chunks_mut(plane)) {
        crop_resize_chw(&img, CropBox { top: b[0], left: b[1], height: b[2], width: b[3] }, spec.size, chunk)?;
    }
    let s = spec.size as i64;
    Ok(Tensor::from_slice(&out).f_view([spec.boxes.len() as i64, 3, s, s])?.f_to_kind(Kind::Float)?)
}

/// One photometric op on float images `x` [B, 3, H, W] with per-image `factor` [B].
pub fn augment_op(spec: &Spec, input: &Path) -> Result<Tensor> {
    let t = &read(input)?;
    let x = get(t, "x")?.f_to_kind(Kind::Float)?;
    let f = get(t, "factor")?.f_to_kind(Kind::Float)?;
    let f4 = f.f_view([-1, 1, 1, 1])?;
    match spec.op.as_str() {
        "brightness" => augment::adjust_brightness(&x, &f4),
        "contrast" => augment::adjust_contrast(&x, &f4),
        "saturation" => augment::adjust_saturation(&x, &f4),
        "hue" => augment::adjust_hue(&x, &f),
        "grayscale" => augment::grayscale(&x),
        "blur" => augment::gaussian_blur(&x, &f, spec.kernel),
        "solarize" => augment::solarize(&x, augment::SOLARIZE_THRESHOLD),
        other => bail!("unknown augmentation op {other:?}"),
    }
}

/// augment::apply on uint8 `images` [B, 3, H, W] with the photometric
/// parameters `params` [B, NPARAMS] of the input file.
pub fn apply(_: &Spec, input: &Path) -> Result<Tensor> {
    let t = read(input)?;
    let images = get(&t, "images")?.f_to_kind(Kind::Uint8)?;
    let params = Vec::<f32>::try_from(get(&t, "params")?.f_flatten(0, -1)?)?;
    augment::apply(&images, &params)
}
