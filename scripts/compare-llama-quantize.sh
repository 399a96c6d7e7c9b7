#!/usr/bin/env bash
# Side-by-side timing of `qforge quantize` and llama.cpp's `llama-quantize` on the same input,
# types and thread count, runs interleaved so machine load hits both alike; checks the outputs are
# byte-identical. Not part of the test suite (needs a llama.cpp build: ../shared/notes/llama-cpp.md).
#
#   scripts/compare-llama-quantize.sh LLAMA_QUANTIZE MODEL.gguf THREADS TYPE [TYPE...]
#
# Make a model with e.g.
#   qforge synth m.f16.gguf --layers 8 --embd 2048 --ff 5632 --heads 16 --kv-heads 4 --vocab 32000
set -euo pipefail
LQ=$1 MODEL=$2 THREADS=$3
shift 3
QF=${QFORGE:-$(dirname "$0")/../target/release/qforge}
OUT=${OUT_DIR:-$(mktemp -d)}
REPS=${REPS:-3}
cat "$MODEL" >/dev/null # page cache warm for both
printf '%-8s %-9s %9s %9s %9s %10s\n' type tool wall_s user_s sys_s maxrss_MB
for TYPE in "$@"; do
  for ((i = 0; i < REPS; i++)); do
    for tool in qforge llama; do
      if [ $tool = qforge ]; then cmd=("$QF" quantize "$MODEL" "$OUT/q.$TYPE.gguf" "$TYPE" "$THREADS")
      else cmd=("$LQ" "$MODEL" "$OUT/l.$TYPE.gguf" "$TYPE" "$THREADS"); fi
      /usr/bin/time -f "%e %U %S %M" -o "$OUT/time" "${cmd[@]}" >/dev/null 2>&1
      read -r e u s m <"$OUT/time"
      printf '%-8s %-9s %9s %9s %9s %10d\n' "$TYPE" $tool "$e" "$u" "$s" $((m / 1024))
    done
  done
  cmp -s "$OUT/q.$TYPE.gguf" "$OUT/l.$TYPE.gguf" && echo "$TYPE: byte-identical" || { echo "$TYPE: OUTPUTS DIFFER"; exit 1; }
done
