#!/usr/bin/env python3
"""Reads GGUF files shears wrote with the `gguf` package (llama.cpp's own
gguf-py, from PyPI) and checks every tensor against the checkpoint it came
from: gguf-py's dequantization of each tensor equals the checkpoint's
values quantized by gguf-py's own quantizer (Q8_0, Q4_0; F16/BF16/F32 as
converted), with q/k rows of llama-architecture files reordered the way
convert_hf_to_gguf.py describes (reshape [heads, 2, d/2, in], swap the
middle axes). gguf-py has no quantizer for the K-quants and Q5_0/Q5_1:
those tensors' gguf-py dequantization must equal shears' own
(`shears decompress FILE`, rounded to the dtype it writes). Needs numpy and
gguf (`pip install gguf`); not part of CI.

usage: [SHEARS=target/release/shears] scripts/gguf-check.py MODEL_DIR FILE.gguf [FILE.gguf ...]
"""
import os
import subprocess
import tempfile
import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q


def safetensors(folder):
    """name -> float32 array of every tensor in the folder's shards."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        b = f.read_bytes()
        n = struct.unpack("<Q", b[:8])[0]
        head = json.loads(b[8 : 8 + n])
        base = 8 + n
        for k, v in head.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            raw = b[base + s : base + e]
            dt = v["dtype"]
            if dt == "F32":
                a = np.frombuffer(raw, np.float32)
            elif dt == "F16":
                a = np.frombuffer(raw, np.float16).astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                continue
            out[k] = a.reshape(v["shape"])
            DTYPES[k] = dt
    return out


DTYPES = {}


def as_dtype(a, dt):
    """f32 values rounded to the safetensors dtype `dt` (nearest even)."""
    if dt == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dt == "BF16":
        u = a.astype(np.float32).view(np.uint32)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.astype(np.uint32).view(np.float32)
    return a


def decompressed(path):
    """shears' own dequantization of a GGUF file, name -> array (HF names)."""
    shears = os.environ.get("SHEARS", "target/release/shears")
    d = tempfile.mkdtemp(prefix="gguf-check-")
    out = os.path.join(d, "back")
    subprocess.run([shears, "-q", "decompress", path, "-o", out], check=True)
    return safetensors(out)


NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(g):
    if g in NAMES:
        return NAMES[g]
    _, layer, rest = g.split(".", 2)
    return f"model.layers.{layer}.{LAYER[rest]}"


def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    model, files = sys.argv[1], sys.argv[2:]
    cfg = json.loads((Path(model) / "config.json").read_text())
    ckpt = safetensors(model)
    bad = 0
    for path in files:
        r = gguf.GGUFReader(path)
        arch = r.fields["general.architecture"].contents()
        checked = 0
        ours = None
        for t in r.tensors:
            if t.name == "rope_freqs.weight":
                continue
            src = ckpt[hf_name(t.name)]
            if arch == "llama" and (".attn_q." in t.name or ".attn_k." in t.name):
                heads = cfg["num_attention_heads"] if ".attn_q." in t.name else cfg["num_key_value_heads"]
                src = permute(src, heads)
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(src.shape)
            if t.tensor_type in (Q.Q8_0, Q.Q4_0):
                want = gguf.quants.dequantize(gguf.quants.quantize(src, t.tensor_type), t.tensor_type)
                same_bytes = np.array_equal(np.asarray(t.data).view(np.uint8).ravel(),
                                            gguf.quants.quantize(src, t.tensor_type).view(np.uint8).ravel())
            elif t.tensor_type == Q.F16:
                want, same_bytes = src.astype(np.float16).astype(np.float32), True
            elif t.tensor_type == Q.BF16:
                want = gguf.quants.dequantize(gguf.quants.quantize(src, Q.BF16), Q.BF16)
                same_bytes = True
            elif t.tensor_type in (Q.F32,):
                want, same_bytes = src, True
            else:
                # K-quants, Q5_0, Q5_1: gguf-py's dequantization against
                # shears' own, both in the dtype shears writes back.
                if ours is None:
                    ours = decompressed(path)
                name = hf_name(t.name)
                mine = ours[name]
                if arch == "llama" and (".attn_q." in t.name or ".attn_k." in t.name):
                    mine = permute(mine, heads)
                got = as_dtype(got, DTYPES[name])
                want, same_bytes = mine, True
            diff = float(np.abs(got - want.reshape(src.shape)).max()) if src.size else 0.0
            if diff != 0.0 or not same_bytes:
                bad += 1
                print(f"{path}: {t.name} {t.tensor_type.name}: max diff {diff}, bytes equal {same_bytes}")
            checked += 1
        print(f"{path}: {arch}, {checked} tensors read by gguf-py and checked")
    sys.exit(1 if bad else 0)


main()
