"""The methods registry: every reward method the RL stage runs, one entry each.

An entry says how the method's reward is computed (``reward``), whether and how it updates (``updates``), what it
needs from upstream stages (``needs``) and which ``params.yaml`` section holds its parameters (``params``, under
``methods.<section>``). ``r2m.config.METHODS``, the DVC matrix, the Prefect flow, the results runner and the README's
method table are derived from :data:`METHODS`; :mod:`r2m.rl.assembly` builds a run's scorer from the entry.

Kept free of torch and TRL (like :mod:`r2m.rl.variants`) so that configuration checks can read it.

Reward kinds:

- ``rm``: one frozen reward model's score, r(x, y) (the vanilla RM unless ``updates == "before"``);
- ``r2m``: R2M's head on the policy's feedback (:mod:`r2m.rl.r2m`; ``variant`` holds its switches);
- ``par``: PAR, sigmoid(r(x, y) - mean_m r(x, y_ref,m)) with y_ref the SFT reference's responses to the same prompt;
- ``ensemble``: k reward models (seeds and bootstrap resamples of the RM-train pairs), each normalised to mean 0 /
  std 1 on the RM-train responses, combined by ``combine``: ``mean``, ``min`` (worst case) or ``uwo``
  (mean - lambda * variance);
- ``warm``: one RM whose weights are the average of k RMs fine-tuned from one initialisation (WARM).

``penalties``: TRL reward functions added to the reward (``length``: ``get_soft_overlong_punishment``;
``repetition``: ``get_repetition_penalty_reward``). ``kl``: TRL's own KL term with ``methods.kl.beta`` instead of
``rl.beta``. ``checkpoint``: the checkpoint the method reports as its result (``final``, or ``best_heldout`` for early
stopping by the held-out RM). ``run_of``: a method with no run of its own (``early_stop`` reads vanilla's run at its
checkpoint), so selecting it runs that method (:func:`run_methods`).
"""

from __future__ import annotations

from dataclasses import dataclass

from r2m.rl.variants import VARIANTS, Variant

REWARDS = ("rm", "r2m", "par", "ensemble", "warm")
UPDATES = ("none", "online", "before")  # never; R2M's GREBT step after every policy step; trained once before RL
COMBINES = ("mean", "min", "uwo")
PENALTIES = ("length", "repetition")


@dataclass(frozen=True)
class Method:
    """One reward method: how its reward is computed and whether it updates."""

    summary: str  # one line: what it is (README table, CLI help)
    reward: str = "rm"
    updates: str = "none"
    variant: Variant | None = None  # reward == "r2m": R2M's switches
    combine: str | None = None  # reward == "ensemble"
    penalties: tuple[str, ...] = ()
    kl: bool = False  # TRL's KL term with methods.kl.beta
    checkpoint: str = "final"  # the checkpoint reported as the method's result
    params: str | None = None  # methods.<params> in params.yaml
    needs: tuple[str, ...] = ()  # the stages it needs beyond sft / reward_model: "reward_ensemble", "par_reference"
    source: str = ""  # where the method comes from
    run_of: str | None = None  # a method that trains nothing of its own: another method's run, read differently

    def __post_init__(self) -> None:
        if self.reward not in REWARDS or self.updates not in UPDATES:
            raise ValueError(f"unknown reward {self.reward!r} or updates {self.updates!r}")
        if (self.reward == "r2m") != (self.variant is not None):
            raise ValueError("a variant belongs to an r2m method, and every r2m method has one")
        if (self.reward == "ensemble") != (self.combine in COMBINES):
            raise ValueError(f"an ensemble method combines by one of {COMBINES}, and only an ensemble does")
        if not set(self.penalties) <= set(PENALTIES):
            raise ValueError(f"unknown penalties {self.penalties}; valid: {PENALTIES}")

    @property
    def uses_feedback(self) -> bool:
        """Whether the reward reads the policy's hidden states (the rollout capture keeps them)."""
        return self.variant is not None and self.variant.use_attention


_R2M_SUMMARIES = {
    "r2m": "R2M: cross-attention on the policy's feedback, GREBT update after every step",
    "r2m_frozen": "R2M's head with feedback, never updated",
    "r2m_noise": "R2M with the feedback replaced by Gaussian noise of the same mean and variance",
    "r2m_no_gre": "R2M with alpha = 0 (Bradley-Terry on self-labels only)",
    "r2m_no_bt": "R2M with alpha = 1 (group reward entropy only)",
    "iter_head": "no cross-attention; the score head alone updated with the same self-labels (reviewers' ablation)",
    "r2m_once": "R2M updated after the first rollout batch only, then frozen (reviewers' ablation)",
}

METHODS: dict[str, Method] = {
    "vanilla": Method("the frozen vanilla RM, r(x, y)"),
    "kl": Method(
        "vanilla RM with TRL's KL to the SFT reference (methods.kl.beta)",
        kl=True,
        params="kl",
        source="Ziegler et al. 2019; TRL",
    ),
    "early_stop": Method(
        "vanilla RL, reported at the checkpoint the held-out RM picks",
        checkpoint="best_heldout",
        run_of="vanilla",
        source="ktolnos/Reward-Model-Overoptimization",
    ),
    "par": Method(
        "PAR: sigmoid(r - r_ref), r_ref the mean score of SFT responses to the prompt",
        reward="par",
        params="par",
        needs=("par_reference",),
        source="Fu et al. 2025, PorUna-byte/PAR",
    ),
    "ensemble_mean": Method(
        "mean of k normalised RMs",
        reward="ensemble",
        combine="mean",
        params="ensemble",
        needs=("reward_ensemble",),
        source="Coste et al. 2024, tlc4418/llm_optimization",
    ),
    "ensemble_min": Method(
        "worst case (min) of k normalised RMs",
        reward="ensemble",
        combine="min",
        params="ensemble",
        needs=("reward_ensemble",),
        source="Coste et al. 2024",
    ),
    "ensemble_uwo": Method(
        "mean - lambda * variance of k normalised RMs",
        reward="ensemble",
        combine="uwo",
        params="ensemble",
        needs=("reward_ensemble",),
        source="Coste et al. 2024",
    ),
    "warm": Method(
        "WARM: one RM, the weight average of k RMs fine-tuned from one initialisation",
        reward="warm",
        params="ensemble",
        needs=("reward_ensemble",),
        source="Rame et al. 2024",
    ),
    "length_penalty": Method(
        "vanilla RM + TRL's soft overlong punishment",
        penalties=("length",),
        params="length_penalty",
        source="TRL trl/rewards (DAPO)",
    ),
    "repetition_penalty": Method(
        "vanilla RM + TRL's repeated n-gram penalty",
        penalties=("repetition",),
        params="repetition_penalty",
        source="TRL trl/rewards",
    ),
    **{
        name: Method(
            _R2M_SUMMARIES[name],
            reward="r2m",
            variant=v,
            updates="online" if v.train else "none",
            params="r2m",
            source="R2M (arXiv 2601.22664)" if name == "r2m" else "R2M ablation",
        )
        for name, v in VARIANTS.items()
    },
    "pretrained_rm": Method(
        "vanilla RM further BT-trained on gold-labelled pairs of the RL prompts, then frozen",
        updates="before",
        source="an upper bound with gold labels",
    ),
}


def run_methods(methods: list[str] | tuple[str, ...]) -> list[str]:
    """The methods whose RL runs ``methods`` need, in order, once each (``early_stop`` -> ``vanilla``)."""
    return list(dict.fromkeys(METHODS[m].run_of or m for m in methods))


def methods_table(markdown: bool = False) -> str:
    """The registry as text: one row per method (name, reward, updates, params section, what it is, source)."""
    rows = [
        (
            name,
            m.reward + (f" ({m.combine})" if m.combine else "") + "".join(f" + {p} penalty" for p in m.penalties),
            m.updates,
            f"methods.{m.params}" if m.params and m.params != "r2m" else (m.params or "-"),
            m.summary,
            m.source or "-",
        )
        for name, m in METHODS.items()
    ]
    head = ("method", "reward", "updates", "parameters", "what it is", "source")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([*lines, *("| " + " | ".join((f"`{r[0]}`", *r[1:])) + " |" for r in rows)])
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]:<22} {r[2]:<7} {r[4]}" for r in rows)
