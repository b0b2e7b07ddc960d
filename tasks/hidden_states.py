"""Stage ``hidden_states``: do the policies' own hidden states separate preferred from dispreferred responses?

The R2M paper's motivation analysis (docs/method.md), for the SFT policy and every RL run's final policy that exists
(none is fine: then the SFT policy alone). On the first ``analysis.n_pairs`` RM-test pairs, each policy reads its
rendered prompt + the chosen / rejected response; the response tokens' hidden states are mean-pooled at
``analysis.layers`` (``r2m.evaluation.hidden_states``). Per policy and layer:

- mean cosine similarity within a label and across labels, and the gap (within - across; > 0 = separated), with a
  permutation p-value (labels swapped at random within pairs, ``analysis.n_permutations`` times);
- Pearson / Spearman correlation of each pair's cosine, and of every response pair's, with |reward difference| under
  the vanilla reward model (expected negative).

Writes ``metrics/hidden_states.json``, ``plots/hidden_states.png`` (similarity and gap per layer) and
``plots/hidden_states_reward.png`` (pair cosine vs |reward difference| at the last analysed layer).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_jsonl, write_json
from r2m.evaluation.hidden_analysis import analyse_policy, policy_dirs, vanilla_rewards
from r2m.evaluation.hidden_plots import plot_label_similarity, plot_similarity_vs_reward
from r2m.paths import Paths

log = logging.getLogger("r2m")

METRICS_FILE = "hidden_states.json"
SIMILARITY_PLOT = "hidden_states.png"
REWARD_PLOT = "hidden_states_reward.png"


def hidden_states(cfg: Config, workdir: str | Path = ".") -> dict:
    """Analyse every available policy; write the metrics JSON and the two plots (module docstring)."""
    paths = Paths.of(cfg, workdir)
    n = cfg.analysis.n_pairs
    rows = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)[:n]
    if len(rows) < 2:
        raise ValueError(f"{paths.data / 'rm_test.jsonl'}: {len(rows)} pairs; the analysis needs at least 2")
    policies, missing = policy_dirs(cfg, paths)
    if missing:
        log.info("hidden_states: no final policy for %s; analysing %s", ", ".join(missing), ", ".join(policies))
    r_chosen, r_rejected = vanilla_rewards(cfg, paths, rows)
    abs_diff = (r_chosen - r_rejected).abs()
    results, pair_cos, timings = {}, {}, {}
    for name, d in policies.items():
        t = time.perf_counter()
        results[name], pair_cos[name] = analyse_policy(d, cfg, rows, (r_chosen, r_rejected))
        timings[f"{name}_seconds"] = time.perf_counter() - t
        log.info("hidden_states: %s analysed in %.1f s", name, timings[f"{name}_seconds"])
    layers = list(results["sft"])
    out = {
        "n": len(rows),
        "layers": layers,
        "max_length": cfg.reward_model.max_length,
        "reward": {
            "model": str(paths.rm.relative_to(paths.root)),
            "accuracy": float((r_chosen > r_rejected).float().mean()),
            "mean_abs_diff": float(abs_diff.mean()),
        },
        "policies": {
            name: {
                "path": str(policies[name].relative_to(paths.root)),
                "layers": {str(layer): s for layer, s in per_layer.items()},
            }
            for name, per_layer in results.items()
        },
        "runs_without_final_policy": missing,
    }
    curves = {
        name: {"layer": list(per_layer), **{k: [s[k] for s in per_layer.values()] for k in ("within", "across", "gap")}}
        for name, per_layer in results.items()
    }
    plots = [
        plot_label_similarity(curves, paths.plots / SIMILARITY_PLOT),
        plot_similarity_vs_reward(
            {name: (abs_diff.tolist(), cos[-1].tolist()) for name, cos in pair_cos.items()},
            paths.plots / REWARD_PLOT,
            layer=layers[-1],
            spearman={name: per_layer[layers[-1]]["pair_spearman"] for name, per_layer in results.items()},
        ),
    ]
    write_json(paths.metrics / METRICS_FILE, out)
    metrics = {
        f"{name}.layer{layer}.{key}": value
        for name, per_layer in results.items()
        for layer, s in per_layer.items()
        for key, value in s.items()
    }
    return {"metrics": metrics, "artifacts": [paths.metrics / METRICS_FILE, *plots], "summary": out, "timings": timings}
