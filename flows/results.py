"""``r2m results``: the results protocol. Every (algo, method) over seeds, each stage in a process of its own
(``python -m tasks <stage>``, as ``dvc repro`` runs it), then means with 95% CIs, paired differences to vanilla and
the gold / proxy vs sqrt(KL) frontier (:mod:`r2m.evaluation.results`).

    r2m results --seeds 0 1 2 3 4 --algos grpo rloo --methods vanilla r2m --out results [--profile P]
                [--set KEY=VALUE ...] [--upstream shared|per-seed] [--fresh]

What goes under ``--out``:

- ``base/``: the upstream stages (prepare, sft, preferences, reward_model, best_of_n), run once with the first seed
  (``--upstream shared``, the default); with ``per-seed`` they run in every seed's directory with that seed;
- ``seed_<s>/``: one working directory per seed; with shared upstream its ``data/``, ``models/{sft,rm,rm_heldout}``
  and ``metrics/best_of_n.json`` are relative links into ``base/``; RL writes ``models/rl/<algo>-<method>/``;
- ``logs/<seed>-<stage>[-<algo>-<method>].log``: each subprocess's stdout and stderr (appended, one header per call);
- ``results.json``, ``results.md``, ``frontier.png``; ``timings.json`` holds the wall times (results.json has none,
  so it is byte-identical for identical inputs).

A stage that finished leaves ``<dir>/.done/<stage>[-<run>]`` (its options and seconds) and is skipped next time; a
marker made with other options (profile, ``--set``, upstream mode) is an error rather than a silent reuse. RL is
always called (its marker only guards the options): it resumes from its last round, or returns at once when it has
finished. ``--fresh`` deletes ``--out`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from r2m.config import ALGOS, METHODS
from r2m.data.io import read_json, write_json
from r2m.evaluation.results import ResultsError, results_markdown, write_results
from r2m.rl.methods import METHODS as METHOD_TABLE
from r2m.rl.methods import run_methods
from tasks import stages

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = ("prepare", "sft", "preferences", "reward_model", "best_of_n")
# what a seed's directory takes from base/ with shared upstream (models/ and metrics/ stay real: RL and evaluate
# write into them)
LINKED = ("data", "models/sft", "models/rm", "models/rm_heldout", "metrics/best_of_n.json")


def optional_stages(methods: Sequence[str]) -> list[stages.Stage]:
    """The optional upstream stages (ensemble RMs, PAR's reference scores) that ``methods`` need, in table order."""
    return [s for s in stages.STAGES if s.optional and any(s.name in METHOD_TABLE[m].needs for m in methods)]


def upstream_stages(methods: Sequence[str]) -> tuple[str, ...]:
    """:data:`UPSTREAM` with the optional stages ``methods`` need, after the reward model."""
    i = UPSTREAM.index("reward_model") + 1
    return (*UPSTREAM[:i], *(s.name for s in optional_stages(methods)), *UPSTREAM[i:])


def linked(methods: Sequence[str]) -> tuple[str, ...]:
    """:data:`LINKED` with the outputs and metrics of the optional stages ``methods`` need."""
    extra = [p for s in optional_stages(methods) for p in (*(o.path for o in s.outs), *s.metrics)]
    return (*LINKED, *extra)


OUT_MARKER = ".r2m-results"  # says that --fresh may delete this directory


@dataclass(frozen=True)
class Step:
    """One subprocess: ``stage`` in ``workdir`` with ``seed`` (``run``: ``<algo>-<method>`` of a matrix stage)."""

    stage: str
    seed: int
    workdir: Path
    run: str | None = None

    @property
    def name(self) -> str:
        return "-".join([self.stage, *([self.run] if self.run else [])])

    @property
    def log_name(self) -> str:
        return f"{self.seed}-{self.name}.log"

    @property
    def marker(self) -> Path:
        return self.workdir / ".done" / self.name

    @property
    def skippable(self) -> bool:
        return self.stage != "rl"  # RL resumes or skips by itself (and says which in its log)

    def describe(self, base: Path) -> str:
        where = f"seed {self.seed}" + (" (base)" if self.workdir == base else "")
        return f"{where} {self.stage}" + (f" {self.run}" if self.run else "")


def plan(seeds: Sequence[int], algos: Sequence[str], methods: Sequence[str], out: Path, upstream: str) -> list[Step]:
    """Every step, in order: the upstream stages (once in ``base/`` or in every seed's directory), then per seed
    and run, rl and evaluate."""
    up = upstream_stages(methods)
    steps = [Step(s, seeds[0], out / "base") for s in up] if upstream == "shared" else []
    for seed in seeds:
        wd = out / f"seed_{seed}"
        if upstream == "per-seed":
            steps += [Step(s, seed, wd) for s in up]
        for algo in algos:
            for method in run_methods(list(methods)):  # early_stop: vanilla's run
                steps += [Step(stage, seed, wd, f"{algo}-{method}") for stage in ("rl", "evaluate")]
    return steps


def stage_command(step: Step, params: Path, profile: str | None, overrides: Sequence[str]) -> list[str]:
    """``python -m tasks <stage>`` of one step (no MLflow; the seed is the step's)."""
    cmd = [sys.executable, "-m", "tasks", step.stage, "--workdir", str(step.workdir), "--params", str(params)]
    cmd += ["--no-mlflow", "--set", f"seed={step.seed}"]
    if profile:
        cmd += ["--profile", profile]
    for o in overrides:
        cmd += ["--set", o]
    if step.run:
        algo, method = step.run.split("-", 1)
        cmd += ["--algo", algo, "--method", method]
    return cmd


def link(src: Path, dst: Path, *, replace_stale: bool = False, need_source: bool = True, hint: str = "") -> None:
    """A relative link ``dst`` -> ``src``, kept when it already points there. A link pointing elsewhere is replaced
    (``replace_stale``) or an error; anything else at ``dst`` is an error (``hint`` says what to do); ``need_source``:
    ``src`` must exist."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(src, dst.parent)
    if dst.is_symlink() and os.readlink(dst) == target:
        return
    if dst.is_symlink() and replace_stale:
        dst.unlink()
    elif dst.is_symlink() or dst.exists():
        raise ResultsError(f"{dst} exists and is not a link to {src}: {hint or 'use another --out'}")
    if need_source and not src.exists():
        raise ResultsError(f"{src} is missing: run `r2m results` with this seed and run first")
    dst.symlink_to(target, target_is_directory=src.is_dir())


def link_upstream(base: Path, workdir: Path, methods: Sequence[str] = ()) -> None:
    """Relative links in ``workdir`` to the upstream outputs in ``base`` (:func:`linked`; made before they exist)."""
    for rel in linked(methods):
        link(base / rel, workdir / rel, replace_stale=True, need_source=False, hint="use --fresh or another --out")


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_step(step: Step, cmd: list[str], options: dict, log: Path, base: Path) -> dict:
    """Run one step (or skip it when its marker says it finished with the same options); returns its timing row.
    A failure raises :class:`ResultsError` naming the stage, run, seed and log."""
    row = {"seed": step.seed, "dir": step.workdir.name, "stage": step.stage, "run": step.run}
    if step.marker.is_file():
        done = read_json(step.marker)
        if done["options"] != options:
            raise ResultsError(
                f"{step.marker} was made with other options ({json.dumps(done['options'])}, now "
                f"{json.dumps(options)}): rerun with --fresh or another --out"
            )
        if step.skippable:
            return {**row, "seconds": 0.0, "skipped": True, "first_run_seconds": done["seconds"]}
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        last = _last_line(log)
        raise ResultsError(f"{step.describe(base)} failed (exit {rc}); log: {log}" + (f"; {last}" if last else ""))
    write_json(step.marker, {"options": options, "seconds": seconds})
    return {**row, "seconds": seconds, "skipped": False}


def prepare_out(out: Path, fresh: bool) -> None:
    """Create ``out`` (marked as ours); with ``fresh``, delete it first, but only if it is ours or empty."""
    if fresh and out.exists():
        if not (out / OUT_MARKER).exists() and any(out.iterdir()):
            raise ResultsError(f"--fresh: {out} is not an `r2m results` directory (no {OUT_MARKER}); not deleting it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_MARKER).touch()


def results(
    seeds: Sequence[int],
    algos: Sequence[str],
    methods: Sequence[str],
    out: str | Path,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    upstream: str = "shared",
    fresh: bool = False,
    params: str | Path = REPO / "params.yaml",
    command: str = "r2m results",
    echo: Callable[[str], None] = print,
) -> dict:
    """Run every step of :func:`plan` (skipping finished ones), then aggregate; returns the results document."""
    t_start = time.perf_counter()
    for flag, values in (("--seeds", seeds), ("--algos", algos), ("--methods", methods)):
        if not values or len(set(values)) != len(values):
            raise ResultsError(f"{flag}: need distinct values, got {list(values)}")
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise ResultsError("--set seed=...: the seeds come from --seeds")
    out, params = Path(out).resolve(), Path(params).resolve()
    prepare_out(out, fresh)
    base = out / "base"
    steps = plan(list(seeds), algos, methods, out, upstream)
    width = len(str(len(steps)))
    rows = []
    for i, step in enumerate(steps, start=1):
        if step.stage == "rl" and upstream == "shared":
            link_upstream(base, step.workdir, methods)
        options = {"seed": step.seed, "profile": profile, "overrides": list(overrides), "upstream": upstream}
        cmd = stage_command(step, params, profile, overrides)
        row = run_step(step, cmd, options, out / "logs" / step.log_name, base)
        rows.append(row)
        took = f"done before ({row['first_run_seconds']:.0f} s)" if row["skipped"] else f"{row['seconds']:.0f} s"
        echo(f"[{i:>{width}}/{len(steps)}] {step.describe(base)}  {took}")
    seed_dirs = {s: out / f"seed_{s}" for s in seeds}
    res = write_results(seed_dirs, algos, methods, out, best_of_n=seed_dirs[seeds[0]] / "metrics" / "best_of_n.json")
    write_json(out / "timings.json", {"total_seconds": time.perf_counter() - t_start, "steps": rows})
    timings = read_json(out / "timings.json")
    total, skipped = timings["total_seconds"], [r["first_run_seconds"] for r in timings["steps"] if r["skipped"]]
    (out / "results.md").write_text(results_markdown(res, command, total, (len(skipped), sum(skipped))))
    echo(f"wrote {out / 'results.md'}, results.json, frontier.png, timings.json ({total:.0f} s in all)")
    return res


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="r2m results",
        description="The results protocol: every algo x method over seeds, each stage in its own process, then means "
        "with 95% CIs, paired differences to vanilla and the gold/proxy vs sqrt(KL) frontier.",
    )
    ap.add_argument("--seeds", nargs="+", type=int, required=True, metavar="SEED", help="e.g. 0 1 2 3 4")
    ap.add_argument("--algos", nargs="+", required=True, choices=ALGOS, metavar="ALGO", help=f"of {', '.join(ALGOS)}")
    ap.add_argument(
        "--methods",
        nargs="+",
        required=True,
        choices=METHODS,
        metavar="METHOD",
        help=f"of {', '.join(METHODS)}; vanilla is the baseline",
    )
    ap.add_argument("--out", required=True, help="output directory (base/, seed_<s>/, logs/, results.*)")
    ap.add_argument("--profile", default=None, help="configs/<profile>.yaml (default: params.yaml's profile)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="params file (default: the repo's)")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override, every stage"
    )
    ap.add_argument(
        "--upstream",
        choices=("shared", "per-seed"),
        default="shared",
        help="shared: prepare .. best_of_n once in <out>/base with the first seed; per-seed: in every seed's dir",
    )
    ap.add_argument("--fresh", action="store_true", help="delete --out first (only an `r2m results` directory)")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    try:
        results(
            a.seeds,
            a.algos,
            a.methods,
            a.out,
            profile=a.profile,
            overrides=a.overrides,
            upstream=a.upstream,
            fresh=a.fresh,
            params=a.params,
            command=shlex.join(["r2m", "results", *argv]),
        )
    except ResultsError as e:  # one line: which stage / run / seed, and where its log is
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
