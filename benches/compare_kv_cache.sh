#!/usr/bin/env bash
# Decode tok/s of a language model bundle with its key/value cache in the graph (f32, f16) and
# passed in and out of each step: ROUNDS rounds, the three one after another in each (this
# machine's load drifts), then each one's median and the per-round ratios' medians.
#   bash benches/compare_kv_cache.sh models/smollm2-135m-instruct 256 1 5
# Needs glimpse-bench built (`cargo build --release -p glimpse-benches`) and python3.
set -euo pipefail
model=$1 tokens=$2 threads=$3 rounds=$4
bench=${GLIMPSE_BENCH:-target/release/glimpse-bench}
for _ in $(seq "$rounds"); do
  for variant in in-graph passed f16; do
    case $variant in
      in-graph) args=(--kv-cache in-graph) ;;
      passed) args=(--kv-cache passed) ;;
      f16) args=(--f16-cache) ;;
    esac
    "$bench" llm "$model" --quantized --threads "$threads" --tokens "$tokens" "${args[@]}" |
      python3 -c "import json, sys; print('$variant', json.load(sys.stdin)['decode_tok_s'])"
  done
done | python3 -c "
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in sys.stdin:
    variant, tok_s = line.split()
    runs[variant].append(float(tok_s))
print('threads $threads, $tokens tokens, $rounds rounds: decode tok/s')
for variant, values in runs.items():
    print(f'  {variant:9} median {statistics.median(values):6.1f}  runs', ' '.join(f'{v:.1f}' for v in values))
paired = lambda a, b: statistics.median(x / y for x, y in zip(runs[a], runs[b]))
print(f'  in-graph / passed, median of rounds: {paired(\"in-graph\", \"passed\"):.2f}')
print(f'  f16 / in-graph (f32), median of rounds: {paired(\"f16\", \"in-graph\"):.2f}')
"
