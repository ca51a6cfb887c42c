#!/usr/bin/env python3
"""Loads GGUF files shears wrote of the golden forward models in llama.cpp
itself (llama-cpp-python, which compiles llama.cpp from source: `pip
install llama-cpp-python`) and compares the logits llama.cpp computes for
the golden input ids with those transformers computed
(tests/golden/forward/<family>/expected.safetensors), then generates a few
tokens. Not part of CI.

usage: scripts/llama-cpp-check.py GOLDEN_FAMILY_DIR FILE.gguf [FILE.gguf ...]
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import llama_cpp


def tensors(path):
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8 : 8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}.get(v["dtype"])
        if dt is not None:
            out[k] = np.frombuffer(b[8 + n + s : 8 + n + e], dt).reshape(v["shape"])
    return out


def main():
    golden, files = Path(sys.argv[1]), sys.argv[2:]
    exp = tensors(golden / "expected.safetensors")
    ids, want = exp["input_ids"], exp["logits"]
    worst_all = 0.0
    for path in files:
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=True, verbose=False, n_threads=2)
        worst = 0.0
        for s in range(ids.shape[0]):
            llm.reset()
            llm.eval([int(t) for t in ids[s]])
            got = np.array(llm.scores[: ids.shape[1]], dtype=np.float32)
            peak = np.abs(want[s]).max()
            worst = max(worst, float(np.abs(got - want[s]).max() / peak))
        llm.reset()
        toks = []
        llm.eval([int(t) for t in ids[0][:4]])
        for _ in range(8):
            t = llm.sample(temp=0.0)
            toks.append(int(t))
            llm.eval([t])
        print(f"{path}: llama.cpp logits within {worst:.2e} of transformers' peak; greedy continuation {toks}")
        worst_all = max(worst_all, worst)
    return worst_all


if __name__ == "__main__":
    main()
