#!/usr/bin/env bash
# Remakes the goldens in this folder: qforge writes the synthetic checkpoints (bit-reproducible,
# so they are not committed), llama.cpp's convert_hf_to_gguf.py converts each to every outtype,
# and shared/tools/gguf_manifest.py records what it wrote.
#
#   LLAMA_CPP   llama.cpp checkout            (default /work/ref/llama.cpp)
#   PYTHON      Python with its requirements  (default /work/ref/conv/bin/python)
#   MANIFEST    gguf_manifest.py              (default ../shared/tools/gguf_manifest.py beside the checkout)
#   QUANTIZE    llama-quantize                (default $LLAMA_CPP/build/bin/llama-quantize)
#   ARCHES      which goldens to remake       (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
LLAMA_CPP=${LLAMA_CPP:-/work/ref/llama.cpp}
PYTHON=${PYTHON:-/work/ref/conv/bin/python}
MANIFEST=${MANIFEST:-$repo/../shared/tools/gguf_manifest.py}
QUANTIZE=${QUANTIZE:-$LLAMA_CPP/build/bin/llama-quantize}
ARCHES=${ARCHES:-mistral qwen2 qwen3 llama3 mixtral qwen2moe qwen3moe gemma2 gemma3 gemma3mm phi3 smollm3 granite olmo2 exaone4 ernie4_5 cohere2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo run --release --manifest-path "$repo/Cargo.toml" --example write_fixtures -- \
    arch-checkpoints "$work"
for arch in $ARCHES; do
    mkdir -p "$here/$arch"
    for outtype in f32 f16 bf16 q8_0; do
        out="$work/$arch.$outtype.gguf"
        "$PYTHON" "$LLAMA_CPP/convert_hf_to_gguf.py" "$work/tiny-$arch" \
            --outtype "$outtype" --outfile "$out" > "$work/log.txt" 2>&1 \
            || { cat "$work/log.txt"; exit 1; }
        python3 "$MANIFEST" "$out" > "$here/$arch/$outtype.json"
        echo "$arch $outtype: $(stat -c %s "$out") bytes"
    done
done

# The mixture-of-experts conversions quantized by llama-quantize (expert tensors, routers,
# n_expert rules).
for arch in $ARCHES; do
    case $arch in mixtral | qwen2moe | qwen3moe) ;; *) continue ;; esac
    for mix in Q4_K_M Q3_K_M Q2_K MXFP4_MOE; do
        out="$work/$arch.$mix.gguf"
        "$QUANTIZE" "$work/$arch.f16.gguf" "$out" "$mix" 2 > "$work/log.txt" 2>&1 \
            || { cat "$work/log.txt"; exit 1; }
        python3 "$MANIFEST" "$out" > "$here/$arch/$mix.json"
        echo "$arch $mix: $(stat -c %s "$out") bytes"
    done
done

# llama-quantize's Q4_K_M (2 threads) of the converter's f16 file, for the families whose
# per-tensor rules differ from llama's.
for arch in $ARCHES; do
    case $arch in gemma2 | gemma3 | gemma3mm | phi3 | smollm3 | granite | olmo2 | exaone4 | ernie4_5 | cohere2) ;; *) continue ;; esac
    out="$work/$arch.Q4_K_M.gguf"
    "$QUANTIZE" "$work/$arch.f16.gguf" "$out" Q4_K_M 2 > "$work/log.txt" 2>&1 \
        || { cat "$work/log.txt"; exit 1; }
    python3 "$MANIFEST" "$out" > "$here/$arch/Q4_K_M.json"
    echo "$arch Q4_K_M: $(stat -c %s "$out") bytes"
done
