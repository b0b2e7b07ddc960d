"""Which operation gives other bits on another CPU: a hash of each building block the pipeline runs, under the
pinned numerics (``r2m.env``), written per CPU model and compared with the fingerprints of the other CPUs.

    .venv/bin/python benchmarks/numerics_fingerprint.py [--out benchmarks/results/numerics]

Writes ``<out>/<cpu>.json`` (op -> sha256 prefix, plus the numerics in force) and prints, for every other CPU's file
already there, the ops whose hashes differ. Run it on two machines and commit both files: the first differing op in
the list (they go from single kernels to a whole training step) is where cross-CPU equality breaks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from r2m.env import cpu_model, numerics_info, set_offline_env

set_offline_env()  # the pins must be in place before torch starts

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from r2m.config import load_config  # noqa: E402
from r2m.models.builders import build_tiny_policy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def digest(*tensors: Tensor) -> str:
    """sha256 (16 hex digits) of the tensors' bytes."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed))


CFG = load_config(REPO / "params.yaml")
VOCAB = CFG.tokenizer.vocab_size  # the BPE vocabulary the pipeline trains (random token ids below it)


def _tiny_model():
    """The pipeline's own tiny policy (``build_tiny_policy`` with params.yaml's ``policy`` sizes), seeded."""
    torch.manual_seed(0)
    return build_tiny_policy(CFG.policy, VOCAB, eos_id=0, pad_id=1)


def _train(steps: int) -> Tensor:
    m = _tiny_model()
    x = torch.randint(0, VOCAB, (16, 48), generator=_gen(1))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(steps):
        m(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def _grads() -> Tensor:
    m = _tiny_model()
    x = torch.randint(0, VOCAB, (16, 48), generator=_gen(1))
    m(x, labels=x).loss.backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()])


def _sample() -> Tensor:
    probs = torch.softmax(_x(64, 1024, seed=5), -1)
    torch.manual_seed(0)
    return torch.multinomial(probs, 4, replacement=True)


OPS: dict[str, Callable[[], Tensor]] = {
    "randn": lambda: _x(256, 256),
    "matmul 64x128x128": lambda: _x(64, 128) @ _x(128, 128, seed=1),
    "matmul 768x128x1024": lambda: _x(768, 128) @ _x(128, 1024, seed=1),
    "bmm 16x48x32x48": lambda: torch.bmm(_x(16, 48, 32), _x(16, 32, 48, seed=1)),
    "linear + bias": lambda: F.linear(_x(96, 128), _x(512, 128, seed=1), _x(512, seed=2)),
    "exp": lambda: torch.exp(_x(4096)),
    "log": lambda: torch.log(_x(4096).abs() + 1e-3),
    "tanh": lambda: torch.tanh(_x(4096)),
    "gelu": lambda: F.gelu(_x(4096)),
    "softmax": lambda: torch.softmax(_x(64, 1024), -1),
    "log_softmax": lambda: torch.log_softmax(_x(64, 1024), -1),
    "layer_norm": lambda: F.layer_norm(_x(96, 128), (128,)),
    "sdpa causal": lambda: F.scaled_dot_product_attention(
        _x(4, 4, 48, 32), _x(4, 4, 48, 32, seed=1), _x(4, 4, 48, 32, seed=2), is_causal=True
    ),
    "sum 1e5": lambda: _x(100_000).sum(),
    "multinomial": _sample,
    "model forward": lambda: _tiny_model()(torch.randint(0, VOCAB, (16, 48), generator=_gen(1))).logits,
    "model gradients": _grads,
    "1 AdamW step": lambda: _train(1),
    "20 AdamW steps": lambda: _train(20),
}


def cpu_id() -> str:
    """The CPU's model name with its family and model numbers (``AMD EPYC`` alone names several generations)."""
    fields: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or cpu_model()  # cpu_model: the same field, or the platform's name without it
    return " ".join([name, *(f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields)])


def fingerprint() -> dict[str, str]:
    """op name -> digest of its output, in :data:`OPS` order."""
    return {name: digest(fn()) for name, fn in OPS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "numerics")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the pipeline's default is 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_id()
    doc = {"cpu": cpu, "numerics": numerics_info(), "ops": fingerprint()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (re.sub(r"[^A-Za-z0-9]+", "_", cpu).strip("_") + ".json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    for other in sorted(args.out.glob("*.json")):
        if other == path:
            continue
        theirs = json.loads(other.read_text())
        diff = [k for k, v in doc["ops"].items() if theirs["ops"].get(k) != v]
        print(f"vs {theirs['cpu']}: " + (f"differ in {', '.join(diff)}" if diff else "every op identical"))


if __name__ == "__main__":
    main()
