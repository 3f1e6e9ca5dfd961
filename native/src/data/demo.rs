//! Synthetic demo data set: ten classes of shapes and textures that differ by
//! geometry only, so a model must survive colour jitter and grayscale to learn them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate: `train_per_class` / `test_per_class` images per class,
/// each `size` x `size` RGB pixels, all derived from `seed`.
#[derive(Clone, Debug)]
pub struct DemoSpec {
    /// Root of every random choice; the same spec always gives the same bytes.
    pub seed: u64,
    /// Images per class under `train/`.
    pub train_per_class: usize,
    /// Images per class under `test/`.
    pub test_per_class: usize,
    /// Side length in pixels.
    pub size: u32,
}

impl Default for DemoSpec {
    /// 10 x (300 + 100) images of 32 x 32 pixels, seed 0.
    fn default() -> Self {
        Self {
            seed: 0,
            train_per_class: 300,
            test_per_class: 100,
            size: 32,
        }
    }
}

/// Class folder names, in sorted order so their index equals the ImageFolder label.
pub const DEMO_CLASSES: [&str; 10] = [
    "00_circle",
    "01_square",
    "02_triangle",
    "03_ring",
    "04_cross",
    "05_hstripes",
    "06_vstripes",
    "07_diagonal",
    "08_checker",
    "09_dots",
];

const SPLITS: [&str; 2] = ["train", "test"];
/// Sub-samples per pixel axis: 4x4 supersampling gives cheap anti-aliasing.
const SUB: u32 = 4;

/// Writes an ImageFolder (`root/train/<class>/<nnnnn>.png` and
/// `root/test/<class>/<nnnnn>.png`). Everything goes into a sibling temporary
/// folder first and is renamed into place, so `root` either is complete or absent.
/// Fails if `root` already exists.
pub fn write_demo_dataset(root: &Path, spec: &DemoSpec) -> Result<()> {
    if spec.size == 0 {
        bail!("demo image size must be positive");
    }
    if root.exists() {
        bail!("cannot create {}: it already exists", root.display());
    }
    let name = root
        .file_name()
        .ok_or_else(|| anyhow!("cannot create {}: no folder name", root.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = root.with_file_name(tmp_name);
    if tmp.exists() {
        // Left over by an earlier crashed process that had the same pid.
        fs::remove_dir_all(&tmp).map_err(io_fail("remove", &tmp))?;
    }
    let result = fill_folder(&tmp, spec).and_then(|()| {
        if root.exists() {
            bail!("cannot create {}: it already exists", root.display());
        }
        fs::rename(&tmp, root).map_err(io_fail("rename temporary folder to", root))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp); // best effort; the original error matters more
    }
    result
}

/// Turns an I/O error into a message naming the path, e.g. "cannot create /x: ...".
fn io_fail<'a>(verb: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> anyhow::Error + 'a {
    move |e| anyhow!("cannot {verb} {}: {e}", path.display())
}

/// Creates every class folder, then renders and writes all images on a few threads.
fn fill_folder(dir: &Path, spec: &DemoSpec) -> Result<()> {
    let mut jobs = Vec::new();
    for (split, &split_name) in SPLITS.iter().enumerate() {
        let count = [spec.train_per_class, spec.test_per_class][split];
        for (class, class_name) in DEMO_CLASSES.iter().enumerate() {
            let class_dir = dir.join(split_name).join(class_name);
            fs::create_dir_all(&class_dir).map_err(io_fail("create", &class_dir))?;
            jobs.extend(
                (0..count).map(|i| (split, class, i, class_dir.join(format!("{i:05}.png")))),
            );
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (jobs.chunks(chunk))
            .map(|part| s.spawn(move || part.iter().try_for_each(|job| write_one(spec, job))))
            .collect();
        (handles.into_iter()).try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow!("demo writer thread panicked"))?
        })
    })
}

fn write_one(
    spec: &DemoSpec,
    (split, class, index, path): &(usize, usize, usize, PathBuf),
) -> Result<()> {
    let img = render(spec, *split, *class, *index);
    fs::write(path, encode_png(&img)?).map_err(io_fail("write", path))
}

/// Fixed compression and filter settings keep the PNG bytes stable across runs.
fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    PngEncoder::new_with_quality(&mut buf, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| anyhow!("cannot encode demo PNG: {e}"))?;
    Ok(buf)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Each image gets its own stream, so output never depends on thread scheduling.
fn image_rng(seed: u64, split: usize, class: usize, index: usize) -> ChaCha8Rng {
    let h = [split as u64, class as u64, index as u64]
        .iter()
        .fold(splitmix64(seed), |h, &v| splitmix64(h ^ v));
    ChaCha8Rng::seed_from_u64(h)
}

/// Draws one image: shape coverage from supersampling, blended between two
/// contrasting colours, plus a little per-channel noise.
fn render(spec: &DemoSpec, split: usize, class: usize, index: usize) -> RgbImage {
    let mut rng = image_rng(spec.seed, split, class, index);
    let n = spec.size;
    let (fg, bg) = colour_pair(&mut rng);
    let inside = shape(class, n as f32, &mut rng);
    let step = 1.0 / SUB as f32;
    RgbImage::from_fn(n, n, |x, y| {
        let sample = |k: u32| (k as f32 + 0.5) * step;
        let hits = (0..SUB * SUB)
            .filter(|k| inside(x as f32 + sample(k % SUB), y as f32 + sample(k / SUB)))
            .count();
        let cov = hits as f32 / (SUB * SUB) as f32;
        Rgb(std::array::from_fn(|c| {
            let v = bg[c] + (fg[c] - bg[c]) * cov + rng.random_range(-8.0..8.0f32);
            v.round().clamp(0.0, 255.0) as u8
        }))
    })
}

fn luma(c: &[f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// Random foreground/background with enough luminance contrast that the shape
/// survives grayscale conversion.
fn colour_pair(rng: &mut ChaCha8Rng) -> ([f32; 3], [f32; 3]) {
    loop {
        let fg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0f32));
        let bg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0f32));
        if (luma(&fg) - luma(&bg)).abs() >= 70.0 {
            return (fg, bg);
        }
    }
}

/// Centre for an object of radius `r` (pixels) in an `n`-pixel image, kept so that
/// at least most of the object stays inside the frame.
fn centre(rng: &mut ChaCha8Rng, n: f32, r: f32) -> (f32, f32) {
    // Shrunk towards the middle so small random crops still tend to hit the shape.
    let slack = 0.6 * (0.5 * n - 0.85 * r).max(0.0);
    let mut pick = || 0.5 * n + rng.random_range(-1.0..=1.0f32) * slack;
    (pick(), pick())
}

type Inside = Box<dyn Fn(f32, f32) -> bool>;

/// Returns the membership test for one random instance of `class` in an
/// `n`-pixel image; sizes scale with `n` so any `size` looks the same.
fn shape(class: usize, n: f32, rng: &mut ChaCha8Rng) -> Inside {
    if class >= 5 {
        return texture(class, n / 32.0, rng);
    }
    let r = rng.random_range(0.26..0.42) * n; // radius of the object's bounding circle
    let (cx, cy) = centre(rng, n, r);
    let object = object(class, r, n, rng);
    Box::new(move |x, y| object(x - cx, y - cy))
}

/// Centred shapes (classes 0-4) of radius `r`, tested in object coordinates.
fn object(class: usize, r: f32, n: f32, rng: &mut ChaCha8Rng) -> Inside {
    // Strokes at least ~2 px wide so rings and crosses survive downscaling.
    let w = rng.random_range(0.08..0.13f32).max(2.0 / n) * n;
    match class {
        0 => Box::new(move |x, y| x * x + y * y <= r * r),
        1 => Box::new(move |x, y| x.abs().max(y.abs()) <= 0.8 * r),
        2 => {
            let dir = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            // Apex at -dir*r, base at +dir*r; the width grows linearly towards the base.
            Box::new(move |x, y| {
                let t = (dir * y + r) / (2.0 * r);
                (0.0..=1.0).contains(&t) && x.abs() <= t * 1.15 * r
            })
        }
        3 => Box::new(move |x, y| (x.hypot(y) - (r - 0.5 * w)).abs() <= 0.5 * w),
        _ => Box::new(move |x, y| {
            let (dx, dy) = (x.abs(), y.abs());
            (dx <= w && dy <= r) || (dy <= w && dx <= r)
        }),
    }
}

/// Full-frame textures (classes 5-9) with random period and phase; `u` is the
/// pixel scale relative to 32 x 32.
fn texture(class: usize, u: f32, rng: &mut ChaCha8Rng) -> Inside {
    let p = rng.random_range(5.0..9.0) * u; // stripe period, checker cell or dot spacing
    let ox = rng.random_range(0.0..2.0 * p);
    let oy = rng.random_range(0.0..2.0 * p);
    // Stripes: 50% duty cycle along a direction; diagonals go either way.
    let (ax, ay) = match class {
        5 => (0.0, 1.0),
        6 => (1.0, 0.0),
        _ if rng.random_bool(0.5) => (0.75, 0.75),
        _ => (0.75, -0.75),
    };
    let q = p + 2.0 * u; // dots need a little more room than stripes
    let r = rng.random_range(0.22..0.32) * q;
    match class {
        5..=7 => Box::new(move |x, y| (ax * x + ay * y + ox).rem_euclid(p) < 0.5 * p),
        8 => Box::new(move |x, y| {
            let (i, j) = (((x + ox) / p).floor() as i64, ((y + oy) / p).floor() as i64);
            (i + j).rem_euclid(2) == 0
        }),
        _ => Box::new(move |x, y| {
            let dx = (x + ox).rem_euclid(q) - 0.5 * q;
            let dy = (y + oy).rem_euclid(q) - 0.5 * q;
            dx * dx + dy * dy <= r * r
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> DemoSpec {
        DemoSpec {
            seed,
            train_per_class: 4,
            test_per_class: 2,
            size: 24,
        }
    }

    /// Writes a data set under a fresh, unique temp path.
    fn generate(tag: &str, spec: &DemoSpec) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            nanos.map_or(0, |d| d.as_nanos())
        );
        let root = std::env::temp_dir().join(format!("selfsup-demo-{tag}-{unique}"));
        write_demo_dataset(&root, spec).unwrap();
        root
    }

    /// All files under `root` as (relative path, bytes), sorted by path.
    fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let (mut out, mut stack) = (Vec::new(), vec![root.to_path_buf()]);
        while let Some(dir) = stack.pop() {
            for path in fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = fs::read(&path).unwrap();
                    out.push((path.strip_prefix(root).unwrap().to_path_buf(), bytes));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        let (a, b) = (generate("a", &spec(7)), generate("b", &spec(7)));
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(fa.len(), 10 * 6);
        assert!(fa == fb, "same spec produced different files");
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn different_seed_changes_files() {
        let (a, b) = (generate("s1", &spec(1)), generate("s2", &spec(2)));
        let (fa, fb) = (files(&a), files(&b));
        assert!(fa.iter().zip(&fb).all(|(x, y)| x.0 == y.0));
        assert!(fa.iter().zip(&fb).any(|(x, y)| x.1 != y.1));
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn layout_counts_and_decoding() {
        let root = generate("layout", &spec(3));
        for (split, count) in [("train", 4), ("test", 2)] {
            let mut classes: Vec<String> = fs::read_dir(root.join(split))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            classes.sort();
            assert_eq!(classes, DEMO_CLASSES);
            for class in DEMO_CLASSES {
                let dir = root.join(split).join(class);
                assert_eq!(fs::read_dir(&dir).unwrap().count(), count);
                for i in 0..count {
                    let img = image::open(dir.join(format!("{i:05}.png"))).unwrap();
                    assert_eq!(img.color(), image::ColorType::Rgb8);
                    assert_eq!((img.width(), img.height()), (24, 24));
                }
            }
        }
        let mut tmp = root.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        assert!(!Path::new(&tmp).exists(), "temporary folder left behind");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn existing_root_is_an_error() {
        let root = generate("exists", &spec(0));
        let before = files(&root);
        let err = write_demo_dataset(&root, &spec(5)).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains(&*root.to_string_lossy()), "{err}");
        assert!(files(&root) == before, "existing data set was modified");
        fs::remove_dir_all(&root).unwrap();
    }
}
