"""The RL adapter's pieces on hand-made tensors: batching, KL, group spread, the reward callable, summaries."""

import math

import pytest
import torch

from r2m.evaluation.text_stats import batch_stats, repeated_trigrams
from r2m.rl.callbacks import is_timing
from r2m.rl.policy_pass import PolicyPass, feedback_ids, pad_rows, response_logps, sample_rows
from r2m.rl.reward import RewardFunction, group_std
from r2m.rl.runner import latest_checkpoint, summarise, summarise_timings


def test_feedback_ids_cover_prompt_and_response_but_its_last_token():
    ids, mask = feedback_ids([[1, 2], [3]], [[4], [5, 6, 7]], pad_id=0)
    assert ids.tolist() == [[1, 2, 0], [3, 5, 6]]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="at least one prompt token and one response token"):
        feedback_ids([[1]], [[]], pad_id=0)


class _LM:
    """A causal LM stand-in whose LM head is the identity on 2-d states (logits = state)."""

    def __init__(self) -> None:
        self.head = torch.nn.Linear(2, 2, bias=False)
        self.head.weight.data = torch.eye(2)

    def get_output_embeddings(self):
        return self.head


def test_response_logps_hand_value():
    # prompt of 2 positions, response [1, 1]: produced by the states at positions 1 and 2
    states = torch.tensor([[[9.0, 9.0], [0.0, 0.0], [0.0, 2.0]]])
    got = response_logps(_LM(), states, [2], [[1, 1]])
    want = math.log(0.5) + math.log(1 / (1 + math.exp(-2)))
    assert got.shape == (1,) and abs(float(got.detach()) - want) < 1e-6


def test_pad_rows_and_monitor_sample_rows():
    out, mask = pad_rows([torch.ones(2, 3), torch.ones(1, 3)])
    assert out.shape == (2, 2, 3) and mask.tolist() == [[1, 1], [1, 0]] and float(out[1, 1].abs().sum()) == 0.0
    assert sample_rows(8, 4, 2) == [0, 4]  # the first response of each of the 2 prompts
    assert sample_rows(8, 4, 3) == [0, 1, 4]
    assert sample_rows(8, 4, 0) == list(range(8)) == sample_rows(8, 4, 99)


def test_group_std_population():
    r = torch.tensor([1.0, 3.0, 5.0, 5.0])
    assert abs(group_std(r, 2) - 0.5) < 1e-6  # groups [1,3] std 1, [5,5] std 0
    assert math.isnan(group_std(torch.ones(3), 2))


def test_text_stats():
    assert repeated_trigrams("a b c a b c") == 1
    assert repeated_trigrams("jake: jake: jake: jake: jake:") == 2
    s = batch_stats(["one two", "x x x x"])
    assert s["completion_words"] == 3.0


class _Monitor:
    """KL measured on rows 0 and 2 only (as with rl.monitor_sample = 2), NaN elsewhere."""

    tokenizer = None

    def __init__(self, skip: tuple[int, ...] = ()) -> None:
        self.skip = skip  # steps the monitor does not measure (as with rl.monitor_every > 1)

    def rollout(self, completion_ids, step=0):
        n = len(completion_ids)
        rows = [] if step in self.skip else [0, 2]
        kl = torch.tensor([1.0, float("nan"), 2.0, float("nan")])[:n] if rows else torch.full((n,), float("nan"))
        return PolicyPass(kl=kl, feedback=None, mask=torch.ones(n, 1), prompt_ids=[[0]] * n, rows=rows)


def test_reward_function_returns_scores_and_logs_metrics():
    logged = {}
    scorer = lambda texts, ppass, step, **kw: torch.tensor([float(len(t)) for t in texts])  # noqa: E731
    gold = lambda ids, comps: [1.0 if i == "a" else -1.0 for i in ids]  # noqa: E731
    fn = RewardFunction(scorer, _Monitor(), num_generations=2, gold=gold)
    out = fn(
        ["p", "p", "q", "q"],
        ["x", "xx", "y", "yyy"],
        completion_ids=[[1], [1], [1], [1]],
        post_id=["a", "a", "b", "b"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    assert out == [2.0, 3.0, 2.0, 4.0]
    assert logged["train_reward"] == 2.75
    assert "proxy_reward" not in logged  # no frozen RMs given: nothing claims to be the proxy
    assert logged["gold_score"] == 0.0
    assert logged["kl_to_ref"] == 1.5  # the mean over the monitored rows only
    assert abs(logged["train_group_std"] - 0.75) < 1e-6  # (0.5 + 1.0) / 2
    assert fn.last_batch["completions"] == ["x", "xx", "y", "yyy"]
    with pytest.raises(ValueError, match="completion_ids"):
        fn(["p"], ["x"])


def test_a_step_the_monitor_skips_logs_no_kl_and_no_heldout_score():
    from r2m.rl.reward import FrozenRMs

    class State:
        global_step = 5

    proxy, heldout = _RM(10.0), _RM(-1.0)
    frozen = FrozenRMs(proxy, heldout)
    scorer = lambda texts, ppass, step, **kw: torch.zeros(len(texts))  # noqa: E731
    fn = RewardFunction(scorer, _Monitor(skip=(5,)), num_generations=2, frozen=frozen)
    logged: dict = {}
    kw = {"completion_ids": [[1]] * 4, "log_metric": lambda k, v: logged.__setitem__(k, v), "trainer_state": State()}
    fn(["p", "p", "q", "q"], ["x", "xx", "y", "yyy"], **kw)
    assert "kl_to_ref" not in logged and "heldout_reward" not in logged
    assert logged["proxy_reward"] == pytest.approx(10 * (2 + 3 + 2 + 4) / 4)  # every row of every step
    assert heldout.calls == 0  # no row to score: the held-out RM did not run
    State.global_step = 6
    logged.clear()
    fn(["p", "p", "q", "q"], ["x", "xx", "y", "yyy"], **kw)
    assert logged["kl_to_ref"] == 1.5 and logged["heldout_reward"] == pytest.approx(-2.0)  # rows 0 and 2


def test_summarise_windows_are_steps_for_a_key_measured_every_kth_step():
    rows = [{"step": s, "proxy_reward": float(s)} for s in range(40)]
    for r in rows:
        if r["step"] % 4 == 0 or r["step"] == 39:
            r["kl_to_ref"] = float(r["step"])
    s = summarise(rows)  # tail: 4 steps
    assert s["proxy_reward_final"] == pytest.approx((36 + 37 + 38 + 39) / 4)
    assert s["kl_to_ref_final"] == pytest.approx((36 + 39) / 2)  # the measured steps among the last 4
    assert s["kl_to_ref_initial"] == 0.0 and s["kl_to_ref_max"] == 39.0


class _RM:
    """A stand-in reward model: score = scale x text length + shift; counts its trunk passes (``embed_texts``)."""

    def __init__(self, scale: float = 10.0, shift: float = 0.0) -> None:
        self.scale, self.shift, self.calls = scale, shift, 0
        self.trunk = object()

    def eval(self):
        return self

    def requires_grad_(self, flag):
        return self

    def embed_texts(self, texts, max_length=512):
        self.calls += 1
        return torch.tensor([[float(len(t))] for t in texts])

    def score_texts(self, texts, max_length=512):
        return self.score_embeddings(self.embed_texts(texts))

    def score_embeddings(self, rte):
        return self.scale * rte.sum(-1) + self.shift


def test_frozen_rms_log_the_same_proxy_for_every_method():
    from r2m.rl.reward import FrozenRMs, VanillaScorer

    proxy, heldout = _RM(10.0), _RM(-1.0)
    frozen = FrozenRMs(proxy, heldout)
    texts = ["a", "bb"]
    # vanilla: the scorer is the proxy RM itself -> its rewards are reused, no second forward
    vanilla = VanillaScorer.__new__(VanillaScorer)
    vanilla.rm = proxy
    out = frozen(texts, vanilla, torch.tensor([10.0, 20.0]), step=0)
    assert out["proxy_reward"].tolist() == [10.0, 20.0] and proxy.calls == 0
    assert out["heldout_reward"].tolist() == [-1.0, -2.0]
    # the held-out RM scores the monitored rows only
    assert frozen(texts, vanilla, torch.tensor([10.0, 20.0]), step=0, rows=[1])["heldout_reward"].tolist() == [-2.0]
    # another method's reward (here: 0) never leaks into the proxy column
    other = lambda texts, ppass, step: torch.zeros(len(texts))  # noqa: E731
    out = frozen(texts, other, torch.zeros(2), step=0)
    assert out["proxy_reward"].tolist() == [10.0, 20.0] and proxy.calls == 1
    # a scorer embedding with the proxy's trunk (R2M): only the score head runs, on the cached embeddings
    r2m_like = type("S", (), {"rm": proxy, "cache": {"step": 3, "rte": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}})()
    out = frozen(texts, r2m_like, torch.zeros(2), step=3)
    assert out["proxy_reward"].tolist() == [30.0, 70.0] and proxy.calls == 1
    # a stale cache (another step) is not used
    out = frozen(texts, r2m_like, torch.zeros(2), step=4)
    assert out["proxy_reward"].tolist() == [10.0, 20.0] and proxy.calls == 2


def test_a_heldout_rm_on_the_proxys_trunk_scores_the_cached_embeddings():
    from r2m.rl.reward import FrozenRMs

    proxy, heldout = _RM(10.0), _RM(-1.0)
    heldout.trunk = proxy.trunk  # two heads on one frozen trunk (smol)
    frozen = FrozenRMs(proxy, heldout)
    r2m_like = type("S", (), {"rm": proxy, "cache": {"step": 3, "rte": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}})()
    out = frozen(["a", "bb"], r2m_like, torch.zeros(2), step=3, rows=[1])
    assert out["heldout_reward"].tolist() == [-7.0]  # its head on the cached row 1, not its own pass over "bb"
    assert proxy.calls == 0 and heldout.calls == 0
    # a stale cache: one proxy pass, and the held-out head reads its embeddings
    out = frozen(["a", "bb"], r2m_like, torch.zeros(2), step=4, rows=[1])
    assert out["heldout_reward"].tolist() == [-2.0] and proxy.calls == 1 and heldout.calls == 0


def test_summarise_finds_gold_peak():
    rows = [{"step": i + 1, "proxy_reward": i, "gold_score": -abs(i - 10), "kl_to_ref": i} for i in range(40)]
    s = summarise(rows)
    assert s["proxy_reward_final"] > s["proxy_reward_initial"]
    assert 8 <= s["gold_peak_step"] <= 14
    # KL at the peak: the mean over the gold window (10 steps around it), not one noisy step
    assert s["kl_at_gold_peak"] == pytest.approx(sum(range(5, 15)) / 10)  # the first of two tied windows
    assert not any(is_timing(k) for k in s)


def test_timings_are_summarised_apart():
    rows = [{"step": i + 1, "step_time_s": 0.5, "r2m_update_s": 0.1, "rss_gb": 1.0 + i} for i in range(40)]
    t = summarise_timings(rows)
    assert t == pytest.approx({"seconds_per_step": 0.5, "r2m_update_seconds": 0.1, "peak_rss_gb": 40.0})
    assert is_timing("step_time") and is_timing("r2m_feedback_forward_s") and is_timing("rss_gb")
    assert not is_timing("kl_to_ref") and not is_timing("r2m_bt") and not is_timing("proxy_group_std")


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "nothing") is None
    for n in (2, 10, 4):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")  # complete (test_partial_files.py)
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
