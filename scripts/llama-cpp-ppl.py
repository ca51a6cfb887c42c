#!/usr/bin/env python3
"""Perplexity of GGUF files in llama.cpp itself (llama-cpp-python, which
compiles llama.cpp from source), in the manner of `llama-perplexity
--kl-divergence`: the text tokenized by llama.cpp from the first file,
cut into windows of N_CTX tokens, each window's second half scored; for
every file the perplexity, and against the first file (the reference,
say F16) the mean KL divergence of the next-token distributions and how
often the top token agrees. Not part of CI.

usage: scripts/llama-cpp-ppl.py TEXT REF.gguf FILE.gguf [FILE.gguf ...]
       [--ctx 128] [--tokens 4096]
"""
import argparse

import numpy as np
import llama_cpp


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def window_logprobs(path, ids, ctx):
    llm = llama_cpp.Llama(model_path=path, n_ctx=ctx, logits_all=True, verbose=False, n_threads=2)
    out = []
    for s in range(0, len(ids) - ctx + 1, ctx):
        w = ids[s:s + ctx]
        llm.reset()
        llm.eval(w)
        logits = np.array(llm.scores[:ctx], dtype=np.float64)
        half = ctx // 2
        # Positions half..ctx-2 predict tokens half+1..ctx-1.
        out.append((log_softmax(logits[half:ctx - 1]), np.array(w[half + 1:ctx])))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=4096)
    a = ap.parse_args()
    tok = llama_cpp.Llama(model_path=a.files[0], n_ctx=a.ctx, vocab_only=True, verbose=False)
    ids = tok.tokenize(open(a.text, encoding="utf-8").read().encode(), add_bos=False)[: a.tokens]
    ref = window_logprobs(a.files[0], ids, a.ctx)
    for path in a.files:
        got = ref if path == a.files[0] else window_logprobs(path, ids, a.ctx)
        nll, kl, agree, n = 0.0, 0.0, 0, 0
        for (lp, tgt), (rp, _) in zip(got, ref):
            nll -= lp[np.arange(len(tgt)), tgt].sum()
            kl += (np.exp(rp) * (rp - lp)).sum()
            agree += int((lp.argmax(-1) == rp.argmax(-1)).sum())
            n += len(tgt)
        print(f"{path}: ppl {np.exp(nll / n):.3f}  KL(ref||file) {kl / n:.5f}  "
              f"top-1 agreement {agree / n:.3f}  ({n} tokens)")


if __name__ == "__main__":
    main()
