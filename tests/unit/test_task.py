"""The embedded task generator: determinism, post structure, value bookkeeping, formatting."""

from __future__ import annotations

import json

import pytest

from r2m.data import task
from r2m.data.task import (
    VALUE_VOCAB,
    Fact,
    Post,
    format_completion,
    format_prompt,
    generate_posts,
    normalise_text,
)


@pytest.fixture(scope="module")
def posts() -> list[Post]:
    return generate_posts(300, seed=0)


def _contains(text: str, value: str) -> bool:
    """Whole-token match on normalised text (as the gold judge matches)."""
    return f" {normalise_text(value)} " in f" {normalise_text(text)} "


def test_deterministic_by_seed() -> None:
    assert generate_posts(20, seed=1) == generate_posts(20, seed=1)
    assert generate_posts(20, seed=1) != generate_posts(20, seed=2)
    ids = [p.id for p in generate_posts(3, seed=1, id_prefix="rl")]
    assert ids == ["rl00000", "rl00001", "rl00002"]


def test_post_shape(posts: list[Post]) -> None:
    assert len({p.topic for p in posts}) >= 10
    for p in posts:
        assert 50 <= len(p.text.split()) <= 110, p.text
        assert 12 <= len(p.reference.split()) <= 30, p.reference
        assert 2 <= len(p.facts) <= 4
        assert len(p.distractor_values) >= 1
        assert not p.reference.lower().startswith("tl;dr")
    assert len({p.text for p in posts}) == len(posts)


def test_values_are_in_the_post_and_key_values_in_the_reference(posts: list[Post]) -> None:
    for p in posts:
        key_values = [v for f in p.facts for v in f.values]
        assert all(f.values for f in p.facts)
        for v in key_values:
            assert v in p.text, (v, p.text)  # exactly as written in the post
            assert _contains(p.reference, v), (v, p.reference)
        assert all(f.text in p.reference for f in p.facts)
        for v in p.distractor_values:
            assert v in p.text
            assert not _contains(p.reference, v), (v, p.reference)
        norm = [normalise_text(v) for v in key_values + list(p.distractor_values)]
        assert len(set(norm)) == len(norm)  # no value doubles as another


def test_reference_has_no_value_outside_the_post(posts: list[Post]) -> None:
    for p in posts:
        post_tokens = set(normalise_text(p.text).split())
        tokens = normalise_text(p.reference).split()
        value_like = {t for t in tokens if t in VALUE_VOCAB or any(c.isdigit() for c in t)}
        assert value_like <= post_tokens


def test_templates_state_every_value_of_their_clause() -> None:
    for scenario in task._SCENARIOS:
        for spec in (scenario.subject, *scenario.clauses):
            clause_fields = set(task._value_fields(spec.clause))
            for sentence in spec.posts:
                assert clause_fields <= set(task._value_fields(sentence)), (spec.clause, sentence)


def test_value_vocab_and_normalisation() -> None:
    assert {"jake", "emma", "denver", "friday", "$300", "$1200", "24m", "3"} <= VALUE_VOCAB
    assert not {"months", "the", "my", "roommate", "may"} & VALUE_VOCAB
    assert normalise_text("Jake's $1,200 (24M)!! -- 3 months; $ 40") == "jake s $1200 24m 3 months $40"
    assert normalise_text("") == ""


def test_round_trip_and_formatting() -> None:
    post = generate_posts(1, seed=5)[0]
    assert Post.from_dict(json.loads(json.dumps(post.to_dict()))) == post
    assert isinstance(post.facts[0], Fact)
    prompt = format_prompt(post)
    assert prompt == f"SUBREDDIT: r/{post.topic}\nPOST: {post.text}\nTL;DR:"
    assert format_completion("  a summary \n") == " a summary"
