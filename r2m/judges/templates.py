"""Judge prompt templates (editable text files) and the verdict parser shared by the API and local LLM judges.

A template file has up to three sections, each opened by a line ``[system]``, ``[user]`` or ``[answer]``:

- ``[system]`` (optional): the system message;
- ``[user]`` (required): the user message; must contain ``{prompt}``, ``{response_a}`` and ``{response_b}``
  (substituted literally, so braces elsewhere in the text or in responses are safe);
- ``[answer]`` (optional, default ``Preferred``): the key of the verdict line, e.g. ``Preferred: A``.

Lines starting with ``#`` before the first section are comments. Built-in templates live in
``r2m/judges/templates/``: ``tldr`` (the DPO paper's TL;DR prompt) and ``alpaca_eval`` (a dialogue prompt).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from r2m.judges.base import PairwiseItem, Preference

TEMPLATE_DIR = Path(__file__).parent / "templates"
BUILTIN_TEMPLATES = ("tldr", "alpaca_eval")
PLACEHOLDERS = ("{prompt}", "{response_a}", "{response_b}")
_SECTIONS = ("system", "user", "answer")
_SECTION_LINE = re.compile(r"^\[(system|user|answer)\]\s*$")
_DECOR = " \t*_`\"'<>()[]{}"
_LABEL_PREFIX = re.compile(r"^(?:summary|response|output|model|answer|option)\s+", re.IGNORECASE)
_CHOICE = re.compile(r"^([AB])(?=$|[\s.,;:!?)\]\"'*-])", re.IGNORECASE)
# "A or B", '"A" or "B"' (the format line echoed), "Summary A or Summary B": names both, so no verdict.
_BOTH = re.compile(
    r"^[AB][\s\"'*_>)\]]*(?:or|/|and|,|&)\s*[\"'*_<(\[]*(?:(?:summary|response|output|model|answer|option)\s+)?[AB]\b",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


class TemplateError(ValueError):
    """A judge template file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class JudgeTemplate:
    """A chat prompt for pairwise judging plus the key of the line that carries the verdict."""

    name: str
    user: str
    system: str = ""
    answer_key: str = "Preferred"

    @property
    def digest(self) -> str:
        """Hash of the template's content (part of every cache key: editing a template invalidates its cache)."""
        text = "\x00".join((self.system, self.user, self.answer_key))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def messages(self, item: PairwiseItem) -> list[dict[str, str]]:
        """OpenAI-format chat messages for ``item`` as presented (A first)."""
        values = dict(zip(PLACEHOLDERS, (item.prompt, item.response_a, item.response_b), strict=True))
        # One pass over the template: a placeholder-like text inside a response is never substituted again.
        user = _PLACEHOLDER.sub(lambda m: values[m.group(0)].strip(), self.user)
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": user})
        return out

    def parse(self, text: str) -> tuple[Preference, str]:
        """``(preferred, reason)`` from a judge's reply; see :func:`parse_verdict`."""
        return parse_verdict(text, self.answer_key)


def parse_verdict(text: str, answer_key: str = "Preferred") -> tuple[Preference, str]:
    """Read the verdict line ``<answer_key>: A|B`` from a judge's reply.

    Accepts markdown/quote decoration (``**Preferred:** "A"``, ``Preferred: Summary B.``). Returns
    ``("invalid", why)`` when no verdict line names exactly one of A/B (missing, empty or truncated line, "A or B"),
    or when several verdict lines disagree: an unparseable answer is recorded, never guessed. The reason is the
    ``Comparison:`` text when present, else the reply before the verdict line.
    """
    key = re.compile(rf"^[\s*_#>-]*{re.escape(answer_key)}[\s*_]*:(.*)$", re.IGNORECASE)
    choices: list[str] = []
    lines = text.splitlines()
    first_verdict_line = None
    for i, line in enumerate(lines):
        m = key.match(line)
        if not m:
            continue
        first_verdict_line = i if first_verdict_line is None else first_verdict_line
        rest = _LABEL_PREFIX.sub("", m.group(1).strip(_DECOR)).strip(_DECOR)
        if _BOTH.match(rest):
            continue
        c = _CHOICE.match(rest)
        if c:
            choices.append(c.group(1).upper())
    reason = _reason(lines, first_verdict_line)
    if not choices:
        why = f"no '{answer_key}:' line" if first_verdict_line is None else f"'{answer_key}:' without a single A or B"
        return "invalid", f"unparseable ({why}): {reason}".strip()
    if len(set(choices)) > 1:
        return "invalid", f"unparseable (contradictory verdict lines {choices}): {reason}".strip()
    return choices[0], reason  # type: ignore[return-value]


def _reason(lines: list[str], verdict_line: int | None) -> str:
    for line in lines:
        m = re.match(r"^[\s*_#>-]*comparison[\s*_]*:(.*)$", line, re.IGNORECASE)
        if m and m.group(1).strip():
            return m.group(1).strip()[:500]
    head = lines if verdict_line is None else lines[:verdict_line]
    return " ".join(x.strip() for x in head if x.strip())[:500]


def parse_template_text(text: str, name: str) -> JudgeTemplate:
    """Parse a template file's content; ``name`` (a path or built-in name) is used in error messages."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _SECTION_LINE.match(line.strip())
        if m:
            current = m.group(1)
            if current in sections:
                raise TemplateError(f"{name}: line {lineno}: section [{current}] appears twice")
            sections[current] = []
        elif current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise TemplateError(
                    f"{name}: line {lineno}: text before the first section; start with one of "
                    + ", ".join(f"[{s}]" for s in _SECTIONS)
                )
        else:
            sections[current].append(line)
    body = {k: "\n".join(v).strip() for k, v in sections.items()}
    if not body.get("user"):
        raise TemplateError(f"{name}: no [user] section (or it is empty)")
    missing = [p for p in PLACEHOLDERS if p not in body["user"]]
    if missing:
        raise TemplateError(f"{name}: [user] section lacks placeholder(s) {', '.join(missing)}")
    answer = body.get("answer") or "Preferred"
    if "\n" in answer:
        raise TemplateError(f"{name}: [answer] must be one line (the verdict key, e.g. Preferred), got {answer!r}")
    return JudgeTemplate(name=name, user=body["user"], system=body.get("system", ""), answer_key=answer)


def load_template(name_or_path: str | Path) -> JudgeTemplate:
    """A built-in template by name (``tldr``, ``alpaca_eval``) or a template file by path."""
    key = str(name_or_path)
    if key in BUILTIN_TEMPLATES:
        path = TEMPLATE_DIR / f"{key}.txt"
    else:
        path = Path(key)
        if not path.is_file():
            raise TemplateError(
                f"judge template {key!r}: not a built-in ({', '.join(BUILTIN_TEMPLATES)}) and no such file"
            )
    return parse_template_text(path.read_text(encoding="utf-8"), key)
