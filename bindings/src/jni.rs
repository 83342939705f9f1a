//! Android fast path: embeds a `Bitmap` straight from its pixel memory (libjnigraphics),
//! where going through JNA would first copy every pixel into a Java array. Kotlin side:
//! android/glimpse/src/main/kotlin/dev/glimpse/Bitmaps.kt.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use jni::objects::{JClass, JObject};
use jni::sys::{jfloatArray, jlong};
use jni::JNIEnv;

use crate::clip::{ClipModel, PixelFormat};
use crate::GlimpseError;

/// `AndroidBitmapInfo` from `<android/bitmap.h>`.
#[repr(C)]
#[derive(Default)]
struct BitmapInfo {
    width: u32,
    height: u32,
    stride: u32,
    format: i32,
    flags: u32,
}

const FORMAT_RGBA_8888: i32 = 1;
const FORMAT_RGB_565: i32 = 4;

#[link(name = "jnigraphics")]
extern "C" {
    fn AndroidBitmap_getInfo(
        env: *mut jni::sys::JNIEnv,
        bitmap: jni::sys::jobject,
        info: *mut BitmapInfo,
    ) -> i32;
    fn AndroidBitmap_lockPixels(
        env: *mut jni::sys::JNIEnv,
        bitmap: jni::sys::jobject,
        pixels: *mut *mut c_void,
    ) -> i32;
    fn AndroidBitmap_unlockPixels(env: *mut jni::sys::JNIEnv, bitmap: jni::sys::jobject) -> i32;
}

/// `Bitmaps.nativeEmbed(handle, bitmap)`: `handle` is `ClipModel.uniffiCloneHandle()`, a
/// strong reference this call takes over. Returns the embedding, or throws the matching
/// `GlimpseException` and returns null.
#[no_mangle]
pub extern "system" fn Java_dev_glimpse_Bitmaps_nativeEmbed<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    bitmap: JObject<'l>,
) -> jfloatArray {
    // SAFETY: the Kotlin caller passes a freshly cloned uniffi handle of a `ClipModel`.
    let model: Arc<ClipModel> =
        unsafe { uniffi::Handle::from_raw_unchecked(handle as u64).into_arc() };
    let raw_env = env.get_raw();
    let raw_bitmap = bitmap.as_raw();
    let result = catch_unwind(AssertUnwindSafe(|| {
        embed_bitmap(&model, raw_env, raw_bitmap)
    }))
    .unwrap_or_else(|_| {
        Err(GlimpseError::Internal(
            "panic while embedding a bitmap".into(),
        ))
    });
    let outcome = result.and_then(|embedding| {
        let array = env
            .new_float_array(embedding.len() as i32)
            .map_err(|e| GlimpseError::Internal(e.to_string()))?;
        env.set_float_array_region(&array, 0, &embedding)
            .map_err(|e| GlimpseError::Internal(e.to_string()))?;
        Ok(array.into_raw())
    });
    outcome.unwrap_or_else(|e| {
        let class = format!("dev/glimpse/ffi/GlimpseException${}", variant(&e));
        let _ = env.throw_new(class, e.to_string());
        std::ptr::null_mut()
    })
}

fn embed_bitmap(
    model: &ClipModel,
    env: *mut jni::sys::JNIEnv,
    bitmap: jni::sys::jobject,
) -> Result<Vec<f32>, GlimpseError> {
    let mut info = BitmapInfo::default();
    // SAFETY: `env` and `bitmap` are the live JNI arguments of this call.
    if unsafe { AndroidBitmap_getInfo(env, bitmap, &mut info) } != 0 {
        return Err(GlimpseError::InvalidArgument("not a Bitmap".into()));
    }
    let format = match info.format {
        FORMAT_RGBA_8888 => PixelFormat::Rgba8888,
        FORMAT_RGB_565 => PixelFormat::Rgb565,
        other => {
            return Err(GlimpseError::Image(format!(
                "Bitmap format {other} is not supported (use ARGB_8888 or RGB_565)"
            )))
        }
    };
    let mut pixels: *mut c_void = std::ptr::null_mut();
    // SAFETY: as above; the pixels stay valid until unlockPixels.
    if unsafe { AndroidBitmap_lockPixels(env, bitmap, &mut pixels) } != 0 || pixels.is_null() {
        return Err(GlimpseError::Image(
            "could not lock the Bitmap's pixels".into(),
        ));
    }
    let len = info.stride as usize * info.height as usize;
    // SAFETY: a locked bitmap holds `stride * height` bytes at `pixels`.
    let data = unsafe { std::slice::from_raw_parts(pixels as *const u8, len) };
    let result = model.embed_pixels(data, info.width, info.height, info.stride, format);
    // SAFETY: locked above.
    unsafe { AndroidBitmap_unlockPixels(env, bitmap) };
    result
}

/// The Kotlin class name of an error's `GlimpseException` subclass.
fn variant(e: &GlimpseError) -> &'static str {
    match e {
        GlimpseError::Io(_) => "Io",
        GlimpseError::Bundle(_) => "Bundle",
        GlimpseError::Model(_) => "Model",
        GlimpseError::Integrity(_) => "Integrity",
        GlimpseError::Image(_) => "Image",
        GlimpseError::Text(_) => "Text",
        GlimpseError::TowerNotLoaded(_) => "TowerNotLoaded",
        GlimpseError::InvalidArgument(_) => "InvalidArgument",
        GlimpseError::Index(_) => "Index",
        GlimpseError::Inference(_) => "Inference",
        GlimpseError::Internal(_) => "Internal",
    }
}
