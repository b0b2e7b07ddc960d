"""PolicyFeedbackAttention, blend and gaussian_like on toy tensors, with hand-computed attention."""

import math

import pytest
import torch

from r2m.models.feedback import PolicyFeedbackAttention, blend, gaussian_like


def random_mask(b: int, s: int, generator: torch.Generator) -> torch.Tensor:
    """[B, S] right-padded mask with 1..S real tokens per row."""
    lengths = torch.randint(1, s + 1, (b,), generator=generator)
    return torch.arange(s)[None, :] < lengths[:, None]


def set_weight(linear: torch.nn.Linear, rows: list[list[float]]) -> None:
    """nn.Linear computes x W^T, so `rows` is W^T's transpose: out[i] = sum_j rows[i][j] * x[j]."""
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(rows))


# --- shapes and masking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b, s, d_p, d_rm, attn_dim, heads",
    [(2, 5, 8, 6, None, 1), (3, 7, 4, 12, None, 3), (1, 1, 5, 5, 8, 2), (4, 3, 16, 8, 32, 4)],
)
def test_output_shape(b, s, d_p, d_rm, attn_dim, heads):
    g = torch.Generator().manual_seed(0)
    attn = PolicyFeedbackAttention(d_rm, d_p, attn_dim=attn_dim, num_heads=heads)
    out = attn(torch.randn(b, d_rm, generator=g), torch.randn(b, s, d_p, generator=g), random_mask(b, s, g))
    assert out.shape == (b, d_rm)
    assert attn.attn_dim == (d_rm if attn_dim is None else attn_dim)


def test_attn_dim_must_divide_heads():
    with pytest.raises(ValueError):
        PolicyFeedbackAttention(6, 4, attn_dim=10, num_heads=3)


@pytest.mark.parametrize("heads", [1, 2])
def test_padding_does_not_change_output(heads):
    g = torch.Generator().manual_seed(1)
    b, s, d_p, d_rm = 4, 6, 8, 8
    attn = PolicyFeedbackAttention(d_rm, d_p, num_heads=heads)
    rte, feedback, mask = (
        torch.randn(b, d_rm, generator=g),
        torch.randn(b, s, d_p, generator=g),
        random_mask(b, s, g),
    )
    mask[0, -1] = False  # at least one padded position
    out = attn(rte, feedback, mask)

    pad = ~mask[..., None]
    changed = torch.where(pad, 1e4 * torch.randn(b, s, d_p, generator=g), feedback)
    assert torch.allclose(attn(rte, changed, mask), out)
    poisoned = feedback.masked_fill(pad, float("nan"))  # garbage at padding must not leak through 0 * nan
    assert torch.allclose(attn(rte, poisoned, mask), out)
    assert torch.allclose(attn(rte, feedback, mask.long()), out)  # 1/0 masks behave like bool masks


def test_fully_masked_row_is_finite_zero_and_isolated():
    g = torch.Generator().manual_seed(2)
    attn = PolicyFeedbackAttention(6, 4, num_heads=2)
    rte, feedback = torch.randn(3, 6, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    rte.requires_grad_()

    out = attn(rte, feedback, mask)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    assert torch.allclose(out[[0, 2]], attn(rte[[0, 2]], feedback[[0, 2]], mask[[0, 2]]))

    out.sum().backward()
    assert torch.isfinite(rte.grad).all()


# --- hand computations --------------------------------------------------------------------------------------


def test_single_token_hand_value():
    """S = 1: A = 1 whatever q and k are, so Hhat = h W_v W_o."""
    attn = PolicyFeedbackAttention(2, 2)
    set_weight(attn.to_q, [[1.0, 0.0], [0.0, 1.0]])
    set_weight(attn.to_k, [[1.0, 0.0], [0.0, 1.0]])
    set_weight(attn.to_v, [[2.0, 0.0], [0.0, 2.0]])
    set_weight(attn.to_out, [[0.0, 1.0], [1.0, 0.0]])  # swap the two features

    out = attn(torch.tensor([[0.7, -0.3]]), torch.tensor([[[3.0, 5.0]]]), torch.ones(1, 1))
    assert out.tolist() == [pytest.approx([10.0, 6.0])]  # v = [6, 10], swapped


def test_two_tokens_identity_weights_hand_value():
    """W = I, d = 2: scores = q.k / sqrt(2) with q = H = [1, 0], k = v = h."""
    attn = PolicyFeedbackAttention(2, 2)
    for proj in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
        set_weight(proj, [[1.0, 0.0], [0.0, 1.0]])
    h = [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]  # last token is padding

    s0, s1 = 1.0 / math.sqrt(2), 3.0 / math.sqrt(2)
    a0, a1 = math.exp(s0) / (math.exp(s0) + math.exp(s1)), math.exp(s1) / (math.exp(s0) + math.exp(s1))
    expected = [a0 * 1.0 + a1 * 3.0, a0 * 2.0 + a1 * 4.0]

    out = attn(torch.tensor([[1.0, 0.0]]), torch.tensor([h]), torch.tensor([[1, 1, 0]]))
    assert out.tolist() == [pytest.approx(expected, rel=1e-6)]


def test_two_heads_hand_value():
    """Two heads of width 1: head 0 attends on feature 0, head 1 has q = 0 so it averages feature 1."""
    attn = PolicyFeedbackAttention(2, 2, num_heads=2)
    for proj in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
        set_weight(proj, [[1.0, 0.0], [0.0, 1.0]])
    h = [[1.0, 2.0], [3.0, 4.0]]

    a0, a1 = math.exp(1.0) / (math.exp(1.0) + math.exp(3.0)), math.exp(3.0) / (math.exp(1.0) + math.exp(3.0))
    expected = [a0 * 1.0 + a1 * 3.0, (2.0 + 4.0) / 2]

    out = attn(torch.tensor([[1.0, 0.0]]), torch.tensor([h]), torch.ones(1, 2))
    assert out.tolist() == [pytest.approx(expected, rel=1e-6)]


def test_gradients_reach_all_projections():
    g = torch.Generator().manual_seed(3)
    attn = PolicyFeedbackAttention(6, 4, num_heads=2)
    out = attn(torch.randn(3, 6, generator=g), torch.randn(3, 5, 4, generator=g), torch.ones(3, 5))
    out.pow(2).sum().backward()
    for proj in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
        assert proj.weight.grad is not None and (proj.weight.grad != 0).any()


def test_init_keeps_hhat_small():
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    attn = PolicyFeedbackAttention(32, 32)
    rte, feedback = torch.randn(8, 32, generator=g), torch.randn(8, 10, 32, generator=g)
    out = attn(rte, feedback, torch.ones(8, 10))
    assert out.norm(dim=-1).mean() < 0.5 * rte.norm(dim=-1).mean()


# --- blend --------------------------------------------------------------------------------------------------


def test_blend():
    rte, attended = torch.tensor([[1.0, 2.0]]), torch.tensor([[-3.0, 5.0]])
    assert torch.equal(blend(rte, attended, 1.0), rte)
    assert torch.equal(blend(rte, attended, 0.0), attended)
    assert blend(rte, attended, 0.6).tolist() == [pytest.approx([0.4 * -3.0 + 0.6 * 1.0, 0.4 * 5.0 + 0.6 * 2.0])]


# --- gaussian_like ------------------------------------------------------------------------------------------


def test_gaussian_like_matches_real_statistics():
    g = torch.Generator().manual_seed(5)
    b, s, d = 2, 200, 64
    feedback = torch.empty(b, s, d)
    feedback[0] = 3.0 + 2.0 * torch.randn(s, d, generator=g)  # mean 3, var 4
    feedback[1] = -1.0 + 0.5 * torch.randn(s, d, generator=g)  # mean -1, var 0.25
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[:, 150:] = False
    feedback[~mask] = 1e6  # must not leak into the statistics

    noise = gaussian_like(feedback, mask, generator=g)
    assert noise.shape == feedback.shape
    assert (noise[~mask] == 0).all()

    for i, (mean, var) in enumerate([(3.0, 4.0), (-1.0, 0.25)]):
        real = noise[i][mask[i]]
        assert real.mean().item() == pytest.approx(mean, abs=0.1 * math.sqrt(var))
        assert real.var().item() == pytest.approx(var, rel=0.05)
        # it is noise: no correlation with the feedback it replaces
        x = feedback[i][mask[i]]
        corr = torch.corrcoef(torch.stack([real.flatten(), x.flatten()]))[0, 1]
        assert abs(corr.item()) < 0.05


def test_gaussian_like_reproducible_and_detached():
    feedback = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    a = gaussian_like(feedback, mask, generator=torch.Generator().manual_seed(7))
    b = gaussian_like(feedback, mask, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not a.requires_grad
    assert (a[1] == 0).all()  # a sample with no real token gives zeros


def test_public_import_path():
    import r2m.models

    assert r2m.models.PolicyFeedbackAttention is PolicyFeedbackAttention
