"""Where the pipeline's files live under one working directory (``paths.*`` of the config, resolved)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r2m.config import Config

# the SFT policy's greedy generations of the eval prompts (written by the sft stage next to the model)
SFT_GENERATIONS = "eval_generations.jsonl"


def relative_posix(path: Path, root: str | Path | None) -> str:
    """``path`` relative to ``root`` (POSIX) when inside it, else ``path`` as given."""
    if root is not None and path.is_relative_to(Path(root).resolve()):
        return path.relative_to(Path(root).resolve()).as_posix()
    return str(path)


@dataclass(frozen=True)
class Paths:
    """Resolved stage locations under one working directory."""

    root: Path
    data: Path
    models: Path
    metrics: Path
    plots: Path

    @classmethod
    def of(cls, cfg: Config, workdir: str | Path = ".") -> Paths:
        root = Path(workdir).resolve()
        p = cfg.paths
        return cls(root, root / p.data, root / p.models, root / p.metrics, root / p.plots)

    @property
    def sft(self) -> Path:
        return self.models / "sft"

    @property
    def rm(self) -> Path:
        return self.models / "rm"

    @property
    def rm_heldout(self) -> Path:
        """The held-out RM (other pairs, other seed): selects checkpoints; never trained on by any method."""
        return self.models / "rm_heldout"

    @property
    def timings(self) -> Path:
        """Wall-clock and memory figures: never a DVC output, so the reproducible outputs stay byte-stable."""
        return self.root / "timings"

    def rl_run(self, run: str) -> Path:
        return self.models / "rl" / run
