"""Load `qforge export` directories with transformers and compare them with the originals.

Not part of CI (needs torch + transformers + sentencepiece + protobuf). Keep the round-trip
tests' folders, then run this over the temp dir:

    QFORGE_EXPORT_KEEP=1 cargo test --test export export_round_trips
    python tests/data/export/hf_load_check.py /tmp

For each exported dir: AutoModelForCausalLM logits on random ids against the original checkpoint
(exactly equal where the export kept the checkpoint's dtype), and AutoTokenizer ids of a text.
"""
import sys, glob, os, json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
root = sys.argv[1]
golden = "/work/shared/golden"
cases = []
for d in sorted(glob.glob(f"{root}/qforge-export-*-rt-*")):
    kind = d.rsplit("-rt-", 1)[1]
    if kind in ("tiny-llama", "tiny-bpe"):
        orig = f"{golden}/{kind}"
    elif kind == "llama-cpp":
        orig = f"{golden}/tiny-llama"; kind = "tiny-llama"
    else:
        orig = f"{d}/src/tiny-{kind}"
    for exp in sorted(glob.glob(f"{d}/exp-*/*")):
        cases.append((d.rsplit('-rt-',1)[1], orig, exp))
    if not glob.glob(f"{d}/exp-*/*") and os.path.isdir(f"{d}/tiny-llama"):
        cases.append(("llama-cpp", orig, f"{d}/tiny-llama"))
text = "Hello world! 123 The quick brown fox, isn't it?"
ok = True
for name, orig, exp in cases:
    try:
        mo = AutoModelForCausalLM.from_pretrained(orig, dtype=torch.float32)
        me = AutoModelForCausalLM.from_pretrained(exp, dtype=torch.float32)
        ids = torch.randint(0, mo.config.vocab_size, (1, 24))
        with torch.no_grad():
            lo, le = mo(ids).logits, me(ids).logits
        diff = (lo - le).abs().max().item()
        scale = lo.abs().max().item()
        to = AutoTokenizer.from_pretrained(orig)
        te = AutoTokenizer.from_pretrained(exp)
        io, ie = to(text)["input_ids"], te(text)["input_ids"]
        same_tok = io == ie
        print(f"{name:10s} {os.path.basename(os.path.dirname(exp)):9s} {type(me).__name__:18s} logits max|diff| {diff:.3g} (max|logit| {scale:.3g})  tokenizer {type(te).__name__}: ids {'equal' if same_tok else 'DIFFER'} {'' if same_tok else (io, ie)}")
        ok &= same_tok and diff <= 1e-2 * max(scale, 1)
    except Exception as e:
        ok = False
        print(f"{name} {exp}: FAILED {type(e).__name__}: {str(e)[:300]}")
print("ALL OK" if ok else "SOME FAILED")
