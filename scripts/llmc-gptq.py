#!/usr/bin/env python3
"""GPTQ w4a16 (groups of 128) of one 4096x4096 bf16 layer with the Gram
matrix of 4096 correlated input rows, by llm-compressor's `quantize_weight`
and by `shears quantize --method gptq`, on this machine's CPU: seconds and
the Hessian-weighted error tr(dW H dW^T) / tr(W H W^T) of each, and of
round to nearest.

    python scripts/llmc-gptq.py [DIR]    # needs torch, llmcompressor, safetensors

Build target/release/shears first (or set SHEARS)."""
import json, os, subprocess, sys, time

import torch
from safetensors.torch import save_file

N, TOKENS = 4096, 4096
d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/shears-llmc"
os.makedirs(d, exist_ok=True)
shears = os.environ.get("SHEARS", "target/release/shears")
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count())

# Inputs sharing N/8 latent factors plus noise, as the criterion bench.
z = torch.randn(TOKENS, N // 8)
a = torch.randn(N // 8, N)
x = z @ a + 0.1 * torch.randn(TOKENS, N)
gram = (x.T @ x).contiguous()
w = (0.02 * torch.randn(N, N)).to(torch.bfloat16)
name = "model.layers.0.mlp.down_proj.weight"
save_file({name: w}, f"{d}/layer.safetensors")
save_file({f"{name}.input_gram": gram}, f"{d}/cal.safetensors")


def weighted(wq):
    dw = w.float() - wq.float()
    return float(torch.trace(dw @ gram @ dw.T) / torch.trace(w.float() @ gram @ w.float().T))


# llm-compressor: its observer's up-front group scales, then its sweep.
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.utils import calculate_qparams
from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
import llmcompressor

args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128)
t = time.time()
groups = w.float().reshape(N, N // 128, 128)
scale, zp = calculate_qparams(groups.amin(dim=-1), groups.amax(dim=-1), args)
q, _, fallback = quantize_weight(
    weights=w.unsqueeze(0).clone(), hessians=((2.0 / TOKENS) * gram).unsqueeze(0),
    scale=scale.to(w.dtype).unsqueeze(0), zero_point=zp.unsqueeze(0), global_scale=None,
    quant_args=args, blocksize=128, percdamp=0.01)
t_llmc = time.time() - t
e_llmc = weighted(q[0])
print(f"llm-compressor {llmcompressor.__version__}, torch {torch.__version__} "
      f"({torch.get_num_threads()} threads): {t_llmc:.2f} s, weighted error {e_llmc:.4e}"
      f"{' (fell back to RTN)' if bool(fallback[0]) else ''}")

# shears
t = time.time()
subprocess.run([shears, "-q", "quantize", f"{d}/layer.safetensors", "-o", f"{d}/out",
                "--scheme", "w4a16", "--method", "gptq", "--calibration", f"{d}/cal.safetensors",
                "--report", f"{d}/report.json", "--force", "--backend", "cpu"], check=True)
t_shears = time.time() - t
row = json.load(open(f"{d}/report.json"))["tensors"][0]
print(f"shears: {t_shears:.2f} s wall (the sweep {row['seconds']:.2f} s, with the factor and "
      f"the report's two weighted errors), weighted error {row['hessian_error']['result']:.4e}, "
      f"round to nearest {row['hessian_error']['baseline']:.4e}")
