#!/usr/bin/env python3
"""Checks shears' K-quant super-blocks against llama.cpp's own quantizer:
llama.cpp (llama-cpp-python, compiled from source) quantizes shears' F32
GGUF of a model to Q6_K and to Q4_K_S, and every tensor llama.cpp made Q6_K
or Q4_K must equal, byte for byte, the same tensor in shears' own
`--type Q6_K` / `--type Q4_K` file. Not part of CI.

usage: scripts/kquant-check.py MODEL_F32.gguf SHEARS_Q6_K.gguf SHEARS_Q4_K.gguf
"""
import ctypes
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf
import llama_cpp


def quantize(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize returned {rc}"


def main():
    f32, ours_q6, ours_q4 = sys.argv[1:4]
    tmp = Path(tempfile.mkdtemp())
    bad = 0
    for ftype, name, ours in [(18, "Q6_K", ours_q6), (14, "Q4_K_S", ours_q4)]:
        out = tmp / f"{name}.gguf"
        quantize(f32, out, ftype)
        theirs = {t.name: t for t in gguf.GGUFReader(out).tensors}
        mine = {t.name: t for t in gguf.GGUFReader(ours).tensors}
        compared = 0
        for n, t in theirs.items():
            if t.tensor_type.name not in ("Q6_K", "Q4_K") or n not in mine:
                continue
            m = mine[n]
            if m.tensor_type != t.tensor_type:
                continue
            a = np.asarray(t.data).view(np.uint8).ravel()
            b = np.asarray(m.data).view(np.uint8).ravel()
            if not np.array_equal(a, b):
                bad += 1
                first = int(np.argmax(a != b))
                print(f"{name}: {n} {t.tensor_type.name}: bytes differ from byte {first} ({(a != b).sum()} of {a.size})")
            compared += 1
        types = sorted({t.tensor_type.name for t in theirs.values()})
        print(f"llama.cpp {name} file (types {types}): {compared} K-quant tensors compared with shears' {Path(ours).name}")
    print("all equal" if bad == 0 else f"{bad} tensors differ")
    sys.exit(1 if bad else 0)


main()
