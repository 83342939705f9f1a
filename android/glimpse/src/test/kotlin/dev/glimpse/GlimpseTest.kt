// The Kotlin API end to end on the JVM (JNA), against the committed fixtures and the
// ONNX Runtime + PIL references in fixtures/photos/reference.json (tools/reference_photos.py).
package dev.glimpse

import dev.glimpse.ffi.CancelToken
import dev.glimpse.ffi.ClipModel
import dev.glimpse.ffi.GlimpseException
import dev.glimpse.ffi.ModelOptions
import dev.glimpse.ffi.PhotoIndex
import dev.glimpse.ffi.PixelFormat
import dev.glimpse.ffi.ScanEvent
import dev.glimpse.ffi.ScanListener
import dev.glimpse.ffi.ScanOptions
import dev.glimpse.ffi.ScanReport
import dev.glimpse.ffi.SearchFilter
import dev.glimpse.ffi.similarity
import dev.glimpse.ffi.version
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import java.io.File
import java.nio.ByteBuffer
import java.nio.file.Files
import java.util.concurrent.Executors
import javax.imageio.ImageIO
import kotlin.math.abs
import kotlin.test.AfterTest
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

class GlimpseTest {
    private val root = File(System.getProperty("glimpse.root") ?: "../../..").canonicalFile
    private val demo = File(root, "models/fashion-clip").path
    private val tiny = File(root, "fixtures/clip-vit-tiny").path
    private val reference = Reference.load(File(root, "fixtures/photos/reference.json"))
    private val tmp: File = Files.createTempDirectory("glimpse-kotlin").toFile()
    private val model by lazy { ClipModel.load(demo) }

    @AfterTest
    fun cleanUp() {
        tmp.deleteRecursively()
    }

    private fun image(i: Int) = File(root, reference.images[i])

    @Test
    fun embeddingsMatchTheReferenceCosines() {
        val images = reference.images.indices.map { model.embedImageFile(image(it).path) }
        val queries = reference.queries.map { model.embedText(it) }
        for ((q, query) in queries.withIndex()) {
            for ((i, img) in images.withIndex()) {
                val cos = similarity(query, img)
                assertTrue(abs(cos - reference.queryCosines[q][i]) < 0.03, "$q/$i: $cos")
            }
        }
        // Bytes and path give the same embedding; texts embed alike one by one and batched.
        assertContentEquals(images[0], model.embedImage(image(0).readBytes()))
        assertEquals(queries, model.embedTexts(reference.queries))
        assertTrue(version().isNotEmpty())
        // The id names the embedding space: the same for a text-only load, not for another model.
        ClipModel.loadWith(demo, ModelOptions(vision = false)).use { assertEquals(model.id(), it.id()) }
        ClipModel.load(tiny).use { assertTrue(it.id() != model.id()) }
    }

    @Test
    fun classifiesTheDemoImage() {
        val labels = reference.vocabulary
        val sneaker = File(root, "fixtures/images/fashion/sneaker.png").readBytes()
        val predictions = model.classify(sneaker, labels)
        assertEquals("sneaker", predictions.first().label)
        assertEquals(1.0, predictions.sumOf { it.probability.toDouble() }, 1e-4)
        model.classifier(labels).use { classifier ->
            assertEquals(labels, classifier.labels())
            assertEquals(predictions, classifier.classify(model.embedImage(sneaker)))
        }
    }

    @Test
    fun directByteBufferPixelsMatchTheDecodedImage() {
        // Decoded by Java's own PNG decoder, handed over in place in three layouts.
        val file = image(7)
        val img = ImageIO.read(file)
        val (w, h) = img.width to img.height
        val rgba = ByteBuffer.allocateDirect(w * h * 4)
        val bgra = ByteBuffer.allocateDirect(w * h * 4)
        val rgb565 = ByteBuffer.allocateDirect(w * h * 2)
        val raster = img.raster
        val sample = IntArray(raster.numBands)
        for (y in 0 until h) for (x in 0 until w) {
            // Raw samples: getRGB would convert Java's linear gray colour space.
            raster.getPixel(x, y, sample)
            val (r, g, b) = if (sample.size < 3) Triple(sample[0], sample[0], sample[0]) else Triple(sample[0], sample[1], sample[2])
            rgba.put(r.toByte()).put(g.toByte()).put(b.toByte()).put(255.toByte())
            bgra.put(b.toByte()).put(g.toByte()).put(r.toByte()).put(255.toByte())
            val v = ((r shr 3) shl 11) or ((g shr 2) shl 5) or (b shr 3)
            rgb565.put((v and 255).toByte()).put((v shr 8).toByte())
        }
        listOf(rgba, bgra, rgb565).forEach { it.rewind() }
        val expected = model.embedImageFile(file.path)
        val fromRgba = model.embedPixels(rgba, w.toUInt(), h.toUInt(), (w * 4).toUInt(), PixelFormat.RGBA8888)
        assertTrue(similarity(expected, fromRgba) > 0.99999f, "${similarity(expected, fromRgba)}")
        val fromBgra = model.embedPixels(bgra, w.toUInt(), h.toUInt(), (w * 4).toUInt(), PixelFormat.BGRA8888)
        assertContentEquals(fromRgba, fromBgra)
        val from565 = model.embedPixels(rgb565, w.toUInt(), h.toUInt(), (w * 2).toUInt(), PixelFormat.RGB565)
        assertTrue(similarity(expected, from565) > 0.99f, "${similarity(expected, from565)}")
        val short = ByteBuffer.allocateDirect(100)
        val e = assertFailsWith<GlimpseException.Image> {
            model.embedPixels(short, w.toUInt(), h.toUInt(), (w * 4).toUInt(), PixelFormat.RGBA8888)
        }
        assertTrue("too short" in e.message!!, e.message)
    }

    @Test
    fun photoIndexSearchesTagsAndReportsProgress() {
        val photos = File(tmp, "photos").apply { mkdirs() }
        reference.images.forEachIndexed { i, _ -> image(i).copyTo(File(photos, image(i).name)) }
        File(photos, "broken.jpg").writeBytes(byteArrayOf(0xFF.toByte(), 0xD8.toByte(), 0xFF.toByte(), 1, 2))
        PhotoIndex.open(File(tmp, "index.sqlite").path, model).use { index ->
            index.setVocabulary(reference.vocabulary)
            assertEquals(reference.vocabulary, index.vocabulary())
            val events = mutableListOf<ScanEvent>()
            val listener = object : ScanListener {
                override fun onEvent(event: ScanEvent, report: ScanReport) {
                    events += event
                }
            }
            val report = index.indexDir(photos.path, ScanOptions(threads = 2u, batch = 4u), listener)
            assertEquals(reference.images.size.toULong() + 1u, report.found)
            assertEquals(reference.images.size.toULong(), report.added)
            assertEquals("broken.jpg", File(report.skipped.single().path).name)
            assertEquals(reference.images.size.toULong(), index.len())
            assertTrue(events.first() is ScanEvent.Planned)
            assertEquals(
                index.keys().sorted(),
                events.filterIsInstance<ScanEvent.Committed>().flatMap { it.keys }.sorted(),
            )
            assertTrue(events.any { it is ScanEvent.Skipped })

            // Text search: order and cosines as the reference computes them.
            for ((q, query) in reference.queries.withIndex()) {
                val hits = index.searchText(query, 3u)
                val best = reference.queryCosines[q].withIndex().maxBy { it.value }
                assertEquals(image(best.index).name, File(hits[0].key).name, query)
                assertTrue(abs(hits[0].score - best.value) < 0.03, "$query: ${hits[0].score}")
            }
            // Tags: probabilities as the reference has them (JPEGs decode DCT-scaled here,
            // in full there), the same best label wherever its margin is clear.
            for (i in reference.images.indices) {
                val tags = index.tags(File(photos, image(i).name).canonicalPath)
                val probs = reference.tagProbabilities[i]
                val tolerance = if (image(i).extension == "png") 0.01 else 0.1
                for (tag in tags) {
                    assertTrue(tag.score >= 0.65f)
                    val expected = probs[reference.vocabulary.indexOf(tag.label)]
                    assertTrue(abs(tag.score - expected) < tolerance, "$i ${tag.label}: ${tag.score} vs $expected")
                }
                val sorted = probs.sortedDescending()
                if (sorted[0] > 0.75 && sorted[0] - sorted[1] > 0.1) {
                    assertEquals(reference.vocabulary[probs.indexOf(sorted[0])], tags.first().label)
                }
            }
            val tagged = index.searchText("a photo of a bag", 8u, SearchFilter(tag = "bag"))
            tagged.forEach { hit -> assertTrue(index.tags(hit.key).any { it.label == "bag" }) }
            assertEquals(emptyList(), index.searchText("bag", 8u, SearchFilter(after = Long.MAX_VALUE)))

            // Similar photos, search by file, duplicates, add and remove.
            val first = File(photos, image(0).name).canonicalPath
            assertEquals(3, index.similar(first, 3u).size)
            assertTrue(index.similar(first, 7u).none { it.key == first })
            assertEquals(index.similar(first, 3u), index.searchImageFile(first, 3u))
            assertEquals(index.similar(first, 3u), index.searchEmbedding(model.embedImageFile(first), 4u).drop(1))
            index.addBytes("copy-of-first", File(first).readBytes())
            val group = index.duplicates(0.9999f).single { g -> g.any { it.key == "copy-of-first" } }
            assertEquals(setOf(first, "copy-of-first"), group.map { it.key }.toSet())
            assertTrue(index.remove("copy-of-first"))
            assertTrue(!index.contains("copy-of-first"))
            assertTrue(!index.remove("copy-of-first"))
            assertTrue(!index.addFile(first)) // unchanged

            // A second scan finds nothing to do; a cancelled one stops at once.
            assertEquals(reference.images.size.toULong(), index.indexDir(photos.path, ScanOptions()).unchanged)
            CancelToken().use { cancel ->
                cancel.cancel()
                assertTrue(cancel.isCancelled())
                File(photos, "extra.png").writeBytes(File(first).readBytes())
                val r = index.indexDir(photos.path, ScanOptions(), null, cancel)
                assertTrue(r.cancelled)
                assertEquals(0uL, r.added)
            }
        }
    }

    @Test
    fun errorsAreTypedExceptionsWithTheRuntimeMessage() {
        val missing = assertFailsWith<GlimpseException> { ClipModel.load(File(tmp, "nope").path) }
        assertTrue("nope" in missing.message!!, missing.message)
        assertFailsWith<GlimpseException.Image> { model.embedImage(byteArrayOf(1, 2, 3)) }
        assertFailsWith<GlimpseException.Image> { model.embedImage(ByteArray(0)) }
        assertFailsWith<GlimpseException.Io> { model.embedImageFile(File(tmp, "absent.jpg").path) }
        assertFailsWith<GlimpseException.Text> { model.embedText("   ") }
        assertFailsWith<GlimpseException.Text> { model.embedText("x".repeat(40_000)) }
        assertFailsWith<GlimpseException.InvalidArgument> { model.classify(image(0).readBytes(), emptyList()) }
        assertFailsWith<GlimpseException.InvalidArgument> { similarity(listOf(1f), listOf(1f, 2f)) }
        model.classifier(listOf("a", "b")).use {
            assertFailsWith<GlimpseException.InvalidArgument> { it.classify(listOf(1f, 2f)) }
        }
        ClipModel.loadWith(demo, ModelOptions(vision = false)).use { textOnly ->
            assertFailsWith<GlimpseException.TowerNotLoaded> { textOnly.embedImage(image(0).readBytes()) }
        }
        // Hostile text is an input like any other.
        assertEquals(model.embedText("a\u0000b<|endoftext|>").size, model.embedText("cat").size)

        // An index refuses another model.
        val path = File(tmp, "other.sqlite").path
        PhotoIndex.open(path, model).use { it.addFile(image(0).path) }
        ClipModel.load(tiny).use { other ->
            val e = assertFailsWith<GlimpseException.Index> { PhotoIndex.open(path, other) }
            assertTrue("model" in e.message!!, e.message)
        }
        PhotoIndex.open(path, model).use { index ->
            assertFailsWith<GlimpseException.InvalidArgument> { index.searchEmbedding(listOf(1f), 3u) }
            assertFailsWith<GlimpseException.InvalidArgument> { index.tags("not-there") }
            assertFailsWith<GlimpseException> { index.indexDir(File(tmp, "no-dir").path, ScanOptions()) }
        }
    }

    @Test
    fun inputsThatUsedToPanicAreErrors() {
        // A fuzzer-found graph whose Gather index is out of range panicked inside tract.
        val bundle = File(tmp, "bundle")
        File(tiny).copyRecursively(bundle)
        File(root, "fixtures/fuzz/onnx-gather-out-of-range.onnx")
            .copyTo(File(bundle, "onnx/vision_model.onnx"), overwrite = true)
        ClipModel.loadWith(bundle.path, ModelOptions(text = false)).use { broken ->
            val e = assertFailsWith<GlimpseException.Inference> { broken.embedImageFile(image(0).path) }
            assertTrue("panic" in e.message!!, e.message)
            // The model object is still usable afterwards, and so is the library.
            assertFailsWith<GlimpseException.Inference> { broken.embedImageFile(image(1).path) }
        }
        // Truncated and bit-flipped graphs are refused at load.
        val onnx = File(bundle, "onnx/vision_model.onnx")
        File(tiny, "onnx/vision_model.onnx").copyTo(onnx, overwrite = true)
        onnx.writeBytes(onnx.readBytes().copyOf(onnx.length().toInt() / 2))
        assertFailsWith<GlimpseException.Model> { ClipModel.loadWith(bundle.path, ModelOptions(text = false)) }
        // A heap ByteBuffer cannot be read in place.
        assertFailsWith<IllegalArgumentException> {
            runBlocking { Clip(model).embedPixels(ByteBuffer.allocate(64), 4, 4, 16, PixelFormat.RGBA8888) }
        }
        // The library keeps working after all of the above.
        assertEquals(model.embedImageFile(image(0).path), model.embedImage(image(0).readBytes()))
    }

    @Test
    fun oneModelServesEightThreadsWithSequentialResults() {
        val files = reference.images.indices.map { image(it).path }
        val sequential = files.map { model.embedImageFile(it) }
        val pool = Executors.newFixedThreadPool(8)
        try {
            val futures = (0 until 32).map { i -> pool.submit<List<Float>> { model.embedImageFile(files[i % files.size]) } }
            futures.forEachIndexed { i, f -> assertEquals(sequential[i % files.size], f.get()) }
        } finally {
            pool.shutdown()
        }
    }

    @Test
    fun readmeExample() = runBlocking {
        val modelDir = demo
        val photoFile = File(root, "fixtures/photos/001-chelsea.jpg").path
        val photosDir = File(root, "fixtures/photos").path
        val indexFile = File(tmp, "photos.glimpse").path
        // README.md, "Use from Kotlin":
        Clip.load(modelDir).use { clip ->
            val photo = clip.embedImage(File(photoFile).readBytes())
            val query = clip.embedText("a photo of a cat")
            println("cosine ${similarity(photo, query)}")
            PhotoLibrary.open(indexFile, clip).use { library ->
                library.index(photosDir).collect { progress ->
                    if (progress is IndexProgress.Finished) println("${progress.report.added} photos added")
                }
                for (hit in library.search("a cat on a sofa", k = 5)) println("${hit.score} ${hit.key}")
            }
        }
        PhotoIndex.open(indexFile, model).use { assertEquals(8uL, it.len()) }
    }

    @Test
    fun coroutineWrapperAndProgressFlow() = runBlocking {
        val photos = File(tmp, "flow").apply { mkdirs() }
        reference.images.forEachIndexed { i, _ -> image(i).copyTo(File(photos, image(i).name)) }
        Clip.load(demo).use { clip ->
            val sneaker = File(root, "fixtures/images/fashion/sneaker.png").readBytes()
            assertEquals(model.embedImage(sneaker), clip.embedImage(sneaker))
            assertEquals(model.embedText("a bag"), clip.embedText("a bag"))
            assertEquals("sneaker", clip.classify(sneaker, reference.vocabulary).first().label)
            PhotoLibrary.open(File(tmp, "flow.sqlite").path, clip).use { library ->
                val progress = library.index(photos.path, ScanOptions(batch = 2u)).toList()
                val done = progress.last() as IndexProgress.Finished
                assertEquals(reference.images.size.toULong(), done.report.added)
                assertTrue(progress.first() is IndexProgress.Update)
                assertEquals(reference.images.size, library.search("a photo of a sneaker", 100).size)
                val key = library.index.keys().first()
                assertEquals(library.index.similar(key, 2u), library.similar(key, 2))
                assertEquals(library.index.tags(key), library.tags(key))
                library.add("extra", sneaker)
                assertTrue(library.remove("extra"))

                // Stopping the collector after the first event cancels the scan; what was
                // committed stays, and a later scan completes the rest.
                File(photos, "sub").mkdirs()
                for (i in 0 until 6) File(photos, "sub/$i.png").writeBytes(sneaker + byteArrayOf(i.toByte()))
                library.index(photos.path, ScanOptions(batch = 1u, threads = 1u)).take(1).toList()
                val finished = library.index(photos.path).toList().last() as IndexProgress.Finished
                assertEquals(reference.images.size.toULong() + 6u, library.index.len())
                assertTrue(finished.report.added <= 6uL)
            }
        }
    }
}

/** fixtures/photos/reference.json, read with a few lines of parsing (no JSON library). */
class Reference(
    val images: List<String>,
    val vocabulary: List<String>,
    val queries: List<String>,
    val queryCosines: List<List<Double>>,
    val tagProbabilities: List<List<Double>>,
) {
    companion object {
        fun load(file: File): Reference {
            val text = file.readText()
            fun strings(key: String) = Regex("\"(.*?)\"").findAll(section(text, key)).map { it.groupValues[1] }.toList()
            fun matrix(key: String) = section(text, key).removePrefix("[").removeSuffix("]")
                .split("]").map { row -> row.trim(',', ' ', '\n', '[').split(",").filter { it.isNotBlank() }.map { it.trim().toDouble() } }
                .filter { it.isNotEmpty() }
            return Reference(strings("images"), strings("vocabulary"), strings("queries"), matrix("query_cosines"), matrix("tag_probabilities"))
        }

        /** The bracketed value after `"key":`. */
        private fun section(text: String, key: String): String {
            val start = text.indexOf('[', text.indexOf("\"$key\""))
            var depth = 0
            for (i in start until text.length) {
                if (text[i] == '[') depth++
                if (text[i] == ']') depth--
                if (depth == 0) return text.substring(start, i + 1)
            }
            error("unbalanced $key")
        }
    }
}
