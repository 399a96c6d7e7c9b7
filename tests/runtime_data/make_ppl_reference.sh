#!/bin/sh
# Record llama-perplexity's output for tiny-llama.f16.gguf on ppl_text.txt (used by
# tests/it/eval/metrics.rs). Run from this directory; LLAMA_BIN = the llama.cpp build's bin/.
set -e
G=${GOLDEN:-../../../shared/golden}
B=${LLAMA_BIN:-/work/ref/build/bin}
"$B/llama-perplexity" -m "$G/tiny-llama.f16.gguf" -f ppl_text.txt -c 128 -b 128 -ub 128 -t 2 -fa off \
  > ppl.out 2> ppl.err
{ grep -E '^\[' ppl.out; grep -oE 'Final estimate.*' ppl.err; } > ppl_reference.txt
rm ppl.out ppl.err
