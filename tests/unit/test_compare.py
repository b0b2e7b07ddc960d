"""``r2m compare``: a method against every other one, paired by seed, with Holm's correction."""

from __future__ import annotations

import json

import pytest

from flows.compare import CompareError, compare, holm, main, p_value


def _results(values: dict[str, list[float]]) -> dict:
    runs = [
        {"algo": "grpo", "method": m, "seed": s, "metrics": {"gold@final": v}}
        for m, vs in values.items()
        for s, v in enumerate(vs)
    ]
    proto = {"algos": ["grpo"], "methods": list(values), "confidence": 0.95, "metrics": {"gold@final": "gold"}}
    return {"protocol": proto, "runs": runs}


def test_holm_steps_down_and_stops_at_the_first_kept_null():
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 in order of p
    assert holm([0.01, 0.04, 0.015, 0.03], 0.05) == [True, False, True, False]
    assert holm([0.001, None, 0.2], 0.05) == [True, None, False]
    assert holm([0.03, 0.03], 0.05) == [False, False]  # each would pass alone at 0.05
    assert holm([0.02, 0.02], 0.05) == [True, True]


def test_p_value_of_paired_differences():
    assert p_value([1.0]) is None
    assert p_value([0.0, 0.0, 0.0]) == 1.0
    assert p_value([0.5, 0.5]) == 0.0
    assert p_value([1.0, -1.0, 1.0, -1.0]) == pytest.approx(1.0)
    assert p_value([1.0, 1.1, 0.9, 1.05, 0.95]) < 1e-4


def test_compare_pairs_by_seed_against_every_other_method():
    res = _results(
        {
            "vanilla": [0.0, 1.0, 2.0, 3.0, 4.0],
            "r2m": [1.0, 2.1, 2.9, 4.0, 5.05],  # vanilla + about 1 in every seed
            "kl": [5.0, -3.0, 2.0, 9.0, -1.0],  # far apart, no consistent sign
        }
    )
    out = compare(res, "r2m", ["gold@final"])
    rows = {r["other"]: r for r in out["rows"]}
    assert set(rows) == {"vanilla", "kl"} and out["comparisons"] == 2
    assert rows["vanilla"]["mean"] == pytest.approx(1.01)
    assert [d["difference"] for d in rows["vanilla"]["per_seed"]] == pytest.approx([1.0, 1.1, 0.9, 1.0, 1.05])
    assert rows["vanilla"]["verdict"] == "higher" and rows["vanilla"]["verdict_holm"] == "higher"
    assert rows["kl"]["verdict"] == "tie" and rows["kl"]["verdict_holm"] == "tie"


def test_unknown_method_metric_or_missing_file_is_one_line(tmp_path, capsys):
    with pytest.raises(CompareError, match="--method 'par'"):
        compare(_results({"vanilla": [0.0, 1.0], "r2m": [1.0, 2.0]}), "par", ["gold@final"])
    with pytest.raises(SystemExit, match="no results.json"):
        main(["--results", str(tmp_path), "--method", "r2m"])
    (tmp_path / "results.json").write_text(json.dumps(_results({"vanilla": [0.0, 1.0], "r2m": [1.0, 2.5]})))
    with pytest.raises(SystemExit, match="unknown nope"):
        main(["--results", str(tmp_path), "--method", "r2m", "--metrics", "nope"])
    main(["--results", str(tmp_path), "--method", "r2m", "--metrics", "gold@final"])
    assert "| grpo | r2m - vanilla | gold@final | +1.250 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "compare-r2m.json").read_text())
    assert saved["rows"][0]["n"] == 2 and (tmp_path / "compare-r2m.md").exists()
