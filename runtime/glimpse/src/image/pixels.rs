//! Raw pixel buffers (camera frames, Android `Bitmap`s, iOS `CVPixelBuffer`s) to RGB: the
//! alternative to [`decode`](crate::image) when an app already holds decoded pixels.

use image::RgbImage;

use super::decode::{check_size, ImageLimits};
use crate::error::{Error, Result};

/// How the pixels of a buffer are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// R, G, B, A bytes (Android `ARGB_8888`, `kCVPixelFormatType_32RGBA`). Alpha is ignored.
    Rgba8888,
    /// B, G, R, A bytes (iOS `kCVPixelFormatType_32BGRA`). Alpha is ignored.
    Bgra8888,
    /// R, G, B bytes.
    Rgb888,
    /// 16-bit little-endian words, 5 bits red (high), 6 green, 5 blue (Android `RGB_565`).
    Rgb565,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgba8888 | PixelFormat::Bgra8888 => 4,
            PixelFormat::Rgb888 => 3,
            PixelFormat::Rgb565 => 2,
        }
    }
}

/// Copies a `width` × `height` buffer whose rows start `row_stride` bytes apart into an RGB
/// image, after checking the sizes against `limits` and the buffer's length.
pub fn rgb_from_pixels(
    data: &[u8],
    width: u32,
    height: u32,
    row_stride: usize,
    format: PixelFormat,
    limits: &ImageLimits,
) -> Result<RgbImage> {
    let name = format!("{width}x{height} {format:?} pixel buffer");
    check_size(width, height, &name, limits)?;
    let row_bytes = width as usize * format.bytes_per_pixel();
    let needed = (height as usize - 1)
        .checked_mul(row_stride)
        .and_then(|n| n.checked_add(row_bytes));
    let invalid = |reason: String| Error::Image {
        name: name.clone(),
        reason,
    };
    if row_stride < row_bytes {
        return Err(invalid(format!(
            "row stride {row_stride} is shorter than a row ({row_bytes} bytes)"
        )));
    }
    match needed {
        Some(n) if n <= data.len() => {}
        _ => {
            return Err(invalid(format!(
                "{} bytes is too short for {height} rows of stride {row_stride}",
                data.len()
            )))
        }
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for row in data.chunks(row_stride).take(height as usize) {
        let row = &row[..row_bytes];
        match format {
            PixelFormat::Rgb888 => out.extend_from_slice(row),
            PixelFormat::Rgba8888 => {
                for p in row.chunks_exact(4) {
                    out.extend_from_slice(&p[..3]);
                }
            }
            PixelFormat::Bgra8888 => {
                for p in row.chunks_exact(4) {
                    out.extend_from_slice(&[p[2], p[1], p[0]]);
                }
            }
            PixelFormat::Rgb565 => {
                for p in row.chunks_exact(2) {
                    let v = u16::from_le_bytes([p[0], p[1]]);
                    out.extend_from_slice(&rgb565(v));
                }
            }
        }
    }
    Ok(RgbImage::from_raw(width, height, out).expect("buffer sized to width x height x 3"))
}

/// Widens a 5-6-5 pixel to 8 bits per channel, replicating the high bits into the low ones
/// so that 0 maps to 0 and full scale to 255.
fn rgb565(v: u16) -> [u8; 3] {
    let r = (v >> 11) as u8 & 0x1F;
    let g = (v >> 5) as u8 & 0x3F;
    let b = v as u8 & 0x1F;
    [
        (r << 3) | (r >> 2),
        (g << 2) | (g >> 4),
        (b << 3) | (b >> 2),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb565_full_scale_and_zero() {
        assert_eq!(rgb565(0xF800), [255, 0, 0]);
        assert_eq!(rgb565(0x07E0), [0, 255, 0]);
        assert_eq!(rgb565(0x001F), [0, 0, 255]);
        assert_eq!(rgb565(0x0000), [0, 0, 0]);
        // 0b10000_100000_10000: each channel at its midpoint.
        assert_eq!(rgb565(0x8410), [132, 130, 132]);
    }

    #[test]
    fn strided_rows_skip_padding() {
        // 2x2 BGRA with 4 bytes of padding per row.
        let data = [
            3, 2, 1, 0, 6, 5, 4, 0, 99, 99, 99, 99, //
            9, 8, 7, 0, 12, 11, 10, 0, 99, 99, 99, 99,
        ];
        let limits = ImageLimits {
            min_side: 1,
            ..ImageLimits::default()
        };
        let img = rgb_from_pixels(&data, 2, 2, 12, PixelFormat::Bgra8888, &limits).unwrap();
        assert_eq!(img.into_raw(), (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn short_buffers_and_strides_are_errors() {
        let limits = ImageLimits::default();
        let short = rgb_from_pixels(&[0; 100], 16, 16, 64, PixelFormat::Rgba8888, &limits);
        assert!(short.unwrap_err().to_string().contains("too short"));
        let stride = rgb_from_pixels(&[0; 4096], 16, 16, 32, PixelFormat::Rgba8888, &limits);
        assert!(stride.unwrap_err().to_string().contains("row stride"));
        let huge = rgb_from_pixels(&[], 65535, 65535, 65535 * 4, PixelFormat::Rgba8888, &limits);
        assert!(huge.unwrap_err().to_string().contains("pixel limit"));
    }
}
