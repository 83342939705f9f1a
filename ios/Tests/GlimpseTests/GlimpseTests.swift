// The Swift API end to end, against the committed fixtures and the ONNX Runtime + PIL
// references in fixtures/photos/reference.json (tools/reference_photos.py).
import Foundation
import XCTest

@testable import Glimpse

struct Reference: Decodable {
    let images: [String]
    let vocabulary: [String]
    let queries: [String]
    let query_cosines: [[Float]]
    let tag_probabilities: [[Float]]
}

final class GlimpseTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let demo = root.appendingPathComponent("models/fashion-clip").path
    static let tiny = root.appendingPathComponent("fixtures/clip-vit-tiny").path
    static let reference = try! JSONDecoder().decode(
        Reference.self,
        from: Data(contentsOf: root.appendingPathComponent("fixtures/photos/reference.json")))
    static let model = try! ClipModel.load(dir: demo)

    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    func image(_ i: Int) -> URL { Self.root.appendingPathComponent(Self.reference.images[i]) }

    func testEmbeddingsMatchTheReferenceCosines() throws {
        let r = Self.reference
        let model = Self.model
        let images = try r.images.indices.map { try model.embedImageFile(path: image($0).path) }
        for (q, query) in r.queries.enumerated() {
            let text = try model.embedText(text: query)
            for (i, img) in images.enumerated() {
                let cos = try similarity(a: text, b: img)
                XCTAssertEqual(cos, r.query_cosines[q][i], accuracy: 0.03, "\(query) / \(i)")
            }
        }
        XCTAssertEqual(images[0], try model.embedImage(encoded: Data(contentsOf: image(0))))
        XCTAssertEqual(try model.embedTexts(texts: r.queries)[1], try model.embedText(text: r.queries[1]))
        let textOnly = try ClipModel.loadWith(dir: Self.demo, options: ModelOptions(vision: false))
        XCTAssertEqual(textOnly.id(), model.id())
        XCTAssertNotEqual(try ClipModel.load(dir: Self.tiny).id(), model.id())
        XCTAssertFalse(version().isEmpty)
    }

    func testClassifyAndClassifier() throws {
        let sneaker = try Data(contentsOf: Self.root.appendingPathComponent("fixtures/images/fashion/sneaker.png"))
        let labels = Self.reference.vocabulary
        let predictions = try Self.model.classify(encoded: sneaker, labels: labels)
        XCTAssertEqual(predictions.first?.label, "sneaker")
        XCTAssertEqual(predictions.map(\.probability).reduce(0, +), 1, accuracy: 1e-4)
        let classifier = try Self.model.classifier(labels: labels)
        XCTAssertEqual(classifier.labels(), labels)
        XCTAssertEqual(try classifier.classify(embedding: Self.model.embedImage(encoded: sneaker)), predictions)
    }

    func testRawPixelsMatchTheEncodedImage() throws {
        // A JPEG decoded by the runtime is the reference; its pixels go back in as buffers.
        let photo = image(11)
        let expected = try Self.model.embedImageFile(path: photo.path)
        // Synthesised BGRA from a known RGB pattern equals its RGBA twin.
        let (w, h) = (64, 48)
        var rgba = Data(count: w * h * 4)
        var bgra = Data(count: w * h * 4)
        for i in 0..<(w * h) {
            let (r, g, b) = (UInt8(i % 251), UInt8((i * 7) % 253), UInt8((i * 13) % 255))
            rgba.replaceSubrange(i * 4..<i * 4 + 4, with: [r, g, b, 255])
            bgra.replaceSubrange(i * 4..<i * 4 + 4, with: [b, g, r, 255])
        }
        let a = try Self.model.embedPixels(pixels: rgba, width: UInt32(w), height: UInt32(h), rowStride: UInt32(w * 4), format: .rgba8888)
        let b = try Self.model.embedPixels(pixels: bgra, width: UInt32(w), height: UInt32(h), rowStride: UInt32(w * 4), format: .bgra8888)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, expected)
        XCTAssertThrowsError(try Self.model.embedPixels(pixels: Data(count: 100), width: 64, height: 48, rowStride: 256, format: .rgba8888)) {
            guard case GlimpseError.Image(let message) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(message.contains("too short"), message)
        }
    }

    func testPhotoIndex() throws {
        let r = Self.reference
        let photos = tmp.appendingPathComponent("photos")
        try FileManager.default.createDirectory(at: photos, withIntermediateDirectories: true)
        for i in r.images.indices {
            try FileManager.default.copyItem(at: image(i), to: photos.appendingPathComponent(image(i).lastPathComponent))
        }
        try Data([0xFF, 0xD8, 0xFF, 1]).write(to: photos.appendingPathComponent("broken.jpg"))
        let index = try PhotoIndex.open(path: tmp.appendingPathComponent("index.sqlite").path, model: Self.model)
        try index.setVocabulary(labels: r.vocabulary)
        let listener = Recorder()
        let report = try index.indexDir(dir: photos.path, options: ScanOptions(threads: 2, batch: 4), listener: listener)
        XCTAssertEqual(report.added, UInt64(r.images.count))
        XCTAssertEqual(report.skipped.count, 1)
        XCTAssertEqual(index.len(), UInt64(r.images.count))
        let committed = listener.events.flatMap { event -> [String] in
            if case .committed(let keys) = event { return keys }
            return []
        }
        XCTAssertEqual(committed.sorted(), index.keys().sorted())

        for (q, query) in r.queries.enumerated() {
            let hits = try index.searchText(query: query, k: 3, filter: nil)
            let best = r.query_cosines[q].indices.max { r.query_cosines[q][$0] < r.query_cosines[q][$1] }!
            XCTAssertEqual(URL(fileURLWithPath: hits[0].key).lastPathComponent, image(best).lastPathComponent, query)
            XCTAssertEqual(hits[0].score, r.query_cosines[q][best], accuracy: 0.03)
        }
        for i in r.images.indices where image(i).pathExtension == "png" {
            let key = photos.appendingPathComponent(image(i).lastPathComponent).resolvingSymlinksInPath().path
            for tag in try index.tags(key: key) {
                let expected = r.tag_probabilities[i][r.vocabulary.firstIndex(of: tag.label)!]
                XCTAssertEqual(tag.score, expected, accuracy: 0.01, "\(i) \(tag.label)")
            }
        }
        let first = index.keys()[0]
        XCTAssertEqual(try index.similar(key: first, k: 3, filter: nil).count, 3)
        XCTAssertEqual(try index.similar(key: first, k: 3, filter: nil), try index.searchImageFile(path: first, k: 3, filter: nil))
        try index.addBytes(id: "copy", encoded: Data(contentsOf: URL(fileURLWithPath: first)))
        XCTAssertTrue(try index.duplicates(threshold: 0.9999).contains { $0.map(\.key).contains("copy") })
        XCTAssertTrue(try index.remove(key: "copy"))
        XCTAssertFalse(index.contains(key: "copy"))
        XCTAssertEqual(try index.searchText(query: "bag", k: 5, filter: SearchFilter(after: Int64.max)), [])

        let cancel = CancelToken()
        cancel.cancel()
        try Data(contentsOf: URL(fileURLWithPath: first)).write(to: photos.appendingPathComponent("extra.png"))
        XCTAssertTrue(try index.indexDir(dir: photos.path, options: ScanOptions(), listener: nil, cancel: cancel).cancelled)
    }

    func testErrorsAreThrownWithTheRuntimeMessage() throws {
        let model = Self.model
        XCTAssertThrowsError(try ClipModel.load(dir: tmp.appendingPathComponent("nope").path)) {
            XCTAssertTrue("\($0)".contains("nope"), "\($0)")
        }
        XCTAssertThrowsError(try model.embedImage(encoded: Data([1, 2, 3]))) {
            guard case GlimpseError.Image = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try model.embedText(text: " ")) {
            guard case GlimpseError.Text = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try model.embedText(text: String(repeating: "é", count: 20_000))) {
            guard case GlimpseError.Text = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try similarity(a: [1], b: [1, 2])) {
            guard case GlimpseError.InvalidArgument = $0 else { return XCTFail("\($0)") }
        }
        let textOnly = try ClipModel.loadWith(dir: Self.demo, options: ModelOptions(vision: false))
        XCTAssertThrowsError(try textOnly.embedImageFile(path: image(0).path)) {
            guard case GlimpseError.TowerNotLoaded = $0 else { return XCTFail("\($0)") }
        }
        let path = tmp.appendingPathComponent("other.sqlite").path
        _ = try PhotoIndex.open(path: path, model: model).addFile(path: image(0).path)
        XCTAssertThrowsError(try PhotoIndex.open(path: path, model: ClipModel.load(dir: Self.tiny))) {
            guard case GlimpseError.Index = $0 else { return XCTFail("\($0)") }
        }
    }

    func testInputsThatUsedToPanicAreErrors() throws {
        // A fuzzer-found graph whose Gather index is out of range panicked inside tract.
        let bundle = tmp.appendingPathComponent("bundle")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.tiny), to: bundle)
        let onnx = bundle.appendingPathComponent("onnx/vision_model.onnx")
        try FileManager.default.removeItem(at: onnx)
        try FileManager.default.copyItem(at: Self.root.appendingPathComponent("fixtures/fuzz/onnx-gather-out-of-range.onnx"), to: onnx)
        let broken = try ClipModel.loadWith(dir: bundle.path, options: ModelOptions(text: false))
        for _ in 0..<2 {
            XCTAssertThrowsError(try broken.embedImageFile(path: image(0).path)) {
                guard case GlimpseError.Inference(let message) = $0 else { return XCTFail("\($0)") }
                XCTAssertTrue(message.contains("panic"), message)
            }
        }
        // Truncated graphs are refused at load.
        let good = try Data(contentsOf: URL(fileURLWithPath: Self.tiny).appendingPathComponent("onnx/vision_model.onnx"))
        try good.prefix(good.count / 2).write(to: onnx)
        XCTAssertThrowsError(try ClipModel.loadWith(dir: bundle.path, options: ModelOptions(text: false))) {
            guard case GlimpseError.Model = $0 else { return XCTFail("\($0)") }
        }
    }

    func testConcurrentCallsMatchSequentialOnes() throws {
        let files = Self.reference.images.indices.map { image($0).path }
        let sequential = try files.map { try Self.model.embedImageFile(path: $0) }
        let results = Results(count: 32)
        DispatchQueue.concurrentPerform(iterations: 32) { i in
            results.set(i, try? Self.model.embedImageFile(path: files[i % files.count]))
        }
        for (i, e) in results.all.enumerated() { XCTAssertEqual(e, sequential[i % files.count]) }
    }

    func testReadmeExample() async throws {
        let modelDir = Self.demo
        let photoFile = Self.root.appendingPathComponent("fixtures/photos/001-chelsea.jpg").path
        let photosDir = Self.root.appendingPathComponent("fixtures/photos").path
        let indexFile = tmp.appendingPathComponent("photos.glimpse").path
        // README.md, "Use from Swift":
        let model = try await ClipModel.load(dir: modelDir, options: ModelOptions())
        let photo = try await model.embed(image: Data(contentsOf: URL(fileURLWithPath: photoFile)))
        let query = try await model.embed(text: "a photo of a cat")
        print("cosine", try similarity(a: photo, b: query))
        let library = try PhotoIndex.open(path: indexFile, model: model)
        for try await progress in library.index(dir: photosDir, options: ScanOptions()) {
            if case .finished(let report) = progress { print(report.added, "photos added") }
        }
        for hit in try await library.search("a cat on a sofa", k: 5) { print(hit.score, hit.key) }
        XCTAssertEqual(library.len(), 8)
    }

    func testAsyncWrapperAndProgressStream() async throws {
        let model = try await ClipModel.load(dir: Self.demo, options: ModelOptions())
        let sneaker = try Data(contentsOf: Self.root.appendingPathComponent("fixtures/images/fashion/sneaker.png"))
        let embedding = try await model.embed(image: sneaker)
        XCTAssertEqual(embedding, try model.embedImage(encoded: sneaker))
        let text = try await model.embed(text: "a bag")
        XCTAssertEqual(text, try model.embedText(text: "a bag"))
        let top = try await model.classify(image: sneaker, labels: Self.reference.vocabulary)
        XCTAssertEqual(top.first?.label, "sneaker")

        let photos = tmp.appendingPathComponent("stream")
        try FileManager.default.createDirectory(at: photos, withIntermediateDirectories: true)
        for i in 0..<10 { try sneaker.write(to: photos.appendingPathComponent("\(i).png")) }
        let index = try PhotoIndex.open(path: tmp.appendingPathComponent("s.sqlite").path, model: model)
        // Stop after the first event: the scan is cancelled, committed batches stay.
        for try await _ in index.index(dir: photos.path, options: ScanOptions(threads: 1, batch: 1)) { break }
        var finished: ScanReport?
        for try await progress in index.index(dir: photos.path, options: ScanOptions()) {
            if case .finished(let report) = progress { finished = report }
        }
        XCTAssertEqual(index.len(), 10)
        XCTAssertEqual(finished.map { $0.added + $0.unchanged }, 10)
        let hits = try await index.search("a photo of a sneaker", k: 3)
        XCTAssertEqual(hits.count, 3)
    }
}

final class Recorder: ScanListener, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [ScanEvent] = []
    var events: [ScanEvent] { lock.lock(); defer { lock.unlock() }; return recorded }

    func onEvent(event: ScanEvent, report: ScanReport) {
        lock.lock(); recorded.append(event); lock.unlock()
    }
}

final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[Float]?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    var all: [[Float]?] { lock.lock(); defer { lock.unlock() }; return values }
    func set(_ i: Int, _ value: [Float]?) { lock.lock(); values[i] = value; lock.unlock() }
}
