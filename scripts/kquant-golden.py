#!/usr/bin/env python3
"""Writes tests/golden/kquants/blocks.safetensors: super-blocks of 256
values chosen to hit the K-quant searches' edge cases (zero, constant,
one-signed, subnormal, tiny, huge-range and half-step blocks, sub-blocks of
zeros among others, heavy tails) and the bytes ggml's own reference
quantizers (`quantize_row_{q4_K,q5_K,q6_K,q5_0,q5_1}_ref` in libggml-base
from llama-cpp-python, compiled from source) make of them.
crates/core tests compare shears' blocks with these bytes.

usage: scripts/kquant-golden.py [OUT]
"""
import ctypes
import json
import struct
import sys
from pathlib import Path

import numpy as np
import llama_cpp

lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
for f in ("quantize_row_q4_K_ref", "quantize_row_q5_K_ref", "quantize_row_q6_K_ref",
          "quantize_row_q5_0_ref", "quantize_row_q5_1_ref"):
    getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]

rng = np.random.default_rng(2026)
K = 256
blocks = []
add = lambda b: blocks.append(np.asarray(b, dtype=np.float32).reshape(K))
add(np.zeros(K))
add(np.full(K, 0.75))
add(np.full(K, -3.0))
spike = np.zeros(K); spike[77] = 5.0; add(spike)
spike = np.zeros(K); spike[200] = -5.0; add(spike)
add(rng.standard_normal(K) * 1e-39)            # subnormals
add(rng.standard_normal(K) * 1e-18)            # below GROUP_MAX_EPS
add(np.abs(rng.standard_normal(K)))            # positive only
add(-np.abs(rng.standard_normal(K)))           # negative only
add(np.round(rng.standard_normal(K) * 8) / 2)  # half steps
add(np.arange(K) - 128.0)                      # a ramp
b = rng.standard_normal(K); b[32:64] = 0; b[96:112] = 0; add(b)   # zero sub-blocks
b = rng.standard_normal(K) * 1e-30; b[5] = 1e30; add(b)            # huge range
b = rng.standard_normal(K); b[10] = 4.0; b[20] = -4.0; add(b)      # tied extremes
b = rng.standard_normal(K); b[::2] *= 100; add(b)                  # alternating scale
for scale in [1e-3, 0.02, 1.0, 50.0]:
    for _ in range(4):
        add(rng.standard_normal(K) * scale)
for _ in range(6):
    add(rng.standard_t(2, K))                   # heavy tails
x = np.stack(blocks).astype(np.float32)
n = x.shape[0]
kinds = [("q4_k", "quantize_row_q4_K_ref", 144), ("q5_k", "quantize_row_q5_K_ref", 176),
         ("q6_k", "quantize_row_q6_K_ref", 210),
         # 32-value blocks: 8 of them per row of 256.
         ("q5_0", "quantize_row_q5_0_ref", 8 * 22), ("q5_1", "quantize_row_q5_1_ref", 8 * 24)]
outs = {}
for name, fn, size in kinds:
    o = np.zeros((n, size), np.uint8)
    for i in range(n):
        xi = np.ascontiguousarray(x[i])
        getattr(lib, fn)(xi.ctypes.data, o[i].ctypes.data, K)
    outs[name] = (o, size)

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/kquants/blocks.safetensors")
parts = [("input", "F32", [n, K], x.tobytes())]
parts += [(name, "U8", [n, size], o.tobytes()) for name, (o, size) in outs.items()]
head, data, at = {}, b"", 0
for name, dt, shape, raw in parts:
    head[name] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + len(raw)]}
    data += raw
    at += len(raw)
head["__metadata__"] = {"made_by": "ggml quantize_row_{q4_K,q5_K,q6_K,q5_0,q5_1}_ref, llama-cpp-python " + llama_cpp.__version__}
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
out.write_bytes(struct.pack("<Q", len(h)) + h + data)
print(f"wrote {out}: {n} super-blocks")
