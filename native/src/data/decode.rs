//! Image files to 8-bit RGB the way the reference loads them:
//! `PIL.Image.open(path).convert("RGB")` (torchvision's default_loader).

use std::fs;
use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// PIL refuses images above twice `Image.MAX_IMAGE_PIXELS` (89,478,485) as decompression bombs;
/// so do we, before any pixel memory is allocated.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Decodes a file into 8-bit RGB like PIL's `Image.open(p).convert("RGB")`: grayscale and
/// grayscale+alpha are replicated, alpha is dropped (not blended), palettes are expanded,
/// CMYK JPEGs are converted with PIL's formula, 16-bit images keep their high byte.
/// Every failure is one line starting with `cannot decode <path>: `.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let fail = |why: &dyn std::fmt::Display| anyhow!("cannot decode {}: {}", path.display(), one_line(why));
    let bytes = fs::read(path).map_err(|e| fail(&e))?;
    decode_bytes(&bytes).map_err(|e| fail(&e))
}

/// The same for bytes already in memory (the message does not name a path).
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(anyhow!("file is empty (0 bytes)"));
    }
    // The format comes from the content (like PIL); the extension plays no part.
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    if reader.format().is_none() {
        return Err(anyhow!("not an image format selfsup can read (JPEG, PNG, BMP, WebP, TIFF, PNM, GIF)"));
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        return Err(anyhow!("truncated JPEG (no end-of-image marker after the last scan)"));
    }
    // Our own pixel limit below replaces the crate's 512 MiB allocation cap, which would refuse
    // large but legitimate images that PIL opens.
    reader.limits(Limits::no_limits());
    let decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(anyhow!(
            "{w}x{h} is {} Mpixels, over the {} Mpixel limit (PIL's decompression-bomb limit)",
            w as u64 * h as u64 / 1_000_000,
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(to_rgb8_like_pil(DynamicImage::from_decoder(decoder)?))
}

/// Codec messages can span lines; the loader reports one line per bad file.
fn one_line(why: &dyn std::fmt::Display) -> String {
    why.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testing::{gradient, temp_dir};
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::{ExtendedColorType, GrayImage, ImageBuffer, ImageEncoder, Luma, Rgb, Rgba, RgbaImage};

    #[test]
    fn decode_converts_like_pil() {
        let dir = temp_dir("decode");
        let pixel = |name: &str, x, y| decode_rgb(&dir.join(name)).expect(name).get_pixel(x, y).0;
        GrayImage::from_fn(3, 2, |x, _| Luma([x as u8 * 100])).save(dir.join("g.png")).expect("save");
        RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0])).save(dir.join("a.png")).expect("save");
        ImageBuffer::from_fn(2, 1, |x, _| Luma([[0x12ffu16, 0xffff][x as usize]])).save(dir.join("g16.png")).expect("save");
        assert_eq!((pixel("g.png", 2, 1), pixel("a.png", 1, 1)), ([200; 3], [10, 20, 30]));
        assert_eq!((pixel("g16.png", 0, 0), pixel("g16.png", 1, 0)), ([0x12; 3], [0xff; 3]));
        ImageBuffer::from_fn(2, 1, |x, _| Rgb([[0x1234u16, 0xfedc][x as usize], 0x00ff, 0xff00])).save(dir.join("c16.png")).expect("save");
        assert_eq!((pixel("c16.png", 0, 0), pixel("c16.png", 1, 0)), ([0x12, 0x00, 0xff], [0xfe, 0x00, 0xff]));
        fs::copy(dir.join("g.png"), dir.join("g.jpg")).expect("copy"); // content decides, like PIL
        assert_eq!(pixel("g.jpg", 1, 0), [100; 3]);
        gradient(32, 32).save(dir.join("full.jpg")).expect("save");
        assert_eq!(decode_rgb(&dir.join("full.jpg")).expect("jpeg").dimensions(), (32, 32));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_one_line_errors_naming_the_path() {
        let dir = temp_dir("decode_bad");
        RgbaImage::from_pixel(40, 40, Rgba([10, 20, 30, 255])).save(dir.join("a.png")).expect("save");
        gradient(64, 64).save(dir.join("full.jpg")).expect("save");
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
    fn decompression_bombs_are_refused_before_allocating() {
        // 20000 x 10000 gray pixels compress to a few hundred kB; decoding would need 600 MB as RGB.
        let (w, h) = (20_000u32, 10_000u32);
        let mut png = Vec::new();
        let enc = PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::NoFilter);
        enc.write_image(&vec![0u8; (w * h) as usize], w, h, ExtendedColorType::L8).expect("encode");
        let msg = decode_bytes(&png).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("20000x10000 is 200 Mpixels, over the 178 Mpixel limit"), "{msg}");
    }

    #[test]
    fn large_images_decode() {
        // A 6000 x 4000 photo-sized JPEG (24 Mpixels, 72 MB as RGB) is well inside the limit.
        let img = gradient(6000, 4000);
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg).expect("encode");
        assert_eq!(decode_bytes(&jpg).expect("decode").dimensions(), (6000, 4000));
    }
}
