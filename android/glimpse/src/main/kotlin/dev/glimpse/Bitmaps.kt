// Android only: embeds a Bitmap from its pixel memory through JNI (bindings/src/jni.rs),
// without copying the pixels into a Java array first.
package dev.glimpse

import android.graphics.Bitmap
import dev.glimpse.ffi.ClipModel
import kotlinx.coroutines.withContext

internal object Bitmaps {
    init {
        System.loadLibrary("glimpse_ffi")
    }

    /** Takes over [handle], a `uniffiCloneHandle()` of a ClipModel. */
    @JvmStatic
    external fun nativeEmbed(handle: Long, bitmap: Bitmap): FloatArray
}

/** Embeds an `ARGB_8888` or `RGB_565` [bitmap] in place. */
fun ClipModel.embedBitmap(bitmap: Bitmap): FloatArray = Bitmaps.nativeEmbed(uniffiCloneHandle(), bitmap)

/** Embeds an `ARGB_8888` or `RGB_565` [bitmap] in place, off the main thread. */
suspend fun Clip.embedBitmap(bitmap: Bitmap): FloatArray =
    withContext(kotlinx.coroutines.Dispatchers.Default) { model.embedBitmap(bitmap) }
