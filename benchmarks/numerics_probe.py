"""Which settings change the bits: 20 AdamW steps of the tiny policy (GPT-NeoX, hidden 128, 2 layers) under several
numerics settings, each in a fresh process, printing a hash of the trained weights.

    .venv/bin/python benchmarks/numerics_probe.py

Same hash = same bits. On a CPU with AVX-512, the native run differs from the pinned one: that is the difference a
second machine with another CPU would see without the pins. The pinned run's hash is the same on every run.
"""

from __future__ import annotations

import os
import subprocess
import sys

SETTINGS = {
    "pinned (r2m default), 2 threads": {},
    "pinned, again": {},
    "pinned, 1 thread": {"T": "1"},
    "pinned + MKL STRICT": {"MKL_CBWR": "AVX2,STRICT"},
    "native kernels (per CPU)": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"},
    "only ATen native": {"ATEN_CPU_CAPABILITY": "avx512"},
    "only MKL native": {"MKL_CBWR": "AUTO"},
}

CHILD = r"""
import hashlib, os, time
from r2m.env import set_offline_env
set_offline_env()
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("T", "2")))
cfg = GPTNeoXConfig(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=512, max_position_embeddings=320)
m = GPTNeoXForCausalLM(cfg)
x = torch.randint(0, 1024, (32, 64))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
t0 = time.perf_counter()
for _ in range(20):
    loss = m(x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
dt = time.perf_counter() - t0
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()[:16]
print(f"{torch.backends.cpu.get_cpu_capability():7s} {torch.get_num_threads()} threads  {h}  {dt:.2f} s")
"""


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, extra in SETTINGS.items():
        env = {**os.environ, **extra, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
        print(f"{name:34s} {out.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
