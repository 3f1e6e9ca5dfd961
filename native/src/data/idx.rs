//! IDX files (the format of MNIST and Fashion-MNIST, optionally gzipped)
//! and the conversion of Fashion-MNIST into an ImageFolder of PNGs.
use anyhow::{anyhow, bail, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's labels 0..9 as folder names; the digit prefix keeps the
/// sorted folder order (the ImageFolder label) equal to the original label.
pub const FASHION_CLASSES: [&str; 10] = [
    "0-tshirt-top", "1-trouser", "2-pullover", "3-dress", "4-coat",
    "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot",
];

/// An unsigned-byte IDX array.
#[derive(Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (gunzipping them first when they are gzip): magic
/// 00 00 08 <ndims>, ndims big-endian u32 sizes, then exactly their
/// product of bytes.
pub fn parse_idx(bytes: &[u8]) -> Result<Idx> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| anyhow!("gzip data is corrupt: {e}"))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("not an IDX file (the first two bytes must be zero)");
    }
    if bytes[2] != 0x08 {
        bail!("IDX element type 0x{:02x} is not supported (only 0x08, unsigned bytes)", bytes[2]);
    }
    let ndims = bytes[3] as usize;
    if !(1..=4).contains(&ndims) || bytes.len() < 4 + 4 * ndims {
        bail!("IDX header is malformed ({ndims} dimensions, {} bytes in all)", bytes.len());
    }
    let dims: Vec<usize> =
        bytes[4..4 + 4 * ndims].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("IDX sizes overflow")?;
    let data = &bytes[4 + 4 * ndims..];
    if data.len() != want {
        let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        bail!("IDX header says {shape} = {want} bytes of data, the file has {}", data.len());
    }
    Ok(Idx { dims, data: data.to_vec() })
}

/// Reads and parses an IDX file; errors name the file.
pub fn read_idx(path: &Path) -> Result<Idx> {
    let bytes = fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    parse_idx(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `<dir>/<name>` or `<dir>/<name>.gz`, whichever exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    [name.to_string(), format!("{name}.gz")].iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!("no {name} or {name}.gz in {}; Debian's dataset-fashion-mnist package installs them in {DEBIAN_DIR}", dir.display())
    })
}

/// Images [n, rows, cols] and their labels [n] in 0..10, checked against each other.
fn split(dir: &Path, prefix: &str) -> Result<(Idx, Vec<u8>)> {
    let (ipath, lpath) = (find(dir, &format!("{prefix}-images-idx3-ubyte"))?, find(dir, &format!("{prefix}-labels-idx1-ubyte"))?);
    let (images, labels) = (read_idx(&ipath)?, read_idx(&lpath)?);
    if images.dims.len() != 3 || labels.dims.len() != 1 {
        bail!("{} must hold images [n, rows, cols] and {} labels [n]", ipath.display(), lpath.display());
    }
    if images.dims[0] != labels.dims[0] {
        bail!("{} has {} images but {} has {} labels", ipath.display(), images.dims[0], lpath.display(), labels.dims[0]);
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= FASHION_CLASSES.len()) {
        bail!("{} has label {bad}; Fashion-MNIST labels are 0..9", lpath.display());
    }
    // torchvision's ImageFolder (and ours) refuses a class folder without images.
    if let Some(missing) = (0..FASHION_CLASSES.len() as u8).find(|c| !labels.data.contains(c)) {
        bail!("{} has no image of class {missing}; an ImageFolder needs every class", lpath.display());
    }
    Ok((images, labels.data))
}

/// What a conversion wrote.
#[derive(Debug)]
pub struct Converted {
    pub source: PathBuf,
    pub out: PathBuf,
    pub train: usize,
    pub test: usize,
    pub classes: Vec<String>,
}

/// Writes `out/{train,test}/<class>/<index>.png` (8-bit grayscale) from the
/// four Fashion-MNIST IDX files in `source`. Everything is checked before
/// anything is written, and written to a sibling folder renamed into place
/// at the end, so `out` is either complete or absent. `out` must not exist.
pub fn fashion_mnist_to_folder(source: &Path, out: &Path) -> Result<Converted> {
    if out.exists() {
        bail!("{} exists already; choose a new folder", out.display());
    }
    let splits = [("train", split(source, "train")?), ("test", split(source, "t10k")?)];
    let name = out.file_name().with_context(|| format!("{} has no folder name", out.display()))?;
    let partial = out.with_file_name(format!("{}.partial-{}", name.to_string_lossy(), std::process::id()));
    let written = write_splits(&splits, &partial).and_then(|()| {
        fs::rename(&partial, out).map_err(|e| anyhow!("cannot rename {} to {}: {e}", partial.display(), out.display()))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    Ok(Converted {
        source: source.to_path_buf(),
        out: out.to_path_buf(),
        train: splits[0].1 .1.len(),
        test: splits[1].1 .1.len(),
        classes: FASHION_CLASSES.iter().map(|c| c.to_string()).collect(),
    })
}

fn write_splits(splits: &[(&str, (Idx, Vec<u8>))], root: &Path) -> Result<()> {
    for (name, (images, labels)) in splits {
        for class in FASHION_CLASSES {
            let dir = root.join(name).join(class);
            fs::create_dir_all(&dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let (rows, cols) = (images.dims[1], images.dims[2]);
        for (i, (pixels, &label)) in images.data.chunks_exact(rows * cols).zip(labels).enumerate() {
            let path = root.join(name).join(FASHION_CLASSES[label as usize]).join(format!("{i:05}.png"));
            let mut png = Vec::new();
            PngEncoder::new(&mut png).write_image(pixels, cols as u32, rows as u32, ExtendedColorType::L8)?;
            fs::write(&path, png).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::imagefolder::ImageFolder;
    use crate::data::testing::temp_dir;
    use std::io::Write;

    /// An IDX file of unsigned bytes with the given dimensions.
    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[test]
    fn parses_plain_and_gzipped_idx_and_names_what_is_wrong() {
        let ok = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let want = Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] };
        assert_eq!(parse_idx(&ok).expect("plain"), want);
        assert_eq!(parse_idx(&gzip(&ok)).expect("gzip"), want);
        let err = |b: &[u8]| parse_idx(b).unwrap_err().to_string();
        assert_eq!(err(&ok[..ok.len() - 1]), "IDX header says 2x3 = 6 bytes of data, the file has 5");
        assert_eq!(err(&[ok.clone(), vec![0]].concat()), "IDX header says 2x3 = 6 bytes of data, the file has 7");
        assert_eq!(err(b"\x1f\x8b\x08garbage"), "gzip data is corrupt: invalid gzip header");
        assert!(err(b"P5 not idx").starts_with("not an IDX file"));
        assert!(err(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).starts_with("IDX element type 0x0d"));
        assert!(err(&[0, 0, 8, 3, 0, 0]).starts_with("IDX header is malformed"));
        assert!(err(&[0, 0, 8]).starts_with("not an IDX file"));
    }

    #[test]
    fn converts_fashion_mnist_into_an_image_folder() {
        let src = temp_dir("fmnist_src");
        let out = src.with_extension("out");
        let _ = fs::remove_dir_all(&out);
        // 13 train and 10 test images of 4x3 pixels; pixel values encode (image, position).
        let pixels = |n: u8| (0..n).flat_map(|i| (0..12).map(move |p| i * 16 + p)).collect::<Vec<u8>>();
        let train_labels = [9, 0, 9, 3, 0, 1, 2, 4, 5, 6, 7, 8, 8];
        fs::write(src.join("train-images-idx3-ubyte.gz"), gzip(&idx_bytes(&[13, 3, 4], &pixels(13)))).expect("write");
        fs::write(src.join("train-labels-idx1-ubyte"), idx_bytes(&[13], &train_labels)).expect("write");
        fs::write(src.join("t10k-images-idx3-ubyte"), idx_bytes(&[10, 3, 4], &pixels(10))).expect("write");
        fs::write(src.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[10], &[1, 0, 2, 3, 4, 5, 6, 7, 8, 9]))).expect("write");
        let done = fashion_mnist_to_folder(&src, &out).expect("convert");
        assert_eq!((done.train, done.test, done.classes.len()), (13, 10, 10));
        let train = ImageFolder::scan(&out.join("train")).expect("scan");
        assert_eq!(train.classes, FASHION_CLASSES);
        let labels: Vec<i64> = train.samples.iter().map(|s| s.1).collect();
        assert_eq!(labels, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9]);
        let img = image::open(out.join("train/9-ankle-boot/00002.png")).expect("png").into_luma8();
        assert_eq!((img.dimensions(), img.get_pixel(1, 2).0[0]), ((4, 3), 2 * 16 + 9)); // row 2, column 1
        assert!(fashion_mnist_to_folder(&src, &out).unwrap_err().to_string().ends_with("exists already; choose a new folder"));
        let _ = fs::remove_dir_all(&out);
        // Mismatches are reported before anything is written.
        fs::write(src.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[9], &[1, 0, 2, 3, 4, 5, 6, 7, 8]))).expect("write");
        let msg = fashion_mnist_to_folder(&src, &out).unwrap_err().to_string();
        assert!(msg.contains("has 10 images but") && msg.ends_with("has 9 labels"), "{msg}");
        fs::write(src.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[10], &[1, 0, 2, 3, 4, 5, 6, 7, 8, 8]))).expect("write");
        let msg = fashion_mnist_to_folder(&src, &out).unwrap_err().to_string();
        assert!(msg.ends_with("t10k-labels-idx1-ubyte.gz has no image of class 9; an ImageFolder needs every class"), "{msg}");
        assert!(!out.exists());
        fs::remove_file(src.join("train-labels-idx1-ubyte")).expect("rm");
        let msg = fashion_mnist_to_folder(&src, &out).unwrap_err().to_string();
        assert!(msg.starts_with("no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz in"), "{msg}");
        let _ = fs::remove_dir_all(&src);
    }
}
