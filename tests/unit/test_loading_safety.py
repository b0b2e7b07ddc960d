"""Loading is safe by construction: every model weight load in the project asks for safetensors, every torch.load is
weights-only, nothing is unpickled, and every server the README starts binds to 127.0.0.1 (a static scan: a new
call that breaks the rule fails here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("r2m", "tasks", "flows", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                out.append((path, node))
    return out


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def receiver(call: ast.Call) -> str:
    return ast.unparse(call.func.value)


def test_every_weight_load_asks_for_safetensors():
    loads = calls("from_pretrained")
    assert len(loads) > 5
    bad = []
    for path, call in loads:
        if "Tokenizer" in receiver(call) or keyword(call, "gguf_file") is not None:
            continue  # tokenizers hold no weights; the GGUF SmolLM2 ships in our own package
        flag = keyword(call, "use_safetensors")
        if not (isinstance(flag, ast.Constant) and flag.value is True):
            bad.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)[:80]}")
    assert not bad, "from_pretrained without use_safetensors=True:\n" + "\n".join(bad)


def test_torch_load_is_weights_only_and_nothing_is_unpickled():
    bad = []
    for path, call in calls("load"):
        if receiver(call) == "torch":
            flag = keyword(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
        if receiver(call) in ("pickle", "cloudpickle", "joblib"):
            bad.append(f"{path.relative_to(ROOT)}:{call.lineno}: {receiver(call)}.load")
    assert not bad, bad


def test_the_servers_the_readme_starts_bind_to_localhost():
    readme = (ROOT / "README.md").read_text()
    starts = [line for line in readme.splitlines() if re.search(r"\b(server start|mlflow (ui|server)|serve )", line)]
    assert starts
    for line in starts:
        if line.lstrip().startswith(("prefect server start", "mlflow ui", "mlflow server", "transformers serve")):
            assert "--host 127.0.0.1" in line, line
    assert "0.0.0.0" not in readme
