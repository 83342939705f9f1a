// Idiomatic Kotlin over the generated bindings (dev.glimpse.ffi): suspend functions that run
// on a background dispatcher, a Flow for indexing progress, AutoCloseable objects.
package dev.glimpse

import dev.glimpse.ffi.CancelToken
import dev.glimpse.ffi.ClipModel
import dev.glimpse.ffi.Hit
import dev.glimpse.ffi.ModelOptions
import dev.glimpse.ffi.PhotoIndex
import dev.glimpse.ffi.PixelFormat
import dev.glimpse.ffi.Prediction
import dev.glimpse.ffi.ScanEvent
import dev.glimpse.ffi.ScanListener
import dev.glimpse.ffi.ScanOptions
import dev.glimpse.ffi.ScanReport
import dev.glimpse.ffi.SearchFilter
import dev.glimpse.ffi.Tag
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.withContext
import java.nio.ByteBuffer

/**
 * A CLIP model. Every call runs on [dispatcher] (a background pool by default), so it is safe
 * to call from the main thread; one model serves any number of concurrent calls.
 * Errors are thrown as [dev.glimpse.ffi.GlimpseException] subclasses.
 */
class Clip(
    val model: ClipModel,
    private val dispatcher: CoroutineDispatcher = Dispatchers.Default,
) : AutoCloseable {
    companion object {
        /** Loads the model bundle in the directory [dir]. */
        suspend fun load(
            dir: String,
            options: ModelOptions = ModelOptions(),
            dispatcher: CoroutineDispatcher = Dispatchers.Default,
        ): Clip = withContext(dispatcher) { Clip(ClipModel.loadWith(dir, options), dispatcher) }
    }

    /** Embeds an encoded image (JPEG, PNG or WebP). */
    suspend fun embedImage(encoded: ByteArray): List<Float> =
        withContext(dispatcher) { model.embedImage(encoded) }

    /** Embeds raw pixels read in place from a direct [ByteBuffer]. */
    suspend fun embedPixels(
        pixels: ByteBuffer,
        width: Int,
        height: Int,
        rowStride: Int,
        format: PixelFormat,
    ): List<Float> = withContext(dispatcher) {
        require(pixels.isDirect) { "pixels must be a direct ByteBuffer (ByteBuffer.allocateDirect)" }
        model.embedPixels(pixels, width.toUInt(), height.toUInt(), rowStride.toUInt(), format)
    }

    /** Embeds a text. */
    suspend fun embedText(text: String): List<Float> =
        withContext(dispatcher) { model.embedText(text) }

    /** Scores an encoded image against [labels], best first. */
    suspend fun classify(encoded: ByteArray, labels: List<String>): List<Prediction> =
        withContext(dispatcher) { model.classify(encoded, labels) }

    override fun close() = model.close()
}

/** Progress of [PhotoLibrary.index]: each event as it happens, then the final report. */
sealed interface IndexProgress {
    data class Update(val event: ScanEvent, val report: ScanReport) : IndexProgress
    data class Finished(val report: ScanReport) : IndexProgress
}

/** A photo library index file bound to one [Clip] model. */
class PhotoLibrary(
    val index: PhotoIndex,
    private val dispatcher: CoroutineDispatcher = Dispatchers.Default,
) : AutoCloseable {
    companion object {
        /** Opens (or creates) the index file at [path] for [clip]'s model. */
        suspend fun open(path: String, clip: Clip, dispatcher: CoroutineDispatcher = Dispatchers.IO): PhotoLibrary =
            withContext(dispatcher) { PhotoLibrary(PhotoIndex.open(path, clip.model), dispatcher) }
    }

    /**
     * Indexes the photos under [dir]. Collecting starts the scan; cancelling the collector
     * stops it, keeping the batches already stored.
     */
    fun index(dir: String, options: ScanOptions = ScanOptions()): Flow<IndexProgress> = callbackFlow<IndexProgress> {
        val cancel = CancelToken()
        val listener = object : ScanListener {
            override fun onEvent(event: ScanEvent, report: ScanReport) {
                trySendBlocking(IndexProgress.Update(event, report))
            }
        }
        val worker = Thread {
            try {
                val report = index.indexDir(dir, options, listener, cancel)
                trySendBlocking(IndexProgress.Finished(report))
                close()
            } catch (e: Throwable) {
                close(e)
            }
        }
        worker.start()
        awaitClose {
            cancel.cancel()
            worker.join()
            cancel.close()
        }
    }.flowOn(dispatcher)

    /** The [k] photos closest to a text query. */
    suspend fun search(query: String, k: Int = 20, filter: SearchFilter? = null): List<Hit> =
        withContext(dispatcher) { index.searchText(query, k.toUInt(), filter) }

    /** The [k] photos closest to the stored photo [key]. */
    suspend fun similar(key: String, k: Int = 20, filter: SearchFilter? = null): List<Hit> =
        withContext(dispatcher) { index.similar(key, k.toUInt(), filter) }

    /** The stored photo's tags, best first. */
    suspend fun tags(key: String): List<Tag> = withContext(dispatcher) { index.tags(key) }

    /** Adds an encoded image under [id], e.g. a MediaStore id. */
    suspend fun add(id: String, encoded: ByteArray) = withContext(dispatcher) { index.addBytes(id, encoded) }

    /** Removes a photo; false when it was not stored. */
    suspend fun remove(key: String): Boolean = withContext(dispatcher) { index.remove(key) }

    override fun close() = index.close()
}
