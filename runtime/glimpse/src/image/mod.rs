//! Images in: decoding files and bytes (EXIF orientation and date, DCT-scaled JPEG decode,
//! limits checked before decoding), raw pixel buffers, and the preprocessing a model's
//! `preprocessor_config.json` asks for.

mod decode;
mod pixels;
mod preprocess;

pub use decode::{
    decode, decode_file, decode_scaled, read_file, taken_at, unix_seconds, ImageLimits,
};
pub use pixels::{rgb_from_pixels, PixelFormat};
pub use preprocess::{Filter, PreprocessConfig, Resize, CLIP_MEAN, CLIP_STD};
