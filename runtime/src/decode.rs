//! Image decoding: JPEG, PNG and WebP to RGB8, upright (EXIF orientation applied),
//! within size limits checked from the header before any pixel is decoded.

use std::io::{Cursor, Read};
use std::path::Path;

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
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut data = Vec::new();
    // Read one byte past the limit to tell "at the limit" from "over it".
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    decode(&data, &path.display().to_string(), limits)
}

/// Decodes an encoded image held in memory; `name` labels errors.
pub fn decode(data: &[u8], name: &str, limits: &ImageLimits) -> Result<RgbImage> {
    let err = |reason: String| Error::Image {
        name: name.to_owned(),
        reason,
    };
    if data.is_empty() {
        return Err(err("empty input (0 bytes)".into()));
    }
    if data.len() as u64 > limits.max_bytes {
        return Err(err(format!(
            "larger than the {} byte limit",
            limits.max_bytes
        )));
    }
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
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}
