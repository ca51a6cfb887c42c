#!/usr/bin/env python3
"""Checks shears' K-quant files against llama.cpp's own quantizer: shears
writes MODEL as an F32 GGUF, llama.cpp (llama-cpp-python, compiled from
source) quantizes that file to each type and mix below, shears writes
MODEL with the same --type, and every tensor of the two files must have
the same type and the same bytes (the mixes' per-tensor choices, the
fallbacks for rows that do not split into 256, and every block).
Not part of CI.

usage: scripts/kquant-check.py SHEARS_BINARY MODEL_DIR [TYPE ...]
       (default types: Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S)
"""
import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf
import llama_cpp

FTYPES = {"Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18}


def shears(binary, model, out, ty):
    subprocess.run([binary, "-q", "quantize", model, "-o", str(out), "--type", ty, "--backend", "cpu"], check=True)


def main():
    binary, model = sys.argv[1], sys.argv[2]
    types = sys.argv[3:] or ["Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S"]
    tmp = Path(tempfile.mkdtemp())
    f32 = tmp / "f32.gguf"
    shears(binary, model, f32, "F32")
    bad = 0
    for ty in types:
        theirs_path, ours_path = tmp / f"llama-{ty}.gguf", tmp / f"shears-{ty}.gguf"
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = FTYPES[ty]
        p.nthread = 2
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs_path).encode(), ctypes.byref(p)) == 0
        shears(binary, model, ours_path, ty)
        theirs = {t.name: t for t in gguf.GGUFReader(theirs_path).tensors}
        ours = {t.name: t for t in gguf.GGUFReader(ours_path).tensors}
        if set(theirs) != set(ours):
            print(f"{ty}: tensor names differ: {set(theirs) ^ set(ours)}")
            bad += 1
        counts = {}
        for n, t in theirs.items():
            m = ours.get(n)
            if m is None:
                continue
            if m.tensor_type != t.tensor_type:
                print(f"{ty}: {n}: llama.cpp chose {t.tensor_type.name}, shears {m.tensor_type.name}")
                bad += 1
                continue
            a = np.asarray(t.data).view(np.uint8).ravel()
            b = np.asarray(m.data).view(np.uint8).ravel()
            if not np.array_equal(a, b):
                print(f"{ty}: {n} {t.tensor_type.name}: {(a != b).sum()} of {a.size} bytes differ")
                bad += 1
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        print(f"{ty}: {len(theirs)} tensors compared with llama.cpp's file {counts}")
    print("all equal" if bad == 0 else f"{bad} differences")
    sys.exit(1 if bad else 0)


main()
