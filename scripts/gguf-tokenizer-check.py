#!/usr/bin/env python3
"""Tokenizes text with llama.cpp from GGUF files shears wrote and with
Hugging Face's `tokenizers` from the tokenizer.json each was made from,
and compares the ids (llama-cpp-python and tokenizers from PyPI; not part
of CI). Checks that the tokenizer keys shears writes (the pre-tokenizer
name above all) make llama.cpp split text as the model's own tokenizer.

usage: scripts/gguf-tokenizer-check.py TEXT TOKENIZER.json FILE.gguf [TOKENIZER.json FILE.gguf ...]
"""
import sys

import llama_cpp
from tokenizers import Tokenizer


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    pairs = sys.argv[2:]
    bad = 0
    for tj, gguf in zip(pairs[::2], pairs[1::2]):
        want = Tokenizer.from_file(tj).encode(text, add_special_tokens=False).ids
        llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
        pre = llm.metadata.get("tokenizer.ggml.pre")
        got = llm.tokenize(text.encode(), add_bos=False, special=False)
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
        if first is None and len(got) == len(want):
            print(f"{gguf} (pre {pre}): {len(got)} ids, all equal to tokenizers'")
        else:
            bad += 1
            at = first if first is not None else min(len(got), len(want))
            print(f"{gguf} (pre {pre}): {len(got)} vs {len(want)} ids, first difference at {at}: "
                  f"{got[at:at + 5]} vs {want[at:at + 5]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
