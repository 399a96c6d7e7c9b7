#!/usr/bin/env python3
"""Record llama.cpp's token ids for tiny-llama.f16.gguf (SentencePiece vocab).

Run from this directory with a built llama-tokenize:
    python3 make_spm_ids.py /work/ref/build/bin/llama-tokenize ../../../shared/golden/tiny-llama.f16.gguf
Writes spm_ids.json: [{text, add_special, parse_special, ids}], texts passed byte-exact via
`-f FILE --no-escape`.
"""
import json, subprocess, sys, tempfile, os

TEXTS = [
    "Hello world",
    "Hello world, this is a test.",
    " leading space",
    "two  spaces and   three",
    "trailing space ",
    "line one\nline two\n\ttabbed",
    "numbers 12345 and 3.14159",
    "ünïcödé — “quotes” 日本語 🦙",
    "<s> looks like BOS </s> and <unk>",
    "a",
    " ",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "byte\x01control\x7f",
]

def run(tool, model, text, no_bos, parse_special):
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        cmd = [tool, "-m", model, "-f", path, "--no-escape", "--ids", "--log-disable"]
        if no_bos:
            cmd.append("--no-bos")
        if not parse_special:
            cmd.append("--no-parse-special")  # llama-tokenize parses special tokens by default
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)

def main():
    tool, model = sys.argv[1], sys.argv[2]
    cases = []
    for t in TEXTS:
        for no_bos, parse_special in [(False, False), (True, False), (False, True)]:
            cases.append({
                "text": t,
                "add_special": not no_bos,
                "parse_special": parse_special,
                "ids": run(tool, model, t, no_bos, parse_special),
            })
    with open("spm_ids.json", "w") as f:
        json.dump({"model": "tiny-llama.f16.gguf", "tool": "llama-tokenize (llama.cpp 0c1e57098)",
                   "cases": cases}, f, ensure_ascii=False, indent=1)

main()
