"""Hidden-state analysis: do the policy's own hidden states separate preferred from dispreferred responses?

R2M's motivation (docs/method.md): mean-pooled policy hidden states of chosen responses are
more similar to each other than to rejected ones, the gap grows with depth, and hidden-state similarity falls as the
reward difference grows. This module is the maths (no file I/O); :mod:`r2m.evaluation.hidden_analysis` runs it on
policy checkpoints and ``tasks/hidden_states.py`` is the stage.

Shapes: L = analysed layers, N = (chosen, rejected) pairs, H = hidden size, B = batch, S = prompt + response tokens,
M = number of response pairs compared. Layer indices are ``hidden_states`` indices of a causal LM: 0 = the token
embeddings, ``num_hidden_layers`` = the last layer (for GPT-NeoX and Llama, after the final norm: the states the LM
head and the R2M cross-attention read).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from r2m.models.reward_model import trunk_of

log = logging.getLogger(__name__)

DEFAULT_NUM_LAYERS = 4  # analysis.layers empty: this many evenly spaced layers, embeddings and last layer included


def resolve_layers(layers: Sequence[int], num_hidden_layers: int) -> list[int]:
    """Sorted, de-duplicated non-negative ``hidden_states`` indices.

    ``layers`` may hold negative indices (-1 = last layer); empty = :data:`DEFAULT_NUM_LAYERS` evenly spaced from 0 to
    ``num_hidden_layers`` (fewer when the model has fewer states). Out-of-range indices are a ``ValueError``.
    """
    n_states = num_hidden_layers + 1
    if not layers:
        return sorted({int(v) for v in np.rint(np.linspace(0, num_hidden_layers, DEFAULT_NUM_LAYERS))})
    out = set()
    for layer in layers:
        if not -n_states <= layer < n_states:
            raise ValueError(
                f"analysis.layers: layer {layer} is out of range: the model has {n_states} hidden states "
                f"(0 = embeddings ... {num_hidden_layers} = last layer; negative indices count from the end)"
            )
        out.add(layer % n_states)
    return sorted(out)


def tokenize_prompt_responses(
    tok, prompts: Sequence[str], response_sets: Sequence[Sequence[str]], max_length: int
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Token ids of N prompts and of K sets of N responses, each text tokenized on its own (a response's tokens follow
    the prompt's, as when the policy generated it; no special tokens added): -> ``[N][*]`` and ``[K][N][*]``.

    Every prompt + response fits ``max_length``: a response keeps its first ``max_length`` tokens, the prompt its last
    tokens that fit beside the longest of its K responses. An empty response is a ``ValueError`` (nothing to pool).
    """
    n = len(prompts)
    for k, responses in enumerate(response_sets):
        if len(responses) != n:
            raise ValueError(f"{n} prompts but {len(responses)} responses in set {k}")
    p_ids = tok(list(prompts), add_special_tokens=False)["input_ids"] if n else []
    r_ids = [
        [list(r[:max_length]) for r in tok(list(rs), add_special_tokens=False)["input_ids"]] for rs in response_sets
    ]
    for k, ids in enumerate(r_ids):
        for i, r in enumerate(ids):
            if not r:
                raise ValueError(f"response {i} of set {k} has no tokens: {response_sets[k][i]!r}")
    out_p = []
    for i, p in enumerate(p_ids):
        room = max_length - max(len(ids[i]) for ids in r_ids)
        out_p.append(list(p[-room:]) if room > 0 else [])
    return out_p, r_ids


def pack(prompt: Sequence[int], responses: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """One sequence ``prompt + response_1 + ... + response_K`` as (token ids, position ids, segment ids).

    Segment 0 = prompt, k = response k (1-based). Each response's positions continue from the prompt's end, so with
    :func:`packed_attention_mask` every response is computed exactly as if it alone followed the prompt, and the
    prompt is computed once for all K responses.
    """
    ids, pos, seg = list(prompt), list(range(len(prompt))), [0] * len(prompt)
    for k, r in enumerate(responses, start=1):
        ids += r
        pos += range(len(prompt), len(prompt) + len(r))
        seg += [k] * len(r)
    return ids, pos, seg


def pad_packed(seqs: Sequence[tuple[list[int], list[int], list[int]]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad :func:`pack` outputs to [B, S] tensors: ids (pad_id), positions (0) and segments (-1 = padding)."""
    width = max(len(s[0]) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(seqs), width), dtype=torch.long)
    seg = torch.full((len(seqs), width), -1, dtype=torch.long)
    for b, (i, p, s) in enumerate(seqs):
        ids[b, : len(i)], pos[b, : len(p)], seg[b, : len(s)] = torch.tensor(i), torch.tensor(p), torch.tensor(s)
    return ids, pos, seg


def packed_attention_mask(segment: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Additive attention mask [B, 1, S, S] for packed sequences (segments [B, S] from :func:`pad_packed`).

    A query sees the keys at or before it that are in the prompt or in its own response (0 where it may attend, the
    dtype's minimum elsewhere); a padding query sees only itself, so its row stays finite and no real token reads it.
    """
    s = segment.shape[-1]
    seg_q, seg_k = segment.unsqueeze(-1), segment.unsqueeze(-2)  # [B, S, 1], [B, 1, S]
    causal = torch.ones(s, s, dtype=torch.bool, device=segment.device).tril()
    allowed = causal & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))
    allowed |= torch.eye(s, dtype=torch.bool, device=segment.device)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min).unsqueeze(1)


def _pad_id(tok) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(tok, name, None) is not None:
            return int(getattr(tok, name))
    return 0


def _pooled_batch(trunk, seqs, pad_id: int, layers: list[int], packed: bool) -> Tensor:
    """Forward one batch of packed sequences with K' responses each; mean over each response's tokens:
    -> [L, B, K', H] float32 (on CPU).

    ``packed``: one forward with :func:`packed_attention_mask` and explicit position ids. Otherwise every sequence
    must hold one response, and the usual 2-D padding mask (default positions) is used.
    """
    dev = next(trunk.parameters()).device
    ids, pos, seg = (t.to(dev) for t in pad_packed(seqs, pad_id))
    if packed:
        mask = packed_attention_mask(seg, dtype=next(trunk.parameters()).dtype)
        out = trunk(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
    else:
        mask = (seg >= 0).long()
        out = trunk(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    n_layers = int(trunk.config.num_hidden_layers)
    if len(out.hidden_states) != n_layers + 1:
        raise ValueError(f"expected num_hidden_layers + 1 = {n_layers + 1} hidden states, got {len(out.hidden_states)}")
    n_resp = max(max(s[2]) for s in seqs)
    weight = (seg.unsqueeze(1) == torch.arange(1, n_resp + 1, device=dev).view(1, -1, 1)).float()  # [B, K', S]
    states = torch.stack([out.hidden_states[k].float() for k in layers])  # [L, B, S, H]
    summed = torch.einsum("lbsh,bks->lbkh", states, weight)
    return (summed / weight.sum(-1).unsqueeze(-1)).cpu()  # counts [B, K', 1] >= 1: responses are never empty


@torch.inference_mode()
def pooled_response_states(
    model,
    tok,
    prompts: Sequence[str],
    response_sets: Sequence[Sequence[str]],
    layers: Sequence[int] = (),
    batch_size: int = 16,
    max_length: int = 512,
    share_prompt: bool = True,
) -> Tensor:
    """Mean-pooled hidden states of the RESPONSE tokens after their prompt, for K response sets: -> [K, L, N, H].

    Only response tokens enter the mean (prompt and padding are masked out): a prompt shared by a chosen and a
    rejected response would otherwise dominate both. With ``share_prompt`` (and K > 1) each prompt is computed once
    and its K responses follow it in one packed sequence (:func:`pack`), each attending only to the prompt and itself;
    for a 150-token prompt and two 30-token responses that is 210 tokens per pair instead of 360. The first pair is
    checked against separate forwards, and a model that ignores custom masks or position ids falls back to them.
    Batches are right-padded (real tokens keep their positions; causal attention never reads the padding after them)
    and sorted by length; the result is in input order, float32, computed under ``torch.inference_mode``.

    Args:
        model: a causal LM or its trunk (``output_hidden_states`` supported; only the trunk runs, no LM head); used
            in eval mode, restored afterwards.
        tok: its tokenizer.
        prompts: N policy-side prompt texts (already rendered, e.g. as a chat turn).
        response_sets: K lists of N responses (e.g. ``[chosen, rejected]``).
        layers: ``hidden_states`` indices, see :func:`resolve_layers` (empty = evenly spaced default).
        batch_size: prompts (packed sequences) per forward.
        max_length: token budget per prompt + response (capped by the model's ``max_position_embeddings``).
    """
    n, k_sets = len(prompts), len(response_sets)
    if n == 0 or k_sets == 0:
        raise ValueError("need at least one prompt and one response set")
    trunk = trunk_of(model)
    idx = resolve_layers(layers, int(trunk.config.num_hidden_layers))
    limit = getattr(trunk.config, "max_position_embeddings", None)
    max_length = min(max_length, int(limit)) if limit else max_length
    p_ids, r_ids = tokenize_prompt_responses(tok, prompts, response_sets, max_length)
    packed = share_prompt and k_sets > 1
    pad_id = _pad_id(tok)
    pooled = torch.empty(k_sets, len(idx), n, int(trunk.config.hidden_size), dtype=torch.float32)
    was_training = trunk.training
    trunk.eval()
    try:
        if packed and not _packing_is_exact(trunk, p_ids, r_ids, pad_id, idx):
            log.warning(
                "%s: packed prompt sharing does not reproduce separate forwards; using separate forwards",
                type(trunk).__name__,
            )
            packed = False
        # work items (prompt i, the response sets packed after it), sorted by length to pad little
        items = (
            [(i, tuple(range(k_sets))) for i in range(n)]
            if packed
            else [(i, (k,)) for k in range(k_sets) for i in range(n)]
        )
        items.sort(key=lambda it: len(p_ids[it[0]]) + sum(len(r_ids[k][it[0]]) for k in it[1]))
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            seqs = [pack(p_ids[i], [r_ids[k][i] for k in ks]) for i, ks in batch]
            out = _pooled_batch(trunk, seqs, pad_id, idx, packed)  # [L, B, K', H]
            for b, (i, ks) in enumerate(batch):
                pooled[list(ks), :, i] = out[:, b].transpose(0, 1)
    finally:
        trunk.train(was_training)
    return pooled


def _packing_is_exact(trunk, p_ids, r_ids, pad_id: int, layers: list[int], rtol: float = 1e-3) -> bool:
    """Do packed sequences give the states of separate forwards? Checked on the first prompt, at every layer."""
    responses = [ids[0] for ids in r_ids]
    packed = _pooled_batch(trunk, [pack(p_ids[0], responses)], pad_id, layers, packed=True)[:, 0]  # [L, K, H]
    single = _pooled_batch(trunk, [pack(p_ids[0], [r]) for r in responses], pad_id, layers, packed=False)[:, :, 0]
    return bool((packed - single).abs().max() <= rtol * max(1.0, float(single.abs().max())))


def pooled_hidden_states(
    model,
    tok,
    prompts: Sequence[str],
    responses: Sequence[str],
    layers: Sequence[int] = (),
    batch_size: int = 16,
    max_length: int = 512,
) -> Tensor:
    """Mean-pooled hidden states of the response tokens of each ``prompt + response``: -> [L, N, H] float32.

    One response set of :func:`pooled_response_states` (see there for masking, padding and arguments).
    """
    return pooled_response_states(model, tok, prompts, [responses], layers, batch_size, max_length)[0]


def _unit(x: Tensor) -> Tensor:
    """Rows scaled to unit length, float64 (a zero row stays zero, so its cosines are 0)."""
    return F.normalize(x.double(), dim=-1)


def _mean_off_diagonal(gram: Tensor) -> Tensor:
    """Mean of the off-diagonal entries of square matrices: [L, N, N] -> [L]."""
    n = gram.shape[-1]
    return (gram.sum(dim=(-2, -1)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def _check_pairs(chosen: Tensor, rejected: Tensor) -> None:
    if chosen.ndim != 3 or chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen and rejected must both be [L, N, H], got {tuple(chosen.shape)}, {tuple(rejected.shape)}"
        )
    if chosen.shape[1] < 2:
        raise ValueError(f"need at least 2 pairs, got {chosen.shape[1]}")


def pair_cosine(chosen: Tensor, rejected: Tensor) -> Tensor:
    """cos(h_chosen_i, h_rejected_i) of each pair: [L, N, H] x 2 -> [L, N] float64."""
    return (_unit(chosen) * _unit(rejected)).sum(dim=-1)


def label_similarity(chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    """Mean pairwise cosine similarity within and across labels, per layer.

    Args:
        chosen, rejected: [L, N, H] pooled states of N chosen and the N rejected responses to the same prompts.
    Returns:
        float64 tensors of shape [L]:
        ``within_chosen`` / ``within_rejected``: mean cos over pairs (i, j), i != j, of one label (no self-pairs);
        ``within``: their average (the mean over all same-label pairs: both labels have N(N-1) of them);
        ``across``: mean cos(chosen_i, rejected_j) over i != j, so that, like the within-label pairs, no compared pair
        shares a prompt (a shared prompt makes two responses alike whatever their labels);
        ``gap``: within - across (> 0: the states separate the labels);
        ``pair_cosine``: mean cos(chosen_i, rejected_i) over the N pairs that do share a prompt.
    """
    _check_pairs(chosen, rejected)
    c, r = _unit(chosen), _unit(rejected)
    cross = c @ r.mT  # [L, N, N]
    within_chosen = _mean_off_diagonal(c @ c.mT)
    within_rejected = _mean_off_diagonal(r @ r.mT)
    within = (within_chosen + within_rejected) / 2
    across = _mean_off_diagonal(cross)
    return {
        "within_chosen": within_chosen,
        "within_rejected": within_rejected,
        "within": within,
        "across": across,
        "gap": within - across,
        "pair_cosine": cross.diagonal(dim1=-2, dim2=-1).mean(-1),
    }


def swapped_gaps(chosen: Tensor, rejected: Tensor, keep: Tensor) -> Tensor:
    """The gap of :func:`label_similarity` after swapping the labels of some pairs, for P swap patterns at once.

    With G the cosine matrix of all 2N responses (diagonal zeroed), z = +-1 the labels and m the summed cosine of the
    N same-prompt pairs (always across labels): ``gap(z) = (z^T G z + 2 m) / (2 N (N - 1))``.

    Args:
        chosen, rejected: [L, N, H] pooled states.
        keep: [P, N], +1 = pair i keeps its labels, -1 = swapped.
    Returns:
        [L, P] float64 gaps (``keep`` all +1 gives ``label_similarity(...)["gap"]``).
    """
    _check_pairs(chosen, rejected)
    n = chosen.shape[1]
    both = _unit(torch.cat([chosen, rejected], dim=1))  # [L, 2N, H]
    gram = both @ both.mT  # [L, 2N, 2N]
    gram = gram - torch.diag_embed(gram.diagonal(dim1=-2, dim2=-1))
    same_prompt = gram[:, torch.arange(n), torch.arange(n) + n].sum(-1, keepdim=True)  # [L, 1]
    z = torch.cat([keep, -keep], dim=1).double()  # [P, 2N]
    return (torch.einsum("pa,lab,pb->lp", z, gram, z) + 2 * same_prompt) / (2 * n * (n - 1))


def label_gap_permutation_test(
    chosen: Tensor, rejected: Tensor, n_permutations: int = 1000, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Is the within-vs-across gap more than chance? Null: each pair's labels swapped at random (every prompt stays
    split across the labels, as in the data), the gap recomputed per swap pattern (:func:`swapped_gaps`).

    Args:
        chosen, rejected: [L, N, H] pooled states.
        n_permutations: P random swap patterns.
        generator: for reproducible swaps.
    Returns:
        float64 tensors of shape [L]: ``gap_null_mean``, ``gap_null_std`` and ``gap_p_value`` (one-sided,
        ``(1 + #{null gap >= observed}) / (1 + P)``).
    """
    n = chosen.shape[1]
    observed = swapped_gaps(chosen, rejected, torch.ones(1, n))  # [L, 1]
    keep = torch.randint(0, 2, (n_permutations, n), generator=generator).double() * 2 - 1  # [P, N]
    null = swapped_gaps(chosen, rejected, keep)  # [L, P]
    return {
        "gap_null_mean": null.mean(-1),
        "gap_null_std": null.std(-1),
        "gap_p_value": (1 + (null >= observed - 1e-12).sum(-1)) / (1 + n_permutations),
    }


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation along the last dim: [..., M] x 2 -> [...] float64 (NaN where either side is constant)."""
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    den = (xc.square().sum(-1) * yc.square().sum(-1)).sqrt()
    num = (xc * yc).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def rankdata(x: Tensor) -> Tensor:
    """1-based ranks along the last dim, ties given their average rank (scipy's ``rankdata``): [..., M] -> [..., M]."""
    flat = x.double().reshape(-1, x.shape[-1])
    ranks = torch.empty_like(flat)
    for row, out in zip(flat, ranks, strict=True):
        values, order = torch.sort(row, stable=True)
        _, group, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
        last = counts.cumsum(0).double()  # rank of the last member of each tie group
        out[order] = (last - (counts - 1) / 2)[group]
    return ranks.reshape(x.shape)


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman rank correlation along the last dim: [..., M] x 2 -> [...] (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def similarity_reward_correlation(
    chosen: Tensor, rejected: Tensor, reward_chosen: Tensor, reward_rejected: Tensor
) -> dict[str, Tensor]:
    """Does hidden-state similarity track the reward difference? Per layer, two views.

    - ``pair_*``: over the N pairs, cos(h_chosen_i, h_rejected_i) vs |r_chosen_i - r_rejected_i| (both responses
      answer the same prompt, so the prompt is held fixed).
    - ``all_pairs_*``: over all M = 2N(2N-1)/2 pairs (i, j) of the 2N responses, cos(h_i, h_j) vs |r_i - r_j|.
      The M pairs share responses, so they are not independent samples: a descriptive number, no p-value.

    Expected sign: NEGATIVE. If the policy's states encode what the reward model rewards, responses with close rewards
    have similar states and similarity falls as |reward difference| grows (the paper: Spearman -0.71). Zero or positive
    means the similarity does not follow the reward model. Caveat for the pair view: how far a rejected response was
    edited from the chosen one moves both numbers (fewer shared tokens, larger reward gap), so part of a negative
    value can be edit distance rather than preference.

    Args:
        chosen, rejected: [L, N, H] pooled states.
        reward_chosen, reward_rejected: [N] rewards of the same responses.
    Returns:
        float64 tensors of shape [L]: ``pair_pearson``, ``pair_spearman``, ``all_pairs_pearson``,
        ``all_pairs_spearman`` (NaN where a side is constant).
    """
    _check_pairs(chosen, rejected)
    n = chosen.shape[1]
    if reward_chosen.shape != (n,) or reward_rejected.shape != (n,):
        raise ValueError(
            f"rewards must be [N] = [{n}], got {tuple(reward_chosen.shape)} and {tuple(reward_rejected.shape)}"
        )
    cos = pair_cosine(chosen, rejected)  # [L, N]
    diff = (reward_chosen.double() - reward_rejected.double()).abs().expand_as(cos)  # [L, N]
    both = _unit(torch.cat([chosen, rejected], dim=1))  # [L, 2N, H]
    rewards = torch.cat([reward_chosen, reward_rejected]).double()  # [2N]
    i, j = torch.triu_indices(2 * n, 2 * n, offset=1)  # the M pairs i < j
    all_cos = (both @ both.mT)[:, i, j]  # [L, M]
    all_diff = (rewards[i] - rewards[j]).abs().expand_as(all_cos)  # [L, M]
    return {
        "pair_pearson": pearson(cos, diff),
        "pair_spearman": spearman(cos, diff),
        "all_pairs_pearson": pearson(all_cos, all_diff),
        "all_pairs_spearman": spearman(all_cos, all_diff),
    }
