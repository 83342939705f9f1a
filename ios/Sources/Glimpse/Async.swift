// Swift concurrency over the generated bindings: async calls that run off the caller's
// actor, and indexing progress as an AsyncThrowingStream that cancels the scan when the
// consuming task is cancelled or stops iterating.
import Foundation

/// Runs a blocking Glimpse call on a background thread.
func background<T: Sendable>(_ call: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try call() })
        }
    }
}

extension ClipModel {
    /// Loads the model bundle in `dir` off the calling thread.
    public static func load(dir: String, options: ModelOptions) async throws -> ClipModel {
        try await background { try ClipModel.loadWith(dir: dir, options: options) }
    }

    /// Embeds an encoded image (JPEG, PNG or WebP).
    public func embed(image: Data) async throws -> [Float] {
        try await background { try self.embedImage(encoded: image) }
    }

    /// Embeds a text.
    public func embed(text: String) async throws -> [Float] {
        try await background { try self.embedText(text: text) }
    }

    /// Scores an encoded image against `labels`, best first.
    public func classify(image: Data, labels: [String]) async throws -> [Prediction] {
        try await background { try self.classify(encoded: image, labels: labels) }
    }
}

/// Progress of `PhotoIndex.index(dir:options:)`: each event, then the final report.
public enum IndexProgress: Sendable {
    case update(ScanEvent, ScanReport)
    case finished(ScanReport)
}

extension PhotoIndex {
    /// Indexes the photos under `dir`. Ending the iteration (or cancelling its task) stops
    /// the scan; batches already stored are kept.
    public func index(dir: String, options: ScanOptions) -> AsyncThrowingStream<IndexProgress, Error> {
        AsyncThrowingStream { continuation in
            let cancel = CancelToken()
            let listener = StreamListener(continuation)
            continuation.onTermination = { _ in cancel.cancel() }
            Thread.detachNewThread {
                do {
                    let report = try self.indexDir(dir: dir, options: options, listener: listener, cancel: cancel)
                    continuation.yield(.finished(report))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    /// The `k` photos closest to a text query.
    public func search(_ query: String, k: UInt32 = 20, filter: SearchFilter? = nil) async throws -> [Hit] {
        try await background { try self.searchText(query: query, k: k, filter: filter) }
    }
}

private final class StreamListener: ScanListener {
    let continuation: AsyncThrowingStream<IndexProgress, Error>.Continuation

    init(_ continuation: AsyncThrowingStream<IndexProgress, Error>.Continuation) {
        self.continuation = continuation
    }

    func onEvent(event: ScanEvent, report: ScanReport) {
        continuation.yield(.update(event, report))
    }
}
