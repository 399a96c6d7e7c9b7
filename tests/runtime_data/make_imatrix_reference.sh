#!/bin/sh
# Record llama-imatrix's matrix for tiny-llama.f16.gguf on ppl_text.txt (used by
# tests/it/eval/metrics.rs). Run from this directory; LLAMA_BIN = the llama.cpp build's bin/.
set -e
G=${GOLDEN:-../../../shared/golden}
B=${LLAMA_BIN:-/work/ref/build/bin}
"$B/llama-imatrix" -m "$G/tiny-llama.f16.gguf" -f ppl_text.txt -c 128 -b 128 -ub 128 -t 2 -fa off \
  -o tiny-llama.imatrix.gguf > /dev/null 2>&1
