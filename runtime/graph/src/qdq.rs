//! QDQ rewrites tract needs before it sees a quantised graph.
//!
//! tract 0.23.9 runs each QuantizeLinear/DequantizeLinear pair of an ONNX Runtime
//! `quantize_static` ViT as ONNX Runtime does, except one pattern: a quantised Softmax output
//! (attention probabilities) feeding a quantised MatMul. There tract's integer matmul drifts
//! far (tiny ViT: cosine 0.96 to ONNX Runtime on the same file, where every other pattern
//! gives 0.9999+). Glimpse keeps those probabilities in float: the pair is removed, which is
//! closer to the fp32 model than the file's own arithmetic, never further.

use std::collections::HashMap;

use tract_onnx::pb::ModelProto;

/// Removes Quantize→Dequantize pairs on Softmax outputs; returns how many it removed.
pub(crate) fn keep_softmax_in_float(model: &mut ModelProto) -> usize {
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let producer: HashMap<&str, &str> = graph
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .map(move |o| (o.as_str(), n.op_type.as_str()))
        })
        .collect();
    // Quantize nodes of Softmax outputs: their output name -> the float tensor they quantise.
    let quantized: HashMap<String, String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .filter(|n| producer.get(n.input[0].as_str()) == Some(&"Softmax"))
        .map(|n| (n.output[0].clone(), n.input[0].clone()))
        .collect();
    let consumed_only_by_dequantize = |q: &str| {
        graph
            .node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == q))
            .all(|n| n.op_type == "DequantizeLinear")
    };
    let quantized: HashMap<String, String> = quantized
        .into_iter()
        .filter(|(q, _)| {
            consumed_only_by_dequantize(q) && !graph.output.iter().any(|o| &o.name == q)
        })
        .collect();
    // Each Dequantize of those becomes its float input again.
    let mut float_of: HashMap<String, String> = HashMap::new();
    for n in &graph.node {
        if n.op_type == "DequantizeLinear" {
            if let Some(f) = quantized.get(&n.input[0]) {
                float_of.insert(n.output[0].clone(), f.clone());
            }
        }
    }
    if float_of.is_empty()
        || float_of
            .keys()
            .any(|d| graph.output.iter().any(|o| &o.name == d))
    {
        return 0;
    }
    graph
        .node
        .retain(|n| !quantized.contains_key(&n.output[0]) && !float_of.contains_key(&n.output[0]));
    for n in &mut graph.node {
        for i in &mut n.input {
            if let Some(f) = float_of.get(i) {
                *i = f.clone();
            }
        }
    }
    quantized.len()
}
