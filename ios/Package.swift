// swift-tools-version:6.0
// Glimpse for Swift: the uniffi-generated bindings (Sources/Glimpse/Glimpse.swift), a thin
// async wrapper (Sources/Glimpse/Async.swift) and the native library (GlimpseFFI).
import PackageDescription

#if os(Linux)
// Linux (tests): link a libglimpse_ffi.so built with `cargo build -p glimpse-bindings`;
// pass its folder with -Xlinker -L<dir> (see test-linux.sh).
let ffi: Target = .systemLibrary(name: "GlimpseFFI", path: "Sources/GlimpseFFI")
#else
// Apple platforms: the XCFramework from build-xcframework.sh.
let ffi: Target = .binaryTarget(name: "GlimpseFFI", path: "GlimpseFFI.xcframework")
#endif

let package = Package(
    name: "Glimpse",
    platforms: [.iOS(.v14), .macOS(.v12)],
    products: [.library(name: "Glimpse", targets: ["Glimpse"])],
    targets: [
        ffi,
        .target(name: "Glimpse", dependencies: ["GlimpseFFI"]),
        .testTarget(name: "GlimpseTests", dependencies: ["Glimpse"]),
    ]
)
