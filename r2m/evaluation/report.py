"""Markdown tables of the results: the pipeline's summary (``metrics/summary.md``, the table the README shows) and
the judge reports of ``r2m judge`` / ``r2m evaluate`` (``reports/<judge>/*.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2m.config import Config
from r2m.data.io import read_json

# ---- the pipeline's summary table (report stage) -------------------------------------------------------------------

COLUMNS = [
    ("run", "run", None),
    ("proxy start -> end", "proxy", None),
    ("own reward start -> end", "own", None),
    ("gold start -> peak (step) -> end", "gold", None),
    ("KL at peak / end", "kl", None),
    ("gold: final / best proxy / best held-out / oracle round", "ckpt_gold", None),
    ("win vs SFT: final [95% CI]", "win_sft_final", None),
    ("win vs SFT: best held-out [95% CI]", "win_sft_heldout", None),
    ("win vs ref: final [95% CI]", "win_ref_final", None),
    ("RM acc (RM-test)", "rm_test.accuracy", "{:.3f}"),
    ("RM acc (policy pairs)", "rm_policy_pairs.accuracy", "{:.3f}"),
    ("rep. trigrams end", "rl.repeated_trigrams_final", "{:.1f}"),
    ("words end", "rl.completion_words_final", "{:.1f}"),
]
# "proxy" is the frozen vanilla RM's score of the rollouts (the same quantity for every method); "own reward" is what
# the method trained on (for vanilla the proxy itself; for R2M its online-updated reward)
# wall-clock and memory, from timings/*.json (kept apart from the quality table, which is bitwise reproducible)
TIMING_COLUMNS = [
    ("run", "run", None),
    ("RL s/step", "rl.seconds_per_step", "{:.3f}"),
    ("R2M update s/step", "rl.r2m_update_seconds", "{:.3f}"),
    ("peak RSS GB", "rl.peak_rss_gb", "{:.2f}"),
    ("RL stage s", "rl.stage_seconds", "{:.0f}"),
    ("evaluate stage s", "evaluate.stage_seconds", "{:.0f}"),
]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _win(rep: dict | None) -> str | None:
    if not rep or rep.get("win_rate_ties_half") is None:
        return None
    return f"{rep['win_rate_ties_half']:.2f} [{rep['ci_low']:.2f}, {rep['ci_high']:.2f}]"


def _span(rl: dict, key: str) -> str | None:
    if f"{key}_initial" not in rl:
        return None
    return f"{rl[f'{key}_initial']:.2f} -> {rl[f'{key}_final']:.2f}"


def summary_row(run: str, rl: dict, ev: dict) -> dict:
    row = {"run": run, "rl": rl, **ev, "proxy": _span(rl, "proxy_reward"), "own": _span(rl, "train_reward")}
    if "gold_score_initial" in rl:
        row["gold"] = (
            f"{rl['gold_score_initial']:.2f} -> {rl['gold_peak_ma']:.2f} ({rl['gold_peak_step']})"
            f" -> {rl['gold_score_final']:.2f}"
        )
    if "kl_to_ref_final" in rl:
        peak = rl.get("kl_at_gold_peak")
        row["kl"] = f"{'-' if peak is None else f'{peak:.1f}'} / {rl['kl_to_ref_final']:.1f}"
    ck = ev.get("checkpoints") or {}
    if ck:
        row["ckpt_gold"] = " / ".join(
            f"{ck[c]['gold']:.2f} (r{ck[c]['round']})" if "gold" in ck.get(c, {}) else "-"
            for c in ("final", "best_proxy", "best_heldout", "oracle")
        )
        row["win_sft_final"] = _win((ck.get("final") or {}).get("vs_sft"))
        row["win_sft_heldout"] = _win((ck.get("best_heldout") or {}).get("vs_sft"))
        row["win_ref_final"] = _win((ck.get("final") or {}).get("vs_reference"))
    return row


CHOICE_LABELS = {
    "final": "final round",
    "best_proxy": "best by proxy",
    "best_heldout": "best by held-out RM",
    "oracle": "gold oracle",
}


def checkpoint_table(rows: list[dict]) -> str:
    """One row per run and checkpoint choice (``metrics/eval/<run>.json``'s ``checkpoints``): round, gold, proxy,
    held-out RM, gold win rates vs SFT and vs the references with 95% CIs ("" when no run has checkpoints)."""
    lines = []
    for r in rows:
        for choice, label in CHOICE_LABELS.items():
            c = (r.get("checkpoints") or {}).get(choice)
            if not c:
                continue
            held = "-" if c.get("heldout") is None else f"{c['heldout']:.2f}"
            gold = "-" if c.get("gold") is None else f"{c['gold']:.2f}"
            lines.append(
                f"| {r['run']} | {label} | {c['round']} ({c['step']}) | {gold} | {c['proxy']:.2f} | {held} "
                f"| {_win(c.get('vs_sft')) or '-'} | {_win(c.get('vs_reference')) or '-'} |"
            )
    if not lines:
        return ""
    head = (
        "| run | checkpoint | round (step) | gold | proxy | held-out RM | win vs SFT [95% CI] | win vs ref [95% CI] |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(lines) + "\n"


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str | None]] = COLUMNS) -> str:
    head = "| " + " | ".join(c for c, _, _ in columns) + " |"
    sep = "|" + "---|" * len(columns)
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, fmt in columns:
            v = _get(r, key)
            cells.append("-" if v is None else (fmt.format(v) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timings_table(timings: dict[str, dict], runs: list[str]) -> str:
    """Wall-clock table from ``timings/<stage>[-<run>].json`` contents keyed by file stem: one row per run, then one
    line with the other stages' seconds."""
    rows = [{"run": r, "rl": timings.get(f"rl-{r}", {}), "evaluate": timings.get(f"evaluate-{r}", {})} for r in runs]
    per_run = {f"{s}-{r}" for r in runs for s in ("rl", "evaluate")}
    others = ", ".join(
        f"{k} {v['stage_seconds']:.0f} s" for k, v in timings.items() if k not in per_run and "stage_seconds" in v
    )
    return markdown_table(rows, TIMING_COLUMNS) + (f"\nOther stages: {others}.\n" if others else "")


def timings_report(timings_dir: Path, runs: list[str]) -> str:
    """:func:`timings_table` of the ``timings/*.json`` files under ``timings_dir`` (the last run of each stage)."""
    found = {f.stem: read_json(f) for f in sorted(Path(timings_dir).glob("*.json"))}
    return timings_table(found, runs)


def summary_header(cfg: Config, rm: dict, sft: dict, bon: dict | None = None) -> str:
    """The lines above the summary table, from ``metrics/reward_model.json``, ``metrics/sft.json`` and
    ``metrics/best_of_n.json``."""
    held = rm.get("heldout_rm") or {}
    held_txt = f", held-out RM {held['test_accuracy']:.3f} ({held['n_train']} pairs)" if held else ""
    if "gold_mean" not in sft:  # a real dataset: no gold judge; its test pairs carry the dataset's labels
        return (
            f"Profile `{cfg.profile}`, seed {cfg.seed}, {cfg.rl.steps} RL steps. RM-test accuracy (the dataset's test "
            f"pairs, its own labels): proxy RM {rm['test_accuracy']:.3f} ({rm['n_train']} training pairs){held_txt}. "
            "No gold judge (a real dataset).\n\n"
            + (
                f"Best-of-n with the proxy, held-out RM as truth: {bon['verdict']}\n\n"
                if bon and bon.get("verdict")
                else ""
            )
        )
    out = (
        f"Profile `{cfg.profile}`, seed {cfg.seed}, {cfg.rl.steps} RL steps. RM-test accuracy (SFT samples, gold "
        f"labels): proxy RM {rm['test_accuracy']:.3f} ({rm['n_train']} training pairs){held_txt}. SFT gold mean "
        f"{sft.get('gold_mean', float('nan')):.2f}.\n\n"
    )
    if bon and bon.get("verdict"):
        out += f"Best-of-n with the proxy ({bon.get('n_prompts', '?')} eval prompts): {bon['verdict']}\n\n"
    return out


def hidden_state_line(hs: dict) -> str:
    """One summary line from ``metrics/hidden_states.json``: per policy, the within-vs-across cosine gap (with its
    permutation p-value) and the Spearman correlation of pair cosine with |reward difference| at the last analysed
    layer ("" if incomplete)."""
    layers, policies = hs.get("layers") or [], hs.get("policies") or {}
    if not layers or not policies:
        return ""
    last = str(layers[-1])
    parts = []
    for name in sorted(policies, key=lambda name: name != "sft"):  # the SFT policy first
        s = (policies[name].get("layers") or {}).get(last) or {}
        if all(isinstance(s.get(k), int | float) for k in ("gap", "pair_spearman")):
            p_value = f" (p {s['gap_p_value']:.3f})" if isinstance(s.get("gap_p_value"), int | float) else ""
            parts.append(f"{name} gap {s['gap']:+.3f}{p_value}, Spearman {s['pair_spearman']:+.2f}")
    if not parts:
        return ""
    return (
        f"Hidden states ({hs.get('n', '?')} RM-test pairs, layer {last}): within-minus-across-label cosine gap and "
        f"Spearman(pair cosine, |reward difference|): {'; '.join(parts)}.\n\n"
    )


# ---- judge reports (r2m judge / r2m evaluate) ----------------------------------------------------------------------


def _rate(rep: dict) -> str:
    if rep.get("win_rate_ties_half") is None:
        return "-"
    return f"{rep['win_rate_ties_half']:.2f} [{rep['ci_low']:.2f}, {rep['ci_high']:.2f}]"


def _fmt(value: Any, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


WIN_HEADER = (
    "| A | B | n | wins / ties / losses / invalid | win rate | win rate (ties 1/2) [95% CI] | LC win rate "
    "| position consistency | agreement with gold |\n|---|---|---|---|---|---|---|---|---|\n"
)


def _agreement(rep: dict) -> str:
    g = rep.get("gold_agreement")
    if not g or g["agreement"] is None:
        return "-"
    return f"{g['agreement']:.2f} ({g['n_compared']})"


def win_row(a: str, b: str, rep: dict) -> str:
    """One Markdown row of the win-rate table."""
    counts = f"{rep['wins']} / {rep['ties']} / {rep['losses']} / {rep['invalid']}"
    return (
        f"| {a} | {b} | {rep['n']} | {counts} | {_fmt(rep['win_rate'])} | {_rate(rep)} | "
        f"{_fmt(rep.get('lc_win_rate'))} | {_fmt(rep['position_consistency'])} | {_agreement(rep)} |\n"
    )


def _usage_line(u: dict) -> str:
    """``Judge usage: requests 12, cache_hits 0, ...`` from a judge's usage counters."""
    items = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in u.items() if isinstance(v, int | float)]
    return f"Judge usage: {', '.join(items)}.\n" if items else ""


def render_comparison(label: str, n_prompts: int, a: str, b: str, report: dict, usage: dict) -> str:
    """The Markdown of one ``r2m judge`` comparison: a one-row win-rate table and the judge's usage."""
    md = f"Judge `{label}` on {n_prompts} eval prompts, both orders.\n\n"
    md += WIN_HEADER + win_row(a, b, report)
    return md + "\n" + _usage_line(usage)


def calibrated_table(win: list[dict]) -> str:
    """The position-calibrated rates (judges that report P(A), P(B)); "" when no comparison has them."""
    rows = [w for w in win if w.get("position_calibrated")]
    if not rows:
        return ""
    out = (
        "\nPosition-calibrated (the winner by P(A), P(B) averaged over both orders; Wang et al. 2023):\n\n"
        "| A | B | wins / ties / losses / invalid | win rate (ties 1/2) [95% CI] | agreement with gold |\n"
        "|---|---|---|---|---|\n"
    )
    for w in rows:
        c = w["position_calibrated"]
        counts = f"{c['wins']} / {c['ties']} / {c['losses']} / {c['invalid']}"
        out += f"| {w['a']} | {w['b']} | {counts} | {_rate(c)} | {_agreement(c)} |\n"
    return out


def render_report(cfg: Config, label: str, report: dict) -> str:
    """The Markdown evaluation report of ``r2m evaluate`` (``report`` as written to ``reports/<judge>/report.json``)."""
    lines = [
        f"# Evaluation report: judge `{label}`\n\n",
        f"Profile `{cfg.profile}`, seed {cfg.seed}, {report['n_prompts']} eval prompts; every pair judged in both "
        "orders (disagreement = tie, unparseable = invalid, excluded from rates). 95% CI: bootstrap over prompts. "
        "LC: length-controlled (AlpacaEval-2 style, word counts).\n\n",
        "## Win rates (A = model under test)\n\n",
        WIN_HEADER + "".join(win_row(w["a"], w["b"], w) for w in report["win_rates"]),
        calibrated_table(report["win_rates"]),
        "\n## Reward-model accuracy (strict: ties are wrong)\n\n",
        "| run | held-out pairs: acc / ECE (n) | policy pairs labelled by this judge*: acc / ECE (n) |\n",
        "|---|---|---|\n",
    ]
    for run, a in report["reward_accuracy"].items():
        cells = []
        for k in ("rm_test", "policy_pairs"):
            v = a.get(k)
            cells.append("-" if not v else f"{v['accuracy']:.3f} / {v['ece']:.3f} ({v['n']})")
        lines.append(f"| {run} | {cells[0]} | {cells[1]} |\n")
    lines.append(
        "\n*Two samples per prompt from the final policy; pairs the judge ties are dropped; a judge reporting P(A), "
        "P(B) labels by its position-calibrated verdicts.\n"
    )
    lines.append("\n## Over-optimisation (RL run: proxy vs gold reward)\n\n")
    lines.append("| run | proxy start -> end | gold start -> peak (step) -> end | KL end | words end |\n")
    lines.append("|---|---|---|---|---|\n")
    for run, o in report["over_optimisation"].items():
        if not o:
            lines.append(f"| {run} | - | - | - | - |\n")
            continue
        gold = (
            f"{_fmt(o.get('gold_score_initial'))} -> {_fmt(o.get('gold_peak_ma'))} ({o.get('gold_peak_step', '-')})"
            f" -> {_fmt(o.get('gold_score_final'))}"
        )
        proxy = f"{_fmt(o.get('proxy_reward_initial'))} -> {_fmt(o.get('proxy_reward_final'))}"
        lines.append(
            f"| {run} | {proxy} | {gold} | {_fmt(o.get('kl_to_ref_final'), '{:.1f}')} | "
            f"{_fmt(o.get('completion_words_final'), '{:.1f}')} |\n"
        )
    lines.append("\nPlots: `plots/proxy_vs_gold.png`, `plots/gold_vs_kl.png`, `plots/length.png`.\n")
    line = _usage_line(report["usage"])
    if line:
        lines.append("\n" + line)
    return "".join(lines)
