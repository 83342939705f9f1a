// The Glimpse Android library: generated uniffi bindings (dev.glimpse.ffi), the Kotlin
// wrapper (dev.glimpse) and libglimpse_ffi.so per ABI in src/main/jniLibs (build-libs.sh).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.glimpse"
    compileSdk = 36
    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64") }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    // JVM unit tests (src/test) run against a host build: cargo build -p glimpse-bindings.
    testOptions {
        unitTests.all {
            it.systemProperty("glimpse.root", rootDir.parentFile.path)
            it.systemProperty("jna.library.path", rootDir.parentFile.resolve("target/debug").path)
        }
    }
}

kotlin { jvmToolchain(17) }

dependencies {
    // JNA as an Android AAR: it carries libjnidispatch.so for each ABI.
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    testImplementation(kotlin("test-junit"))
    testImplementation("net.java.dev.jna:jna:5.17.0")
}
