//! torchvision-compatible image data: `ImageFolder` scanning, PIL-like RGB decoding,
//! `RandomResizedCrop` box sampling and PIL-matching (antialiased bilinear) crop+resize into CHW u8.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

/// torchvision's IMG_EXTENSIONS, lower-case, with the dot.
pub const IMG_EXTENSIONS: [&str; 9] = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];

/// A labelled image dataset laid out as `root/<class>/**/<image>`.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// The folder that was scanned.
    pub root: PathBuf,
    /// Class names (sub-folder names of `root`), sorted; the label is the index here.
    pub classes: Vec<String>,
    /// `(image path, class index)`, grouped by class in class order.
    pub samples: Vec<(PathBuf, i64)>,
}

impl ImageFolder {
    /// torchvision.datasets.ImageFolder semantics: classes = sorted sub-folder names of `root`,
    /// samples = files with an image extension (case-insensitive) found recursively under each class folder
    /// (symlinks followed), sorted by path within a class, classes in order.
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("not a folder: {}", root.display()),
            Err(_) => bail!("no such folder: {}", root.display()),
        }
        let class_names = class_dirs(root)?;
        if class_names.is_empty() {
            bail!("no class folders (sub-folders) in {}", root.display());
        }
        let mut samples = Vec::new();
        for (index, name) in class_names.iter().enumerate() {
            let dir = root.join(name);
            let files = images_under(&dir)?;
            if files.is_empty() {
                bail!("class folder {} has no images (looked for {})", dir.display(), IMG_EXTENSIONS.join(" "));
            }
            samples.extend(files.into_iter().map(|p| (p, index as i64)));
        }
        let classes = class_names.iter().map(|n| n.to_string_lossy().into_owned()).collect();
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples })
    }
}

/// Like torchvision's find_classes: every entry that is a directory after following symlinks,
/// hidden ones included, sorted by name (byte order, which equals Python's code-point order for UTF-8).
fn class_dirs(root: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> =
        entries(root)?.iter().filter(|e| is_dir_following_links(e)).map(|e| e.file_name()).collect();
    names.sort();
    Ok(names)
}

/// All entries of `dir`, with I/O errors turned into one-line messages naming the folder.
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let fail = |e: std::io::Error| anyhow!("cannot list {}: {e}", dir.display());
    fs::read_dir(dir).map_err(fail)?.map(|e| e.map_err(fail)).collect()
}

/// `DirEntry::file_type` does not follow symlinks, so only symlinks need the extra stat;
/// a dangling symlink counts as a file, as in `os.scandir(...).is_dir()`.
fn is_dir_following_links(entry: &fs::DirEntry) -> bool {
    match entry.file_type() {
        Ok(t) if t.is_symlink() => fs::metadata(entry.path()).map(|m| m.is_dir()).unwrap_or(false),
        Ok(t) => t.is_dir(),
        Err(_) => false,
    }
}

/// True when the name ends with one of IMG_EXTENSIONS, ignoring case (torchvision lower-cases the path).
fn has_image_extension(name: &OsStr) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    IMG_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// Image files under `dir`, in the order torchvision produces: `sorted(os.walk(dir, followlinks=True))`
/// sorts by the directory path *string*, then file names are sorted within each directory.
/// (Comparing whole paths instead would differ, e.g. for `b-c/` vs `b/`.)
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(PathBuf, OsString)> = Vec::new();
    walk(dir, &mut Vec::new(), &mut found)?;
    found.sort_by(|a, b| (a.0.as_os_str(), &a.1).cmp(&(b.0.as_os_str(), &b.1)));
    Ok(found.into_iter().map(|(parent, name)| parent.join(name)).collect())
}

/// Depth-first walk following directory symlinks. `ancestors` holds canonical paths of the
/// directories being walked so a symlink cycle is skipped instead of recursing forever.
fn walk(dir: &Path, ancestors: &mut Vec<PathBuf>, found: &mut Vec<(PathBuf, OsString)>) -> Result<()> {
    let canonical = fs::canonicalize(dir).map_err(|e| anyhow!("cannot resolve {}: {e}", dir.display()))?;
    if ancestors.contains(&canonical) {
        return Ok(());
    }
    ancestors.push(canonical);
    for entry in entries(dir)? {
        if is_dir_following_links(&entry) {
            walk(&entry.path(), ancestors, found)?;
        } else if has_image_extension(&entry.file_name()) {
            found.push((dir.to_path_buf(), entry.file_name()));
        }
    }
    ancestors.pop();
    Ok(())
}

/// Decodes a file into 8-bit RGB like PIL's Image.open(p).convert("RGB"): grayscale, grayscale+alpha, RGBA (alpha dropped), 16-bit (scaled to 8-bit), CMYK JPEG all become RGB8.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    // Codec errors can span lines; callers log one line per bad file.
    let fail = |why: &dyn std::fmt::Display| {
        let why = why.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow!("cannot decode {}: {why}", path.display())
    };
    let bytes = fs::read(path).map_err(|e| fail(&e))?;
    if bytes.is_empty() {
        return Err(fail(&"file is empty (0 bytes)"));
    }
    // The format comes from the content (like PIL); the extension is only a fallback.
    let reader = ImageReader::new(Cursor::new(&bytes[..])).with_guessed_format().map_err(|e| fail(&e))?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_has_end(&bytes) {
        return Err(fail(&"truncated JPEG (no end-of-image marker after the last scan)"));
    }
    let img = reader.decode().map_err(|e| fail(&e))?;
    Ok(to_rgb8_like_pil(img))
}

/// The JPEG decoder fills a cut-off scan with grey instead of failing, while PIL refuses such files
/// ("image file is truncated", even when only the final marker is missing). Entropy-coded data
/// never contains FF DA / FF D9 (0xFF is byte-stuffed), so an EOI after the last SOS means complete.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap_or(0);
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// 8-bit sources go through the `image` crate's conversion, which replicates gray and drops alpha
/// without blending, exactly like PIL. 16-bit sources keep the high byte, as PIL's 16-bit RGB PNG
/// unpacker does (PIL clips 16-bit *gray* to 255 instead, which destroys the image; we scale it).
fn to_rgb8_like_pil(img: DynamicImage) -> RgbImage {
    let color = img.color();
    if color.bytes_per_pixel() != 2 * color.channel_count() {
        return img.into_rgb8(); // no copy when it is already RGB8
    }
    let wide = img.to_rgb16();
    let mut rgb = RgbImage::new(wide.width(), wide.height());
    for (o, v) in rgb.iter_mut().zip(wide.iter()) {
        *o = (v >> 8) as u8;
    }
    rgb
}

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
    use image::{GrayImage, ImageBuffer, Luma, Rgb, Rgba, RgbaImage};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A fresh, empty folder under the system temp dir, unique per test and process.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("imgf_{}_{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]))
    }

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
    fn scan_follows_torchvision_layout() {
        let root = temp_dir("scan");
        for d in ["b", "a/sub", "a/sub-x", "c.d", "a/sub/deeper"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let files = ["a/z.PNG", "a/sub/y.jpg", "a/sub-x/w.webp", "a/sub/deeper/x.bmp", "a/note.txt", "b/1.jpeg",
            "b/2.tiff", "c.d/ok.ppm", "c.d/no.gif", "top.jpg"];
        for f in files {
            fs::write(root.join(f), b"x").expect("write");
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("b/1.jpeg"), root.join("c.d/link.jpg")).expect("symlink");
        let ds = ImageFolder::scan(&root).expect("scan");
        assert_eq!(ds.classes, ["a", "b", "c.d"]);
        let got: Vec<_> = ds.samples.iter().map(|(p, c)| (p.strip_prefix(&root).expect("in root").to_path_buf(), *c)).collect();
        // Order checked against torchvision.datasets.folder.make_dataset on the same tree.
        let mut want = vec![("a/z.PNG", 0), ("a/sub/y.jpg", 0), ("a/sub-x/w.webp", 0), ("a/sub/deeper/x.bmp", 0),
            ("b/1.jpeg", 1), ("b/2.tiff", 1), ("c.d/link.jpg", 2), ("c.d/ok.ppm", 2)];
        want.retain(|(p, _)| cfg!(unix) || !p.contains("link"));
        assert_eq!(got, want.iter().map(|(p, c)| (PathBuf::from(p), *c)).collect::<Vec<_>>());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn scan_errors_name_the_problem() {
        let root = temp_dir("scan_err");
        let err = |p: &Path| ImageFolder::scan(p).map(|_| ()).unwrap_err().to_string();
        assert_eq!(err(&root.join("nope")), format!("no such folder: {}", root.join("nope").display()));
        assert!(err(&root).starts_with("no class folders"));
        fs::create_dir_all(root.join("empty")).expect("mkdir");
        fs::write(root.join("empty/readme.txt"), b"x").expect("write");
        assert!(err(&root).starts_with(&format!("class folder {} has no images", root.join("empty").display())));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn decode_converts_like_pil_and_rejects_bad_files() {
        let dir = temp_dir("decode");
        let pixel = |name: &str, x, y| decode_rgb(&dir.join(name)).expect(name).get_pixel(x, y).0;
        GrayImage::from_fn(3, 2, |x, _| Luma([x as u8 * 100])).save(dir.join("g.png")).expect("save");
        RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0])).save(dir.join("a.png")).expect("save");
        ImageBuffer::from_fn(2, 1, |x, _| Luma([[0x12ffu16, 0xffff][x as usize]])).save(dir.join("g16.png")).expect("save");
        assert_eq!((pixel("g.png", 2, 1), pixel("a.png", 1, 1)), ([200; 3], [10, 20, 30]));
        assert_eq!((pixel("g16.png", 0, 0), pixel("g16.png", 1, 0)), ([0x12; 3], [0xff; 3]));
        fs::copy(dir.join("g.png"), dir.join("g.jpg")).expect("copy"); // content decides, like PIL
        assert_eq!(pixel("g.jpg", 1, 0), [100; 3]);
        gradient(32, 32).save(dir.join("full.jpg")).expect("save");
        assert_eq!(decode_rgb(&dir.join("full.jpg")).expect("jpeg").dimensions(), (32, 32));
        for (src, cut) in [("a.png", "half.png"), ("full.jpg", "half.jpg"), ("full.jpg", "no_eoi.jpg")] {
            let bytes = fs::read(dir.join(src)).expect("read");
            let keep = if cut == "no_eoi.jpg" { bytes.len() - 2 } else { bytes.len() / 2 };
            fs::write(dir.join(cut), &bytes[..keep]).expect("write");
        }
        fs::write(dir.join("zero.png"), b"").expect("write");
        fs::write(dir.join("junk.png"), b"not an image at all").expect("write");
        for name in ["zero.png", "half.png", "half.jpg", "no_eoi.jpg", "junk.png", "missing.png"] {
            let msg = decode_rgb(&dir.join(name)).map(|_| ()).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("cannot decode {}: ", dir.join(name).display())) && !msg.contains('\n'), "{msg}");
        }
        let _ = fs::remove_dir_all(&dir);
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
