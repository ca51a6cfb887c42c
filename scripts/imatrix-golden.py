#!/usr/bin/env python3
"""Writes tests/golden/kquants/weighted.safetensors: what ggml's quantizers
make of rows when llama-quantize gives them an importance matrix
(`quantize_{q4_0,q5_0,q5_1,q8_0,q4_K,q5_K,q6_K}(src, dst, nrow, n_per_row,
quant_weights)` in libggml-base of llama-cpp-python, compiled from source).

Two inputs: the 37 edge-case rows of 256 of blocks.safetensors (made by
scripts/kquant-golden.py) with one importance vector of 256, and 4 wider
rows of 1024 (several super-blocks, and the row-wide sigma of the 32-value
types) with their own 1024 importances. Importances span six orders of
magnitude with a few exact zeros, as real imatrix files do.

usage: scripts/imatrix-golden.py [DIR]
"""
import ctypes
import json
import struct
import sys
from pathlib import Path

import numpy as np
import llama_cpp

lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
KINDS = [("q4_0", 18, 32), ("q5_0", 22, 32), ("q5_1", 24, 32), ("q8_0", 34, 32),
         ("q4_k", 144, 256), ("q5_k", 176, 256), ("q6_k", 210, 256)]
for name, _, _ in KINDS:
    f = getattr(lib, "quantize_" + name.replace("_k", "_K"))
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    f.restype = ctypes.c_size_t


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F32": np.float32, "U8": np.uint8}[v["dtype"]]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(v["shape"])
    return out


def importances(rng, n):
    qw = np.exp(rng.standard_normal(n) * 2.5).astype(np.float32)
    qw[rng.choice(n, n // 20, replace=False)] = 0.0
    return qw


here = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/kquants")
rng = np.random.default_rng(7)
edge = read_safetensors(here / "blocks.safetensors")["input"].astype(np.float32)
wide = (rng.standard_t(4, (4, 1024)) * 0.05).astype(np.float32)
wide[1, 300:340] *= 40.0   # an outlier stretch across a block boundary
sets = [("edge", np.ascontiguousarray(edge), importances(rng, 256)),
        ("wide", np.ascontiguousarray(wide), importances(rng, 1024))]

parts = []
for tag, x, qw in sets:
    rows, cols = x.shape
    parts.append((f"{tag}.input", "F32", [rows, cols], x.tobytes()))
    parts.append((f"{tag}.importance", "F32", [cols], qw.tobytes()))
    for name, size, elems in KINDS:
        o = np.zeros((rows, cols // elems * size), np.uint8)
        fn = getattr(lib, "quantize_" + name.replace("_k", "_K"))
        got = fn(x.ctypes.data, o.ctypes.data, rows, cols, qw.ctypes.data)
        assert got == o.size, (name, got, o.size)
        parts.append((f"{tag}.{name}", "U8", list(o.shape), o.tobytes()))

head, data, at = {}, b"", 0
for name, dt, shape, raw in parts:
    head[name] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + len(raw)]}
    data += raw
    at += len(raw)
head["__metadata__"] = {"made_by": "ggml quantize_* with quant_weights, llama-cpp-python " + llama_cpp.__version__}
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
out = here / "weighted.safetensors"
out.write_bytes(struct.pack("<Q", len(h)) + h + data)
print(f"wrote {out}: {len(parts)} tensors")
