"""The OpenAI-compatible judge against a real server: ``transformers serve`` with SmolLM2-135M-Instruct on 127.0.0.1.

``r2m judge --judge openai --max-items N`` (default concurrency and timeout) judges the shipped TL;DR sample's
reference summaries against their first sentence: the CLI a user runs, against a server that answers one request
at a time on the CPU, so requests queue and some time out. Reports whether every verdict arrived, how many requests,
retries and timeouts it took, the lowest concurrency the timeouts led to, and the throughput; a second run must be
served from the reply cache alone. Writes ``benchmarks/results/judge_server.json``.

    python -m benchmarks.judge_server --items 8      # needs the `openai` package (transformers' serving extra)

Timings here are wall clock on the machine it ran on; run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import ROOT

RESULT = ROOT / "benchmarks" / "results" / "judge_server.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def converted_smollm2() -> Path:
    """The converted SmolLM2 directory in the model cache (made once; the GGUF path has no ``architectures``)."""
    from r2m.models.builders import SMOLLM2_GGUF, load_smollm2, smollm2_cache_dir, smollm2_gguf_dir

    load_smollm2()
    d = smollm2_cache_dir(smollm2_gguf_dir() / SMOLLM2_GGUF)
    if d is None or not d.is_dir():
        raise SystemExit("the model cache is off (R2M_MODEL_CACHE=''): transformers serve needs a directory")
    return d


def start_server(model_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", str(model_dir)]
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"transformers serve exited ({proc.returncode}); see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(proc)
    raise SystemExit(f"transformers serve not healthy after 180 s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def r2m(wd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("r2m")
    return subprocess.run([str(exe), *args, "--workdir", str(wd)], capture_output=True, text=True, env=os.environ)


def judge_once(wd: Path, base_url: str, model: str, items: int) -> dict:
    args = ["judge", "--profile", "smol-tldr", "--a", str(wd / "first_sentence.jsonl"), "--b", "reference"]
    args += ["--judge", "openai", "--model", model, "--base-url", base_url, "--max-items", str(items), "--no-mlflow"]
    t0 = time.perf_counter()
    done = r2m(wd, *args)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return {"exit_code": done.returncode, "seconds": seconds, "error": done.stderr.strip().splitlines()[-1:]}
    [report_file] = list((wd / "reports").rglob("*.json"))
    out = json.loads(report_file.read_text())
    usage, report = out["usage"], out["report"]
    return {
        "exit_code": 0,
        "seconds": seconds,
        "verdicts": 2 * items,
        "invalid": report.get("invalid"),
        "requests": usage["requests"],
        "retries": usage["retries"],
        "timeouts": usage["timeouts"],
        "cache_hits": usage["cache_hits"],
        "concurrency_lowest": usage["concurrency_lowest"],
        "verdicts_per_minute": 60 * 2 * items / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=8, help="eval prompts judged (x 2 orders)")
    a = ap.parse_args(argv)
    if shutil.which("transformers", path=str(Path(sys.executable).parent)) is None:
        raise SystemExit("no `transformers` command in this environment")
    try:
        import openai  # noqa: F401  (transformers serve needs it)
    except ImportError:
        raise SystemExit("transformers serve needs the `openai` package: pip install openai") from None
    model_dir = converted_smollm2()
    wd = Path(tempfile.mkdtemp(prefix="r2m-judge-server-"))
    shutil.copy(ROOT / "params.yaml", wd / "params.yaml")
    shutil.copytree(ROOT / "configs", wd / "configs")
    prep = r2m(wd, "stage", "prepare", "--profile", "smol-tldr", "--no-mlflow")
    if prep.returncode != 0:
        raise SystemExit(prep.stderr)
    rows = [json.loads(x) for x in (wd / "data" / "eval_prompts.jsonl").read_text().splitlines()]
    with (wd / "first_sentence.jsonl").open("w") as f:
        for r in rows:
            post = r["prompt"].split("POST:", 1)[-1].strip()
            f.write(json.dumps({"id": r["id"], "completion": " " + post.split(". ")[0][:200]}) + "\n")
    port = free_port()
    proc = start_server(model_dir, port, wd / "server.log")
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        first = judge_once(wd, base_url, str(model_dir), a.items)
        second = judge_once(wd, base_url, str(model_dir), a.items)
    finally:
        stop(proc)
    from r2m.config import JudgeConfig

    defaults = JudgeConfig()
    result = {
        "command": f"python -m benchmarks.judge_server --items {a.items}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "server": "transformers serve (SmolLM2-135M-Instruct, converted), 127.0.0.1, CPU",
        "judge": {
            "concurrency": defaults.concurrency,
            "timeout_s": defaults.timeout_s,
            "max_retries": defaults.max_retries,
            "max_tokens": defaults.max_tokens,
        },
        "first_run": first,
        "rerun_from_cache": second,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = first.get("exit_code") == 0 and second.get("exit_code") == 0 and second.get("requests") == 0
    shutil.rmtree(wd, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
