#!/bin/sh
# Record llama-perplexity --kl-divergence of tiny-llama Q4_K_M (llama-quantize) against the F16
# model on ppl_text.txt (used by tests/it/eval/metrics.rs). Run from this directory.
set -e
G=${GOLDEN:-../../../shared/golden}
B=${LLAMA_BIN:-/work/ref/build/bin}
T=$(mktemp -d)
"$B/llama-quantize" "$G/tiny-llama.f16.gguf" "$T/q4km.gguf" Q4_K_M 2 > /dev/null 2>&1
COMMON="-f ppl_text.txt -c 128 -b 128 -ub 128 -t 2 -fa off --kl-divergence-base $T/base.kld"
"$B/llama-perplexity" -m "$G/tiny-llama.f16.gguf" $COMMON > /dev/null 2>&1
"$B/llama-perplexity" -m "$T/q4km.gguf" $COMMON --kl-divergence 2> /dev/null \
  | sed -n '/====== Perplexity statistics/,$p' > kld_reference.txt
rm -r "$T"
