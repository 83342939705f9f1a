//! Image in, text out: the seeded vision encoder and LDPv2 projector of `fixtures/vlm-tiny`
//! (`tools/make_vlm.py`, PyTorch references) in front of the real SmolLM2; and a tiny seeded
//! MobileVLM checkpoint exported by `tools/export_vlm.py` (`fixtures/mobilevlm-tiny`, from
//! `tools/make_vlm_checkpoint.py`), against transformers' forward pass of the checkpoint.

use std::ops::ControlFlow;
use std::path::Path;

use glimpse::{
    GenerateOptions, LoadOptions, Projector, Sampling, StopReason, VisionEncoder,
    VisionLanguageModel,
};
use glimpse_tests::{argmax, fixtures, read_npy_f32, relative_error, smollm2};
use serde::Deserialize;

const RELATIVE_ERROR: f64 = 1e-4;
const TEMPLATE: &str = "<|im_start|>user\n<image>\n{prompt}<|im_end|>\n<|im_start|>assistant\n";

/// SmolLM2's bundle (linked) plus the tiny vision half, with `edit` applied to `llm.json`.
fn bundle(
    llm: &Path,
    projector: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let link = |from: &Path, to: &str| {
        std::os::unix::fs::symlink(from.canonicalize().unwrap(), tmp.path().join(to)).unwrap()
    };
    std::fs::create_dir(tmp.path().join("onnx")).unwrap();
    for name in ["embed_tokens.onnx", "decoder_model_merged.onnx"] {
        link(&llm.join("onnx").join(name), &format!("onnx/{name}"));
    }
    link(&llm.join("tokenizer.json"), "tokenizer.json");
    let vlm = fixtures().join("vlm-tiny");
    link(
        &vlm.join("onnx/vision_encoder.onnx"),
        "onnx/vision_encoder.onnx",
    );
    link(projector, "onnx/projector.onnx");
    link(
        &vlm.join("preprocessor_config.json"),
        "preprocessor_config.json",
    );
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(llm.join("llm.json")).unwrap()).unwrap();
    manifest["image_chat_template"] = TEMPLATE.into();
    edit(&mut manifest);
    std::fs::write(tmp.path().join("llm.json"), manifest.to_string()).unwrap();
    tmp
}

/// The penultimate-layer patch features of the reference pixels and their projection, against
/// PyTorch's.
fn check_vision_half(dir: &Path, hidden: usize) {
    let encoder = VisionEncoder::load(dir).unwrap();
    let features = encoder
        .features(&read_npy_f32(&dir.join("pixels.npy")))
        .unwrap();
    assert_eq!(encoder.output_shape().0, 576);
    let rel = relative_error(&features, &read_npy_f32(&dir.join("features.npy")));
    assert!(rel <= RELATIVE_ERROR, "encoder: {rel:.2e}");
    eprintln!("{}: encoder relative error {rel:.2e}", dir.display());

    let projector = Projector::load(dir.join("onnx/projector.onnx")).unwrap();
    assert_eq!(projector.output_shape(), (144, hidden));
    let out = projector
        .project(&read_npy_f32(&dir.join("features.npy")))
        .unwrap();
    let got: Vec<f32> = out
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let rel = relative_error(&got, &read_npy_f32(&dir.join("image_embeds.npy")));
    assert!(rel <= RELATIVE_ERROR, "projector: {rel:.2e}");
    eprintln!("{}: projector relative error {rel:.2e}", dir.display());
}

#[test]
fn vision_half_matches_pytorch() {
    check_vision_half(&fixtures().join("vlm-tiny"), 576);
}

/// `LoadOptions::quantized` takes the int8 encoder (`onnx/vision_encoder_quantized.onnx`,
/// ONNX Runtime's `quantize_dynamic`): its features match ONNX Runtime's run of that file, and
/// stay close to the f32 encoder's. Measured 8.7e-5 and 7.5e-3: the products are exact in
/// integers on both sides, but float differences before a quantisation can move a value to
/// the next code.
#[test]
fn int8_vision_encoder_matches_onnx_runtime() {
    let dir = fixtures().join("vlm-tiny");
    let opts = LoadOptions {
        quantized: true,
        ..LoadOptions::default()
    };
    let encoder = VisionEncoder::load_with(&dir, opts).unwrap();
    let features = encoder
        .features(&read_npy_f32(&dir.join("pixels.npy")))
        .unwrap();
    let ort = read_npy_f32(&dir.join("features_int8.npy"));
    let f32_features = read_npy_f32(&dir.join("features.npy"));
    let (rel, rel_f32) = (
        relative_error(&features, &ort),
        relative_error(&features, &f32_features),
    );
    eprintln!("int8 encoder: relative error {rel:.2e} to ONNX Runtime, {rel_f32:.2e} to f32");
    assert!(rel <= 5e-4, "int8 encoder vs ONNX Runtime: {rel:.2e}");
    assert!(
        rel_f32 > 2e-3 && rel_f32 < 0.05,
        "int8 vs f32: {rel_f32:.2e}"
    );
}

/// ViT-L/14@336 and LDPv2 to 2048 (MobileVLM's shapes), when `tools/make_vlm.py real
/// models/vlm-vision` has made them (1.3 GB, not committed).
#[test]
fn vision_half_at_mobilevlm_shapes_matches_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vlm-vision");
    if !dir.join("features.npy").is_file() {
        eprintln!("skipped: {} is missing", dir.display());
        return;
    }
    check_vision_half(&dir, 2048);
}

#[test]
fn image_questions_run_through_encoder_projector_and_smollm2() {
    let Some(llm) = smollm2() else { return };
    let tmp = bundle(
        &llm,
        &fixtures().join("vlm-tiny/onnx/projector.onnx"),
        |_| {},
    );

    let vlm = VisionLanguageModel::load(tmp.path()).unwrap();

    let opts = GenerateOptions {
        max_tokens: 6,
        sampling: Sampling::GREEDY,
    };
    let question = "What is in the image?";
    let ask = |image: &str| {
        let img = vlm
            .open_image(fixtures().join("images").join(image))
            .unwrap();
        let mut streamed = String::new();
        let out = vlm
            .ask(&img, question, &opts, |piece| {
                streamed.push_str(piece);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(streamed, out.text);
        out
    };
    let kafka = ask("franz-kafka.jpg");
    // The chat prompt, the "\n" after the image, and the projector's 144 image tokens.
    let text = vlm.language_model().chat_tokens(question).unwrap().len() + 1;
    assert_eq!(kafka.prompt_tokens, text + 144);
    assert!(kafka.image_seconds > 0.0 && !kafka.tokens.is_empty());
    // The answer depends on the image (seeded weights: the words mean nothing).
    let noise = ask("noise.png");
    assert_ne!(kafka.tokens, noise.tokens);
}

#[test]
fn bundles_whose_parts_do_not_fit_are_refused() {
    let Some(llm) = smollm2() else { return };
    let projector = fixtures().join("vlm-tiny/onnx/projector.onnx");
    let err = |projector: &Path, edit: fn(&mut serde_json::Value)| {
        let tmp = bundle(&llm, projector, edit);
        VisionLanguageModel::load(tmp.path())
            .unwrap_err()
            .to_string()
    };
    let e = err(&projector, |m| m["image_chat_template"] = "{prompt}".into());
    assert!(
        e.contains("`<image>` exactly once, it holds it 0 times"),
        "{e}"
    );
    let e = err(&projector, |m| {
        m["image_chat_template"] = "<image><image>{prompt}".into()
    });
    assert!(e.contains("2 times"), "{e}");
    let e = err(&projector, |m| {
        m.as_object_mut().unwrap().remove("image_chat_template");
    });
    assert!(e.contains("not a vision-language bundle"), "{e}");
    // A projector 48 wide in front of a 576-wide language model.
    let e = err(&fixtures().join("projectors/ldp.onnx"), |_| {});
    assert!(e.contains("48 wide") && e.contains("576"), "{e}");
}

/// `fixtures/mobilevlm-tiny/reference.json`: MobileVLM's prompt ids for the question (-200
/// where the image goes), the logits after the prompt and the greedy tokens after it.
#[derive(Deserialize)]
struct CheckpointReference {
    question: String,
    prompt_ids: Vec<i64>,
    logits: Vec<f32>,
    greedy: Vec<u32>,
}

#[test]
fn exported_mobilevlm_checkpoint_matches_pytorch() {
    let dir = fixtures().join("mobilevlm-tiny");
    let reference: CheckpointReference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let vlm = VisionLanguageModel::load(dir.join("bundle")).unwrap();
    let image = vlm.open_image(dir.join("photo.png")).unwrap();

    // Padded to a square (the checkpoint's `image_aspect_ratio: "pad"`), encoded, projected.
    let embeds = vlm.image_embeddings(&image).unwrap();
    let flat: Vec<f32> = embeds
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let rel = relative_error(&flat, &read_npy_f32(&dir.join("image_embeds.npy")));
    assert!(rel <= RELATIVE_ERROR, "image embeddings: {rel:.2e}");

    // The prompt as MobileVLM builds it, the image's tokens in its place: the logits after it.
    let at = reference
        .prompt_ids
        .iter()
        .position(|&t| t == -200)
        .unwrap();
    let ids = |r: &[i64]| r.iter().map(|&t| t as u32).collect::<Vec<_>>();
    // Run in three pieces through the cache (text, image, text): the logits after the last.
    let prompt_logits = |vlm: &VisionLanguageModel| {
        let decoder = vlm.language_model().decoder();
        let mut cache = decoder.cache();
        let mut logits = Vec::new();
        for part in [
            decoder.embed(&ids(&reference.prompt_ids[..at])).unwrap(),
            embeds.clone(),
            decoder
                .embed(&ids(&reference.prompt_ids[at + 1..]))
                .unwrap(),
        ] {
            logits = decoder.forward(&mut cache, part).unwrap();
        }
        logits
    };
    let logits = prompt_logits(&vlm);
    let rel = relative_error(&logits, &reference.logits);
    assert!(rel <= RELATIVE_ERROR, "logits: {rel:.2e}");
    eprintln!("exported checkpoint: logits relative error {rel:.2e}");

    // `ask` builds the same prompt from the manifest's template and answers greedily.
    let opts = GenerateOptions {
        max_tokens: reference.greedy.len(),
        sampling: Sampling::GREEDY,
    };
    let out = vlm
        .ask(&image, &reference.question, &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(out.prompt_tokens, reference.prompt_ids.len() - 1 + 144);
    assert_eq!(out.stop, StopReason::MaxTokens);
    assert_eq!(out.tokens, reference.greedy);

    // The 4-bit decoder (`quantized`): Q4_0 weights and 8-bit activations cost a width-64
    // model ~19% of its logits' norm; the first token (0.50 ahead of the next) stays.
    let q4 = VisionLanguageModel::load_with(
        dir.join("bundle"),
        LoadOptions {
            quantized: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let logits = prompt_logits(&q4);
    let rel = relative_error(&logits, &reference.logits);
    eprintln!("exported checkpoint, 4-bit: logits relative error {rel:.2e}");
    assert!(rel <= 0.25, "4-bit logits: {rel:.2e}");
    assert_eq!(argmax(&logits), reference.greedy[0]);
}
