"""The stage table's declarations are complete: what DVC reruns follows them, and a stage runs from them alone.

On one ``dvc repro`` of the ``ci`` profile in a temporary DVC project:

- DVC's DAG is the one the table implies (B depends on A when a dep of B equals, lies inside or contains an output
  of A), computed here from the table alone;
- changing any declared param (or ``seed``), any declared data dep, a stage's module or a library file it imports
  makes ``dvc status`` report exactly the stages that declare it (and, through the DAG, everything downstream);
- each stage, run in a fresh directory holding only params.yaml, configs/ and copies of its declared deps, succeeds,
  writes every declared output and writes nothing else (bar the unhashed places: timings, MLflow, registry.json,
  the work-dir lock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest
import yaml

from r2m.config import ALGOS, METHODS, load_config
from tasks import dvc_yaml, stages
from tasks.stages import COMMON_PARAMS, RUN, Stage
from tasks.stages import STAGES as ALL_STAGES
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PROFILE = "ci"
CFG = load_config(REPO / "params.yaml", profile=PROFILE)
RUNS = CFG.run_names()  # for parametrizing; re-read in the fixture
# the stages dvc.yaml holds for params.yaml's methods (the optional ones, ensembles and PAR, only when a method needs
# them: their declarations are checked by the stage tests, not here)
STAGES = tuple(s for s in ALL_STAGES if s.needed(CFG))
PROFILE_FILE = f"configs/{PROFILE}.yaml"
# written by a stage but hashed by nobody, on purpose (see tasks/common.py, tasks/register.py, r2m/rl/runner.py)
UNHASHED = ("timings/", "mlflow.db", "mlartifacts/", "registry.json", "models/rl.stale/", ".r2m.lock")
MATRIX_KEYS = ("rl.algos", "rl.methods")


# --- the table's view, independent of DVC ------------------------------------------------------------------------


def sub(path: str, run: str | None) -> str:
    return path.replace(RUN, run) if run else path


def instances(runs: list[str]) -> list[tuple[str, Stage, str | None]]:
    """``(dvc name, stage, run)`` of every stage instance: matrix stages once per run (``rl@grpo-vanilla``)."""
    return [(f"{s.name}@{r}" if r else s.name, s, r) for s in STAGES for r in (runs if s.matrix else [None])]


def outputs(stage: Stage, run: str | None) -> list[str]:
    paths = [o.path for o in stage.outs] + list(stage.metrics) + [p.path for p in stage.plots] + list(stage.images)
    return [sub(p, run) for p in paths]


def deps(stage: Stage, run: str | None) -> list[str]:
    return [sub(d, run) for d in stage.deps]


def inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    return inside(a, b) or inside(b, a)


def table_graph(runs: list[str]) -> dict[str, set[str]]:
    """``{instance: the instances that read one of its outputs}``."""
    inst = instances(runs)
    graph: dict[str, set[str]] = {name: set() for name, _, _ in inst}
    for a, sa, ra in inst:
        for b, sb, rb in inst:
            if a != b and any(overlaps(d, o) for d in deps(sb, rb) for o in outputs(sa, ra)):
                graph[a].add(b)
    return graph


def downstream(graph: dict[str, set[str]], nodes: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def declarers(key: str, runs: list[str]) -> set[str]:
    """The instances whose declared params cover the leaf ``key`` (a section or the key itself)."""
    return {
        name
        for name, s, _ in instances(runs)
        if any(key == p or key.startswith(p + ".") for p in (*COMMON_PARAMS, *s.params))
    }


# --- the DVC project ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Project:
    wd: Path
    env: dict[str, str]
    runs: list[str]
    graph: dict[str, set[str]]  # the table's
    code: dict[str, list[str]]  # stage name -> Stage.code() of the project's copy
    dvc_graph: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # DVC's (`dvc dag --full`)
    # stage name -> (future of (returncode, log tail), sandbox, its files before the run, the run)
    isolated: dict[str, tuple[Future, Path, dict[str, str], str | None]] = dataclasses.field(default_factory=dict)

    def sh(self, *cmd: str, cwd: Path | None = None) -> str:
        p = subprocess.run(cmd, cwd=cwd or self.wd, env=self.env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    def status(self) -> dict[str, list]:
        return json.loads(self.sh(sys.executable, "-m", "dvc", "status", "--json") or "{}")

    def rerun(self, status: dict[str, list]) -> set[str]:
        """What ``dvc repro`` reruns: the stages DVC reports changed and what follows them in DVC's own DAG."""
        return set(status) | downstream(self.dvc_graph, set(status))

    def read_dvc_graph(self) -> dict[str, set[str]]:
        dot = self.sh(sys.executable, "-m", "dvc", "dag", "--dot", "--full")
        graph: dict[str, set[str]] = {n: set() for n in re.findall(r'^"([^"]+)";$', dot, re.M)}
        for a, b in re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, re.M):
            graph.setdefault(a, set()).add(b)
        return graph


def changed_deps(entry: list) -> dict:
    """The ``changed deps`` mapping of one stage's ``dvc status --json`` entry."""
    out: dict = {}
    for item in entry:
        if isinstance(item, dict):
            out.update(item.get("changed deps", {}))
    return out


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copy_into(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def run_isolated(cmd: list[str], cwd: Path, env: dict, log: Path, procs: list) -> tuple[int, str]:
    with log.open("w") as f:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        procs.append(p)
        try:
            rc = p.wait(timeout=900)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    return rc, log.read_text()[-4000:]


def sandbox_for(wd: Path, root: Path, stage: Stage, run: str | None) -> Path:
    """A directory with params.yaml, configs/ and copies of ``stage``'s declared deps, nothing else."""
    box = root / stage.name
    box.mkdir(parents=True)
    shutil.copy2(wd / "params.yaml", box / "params.yaml")
    shutil.copytree(wd / "configs", box / "configs")
    for d in deps(stage, run):
        assert (wd / d).exists(), f"{stage.name}: declared dep {d} does not exist after dvc repro"
        copy_into(wd / d, box / d)
    return box


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[Project]:
    tmp = tmp_path_factory.mktemp("declarations")
    wd = tmp / "proj"
    wd.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, wd / name)
    for d in ("configs", "r2m", "tasks"):
        shutil.copytree(REPO / d, wd / d, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((wd / "params.yaml").read_text())
    params["profile"] = PROFILE
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with (wd / ".gitignore").open("a") as f:
        f.write("\n__pycache__/\n")
    venv_bin = str(Path(sys.executable).parent)  # dvc.yaml's `python` is the one running the tests
    env = {**os.environ, "PYTHONPATH": str(wd), "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    runs = load_config(wd / "params.yaml").run_names()
    with mock.patch.object(stages, "ROOT", wd):  # code deps of the copy that DVC hashes
        code = {s.name: s.code() for s in STAGES}
    proj = Project(wd=wd, env=env, runs=runs, graph=table_graph(runs), code=code)

    proj.sh("git", "init", "-q")
    if (REPO / ".dvc" / "config").exists():
        shutil.copytree(REPO / ".dvc", wd / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    else:
        proj.sh(sys.executable, "-m", "dvc", "init", "-q")
    out = proj.sh(sys.executable, "-m", "dvc", "repro")
    for name, _, _ in instances(runs):
        assert f"Running stage '{name}'" in out, f"dvc repro did not run {name}:\n{out[-3000:]}"
    assert proj.status() == {}, "dvc status is not up to date right after dvc repro"
    proj.dvc_graph = proj.read_dvc_graph()
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    proj.sh(*git, "add", "-A")
    proj.sh(*git, "commit", "-qm", "repro")

    # part 5 runs in the background while the dvc status checks mutate the project: the sandboxes get their deps
    # now, and a pristine copy of the code (the checks append to the project's own code files)
    code_dir = tmp / "code"
    for d in ("r2m", "tasks"):
        shutil.copytree(wd / d, code_dir / d, ignore=shutil.ignore_patterns("__pycache__"))
    box_env = {**env, "PYTHONPATH": str(code_dir)}
    box_env.pop("MLFLOW_TRACKING_URI", None)
    procs: list[subprocess.Popen] = []
    pool = ThreadPoolExecutor(max_workers=2)
    longest_first = ("sft", "reward_model", "rl", "hidden_states", "evaluate", "prepare", "report", "register")
    for s in sorted(STAGES, key=lambda s: longest_first.index(s.name) if s.name in longest_first else -1):
        run = runs[0] if s.matrix else None
        box = sandbox_for(wd, tmp / "sandbox", s, run)
        before = snapshot(box)
        cmd = [sys.executable, "-m", "tasks", s.name]
        if run:
            algo, method = s.matrix_kwargs(run).values()
            cmd += ["--algo", algo, "--method", method]
        if not s.needs_mlflow:
            cmd.append("--no-mlflow")
        fut = pool.submit(run_isolated, cmd, box, box_env, tmp / f"{s.name}.log", procs)
        proj.isolated[s.name] = (fut, box, before, run)
    try:
        yield proj
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextlib.contextmanager
def appended(path: Path, data: bytes) -> Iterator[None]:
    orig = path.read_bytes()
    try:
        path.write_bytes(orig + data)
        yield
    finally:
        path.write_bytes(orig)


# --- 1. the DAG ---------------------------------------------------------------------------------------------------


def test_dvc_dag_is_the_one_the_table_implies(project):
    assert project.dvc_graph == project.graph


# --- 2. params ----------------------------------------------------------------------------------------------------


def _declared_params() -> list[str]:
    seen: dict[str, None] = {"seed": None}
    for s in STAGES:
        seen.update(dict.fromkeys(s.params))
    return list(seen)


def _leaf(doc: dict, param: str) -> str:
    """``param`` when it is a key; for a whole section, one of its leaves (a number when there is one)."""
    section, _, key = param.partition(".")
    if key or not isinstance(doc[section], dict):
        return param
    leaves, path = doc[section], section
    while leaves and all(isinstance(v, dict) for v in leaves.values()):  # a section of sections (methods)
        first = next(iter(leaves))
        leaves, path = leaves[first], f"{path}.{first}"
    numeric = [k for k, v in leaves.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    strings = [k for k, v in leaves.items() if isinstance(v, str)]
    return f"{path}.{(numeric or strings or list(leaves))[0]}"


def _choices(key: str) -> tuple | None:
    """The choices a config key declares (its field's ``metadata["choices"]``), None for a free value."""
    import dataclasses
    import typing

    from r2m.config import Config

    cls, *path, last = [Config, *key.split(".")]
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    return {f.name: f for f in dataclasses.fields(cls)}[last].metadata.get("choices")


def _other_value(key: str, v):
    if key == "rl.vllm_server_base_url":  # a URL or nothing
        return "http://127.0.0.1:8000"
    choices = _choices(key) if not isinstance(v, list) else None
    if choices and isinstance(v, str):
        return next(c for c in choices if c != v)
    if key == "rl.rounds":  # a valid one: rl.steps (the profile's) stays a multiple of it
        return 1 if v != 1 else 2
    if key == "rl.algos":
        return [*v, next(a for a in ALGOS if a not in v)]
    if key == "rl.methods":
        return [*v, next(m for m in METHODS if m not in v)]
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v * 2 or 1
    if isinstance(v, float):
        return v / 2 or 0.5
    if isinstance(v, str):
        return f"{v}-changed"
    if isinstance(v, list):
        return [*v, 0]
    raise AssertionError(f"no other value for {key}={v!r}")


@pytest.mark.parametrize("param", _declared_params())
def test_changing_a_declared_param_reruns_its_stages_and_downstream(project, param):
    pfile = project.wd / "params.yaml"
    text = pfile.read_text()
    doc = yaml.safe_load(text)
    key = _leaf(doc, param)
    node = doc
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    node[last] = _other_value(key, node[last])
    try:
        pfile.write_text(yaml.safe_dump(doc, sort_keys=False))
        new_runs = load_config(pfile).run_names()  # the changed value is a valid one
        status = project.status()
        stale = dvc_yaml.check(project.wd / "dvc.yaml", load_config(pfile))
    finally:
        pfile.write_text(text)

    expected = declarers(key, project.runs)
    if param in MATRIX_KEYS:
        # dvc.yaml lists the runs (generated by `r2m dvc-yaml`): until it is regenerated, the stages that read the
        # list change, and every stage command refuses to run from it (the check below names the fix)
        assert set(new_runs) - set(project.runs), f"{key}: no new run from {new_runs}"
        assert set(status) == expected, f"{key} changed: dvc status reports {sorted(status)}"
        assert stale and "r2m dvc-yaml" in stale
        return
    assert set(status) == expected, f"{key} changed: dvc status reports {sorted(status)}, not {sorted(expected)}"
    owners = {name for name, s, _ in instances(project.runs) if param in s.params or param == "seed"}
    assert owners <= expected
    rerun = project.rerun(status)
    for name in owners:
        missing = ({name} | downstream(project.graph, {name})) - rerun
        assert not missing, f"{key} changed: {name} would rerun but not {sorted(missing)}"


# --- 3. data deps -------------------------------------------------------------------------------------------------


def _data_deps() -> list[str]:
    seen: dict[str, None] = {}
    for _, s, run in instances(RUNS):
        seen.update(dict.fromkeys(deps(s, run)))
    return [*seen, PROFILE_FILE]  # the profile preset is a dep of every stage (it can set any key)


@pytest.mark.parametrize("dep", _data_deps())
def test_changing_a_declared_data_dep_reruns_its_stages_and_downstream(project, dep):
    path = project.wd / dep
    assert path.exists(), f"declared dep {dep} does not exist after dvc repro"
    target = path if path.is_file() else next(p for p in sorted(path.rglob("*")) if p.is_file())
    rel = target.relative_to(project.wd).as_posix()
    with appended(target, b"\n"):
        status = project.status()

    inst = instances(project.runs)
    if dep == PROFILE_FILE:
        readers = {name for name, _, _ in inst}
        producers: set[str] = set()
    else:
        readers = {name for name, s, r in inst if any(inside(rel, d) for d in deps(s, r))}
        producers = {name for name, s, r in inst if any(inside(rel, o) for o in outputs(s, r))}
    assert readers, dep
    assert set(status) == readers | producers, (
        f"{rel} changed: dvc status reports {sorted(status)}, not readers {sorted(readers)} + producers "
        f"{sorted(producers)}"
    )
    rerun = project.rerun(status)
    for name in readers:
        reported = changed_deps(status[name])
        assert any(inside(rel, d) for d in reported), f"{name}: {rel} changed, dvc reports {reported}"
        missing = ({name} | downstream(project.graph, {name})) - rerun
        assert not missing, f"{rel} changed: {name} would rerun but not {sorted(missing)}"


# --- 4. code deps -------------------------------------------------------------------------------------------------


def _library_file(project: Project, stage: Stage) -> str:
    """The library module of ``stage``'s code that the fewest stages import (the most telling one)."""
    lib = [f for f in project.code[stage.name] if f.startswith("r2m/") and f.endswith(".py")]
    lib = [f for f in lib if not f.endswith("__init__.py")] or lib
    return min(lib, key=lambda f: (sum(f in c for c in project.code.values()), f))


@pytest.mark.parametrize("kind", ["module", "library"])
@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_changing_a_stages_code_reruns_exactly_its_importers_and_downstream(project, name, kind):
    stage = stages.get(name)
    f = stage.module.replace(".", "/") + ".py" if kind == "module" else _library_file(project, stage)
    assert f in project.code[name], f"{name}: {f} not in its code deps"
    with appended(project.wd / f, b"\n# changed by test_stage_declarations\n"):
        status = project.status()
    importers = {n for n, s, _ in instances(project.runs) if f in project.code[s.name]}
    assert set(status) == importers, f"{f} changed: dvc status reports {sorted(status)}, not {sorted(importers)}"
    rerun = project.rerun(status)
    for n in importers:
        assert f in changed_deps(status[n]), f"{n}: {f} changed, dvc reports {changed_deps(status[n])}"
        missing = ({n} | downstream(project.graph, {n})) - rerun
        assert not missing, f"{f} changed: {n} would rerun but not {sorted(missing)}"


# --- 5. declared inputs suffice, outputs are declared -------------------------------------------------------------


@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_a_stage_runs_from_its_declared_inputs_and_writes_only_its_outputs(project, name):
    fut, box, before, run = project.isolated[name]
    rc, tail = fut.result(timeout=1800)
    stage = stages.get(name)
    assert rc == 0, f"{name} failed in a directory holding only its declared deps:\n{tail}"
    outs = outputs(stage, run)
    missing = [o for o in outs if not (box / o).exists()]
    assert not missing, f"{name}: declared outputs not written: {missing}"
    after = snapshot(box)
    written = sorted(p for p, h in after.items() if before.get(p) != h)
    undeclared = [
        p for p in written if not any(inside(p, o) for o in outs) and not any(p.startswith(u) for u in UNHASHED)
    ]
    assert not undeclared, f"{name} writes files it does not declare as outputs: {undeclared}"
    gone = sorted(set(before) - set(after))
    assert not gone, f"{name} deletes files of its inputs: {gone}"


# --- the project is as dvc repro left it --------------------------------------------------------------------------


def test_the_project_is_restored(project):
    assert project.status() == {}
    assert project.sh("git", "status", "--porcelain") == ""
