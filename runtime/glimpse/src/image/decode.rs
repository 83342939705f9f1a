//! Image decoding: JPEG, PNG and WebP to RGB8, upright (EXIF orientation applied),
//! within size limits checked from the header before any pixel is decoded.
//!
//! [`decode_scaled`] decodes JPEGs at a reduced DCT scale (1/2, 1/4, 1/8) when the model
//! needs fewer pixels than the photo has: a 12 MP photo for a 224 px model decodes 1/64 of
//! its pixels' IDCT work. `jpeg-decoder` does the scaled IDCT; `image` (zune-jpeg) the rest.

use std::io::{Cursor, Read};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Bounds on what an image may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width × height (decompression bombs stop here).
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes.
    pub max_bytes: u64,
    /// Smallest accepted width and height: smaller images carry nothing to embed.
    pub min_side: u32,
}

impl Default for ImageLimits {
    /// 128 megapixels (a 108 MP phone photo fits), 64 MiB encoded, 8 px sides.
    fn default() -> Self {
        ImageLimits {
            max_pixels: 128 << 20,
            max_bytes: 64 << 20,
            min_side: 8,
        }
    }
}

/// Reads and decodes an image file.
pub fn decode_file(path: &Path, limits: &ImageLimits) -> Result<RgbImage> {
    let data = read_file(path, limits)?;
    decode(&data, &path.display().to_string(), limits)
}

/// Reads an image file, refusing one over the byte limit without reading it.
pub fn read_file(path: &Path, limits: &ImageLimits) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > limits.max_bytes {
        return Err(Error::Image {
            name: path.display().to_string(),
            reason: format!("{len} bytes is over the {} byte limit", limits.max_bytes),
        });
    }
    let mut data = Vec::new();
    // Read one byte past the limit: the file may have grown since.
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    Ok(data)
}

fn image_error(name: &str) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Image {
        name: name.to_owned(),
        reason,
    }
}

fn check_bytes(data: &[u8], name: &str, limits: &ImageLimits) -> Result<()> {
    let err = image_error(name);
    if data.is_empty() {
        return Err(err("empty input (0 bytes)".into()));
    }
    if data.len() as u64 > limits.max_bytes {
        return Err(err(format!(
            "larger than the {} byte limit",
            limits.max_bytes
        )));
    }
    Ok(())
}

pub(crate) fn check_size(w: u32, h: u32, name: &str, limits: &ImageLimits) -> Result<()> {
    let err = image_error(name);
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(err(format!(
            "{w}x{h} is over the {} pixel limit",
            limits.max_pixels
        )));
    }
    if w < limits.min_side || h < limits.min_side {
        return Err(err(format!(
            "{w}x{h} is too small (sides of at least {} px)",
            limits.min_side
        )));
    }
    Ok(())
}

/// Decodes an image no smaller than the model needs: `needed(w, h)` gives, for an upright
/// image of `w` × `h`, the smallest (width, height) the preprocessing wants (0: any). JPEGs
/// decode at the smallest DCT scale that covers it; other formats decode in full.
pub fn decode_scaled(
    data: &[u8],
    name: &str,
    limits: &ImageLimits,
    needed: impl Fn(u32, u32) -> (u32, u32),
) -> Result<RgbImage> {
    check_bytes(data, name, limits)?;
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // Files jpeg-decoder refuses (it is stricter on damaged scans) go the full path,
        // which decodes what it can.
        if let Some(img) = decode_jpeg_scaled(data, name, limits, needed)? {
            return Ok(img);
        }
    }
    decode(data, name, limits)
}

/// The scaled JPEG path; `Ok(None)` when jpeg-decoder cannot read the file.
fn decode_jpeg_scaled(
    data: &[u8],
    name: &str,
    limits: &ImageLimits,
    needed: impl Fn(u32, u32) -> (u32, u32),
) -> Result<Option<RgbImage>> {
    let mut dec = jpeg_decoder::Decoder::new(data);
    if dec.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = dec.info() else {
        return Ok(None);
    };
    let (w, h) = (info.width as u32, info.height as u32);
    check_size(w, h, name, limits)?;
    let orientation = exif(data)
        .and_then(|e| {
            e.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
                .and_then(|f| f.value.get_uint(0))
        })
        .and_then(|v| Orientation::from_exif(v as u8))
        .unwrap_or(Orientation::NoTransforms);
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (uw, uh) = if swaps { (h, w) } else { (w, h) };
    let (nw, nh) = needed(uw, uh);
    let (nw, nh) = if swaps { (nh, nw) } else { (nw, nh) };
    // jpeg-decoder picks the smallest scale meeting the request on *either* axis, so
    // request only the axis that binds.
    let request = if nw as u64 * h as u64 >= nh as u64 * w as u64 {
        (nw.min(u16::MAX as u32) as u16, u16::MAX)
    } else {
        (u16::MAX, nh.min(u16::MAX as u32) as u16)
    };
    let Ok((sw, sh)) = dec.scale(request.0, request.1) else {
        return Ok(None);
    };
    let Ok(pixels) = dec.decode() else {
        return Ok(None);
    };
    let (sw, sh) = (sw as u32, sh as u32);
    let rgb: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        // Anything rarer (16-bit, CMYK) takes the full path.
        _ => return Ok(None),
    };
    let Some(img) = RgbImage::from_raw(sw, sh, rgb) else {
        return Ok(None);
    };
    let mut img = DynamicImage::ImageRgb8(img);
    img.apply_orientation(orientation);
    Ok(Some(img.into_rgb8()))
}

fn exif(data: &[u8]) -> Option<exif::Exif> {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(data))
        .ok()
}

/// When a photo was taken, from its EXIF `DateTimeOriginal` (or `DateTime`), as Unix
/// seconds; the camera's local time is read as UTC unless EXIF gives an offset.
pub fn taken_at(data: &[u8]) -> Option<i64> {
    let exif = exif(data)?;
    let field = [exif::Tag::DateTimeOriginal, exif::Tag::DateTime]
        .iter()
        .find_map(|&t| exif.get_field(t, exif::In::PRIMARY))?;
    let exif::Value::Ascii(ref v) = field.value else {
        return None;
    };
    let dt = exif::DateTime::from_ascii(v.first()?).ok()?;
    let secs = unix_seconds(
        dt.year as i64,
        dt.month as i64,
        dt.day as i64,
        dt.hour as i64 * 3600 + dt.minute as i64 * 60 + dt.second as i64,
    )?;
    Some(secs - dt.offset.unwrap_or(0) as i64 * 60)
}

/// Seconds since 1970-01-01 of a proleptic Gregorian date plus `secs` into that day;
/// `None` for an impossible month or day. (Howard Hinnant's days-from-civil.)
pub fn unix_seconds(year: i64, month: i64, day: i64, secs: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + secs)
}

/// Decodes an encoded image held in memory; `name` labels errors.
pub fn decode(data: &[u8], name: &str, limits: &ImageLimits) -> Result<RgbImage> {
    let err = image_error(name);
    check_bytes(data, name, limits)?;
    let mut reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err(
            "not a recognised image format (JPEG, PNG or WebP)".into()
        ));
    }
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(lim);
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, name, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}
