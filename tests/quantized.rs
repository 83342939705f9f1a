//! Quantised graphs compute what ONNX Runtime computes on the same file: per-channel weight
//! dequantisation (tract 0.23.9 broadcasts per-axis scales) and a full `quantize_static` QDQ
//! ViT (Glimpse keeps attention probabilities in float, see runtime/graph/src/qdq.rs). A
//! `quantize_dynamic` ViT computes what the ONNX operators' exact integer arithmetic computes
//! (tract's int8 kernels on ARM, f32 products on x86-64 without AVX2: runtime/graph/src/onnx.rs;
//! Glimpse's packed int8 product with AVX2 or AVX-512 VNNI: runtime/kernels/src/int8_matmul.rs), with
//! the weights at full range or within ±64 (`reduce_range`), and with ONNX Runtime's default
//! operator types (the patch embedding a `ConvInteger`).

use glimpse::{ClipModel, LoadOptions, Precision};
use glimpse_tests::{copy_bundle, fixtures, min_cosine, Reference};
use serde::Deserialize;

#[derive(Deserialize)]
struct QdqReference {
    image_embeds: Vec<Vec<f32>>,
}

/// Loads `onnx/vision_model_<variant>.onnx` as the quantised image tower; min cosine to the
/// outputs in `reference_<variant>.json` (ONNX Runtime; the exact ONNX reference for `dynamic`).
fn cosine_to_reference(variant: &str) -> f64 {
    cosine_in(variant, Precision::F32)
}

fn cosine_in(variant: &str, precision: Precision) -> f64 {
    let (got, want) = embed(variant, precision, 1, false);
    let cos = min_cosine(&got, &want);
    eprintln!(
        "{variant} ViT ({precision:?}) vs the reference run of the same file: min cosine {cos:.8}"
    );
    cos
}

/// The fixture's images through `onnx/vision_model_<variant>.onnx` as the quantised tower on
/// `threads` threads, all in one batch or each `alone` (one image's products then split over
/// the model's pool); and the reference embeddings.
fn embed(
    variant: &str,
    precision: Precision,
    threads: usize,
    alone: bool,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let b = copy_bundle("clip-vit-tiny");
    let onnx = b.path().join("onnx");
    let graph = onnx.join(format!("vision_model_{variant}.onnx"));
    std::fs::rename(graph, onnx.join("vision_model_quantized.onnx")).unwrap();
    let text = std::fs::read_to_string(b.path().join(format!("reference_{variant}.json"))).unwrap();
    let want: QdqReference = serde_json::from_str(&text).unwrap();
    let opts = LoadOptions {
        quantized: true,
        precision,
        threads,
        ..LoadOptions::vision_only()
    };
    let model = ClipModel::load_with(b.path(), opts).unwrap();
    let pixels = Reference::load(b.path()).pixels(b.path());
    let got = match alone {
        false => model.embed_pixels(&pixels).unwrap(),
        true => (pixels.chunks(pixels.len() / want.image_embeds.len()))
            .flat_map(|image| model.embed_pixels(image).unwrap())
            .collect(),
    };
    (got, want.image_embeds)
}

#[test]
fn per_channel_weight_qdq_matches_onnx_runtime() {
    assert!(cosine_to_reference("qdq_per_channel") >= 0.9999);
}

#[test]
fn static_qdq_matches_onnx_runtime() {
    assert!(cosine_to_reference("qdq_static") >= 0.999);
}

#[test]
fn dynamic_int8_matches_onnx_runtime() {
    assert!(cosine_to_reference("dynamic") >= 0.9999);
}

/// `quantize_dynamic` with `reduce_range` (weights within ±64, `tools/quantize.py
/// --reduce-range`): on x86-64 with AVX2 but not VNNI, Glimpse's byte path (`vpmaddubsw`,
/// exact for such weights; `int8_matmul/avx2.rs`).
#[test]
fn reduced_range_dynamic_int8_matches_onnx_runtime() {
    assert!(cosine_to_reference("dynamic_reduced") >= 0.9999);
}

/// `quantize_dynamic` with its default operator types, as users call it (and
/// `tools/quantize.py`): the patch embedding too becomes int8, a `ConvInteger`, which Glimpse
/// cuts into patches for its own int8 product (runtime/graph/src/onnx.rs).
#[test]
fn default_op_types_dynamic_int8_with_conv_integer_matches_onnx_runtime() {
    let graph = fixtures().join("clip-vit-tiny/onnx/vision_model_dynamic_default.onnx");
    let bytes = std::fs::read(graph).unwrap();
    assert!(bytes.windows(11).any(|w| w == b"ConvInteger"));
    assert!(cosine_to_reference("dynamic_default") >= 0.9999);
}

/// One image at a time on two threads (the run's workers spinning between its int8 products,
/// runtime/kernels/src/parallel.rs) computes what one thread computes (the fixture's products are too
/// small to split: `int8_matmul::tests::threads_take_columns` splits one). An image alone
/// differs slightly from the reference's batch: `DynamicQuantizeLinear` takes one scale over
/// the whole batch.
#[test]
fn dynamic_int8_over_two_threads_matches_one_thread() {
    let (one, want) = embed("dynamic", Precision::F32, 1, true);
    let (two, _) = embed("dynamic", Precision::F32, 2, true);
    let cos = min_cosine(&one, &two);
    assert!(cos >= 0.999999, "two threads against one: min cosine {cos}");
    assert!(min_cosine(&two, &want) >= 0.9998);
}

/// The same file with tract's f32-to-f16 pass over it (`Precision::F16`; `Auto` on CPUs with
/// f16 arithmetic): its float parts in f16, the products still exact.
#[test]
fn dynamic_int8_runs_in_f16() {
    assert!(cosine_in("dynamic", Precision::F16) >= 0.999);
}

#[test]
fn quantized_flag_falls_back_to_fp32_graphs() {
    let dir = fixtures().join("clip-vit-tiny");
    let opts = LoadOptions {
        quantized: true,
        ..LoadOptions::default()
    };
    let q = ClipModel::load_with(&dir, opts).unwrap();
    let f = ClipModel::load(&dir).unwrap();
    assert_eq!(
        q.embed_texts(&["a cat"]).unwrap(),
        f.embed_texts(&["a cat"]).unwrap()
    );
}
