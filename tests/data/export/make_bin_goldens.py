#!/usr/bin/env python3
"""Remakes the torch.save goldens in this folder (run from anywhere; see README.md).

  make_bin_goldens.py LLAMA_CPP GOLDEN_DIR WORK_DIR

1. `torch_features.pt` + `torch_features.json`: a tiny real torch.save file that exercises the
   reader (F32/F16/BF16/I64, a storage shared by two tensors at an offset, a transposed
   (non-contiguous) view, an nn.Parameter), and the values each tensor must read as.
2. tiny-llama (GOLDEN_DIR/tiny-llama) saved with torch.save as `pytorch_model.bin` (one file)
   and as two shards with `pytorch_model.bin.index.json`, state-dict keys in the model's module
   order (what `model.state_dict()` gives, as transformers' `.bin` writer does); each converted by
   llama.cpp's convert_hf_to_gguf.py (f32, f16, bf16). Kept: the key order of each file
   (`bin/*.keys`), the index, and the whole-file sha256 and size of each conversion
   (`bin/converted.json`, from shared/tools/gguf_manifest.py).
"""
import json, os, shutil, subprocess, sys
from collections import OrderedDict

import torch
from safetensors.torch import load_file

llama_cpp, golden, work = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(__file__))
manifest = os.path.join(golden, "..", "tools", "gguf_manifest.py")
os.makedirs(os.path.join(here, "bin"), exist_ok=True)

# 1. reader features
g = torch.Generator().manual_seed(7)
base = torch.randn(4, 6, generator=g)
shared = torch.arange(20, dtype=torch.float16) / 8
feat = OrderedDict()
feat["plain.f32"] = base.clone()
feat["vec.f16"] = shared                     # the whole storage
feat["slice.f16"] = shared[5:11].view(2, 3)  # same storage, offset 5
feat["bf16"] = (torch.randn(3, 5, generator=g)).to(torch.bfloat16)
feat["transposed.f32"] = base.t()            # a strided view of base's storage
feat["param"] = torch.nn.Parameter(torch.linspace(-1, 1, 8))
feat["ints.i64"] = torch.tensor([1, -2, 3], dtype=torch.int64)
torch.save(feat, os.path.join(here, "torch_features.pt"))
expect = OrderedDict()
for k, v in feat.items():
    v = v.detach()
    expect[k] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                 "values": v.to(torch.float64).flatten().tolist() if v.is_floating_point() else v.flatten().tolist()}
with open(os.path.join(here, "torch_features.json"), "w") as f:
    json.dump({"order": list(expect.keys()), "tensors": expect}, f, indent=1)

# 2. tiny-llama as .bin
from transformers import AutoConfig, AutoModelForCausalLM
src = os.path.join(golden, "tiny-llama")
cfg = AutoConfig.from_pretrained(src)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(cfg)
order = list(model.state_dict().keys())
sd = load_file(os.path.join(src, "model.safetensors"))
assert sorted(order) == sorted(sd.keys()), (set(order) ^ set(sd.keys()))
ordered = OrderedDict((k, sd[k]) for k in order)

def fresh(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for f in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(src, f), d)

single = os.path.join(work, "single", "tiny-llama")
fresh(single)
torch.save(ordered, os.path.join(single, "pytorch_model.bin"))
with open(os.path.join(here, "bin", "single.keys"), "w") as f:
    f.write("\n".join(order) + "\n")

sharded = os.path.join(work, "sharded", "tiny-llama")
fresh(sharded)
half = len(order) // 2
parts = [("pytorch_model-00001-of-00002.bin", order[:half]), ("pytorch_model-00002-of-00002.bin", order[half:])]
weight_map = {}
total = 0
for name, keys in parts:
    torch.save(OrderedDict((k, sd[k]) for k in keys), os.path.join(sharded, name))
    for k in keys:
        weight_map[k] = name
        total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(here, "bin", name.replace(".bin", ".keys")), "w") as f:
        f.write("\n".join(keys) + "\n")
index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
with open(os.path.join(sharded, "pytorch_model.bin.index.json"), "w") as f:
    json.dump(index, f, indent=2)
shutil.copy(os.path.join(sharded, "pytorch_model.bin.index.json"), os.path.join(here, "bin"))

summary = {}
env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.path.join(llama_cpp, "gguf-py"))
for kind, d in (("single", single), ("sharded", sharded)):
    for outtype in ("f32", "f16", "bf16"):
        out = os.path.join(work, f"{kind}.{outtype}.gguf")
        subprocess.run([sys.executable, os.path.join(llama_cpp, "convert_hf_to_gguf.py"), d,
                        "--outtype", outtype, "--outfile", out], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m = json.loads(subprocess.run([sys.executable, manifest, out], check=True,
                                      capture_output=True).stdout)
        summary[f"{kind}.{outtype}"] = {"file_sha256": m["file_sha256"], "size": m["size"]}
        print(kind, outtype, m["size"])
with open(os.path.join(here, "bin", "converted.json"), "w") as f:
    json.dump(summary, f, indent=1)
