"""Judge prompt templates (r2m/judges/templates.py): loading, rendering, malformed files, the strict verdict parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from r2m.judges.base import PairwiseItem
from r2m.judges.templates import (
    BUILTIN_TEMPLATES,
    TEMPLATE_DIR,
    JudgeTemplate,
    TemplateError,
    load_template,
    parse_template_text,
    parse_verdict,
)

ITEM = PairwiseItem(id="1", prompt="  The post text.  ", response_a=" Summary one. ", response_b="Summary two.")
CUSTOM = """# my judge
# comments before the first section are fine

[system]
You grade answers.
[user]
Q: {prompt}
1) {response_a}
2) {response_b}
Say "Winner: A" or "Winner: B".
[answer]
Winner
"""


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtins_load_and_substitute_every_placeholder(name: str) -> None:
    template = load_template(name)
    assert template.name == name and template.answer_key == "Preferred"
    messages = template.messages(ITEM)
    user = messages[-1]
    assert user["role"] == "user"
    assert all(text in user["content"] for text in ("The post text.", "Summary one.", "Summary two."))
    assert "  The post text.  " not in user["content"]  # responses are stripped
    assert not any(p in m["content"] for m in messages for p in ("{prompt}", "{response_a}", "{response_b}"))
    assert user["content"].index("Summary one.") < user["content"].index("Summary two.")
    assert "Preferred:" in user["content"]


def test_builtin_specifics() -> None:
    tldr, alpaca = load_template("tldr"), load_template("alpaca_eval")
    [user] = tldr.messages(ITEM)  # the DPO paper's prompt has no system message
    assert user["content"].startswith("Which of the following summaries does a better job")
    assert "Summary A:\nSummary one.\n\nSummary B:\nSummary two." in user["content"]
    system, user = alpaca.messages(ITEM)
    assert system["role"] == "system" and "ranks models" in system["content"]
    assert "Output of model A:\nSummary one." in user["content"]
    assert tldr.digest != alpaca.digest and len(tldr.digest) == 16


def test_builtins_match_their_files() -> None:
    for name in BUILTIN_TEMPLATES:
        assert load_template(TEMPLATE_DIR / f"{name}.txt").digest == load_template(name).digest


def test_custom_template_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text(CUSTOM, encoding="utf-8")
    template = load_template(str(path))
    assert template == JudgeTemplate(
        name=str(path),
        system="You grade answers.",
        user='Q: {prompt}\n1) {response_a}\n2) {response_b}\nSay "Winner: A" or "Winner: B".',
        answer_key="Winner",
    )
    rendered = 'Q: The post text.\n1) Summary one.\n2) Summary two.\nSay "Winner: A" or "Winner: B".'
    assert template.messages(ITEM) == [
        {"role": "system", "content": "You grade answers."},
        {"role": "user", "content": rendered},
    ]
    assert template.parse("Looks close.\nWinner: B") == ("B", "Looks close.")
    assert template.parse("Preferred: A")[0] == "invalid"  # the custom key, not the default one
    assert load_template(path).digest == template.digest  # a Path works too


def test_digest_changes_with_content() -> None:
    base = parse_template_text(CUSTOM, "x")
    assert parse_template_text(CUSTOM, "y").digest == base.digest  # the name is not content
    assert parse_template_text(CUSTOM.replace("grade", "judge"), "x").digest != base.digest
    assert parse_template_text(CUSTOM.replace("Winner\n", "Verdict\n"), "x").digest != base.digest


def test_answer_defaults_to_preferred() -> None:
    template = parse_template_text("[user]\n{prompt} {response_a} {response_b}\n", "t")
    assert (template.system, template.answer_key) == ("", "Preferred")
    assert [m["role"] for m in template.messages(ITEM)] == ["user"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[system]\nhello\n", "no [user] section"),
        ("[user]\n\n[answer]\nPreferred\n", "no [user] section"),
        ("[user]\n{prompt} {response_a}\n", "lacks placeholder(s) {response_b}"),
        ("[user]\n{prompt}\n", "{response_a}, {response_b}"),
        ("Judge this:\n[user]\n{prompt} {response_a} {response_b}\n", "line 1: text before the first section"),
        ("[user]\n{prompt} {response_a} {response_b}\n[user]\nagain\n", "line 3: section [user] appears twice"),
        ("[user]\n{prompt} {response_a} {response_b}\n[answer]\nPreferred\nWinner\n", "[answer] must be one line"),
    ],
)
def test_malformed_template_files_are_rejected_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broken_prompt.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        load_template(str(path))
    assert str(path) in str(info.value) and problem in str(info.value)


def test_unknown_template_names_the_builtins() -> None:
    with pytest.raises(TemplateError, match=r"'nope'.*tldr, alpaca_eval.*no such file"):
        load_template("nope")


def test_braces_in_responses_are_safe() -> None:
    item = PairwiseItem(
        id="b",
        prompt="code: def f(): return {'a': 1}  # and a literal {response_b}",
        response_a="uses {} and {0} and {prompt}",
        response_b="{response_a}",
    )
    user = load_template("tldr").messages(item)[0]["content"]
    assert "Post:\ncode: def f(): return {'a': 1}  # and a literal {response_b}\n" in user
    assert "Summary A:\nuses {} and {0} and {prompt}\n" in user
    assert "Summary B:\n{response_a}\n" in user


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Comparison: A is concise.\nPreferred: A", "A"),
        ("Comparison: B wins.\nPreferred: B", "B"),
        ("**Comparison:** A is better.\n**Preferred:** A", "A"),
        ('Comparison: ok\nPreferred: "B"', "B"),
        ("## Preferred: **A**", "A"),
        ("Comparison: x\nPreferred: Summary B.", "B"),
        ("Comparison: x\nPreferred: Response A", "A"),
        ("comparison: x\npreferred: b", "B"),
        ("PREFERRED:   a  ", "A"),
        ("Preferred: B (Summary A misses the point)", "B"),
        ("Preferred: A. B was wordier.", "A"),
        ("Preferred: A\nPreferred: A", "A"),  # repeated but consistent
    ],
)
def test_parse_good_verdicts(reply: str, expected: str) -> None:
    assert parse_verdict(reply)[0] == expected


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("Comparison: Both are fine.", "no 'Preferred:' line"),
        ("", "no 'Preferred:' line"),
        ("I like both", "no 'Preferred:' line"),
        ("Comparison: x\nPreferred:", "without a single A or B"),
        ("Comparison: x\nPreferred: A or B", "without a single A or B"),
        ('Comparison: x\nPreferred: <"A" or "B">', "without a single A or B"),  # the format line echoed
        ("Comparison: x\nPreferred: Summary A or Summary B", "without a single A or B"),
        ("Comparison: x\nPreferred: A/B", "without a single A or B"),
        ("Comparison: x\nPreferred: neither", "without a single A or B"),
        ("Comparison: x\nPreferred: Both", "without a single A or B"),
        ("Comparison: x\nPreferred: C", "without a single A or B"),
        ("Comparison: x\nPreferred: A\nPreferred: B", "contradictory verdict lines"),
        ("Comparison: Summary A captures the rent increase but", "no 'Preferred:' line"),  # truncated
    ],
)
def test_parse_unusable_replies_are_invalid(reply: str, why: str) -> None:
    preferred, reason = parse_verdict(reply)
    assert preferred == "invalid" and why in reason and reason.startswith("unparseable")


def test_reason_is_the_comparison_or_the_text_before_the_verdict() -> None:
    assert parse_verdict("Comparison: A is tighter.\nPreferred: A") == ("A", "A is tighter.")
    assert parse_verdict("B covers the key point.\nIt is short.\nPreferred: B") == (
        "B",
        "B covers the key point. It is short.",
    )
    assert len(parse_verdict("Comparison: " + "x" * 2000 + "\nPreferred: A")[1]) == 500


def test_parse_with_a_custom_answer_key() -> None:
    assert parse_verdict("Winner: B", answer_key="Winner") == ("B", "")
    assert parse_verdict("Preferred: B", answer_key="Winner")[0] == "invalid"
    assert parse_verdict("Best (1 or 2): A", answer_key="Best (1 or 2)")[0] == "A"  # the key is matched literally
