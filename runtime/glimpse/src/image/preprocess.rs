//! CLIP's image preprocessing: resize the shortest side (bicubic), centre crop,
//! scale to [0, 1] and normalise per channel, laid out as CHW f32. LLaVA-style models first pad
//! the image to a square on the mean colour.
//!
//! Resizing uses `fast_image_resize`'s Catmull-Rom convolution (PIL's bicubic kernel,
//! a = -0.5, with the support widened when downscaling, as PIL does). Both work in
//! 8-bit fixed point with rounding after each pass, so results differ from PIL by at
//! most a few levels of 255 on some pixels (measured in the tests).

use std::borrow::Cow;

use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::Deserialize;

/// OpenAI CLIP's per-channel mean, in [0, 1] units.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation, in [0, 1] units.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How to turn a decoded image into the model's input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// Pad to a square on the mean colour before resizing (LLaVA's and MobileVLM's
    /// `image_aspect_ratio: "pad"`), so the whole image is kept where a crop would cut it.
    pub pad_square: bool,
    /// Resize target.
    pub resize: Resize,
    /// Centre crop (width, height) after resizing, if any.
    pub crop: Option<(u32, u32)>,
    /// Interpolation filter.
    pub filter: Filter,
    /// Multiplier from 8-bit values to the normalisation's units (1/255).
    pub rescale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Resize target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// Scale so the shorter side has this length, keeping the aspect ratio.
    ShortestEdge(u32),
    /// Scale to exactly (width, height).
    Exact(u32, u32),
}

/// Interpolation filter, as PIL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bicubic,
    Bilinear,
    Nearest,
}

#[derive(Deserialize)]
struct HfPreprocessor {
    size: Option<serde_json::Value>,
    crop_size: Option<serde_json::Value>,
    do_center_crop: Option<bool>,
    do_resize: Option<bool>,
    do_normalize: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f32>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    resample: Option<u32>,
    image_processor_type: Option<String>,
    do_pad: Option<bool>,
    image_aspect_ratio: Option<String>,
}

impl PreprocessConfig {
    /// OpenAI CLIP's preprocessing at `size` × `size`.
    pub fn clip(size: u32) -> Self {
        PreprocessConfig {
            pad_square: false,
            resize: Resize::ShortestEdge(size),
            crop: Some((size, size)),
            filter: Filter::Bicubic,
            rescale: 1.0 / 255.0,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Reads an HF `preprocessor_config.json` (CLIPImageProcessor and alikes). Square padding is
    /// on for `"image_aspect_ratio": "pad"` (the key LLaVA and MobileVLM checkpoints carry) and
    /// for transformers' `LlavaImageProcessor` with `"do_pad": true`.
    pub fn from_hf_json(text: &str) -> Result<Self, String> {
        let p: HfPreprocessor =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let crop = match (p.do_center_crop.unwrap_or(true), &p.crop_size) {
            (true, Some(v)) => Some(hf_size(v).ok_or("unreadable crop_size")?),
            _ => None,
        };
        let resize = match (p.do_resize.unwrap_or(true), &p.size) {
            (false, _) => None,
            (true, Some(v)) => match v.get("shortest_edge").and_then(|n| n.as_u64()) {
                Some(n) => Some(Resize::ShortestEdge(n as u32)),
                None => {
                    let (w, h) = hf_size(v).ok_or("unreadable size")?;
                    Some(if v.is_number() {
                        Resize::ShortestEdge(w)
                    } else {
                        Resize::Exact(w, h)
                    })
                }
            },
            (true, None) => None,
        };
        let resize = resize
            .or(crop.map(|(w, h)| Resize::Exact(w, h)))
            .ok_or("neither size nor crop_size: the model input size is unknown")?;
        let normalize = p.do_normalize.unwrap_or(true);
        let filter = match p.resample.unwrap_or(3) {
            0 => Filter::Nearest,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            n => return Err(format!("resample mode {n} is not supported (0, 2 or 3)")),
        };
        let llava = p
            .image_processor_type
            .as_deref()
            .is_some_and(|t| t.starts_with("LlavaImageProcessor"));
        let pad_square = match p.image_aspect_ratio.as_deref() {
            Some("pad") => true,
            Some(a) if a.starts_with("anyres") => {
                return Err(format!(
                    "image_aspect_ratio {a:?} (LLaVA-1.6 tiling) is not supported; \"pad\" is"
                ))
            }
            _ => llava && p.do_pad == Some(true),
        };
        let cfg = PreprocessConfig {
            pad_square,
            resize,
            crop,
            filter,
            rescale: if p.do_rescale.unwrap_or(true) {
                p.rescale_factor.unwrap_or(1.0 / 255.0)
            } else {
                1.0
            },
            mean: if normalize {
                p.image_mean.unwrap_or(CLIP_MEAN)
            } else {
                [0.0; 3]
            },
            std: if normalize {
                p.image_std.unwrap_or(CLIP_STD)
            } else {
                [1.0; 3]
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects sizes of zero, absurd sizes and zero or non-finite std.
    pub fn validate(&self) -> Result<(), String> {
        let (w, h) = self.output_size();
        if w == 0 || h == 0 || w > 4096 || h > 4096 {
            return Err(format!(
                "model input size {w}x{h} is out of range (1..=4096)"
            ));
        }
        if let Some((cw, ch)) = self.crop {
            let (rw, rh) = match self.resize {
                Resize::Exact(rw, rh) => (rw, rh),
                Resize::ShortestEdge(s) => (s, s),
            };
            if cw > rw || ch > rh {
                return Err(format!(
                    "crop {cw}x{ch} is larger than the resized image {rw}x{rh}"
                ));
            }
        }
        if self.std.iter().any(|s| !s.is_normal()) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err("image mean/std must be finite and std non-zero".into());
        }
        Ok(())
    }

    /// The (width, height) of the tensor this config produces.
    pub fn output_size(&self) -> (u32, u32) {
        match (self.crop, self.resize) {
            (Some(c), _) => c,
            (None, Resize::Exact(w, h)) => (w, h),
            (None, Resize::ShortestEdge(s)) => (s, s),
        }
    }

    /// The smallest (width, height) an upright `w` × `h` image may be decoded at without
    /// losing detail this config keeps (0: no bound on that axis). For
    /// [`crate::image::decode_scaled`].
    pub fn needed_size(&self, w: u32, h: u32) -> (u32, u32) {
        if self.pad_square {
            // The longer side becomes the square's, which resizes as any square does.
            let (rw, rh) = self.resized_size(1, 1);
            return if w >= h {
                (rw.max(rh), 0)
            } else {
                (0, rw.max(rh))
            };
        }
        match self.resize {
            Resize::Exact(rw, rh) => (rw, rh),
            Resize::ShortestEdge(s) if w <= h => (s, 0),
            Resize::ShortestEdge(s) => (0, s),
        }
    }

    /// Size after the resize step for an image of `w` × `h` (torchvision's and HF's rounding:
    /// the longer side is truncated).
    fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        match self.resize {
            Resize::Exact(rw, rh) => (rw, rh),
            Resize::ShortestEdge(s) if w <= h => {
                (s, ((s as u64 * h as u64) / w as u64).max(1) as u32)
            }
            Resize::ShortestEdge(s) => (((s as u64 * w as u64) / h as u64).max(1) as u32, s),
        }
    }

    /// Preprocesses one RGB image, appending its CHW tensor (3 × H × W values) to `out`.
    pub fn run(&self, img: &RgbImage, out: &mut Vec<f32>) -> Result<(), String> {
        let (w, h) = img.dimensions();
        let pad = self.pad_square && w != h;
        let side = w.max(h);
        let (rw, rh) = match pad {
            true => self.resized_size(side, side),
            false => self.resized_size(w, h),
        };
        let resized = match pad {
            true => {
                let mean = self.mean.map(|m| (m * 255.0) as u8);
                Cow::Owned(pad_and_resize(img, rw, rh, self.filter, mean)?)
            }
            false => resize(img, rw, rh, self.filter)?,
        };
        let (cw, ch) = self
            .crop
            .map_or((rw, rh), |(cw, ch)| (cw.min(rw), ch.min(rh)));
        let (x0, y0) = ((rw - cw) / 2, (rh - ch) / 2);
        let plane = (cw * ch) as usize;
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        let dst = &mut out[start..];
        let scale: [f32; 3] = std::array::from_fn(|c| self.rescale / self.std[c]);
        let shift: [f32; 3] = std::array::from_fn(|c| self.mean[c] / self.std[c]);
        for y in 0..ch as usize {
            let row = ((y0 as usize + y) * rw as usize + x0 as usize) * 3;
            let src = &resized[row..row + cw as usize * 3];
            for (x, px) in src.chunks_exact(3).enumerate() {
                let i = y * cw as usize + x;
                for c in 0..3 {
                    dst[c * plane + i] = px[c] as f32 * scale[c] - shift[c];
                }
            }
        }
        Ok(())
    }
}

/// Reads HF's size forms: `224`, `{"height":224,"width":224}`, `{"shortest_edge":224}`.
fn hf_size(v: &serde_json::Value) -> Option<(u32, u32)> {
    if let Some(n) = v.as_u64() {
        return Some((n as u32, n as u32));
    }
    let get = |k: &str| v.get(k).and_then(|n| n.as_u64()).map(|n| n as u32);
    match (get("width"), get("height"), get("shortest_edge")) {
        (Some(w), Some(h), _) => Some((w, h)),
        (_, _, Some(s)) => Some((s, s)),
        _ => None,
    }
}

/// Pads `img` to a square of its longer side on `color` (centred, offset rounded down), resized
/// to `w` × `h`; returns packed RGB8. The full-size square is never built: the image is resized
/// along its longer side first (no padding lies there), then padded across and resized across,
/// so memory stays at the output width times the longer side however long a panorama is.
fn pad_and_resize(
    img: &RgbImage,
    w: u32,
    h: u32,
    filter: Filter,
    color: [u8; 3],
) -> Result<Vec<u8>, String> {
    let (iw, ih) = img.dimensions();
    let side = iw.max(ih);
    let (aw, ah, pw, ph) = if iw > ih {
        (w, ih, w, side)
    } else {
        (iw, h, side, h)
    };
    let along = resize(img, aw, ah, filter)?;
    let mut padded = color.repeat(pw as usize * ph as usize);
    let (x0, y0) = ((pw - aw) as usize / 2, (ph - ah) as usize / 2);
    for (y, row) in along.chunks_exact(aw as usize * 3).enumerate() {
        let at = ((y0 + y) * pw as usize + x0) * 3;
        padded[at..at + row.len()].copy_from_slice(row);
    }
    let padded =
        FirImage::from_vec_u8(pw, ph, padded, PixelType::U8x3).map_err(|e| e.to_string())?;
    resize_view(&padded, w, h, filter)
}

/// Resizes packed RGB8 pixels; returns the packed result (borrowed when no resize is needed).
fn resize(img: &RgbImage, w: u32, h: u32, filter: Filter) -> Result<Cow<'_, [u8]>, String> {
    if img.dimensions() == (w, h) {
        return Ok(Cow::Borrowed(img.as_raw()));
    }
    resize_view(img, w, h, filter).map(Cow::Owned)
}

/// Resizes any RGB8 image view to packed `w` × `h` pixels.
fn resize_view(
    img: &impl IntoImageView,
    w: u32,
    h: u32,
    filter: Filter,
) -> Result<Vec<u8>, String> {
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    let alg = match filter {
        Filter::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Filter::Nearest => ResizeAlg::Nearest,
    };
    Resizer::new()
        .resize(img, &mut dst, &ResizeOptions::new().resize_alg(alg))
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}
