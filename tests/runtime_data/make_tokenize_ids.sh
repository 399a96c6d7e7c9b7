#!/bin/sh
# Record llama-tokenize's ids of bpe_text.txt for the golden tiny models (used by
# tests/it/eval/llama_tokenize_ids.rs). Run from this directory; QFORGE = a qforge binary (to convert
# tiny-bpe, byte-identical with convert_hf_to_gguf.py), LLAMA_BIN = the llama.cpp build's bin/.
set -e
G=${GOLDEN:-../../../shared/golden}
B=${LLAMA_BIN:-/work/ref/build/bin}
Q=${QFORGE:-qforge}
T=$(mktemp -d)
"$Q" convert "$G/tiny-bpe" --outtype f16 -o "$T/tiny-bpe.f16.gguf" > /dev/null 2>&1
# --ids prints [id, id, ...]; BOS added per the vocabulary, special texts not parsed, as the
# eval commands tokenize.
"$B/llama-tokenize" -m "$T/tiny-bpe.f16.gguf" -f bpe_text.txt --ids --log-disable \
  > tiny-bpe.bpe_text.ids 2> /dev/null
"$B/llama-tokenize" -m "$G/tiny-llama.f16.gguf" -f bpe_text.txt --ids --log-disable \
  > tiny-llama.bpe_text.ids 2> /dev/null
rm -r "$T"
