"""Promotion gates of the model registry: when a ``candidate`` version may take alias ``champion``.

Each registered version carries the evidence it was measured on as ``r2m.gate.*`` tags (:meth:`Evidence.to_tags`):

* policy: the judge's wins / ties / losses of its generations against the reference summaries on the held-out eval
  prompts; the rate is ``(wins + ties / 2) / n`` with a seeded bootstrap interval over prompts;
* reward model, R2M head: the correct pairs of ``n`` held-out preference pairs (ties wrong) and the ECE there; the
  interval is Wilson's.

:func:`decide` applies the gates of :class:`r2m.config.PromoteConfig`. A difference inside the candidate's interval is
a tie, and a tie keeps the champion. Evidence from another held-out set or judge (``eval_set``) is not comparable.
Pure functions: the registry side (reading tags, moving aliases, the audit log) is :mod:`r2m.tracking`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from r2m.config import PromoteConfig
from r2m.evaluation.winrate import bootstrap_ci

KINDS = ("policy", "reward_model", "reward_head")
TAG_PREFIX = "r2m.gate."


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` at ``confidence``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} / {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Evidence:
    """What a version's gate reads. Policy: ``wins``, ``ties``, ``losses``; reward model / head: ``correct`` of
    ``n`` pairs and ``ece``. ``eval_set``: fingerprint of the held-out file (and judge) it was measured on."""

    kind: str
    eval_set: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    correct: int = 0
    n_pairs: int = 0
    ece: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.n < 1:
            raise ValueError(f"{self.kind} evidence measured on no items")

    @property
    def n(self) -> int:
        """Items measured: prompts with a valid verdict (policy) or preference pairs."""
        return self.wins + self.ties + self.losses if self.kind == "policy" else self.n_pairs

    @property
    def rate(self) -> float:
        """Win rate with ties as half (policy) or pair accuracy."""
        return (self.wins + 0.5 * self.ties) / self.n if self.kind == "policy" else self.correct / self.n

    @property
    def metric(self) -> str:
        return "win rate vs reference" if self.kind == "policy" else "held-out accuracy"

    def interval(self, cfg: PromoteConfig) -> tuple[float, float]:
        """The ``cfg.confidence`` interval of :attr:`rate`."""
        if self.kind == "policy":
            return bootstrap_ci(
                self.wins, self.ties, self.losses, n_bootstrap=cfg.n_bootstrap, seed=0, confidence=cfg.confidence
            )
        return wilson_interval(self.correct, self.n, cfg.confidence)

    def to_tags(self) -> dict[str, str]:
        """``r2m.gate.*`` model-version tags."""
        keys = ("wins", "ties", "losses") if self.kind == "policy" else ("correct", "n_pairs", "ece")
        tags = {k: repr(getattr(self, k)) for k in keys} | {"eval_set": self.eval_set, "source": self.source}
        return {TAG_PREFIX + k: v for k, v in tags.items()}

    @classmethod
    def from_tags(cls, kind: str, tags: dict[str, str]) -> Evidence | None:
        """The evidence in a version's tags, or None when it has none (registered without an evaluation)."""
        gate = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        if "eval_set" not in gate:
            return None
        ints = ("wins", "ties", "losses") if kind == "policy" else ("correct", "n_pairs")
        try:
            values: dict = {k: int(gate[k]) for k in ints}
            if kind != "policy":
                values["ece"] = float(gate["ece"])
        except (KeyError, ValueError) as e:
            raise ValueError(f"malformed {TAG_PREFIX}* tags {gate}: {e}") from None
        return cls(kind=kind, eval_set=gate["eval_set"], source=gate.get("source", ""), **values)


@dataclass
class Decision:
    """``promote`` iff every check passed; ``checks``: ``(passed, what)`` in the order they were made."""

    promote: bool = True
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, passed: bool, what: str) -> None:
        self.checks.append((passed, what))
        self.promote = self.promote and passed

    @property
    def reason(self) -> str:
        """The failed checks (all checks when it passed), ``; ``-joined."""
        failed = [w for ok, w in self.checks if not ok]
        return "; ".join(failed or [w for _, w in self.checks])


def _fmt(rate: float, interval: tuple[float, float], n: int) -> str:
    return f"{rate:.3f} [{interval[0]:.3f}, {interval[1]:.3f}] (n={n})"


def decide(
    candidate: Evidence | None,
    champion: Evidence | None,
    cfg: PromoteConfig,
    *,
    candidate_version: int,
    champion_version: int | None,
) -> Decision:
    """Whether ``candidate_version`` may replace ``champion_version`` (None: no champion yet) under ``cfg``."""
    d = Decision()
    if champion_version == candidate_version:
        d.check(False, f"v{candidate_version} already is the champion")
        return d
    if candidate is None:
        d.check(False, f"candidate v{candidate_version} has no gate evidence (r2m.gate.* tags): evaluate it first")
        return d
    low, high = interval = candidate.interval(cfg)
    level = f"{cfg.confidence:.0%}"
    d.check(True, f"candidate v{candidate_version} {candidate.metric} {_fmt(candidate.rate, interval, candidate.n)}")
    floor = cfg.policy_min_win_rate if candidate.kind == "policy" else cfg.min_accuracy
    d.check(low >= floor, f"lower {level} bound {low:.3f} {'>=' if low >= floor else '<'} floor {floor:.3f}")
    if candidate.ece is not None:
        ok = candidate.ece <= cfg.max_ece
        d.check(ok, f"ECE {candidate.ece:.3f} {'<=' if ok else '>'} max_ece {cfg.max_ece:.3f}")
    if champion_version is None:
        d.check(True, "no champion yet")
        return d
    if champion is None:
        d.check(True, f"champion v{champion_version} has no gate evidence: not compared")
        return d
    if champion.eval_set != candidate.eval_set:
        d.check(
            False,
            f"champion v{champion_version} was measured on another held-out set or judge "
            f"({champion.eval_set} vs {candidate.eval_set}): not comparable",
        )
        return d
    gain = candidate.rate - champion.rate
    ok = gain >= cfg.margin
    d.check(
        ok,
        f"vs champion v{champion_version} {champion.rate:.3f}: {gain:+.3f} {'>=' if ok else '<'} margin {cfg.margin}",
    )
    if champion.rate >= low:
        where = "inside" if champion.rate <= high else "above"
        d.check(False, f"tie: the champion's {champion.rate:.3f} lies {where} the candidate's {level} interval")
    else:
        d.check(True, f"the champion's {champion.rate:.3f} lies below the candidate's {level} interval")
    if candidate.ece is not None and champion.ece is not None:
        limit = champion.ece + cfg.ece_tolerance
        ok = candidate.ece <= limit
        d.check(
            ok,
            f"ECE {candidate.ece:.3f} {'<=' if ok else '>'} champion's {champion.ece:.3f} + tolerance "
            f"{cfg.ece_tolerance}",
        )
    return d
