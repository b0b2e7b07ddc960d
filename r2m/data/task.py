"""The embedded task: synthetic forum posts (TL;DR-style) with key facts, distractors and a reference summary.

A post is generated from a seeded grammar: a poster ("I (22F)"), a situation from one of 12 topics (each with
one or two scenarios), 2-4 **key facts** carrying concrete slot values (names, ages, money, durations, places,
weekdays...), 1-3 **distractor sentences** carrying other values, optional fillers and a closing question. The
reference summary is one sentence built from the key facts' clauses, e.g. "my roommate Jake (24M) owes me $300
for utilities and has been making excuses for 3 months, what are my options?".

Values are written exactly as they appear in the post (``Fact.values``); every value drawn for one post has
distinct numbers and words, so a key value never doubles as a distractor value. ``VALUE_VOCAB`` lists every
normalised value token the generator can emit; the gold judge uses it to detect hallucinated values.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from string import Formatter
from typing import Any

# ----------------------------------------------------------------------------------------------------
# Value vocabularies (no template uses these words, so a value token is never a template word)
# ----------------------------------------------------------------------------------------------------
MALE_NAMES: tuple[str, ...] = (
    "Jake",
    "Tyler",
    "Ryan",
    "Kevin",
    "Marcus",
    "Ethan",
    "Derek",
    "Nathan",
    "Brandon",
    "Caleb",
    "Logan",
    "Owen",
    "Trevor",
    "Dylan",
    "Lucas",
    "Aaron",
    "Connor",
    "Miguel",
    "Omar",
    "Samir",
    "Jason",
    "Eric",
)
FEMALE_NAMES: tuple[str, ...] = (
    "Emma",
    "Sarah",
    "Jess",
    "Megan",
    "Chloe",
    "Hannah",
    "Olivia",
    "Priya",
    "Rachel",
    "Lauren",
    "Nicole",
    "Tara",
    "Amber",
    "Kayla",
    "Sophie",
    "Maya",
    "Brianna",
    "Leah",
    "Danielle",
    "Nina",
    "Alyssa",
    "Monica",
)
PET_NAMES: tuple[str, ...] = (
    "Biscuit",
    "Luna",
    "Milo",
    "Pepper",
    "Ziggy",
    "Mochi",
    "Bailey",
    "Oreo",
    "Nugget",
    "Waffles",
    "Pickles",
    "Juniper",
)
PLACES: tuple[str, ...] = (
    "Denver",
    "Austin",
    "Seattle",
    "Portland",
    "Chicago",
    "Boston",
    "Phoenix",
    "Atlanta",
    "Dallas",
    "Miami",
    "Toronto",
    "Vancouver",
    "Nashville",
    "Orlando",
    "Pittsburgh",
    "Minneapolis",
    "Sacramento",
    "Tucson",
    "Baltimore",
    "Cleveland",
    "Dublin",
    "Manchester",
    "Melbourne",
    "Brisbane",
    "Calgary",
    "Houston",
    "Tampa",
    "Raleigh",
    "Omaha",
    "Boise",
)
WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (  # no "May": it is also a common word
    "January",
    "February",
    "March",
    "April",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
CAR_BRANDS: tuple[str, ...] = (
    "Honda",
    "Toyota",
    "Subaru",
    "Mazda",
    "Hyundai",
    "Kia",
    "Nissan",
    "Volkswagen",
    "Chevy",
)
COURSES: tuple[str, ...] = (
    "Chemistry",
    "Calculus",
    "Biology",
    "Statistics",
    "Physics",
    "Economics",
    "Spanish",
)
SMALL_AMOUNTS: tuple[str, ...] = (
    "$40",
    "$60",
    "$75",
    "$85",
    "$120",
    "$150",
    "$180",
    "$200",
    "$250",
    "$300",
    "$350",
    "$400",
    "$450",
    "$500",
)
BIG_AMOUNTS: tuple[str, ...] = (
    "$600",
    "$750",
    "$800",
    "$900",
    "$1,100",
    "$1,200",
    "$1,500",
    "$1,800",
    "$2,000",
    "$2,500",
    "$3,000",
    "$4,000",
    "$5,500",
    "$8,000",
)
NIGHT_TIMES: tuple[str, ...] = ("9pm", "10pm", "11pm", "1am", "2am", "3am")
MORNING_TIMES: tuple[str, ...] = ("5am", "6am", "7am", "8am")
YEARS: tuple[str, ...] = tuple(str(y) for y in range(2006, 2020))
# quantity slots: unit -> (low, high) of the number written before it, e.g. "{weeks}" -> "3 weeks"
QUANTITY_RANGES: dict[str, tuple[int, int]] = {
    "days": (2, 13),
    "weeks": (2, 11),
    "months": (2, 11),
    "years": (2, 9),
    "hours": (3, 40),
    "times": (3, 9),
    "miles": (3, 30),
    "minutes": (10, 45),
    "feet": (2, 9),
    "shifts": (3, 7),
}
AGE_RANGE: tuple[int, int] = (18, 66)
# template slot kind -> its values ("{place}", "{x0_place}", "{place2}" all draw from PLACES)
VALUE_POOLS: dict[str, tuple[str, ...]] = {
    "name": MALE_NAMES + FEMALE_NAMES,
    "mname": MALE_NAMES,
    "fname": FEMALE_NAMES,
    "pet": PET_NAMES,
    "place": PLACES,
    "day": WEEKDAYS,
    "month": MONTHS,
    "brand": CAR_BRANDS,
    "course": COURSES,
    "amount": SMALL_AMOUNTS,
    "big_amount": BIG_AMOUNTS,
    "night": NIGHT_TIMES,
    "morning": MORNING_TIMES,
    "year": YEARS,
}

# ----------------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A key fact: its clause as written in the reference, and its slot values as written in the post."""

    text: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Post:
    """A forum post with its key facts, distractor values (in the post but not key) and reference summary."""

    id: str
    topic: str
    text: str
    facts: tuple[Fact, ...]
    distractor_values: tuple[str, ...]
    reference: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "text": self.text,
            "facts": [{"text": f.text, "values": list(f.values)} for f in self.facts],
            "distractor_values": list(self.distractor_values),
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Post:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(d["id"]),
            topic=str(d["topic"]),
            text=str(d["text"]),
            facts=tuple(Fact(text=str(f["text"]), values=tuple(f["values"])) for f in d["facts"]),
            distractor_values=tuple(d["distractor_values"]),
            reference=str(d["reference"]),
        )


def format_prompt(post: Post) -> str:
    """The policy's prompt: subreddit, post, and the "TL;DR:" cue."""
    return f"SUBREDDIT: r/{post.topic}\nPOST: {post.text}\nTL;DR:"


def format_completion(summary: str) -> str:
    """A completion as the policy writes it after "TL;DR:" (one leading space)."""
    return " " + summary.strip()


# ----------------------------------------------------------------------------------------------------
# Normalisation shared with the gold judge
# ----------------------------------------------------------------------------------------------------
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_DOLLAR_SPACE = re.compile(r"\$\s+(?=\d)")
_NON_TOKEN = re.compile(r"[^a-z0-9$]+")


def normalise_text(text: str) -> str:
    """Lower-case, drop thousands separators ("$1,200" -> "$1200"), keep ``$`` and digits, every other
    non-alphanumeric character becomes a space; tokens joined by single spaces."""
    t = _DOLLAR_SPACE.sub("$", _THOUSANDS.sub("", text.lower()))
    return _NON_TOKEN.sub(" ", t).strip()


def _all_values() -> list[str]:
    vals = [v for pool in VALUE_POOLS.values() for v in pool]
    vals += [f"{a}{g}" for a in range(AGE_RANGE[0], AGE_RANGE[1] + 1) for g in "MF"]
    # numbers of quantities; unit words ("months") are not values
    vals += [str(n) for lo, hi in QUANTITY_RANGES.values() for n in range(lo, hi + 1)]
    return vals


VALUE_VOCAB: frozenset[str] = frozenset(tok for v in _all_values() for tok in normalise_text(v).split())

# ----------------------------------------------------------------------------------------------------
# Grammar
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FactSpec:
    clause: str  # reference-summary clause (a predicate of the subject, or the subject itself)
    posts: tuple[str, ...]  # post sentences stating the fact; each holds every value slot of ``clause``


@dataclass(frozen=True)
class _Scenario:
    topic: str
    subject: _FactSpec  # first key fact: who/what the summary is about
    clauses: tuple[_FactSpec, ...]  # 1-3 of these are sampled as the other key facts
    questions: tuple[str, ...]  # closing questions of the post
    summary_questions: tuple[str, ...]  # closing of the reference
    rels: tuple[tuple[str, str], ...] = (("", ""),)  # (relation word, gender "M"/"F"/"" for either)
    age_range: tuple[int, int] = (19, 35)


def _f(clause: str, *posts: str) -> _FactSpec:
    return _FactSpec(clause, tuple(posts))


_PERSON_INTROS = (
    "I ({page}) need some outside perspective on my {rel} {name} ({age}).",
    "So I'm {page} and my {rel} {name} is {age}.",
    "My {rel} {name} ({age}) and I ({page}) always got along until recently.",
    "Some background: I'm {page} and {name} ({age}) is my {rel}.",
    "I ({page}) have a situation with my {rel} {name} ({age}) and honestly don't know how to handle it.",
)
_PERSON = _FactSpec("my {rel} {name} ({age})", _PERSON_INTROS)
_PERSON_NONAME = _f(
    "my {rel} ({age})",
    "I ({page}) have a problem with my {rel} ({age}).",
    "My {rel} ({age}) and I ({page}) need a neutral opinion here.",
    "So I'm {page} and my {rel} is {age}, for context.",
)
_SELF_INTROS = (
    "I'm {page} and until now I thought I had things under control.",
    "I ({page}) don't usually post here but I need help.",
    "Quick background, I'm {page} and live on my own.",
)

_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        "roommates",
        _PERSON,
        (
            _f(
                "owes me {amount} for utilities",
                "{He} owes me {amount} for {his} share of the electric bill.",
                "{He} still hasn't paid back the {amount} {he} owes for utilities.",
                "Right now {he} owes me {amount} in utilities.",
            ),
            _f(
                "has been making excuses for {months}",
                "{He} has been making excuses for {months} now.",
                "This has been going on for {months} and it's always some excuse.",
            ),
            _f(
                "only answers my texts on {day}",
                "{He} ignores my texts and only ever answers on {day}.",
                "For some reason {he} only replies to me on {day}.",
            ),
            _f(
                "just spent {amount2} on concert tickets",
                "Yesterday I found out {he} just spent {amount2} on concert tickets.",
                "Meanwhile {he} spent {amount2} on concert tickets last week.",
            ),
            _f(
                "is moving to {place} in {month}",
                "{He} is moving to {place} in {month}.",
                "{He} told me {he}'s moving to {place} in {month} for a new job.",
            ),
        ),
        (
            "How do I get my money back without turning it into a huge fight?",
            "What are my options here?",
            "Should I take {him} to small claims or just let it go?",
        ),
        ("how do I get my money back?", "what are my options?", "should I just let it go?"),
        rels=(("roommate", ""), ("flatmate", "")),
    ),
    _Scenario(
        "roommates",
        _PERSON,
        (
            _f(
                "has had {his} partner staying over for {weeks}",
                "{His} partner has basically lived with us for {weeks} without paying anything.",
                "For {weeks} now {his} partner has been staying over every night.",
            ),
            _f(
                "leaves dishes out for {days}",
                "{He} leaves dirty dishes in the sink for {days} at a time.",
                "The dishes sit there for {days} before {he} touches them.",
            ),
            _f(
                "brushed me off {times}",
                "I brought it up {times} and {he} just laughs it off.",
                "{He} has brushed me off {times} when I tried to talk about it.",
            ),
            _f(
                "splits the {big_amount} rent with me",
                "Rent is {big_amount} a month and we split it evenly.",
                "We split the {big_amount} rent down the middle.",
            ),
        ),
        ("Am I being unreasonable or should I talk to our landlord?", "How do I bring this up without drama?"),
        ("am I being unreasonable?", "how do I bring it up?", "what should I do?"),
        rels=(("roommate", ""), ("housemate", "")),
    ),
    _Scenario(
        "work",
        _PERSON,
        (
            _f(
                "scheduled me for {shifts} in a row",
                "{He} scheduled me for {shifts} in a row this week.",
                "This week {he} put me on {shifts} back to back.",
            ),
            _f(
                "owes me for {hours} of overtime",
                "{He} still hasn't paid me for {hours} of overtime.",
                "I'm owed pay for {hours} of overtime and {he} keeps stalling.",
            ),
            _f(
                "keeps promising to pay me on {day}",
                "Every time I ask, {he} promises to pay me on {day} and nothing happens.",
                "{He} said I'd get my overtime pay on {day} but nothing came.",
            ),
            _f(
                "knows I've been there {years}",
                "I've been there {years} and never once called in sick.",
                "{He} knows I've worked there {years} without complaining.",
            ),
        ),
        ("Is this even legal, and how do I push back without getting fired?", "What would you do in my position?"),
        ("is this legal?", "how do I push back?", "what would you do?"),
        rels=(("boss", ""), ("manager", ""), ("supervisor", "")),
        age_range=(28, 55),
    ),
    _Scenario(
        "work",
        _PERSON,
        (
            _f(
                "takes credit for my work at the {day} meeting",
                "{He} takes credit for my reports in the {day} meeting.",
                "At the {day} meeting {he} presents my work as {his} own.",
            ),
            _f(
                "has done it {times} since {month}",
                "It has happened {times} since {month}.",
                "Since {month} this has happened {times}.",
            ),
            _f(
                "never paid back the {amount} I lent {him}",
                "{He} also borrowed {amount} from me and acts like it never happened.",
                "I lent {him} {amount} and never saw it again.",
            ),
            _f(
                "might move to the {place} office",
                "There are rumours {he} might move to the {place} office soon.",
                "{He} applied for a transfer to the {place} office.",
            ),
        ),
        ("Should I go to HR or talk to {him} first?", "How do I handle this without looking petty?"),
        ("should I go to HR?", "how do I handle it?", "what should I do?"),
        rels=(("coworker", ""), ("colleague", "")),
        age_range=(22, 50),
    ),
    _Scenario(
        "personalfinance",
        _FactSpec("I ({page})", _SELF_INTROS + ("I'm {page} and trying to get my finances together.",)),
        (
            _f(
                "have {big_amount} in credit card debt",
                "I have {big_amount} in credit card debt.",
                "Right now I'm carrying {big_amount} of credit card debt.",
            ),
            _f(
                "take home {big_amount2} a month",
                "I take home about {big_amount2} a month after taxes.",
                "My take-home pay is {big_amount2} a month.",
            ),
            _f(
                "got a {amount} rent increase",
                "My landlord just raised the rent by {amount}.",
                "On top of that I got a {amount} rent increase.",
            ),
            _f(
                "have {months} of savings left",
                "I have maybe {months} of savings left.",
                "My savings would last {months} at most.",
            ),
            _f(
                "have a cousin {name2} asking me to co-sign a loan",
                "My cousin {name2} keeps asking me to co-sign a loan.",
                "And now my cousin {name2} wants me to co-sign a loan.",
            ),
        ),
        ("Should I pay off the card first or build savings?", "What would you do in my position?"),
        ("what should I pay off first?", "what would you do?", "where do I start?"),
    ),
    _Scenario(
        "personalfinance",
        _PERSON,
        (
            _f(
                "borrowed {big_amount} from me",
                "{He} borrowed {big_amount} from me to fix {his} roof.",
                "Last year {he} borrowed {big_amount} from me.",
            ),
            _f(
                "promised to repay me by {month}",
                "{He} promised to pay it back by {month}.",
                "The deal was that I'd get it back by {month}.",
            ),
            _f(
                "wants another {amount} for a trip to {place}",
                "Now {he} wants another {amount} for a trip to {place}.",
                "This week {he} asked for another {amount} so {he} can go to {place}.",
            ),
            _f(
                "has asked for money {times} this year",
                "{He} has asked me for money {times} this year.",
                "That makes {times} this year that {he} has asked.",
            ),
        ),
        ("How do I say no without wrecking our relationship?", "Am I wrong to refuse?"),
        ("how do I say no?", "am I wrong to refuse?"),
        rels=(("dad", "M"), ("mom", "F"), ("uncle", "M"), ("aunt", "F")),
        age_range=(44, 66),
    ),
    _Scenario(
        "college",
        _FactSpec("I ({page})", _SELF_INTROS + ("I ({page}) am a sophomore and struggling this semester.",)),
        (
            _f(
                "am failing {course} with the final on {day}",
                "I'm failing {course} and the final is on {day}.",
                "My {course} final is on {day} and I'm currently failing.",
            ),
            _f(
                "have {days} to retake the midterm",
                "My professor gave me {days} to retake the midterm.",
                "I have {days} to retake a midterm I bombed.",
            ),
            _f(
                "work {hours} a week",
                "I also work {hours} a week at a coffee shop.",
                "On top of classes I work {hours} a week.",
            ),
            _f(
                "could lose my {big_amount} scholarship",
                "If my grades drop I could lose my {big_amount} scholarship.",
                "My {big_amount} scholarship depends on passing.",
            ),
            _f(
                "transferred from {place} in {month}",
                "I transferred here from {place} in {month}.",
                "I only transferred from {place} in {month}.",
            ),
        ),
        ("How do I get through the next few weeks?", "Should I drop the class or push through?"),
        ("should I drop the class?", "how do I get through this?", "any advice?"),
    ),
    _Scenario(
        "college",
        _PERSON,
        (
            _f(
                "hasn't done {his} part of the project due {day}",
                "{He} hasn't done any of {his} part and the project is due {day}.",
                "The project is due {day} and {he} hasn't started {his} part.",
            ),
            _f(
                "ignored my messages {times}",
                "I've messaged {him} {times} with no answer.",
                "{He} ignored my messages {times} this week.",
            ),
            _f(
                "left me {minutes} of slides to present alone",
                "Now I'm stuck with {minutes} of slides to present alone.",
                "It looks like I'll be presenting {minutes} of slides by myself.",
            ),
            _f(
                "is also in my {course} class",
                "{He} is also in my {course} class so I see {him} every day.",
                "We also share a {course} class.",
            ),
        ),
        ("Should I tell the professor or cover for {him}?", "Is it snitching to report {him}?"),
        ("should I tell the professor?", "is it snitching to report {him}?"),
        rels=(("lab partner", ""), ("project partner", "")),
    ),
    _Scenario(
        "dating_advice",
        _PERSON,
        (
            _f(
                "wants me to move to {place} with {him}",
                "{He} got a job offer in {place} and wants me to move with {him}.",
                "{He} wants me to move to {place} with {him} for {his} new job.",
            ),
            _f(
                "has been with me for {years}",
                "We've been together for {years}.",
                "We have been dating for {years} now.",
            ),
            _f(
                "needs an answer by {day}", "{He} needs an answer by {day}.", "I have to give {him} an answer by {day}."
            ),
            _f(
                "would get a {big_amount} signing bonus",
                "The job comes with a {big_amount} signing bonus.",
                "{He} would get a {big_amount} signing bonus.",
            ),
        ),
        ("Do I give up my life here or risk the relationship?", "What would you do?"),
        ("should I move with {him}?", "what would you do?"),
        rels=(("boyfriend", "M"), ("girlfriend", "F"), ("partner", "")),
        age_range=(20, 38),
    ),
    _Scenario(
        "dating_advice",
        _PERSON,
        (
            _f(
                "got mad about a text from my friend {name2}",
                "{He} checks my phone and got mad about a text from my friend {name2}.",
                "A text from my friend {name2} set {him} off.",
            ),
            _f(
                "has been dating me for {months}",
                "We've only been dating for {months}.",
                "It's only been {months} since we started dating.",
            ),
            _f(
                "made me cancel plans on {day}",
                "Last {day} {he} made me cancel plans with my family.",
                "{He} made me cancel my plans on {day}.",
            ),
            _f(
                "wants me to pay {amount} of {his} phone bill",
                "{He} also wants me to pay {amount} of {his} phone bill.",
                "Apparently I should cover {amount} of {his} phone bill now.",
            ),
        ),
        ("Is this a red flag or am I overthinking it?", "Should I end it?"),
        ("is this a red flag?", "should I end it?", "am I overthinking?"),
        rels=(("boyfriend", "M"), ("girlfriend", "F")),
        age_range=(19, 34),
    ),
    _Scenario(
        "family",
        _PERSON,
        (
            _f(
                "is getting married in {place} in {month}",
                "{He} is getting married in {place} in {month}.",
                "The wedding is in {place} in {month}.",
            ),
            _f(
                "expects me to spend {big_amount} on the trip",
                "{He} expects everyone to spend around {big_amount} on the trip.",
                "All in, the trip would cost me {big_amount}.",
            ),
            _f(
                "won't let me bring my partner {name2}",
                "{He} told me I can't bring my partner {name2}.",
                "My partner {name2} isn't invited, according to {him}.",
            ),
            _f(
                "needs me to take {days} off work",
                "I'd have to take {days} off work to go.",
                "Going means taking {days} off work.",
            ),
        ),
        ("Would it be wrong to skip the wedding?", "How do I tell {him} I'm not going?"),
        ("should I skip the wedding?", "how do I tell {him}?"),
        rels=(("brother", "M"), ("sister", "F"), ("cousin", "")),
        age_range=(22, 40),
    ),
    _Scenario(
        "family",
        _PERSON,
        (
            _f(
                "took my car {times} without asking",
                "{He} has taken my car {times} this month without asking.",
                "This month alone {he} took my car {times} without asking.",
            ),
            _f(
                "put {miles} on it",
                "Last time {he} brought it back with {miles} more on it and no gas.",
                "{He} put {miles} on it in one night.",
            ),
            _f(
                "just moved back from {place}",
                "My parents say to let it go because {he} just moved back from {place}.",
                "{He} just moved back home from {place}.",
            ),
            _f(
                "dented it and the repair costs {amount}",
                "{He} dented the bumper and the repair quote is {amount}.",
                "Now there's a dent and the repair quote is {amount}.",
            ),
        ),
        ("Am I wrong for wanting {him} to pay?", "How do I set boundaries with {him}?"),
        ("am I wrong to want {him} to pay?", "how do I set boundaries?"),
        rels=(("brother", "M"), ("sister", "F")),
        age_range=(18, 30),
    ),
    _Scenario(
        "pets",
        _f(
            "my {species} {pet}",
            "I ({page}) have a {species} named {pet}.",
            "My {species} {pet} is basically my whole world.",
            "I adopted my {species} {pet} from a shelter a while back.",
        ),
        (
            _f(
                "has been throwing up for {days}",
                "{He} has been throwing up for {days}.",
                "For {days} now {he} can't keep food down.",
            ),
            _f(
                "needs {big_amount} worth of vet tests",
                "The vet quoted {big_amount} for tests and an x-ray.",
                "The tests alone would cost {big_amount}.",
            ),
            _f("is only {years} old", "{He} is only {years} old.", "{He} just turned {years} old."),
            _f(
                "can only be seen on {day} in {place}",
                "The only vet that can see {him} on {day} is in {place}.",
                "The earliest appointment is {day} in {place}.",
            ),
        ),
        ("Is it worth paying for the tests or should I wait?", "What would you do?"),
        ("should I pay for the tests?", "what would you do?"),
    ),
    _Scenario(
        "pets",
        _f(
            "my {species} {pet}",
            "I ({page}) share my apartment with my {species} {pet}.",
            "My {species} {pet} has lived with me since I moved out.",
        ),
        (
            _f(
                "has to be rehomed by {month}",
                "My landlord says the {species} has to go by {month}.",
                "I've been told {he} needs a new home by {month}.",
            ),
            _f(
                "would need a {amount} pet deposit",
                "Keeping {him} would mean a {amount} pet deposit.",
                "The landlord wants a {amount} pet deposit.",
            ),
            _f("has been with me for {years}", "I've had {him} for {years}.", "{He} has been with me for {years}."),
            _f(
                "got {times} noise complaints",
                "A neighbour has complained {times} about the noise.",
                "There have been {times} noise complaints.",
            ),
        ),
        ("How do I keep {him} without getting evicted?", "Any advice before I lose {him}?"),
        ("how do I keep {him}?", "any advice?"),
    ),
    _Scenario(
        "health",
        _FactSpec("I ({page})", _SELF_INTROS + ("I ({page}) have never had health problems before.",)),
        (
            _f(
                "have had daily headaches for {weeks}",
                "I've had headaches almost every day for {weeks}.",
                "For {weeks} I've had a headache nearly every day.",
            ),
            _f(
                "have missed {days} of work",
                "I've already missed {days} of work because of it.",
                "Because of this I have missed {days} of work.",
            ),
            _f(
                "can't see my doctor until {month}",
                "My doctor can't see me until {month}.",
                "The earliest appointment with my doctor is in {month}.",
            ),
            _f(
                "would pay {amount} for a clinic visit",
                "A walk-in clinic visit costs {amount} without insurance.",
                "Without insurance a clinic visit is {amount}.",
            ),
        ),
        ("Should I wait or go to urgent care?", "Is this worth worrying about?"),
        ("should I go to urgent care?", "should I be worried?"),
    ),
    _Scenario(
        "health",
        _FactSpec("I ({page})", _SELF_INTROS + ("I'm {page} and pretty active.",)),
        (
            _f(
                "hurt my knee running {miles} on {day}",
                "I hurt my knee running {miles} on {day}.",
                "On {day} I ran {miles} and something popped in my knee.",
            ),
            _f(
                "have had a swollen knee for {days}",
                "My knee has been swollen for {days}.",
                "The swelling hasn't gone down in {days}.",
            ),
            _f(
                "was told by my coach {name2} to just ice it",
                "My coach {name2} says to just ice it.",
                "According to my coach {name2}, I should just ice it.",
            ),
            _f(
                "would pay {amount} per physio session",
                "Physical therapy would be {amount} a session.",
                "A physio session costs {amount}.",
            ),
        ),
        ("Should I see a doctor or keep icing it?", "How long should I wait?"),
        ("should I see a doctor?", "how long do I wait?"),
    ),
    _Scenario(
        "travel",
        _FactSpec("I ({page})", _SELF_INTROS + ("I ({page}) was supposed to be on vacation right now.",)),
        (
            _f(
                "had my {day} flight to {place} cancelled",
                "My flight to {place} was cancelled on {day}.",
                "On {day} the airline cancelled my flight to {place}.",
            ),
            _f(
                "was offered a {amount} voucher",
                "The airline only offered a {amount} voucher.",
                "All they gave me was a {amount} voucher.",
            ),
            _f(
                "paid {big_amount} for a new ticket",
                "I had to pay {big_amount} for a new ticket.",
                "A new ticket cost me {big_amount}.",
            ),
            _f(
                "was stuck at the airport for {hours}",
                "I was stuck at the airport for {hours}.",
                "I spent {hours} stuck at the airport.",
            ),
        ),
        ("Can I get a real refund or is the voucher it?", "How do I fight this?"),
        ("can I get a refund?", "how do I fight this?"),
    ),
    _Scenario(
        "travel",
        _PERSON,
        (
            _f(
                "planned a trip to {place} with me in {month}",
                "We planned a trip to {place} in {month}.",
                "In {month} we are supposed to go to {place} together.",
            ),
            _f(
                "wants to stay {days} when I only have {days2} off",
                "{He} wants to stay {days} but I can only get {days2} off.",
                "I only have {days2} off and {he} wants to stay {days}.",
            ),
            _f(
                "let me pay the {amount} deposit",
                "I already paid the {amount} deposit for the rental.",
                "I covered the {amount} deposit myself.",
            ),
            _f(
                "wants to invite {his} ex {name2}",
                "Now {he} wants to invite {his} ex {name2}.",
                "{He} just asked if {his} ex {name2} can come.",
            ),
        ),
        ("How do I tell {him} this isn't working?", "Should I cancel?"),
        ("should I cancel?", "how do I tell {him}?"),
        rels=(("friend", ""), ("best friend", "")),
    ),
    _Scenario(
        "neighbors",
        _PERSON,
        (
            _f(
                "plays music until {night}",
                "{He} plays loud music until {night} on weeknights.",
                "The music goes until {night} most nights.",
            ),
            _f(
                "has ignored my requests {times}",
                "I've asked {him} {times} to turn it down.",
                "{He} has ignored my polite requests {times} now.",
            ),
            _f(
                "keeps me up before my {morning} shifts",
                "I start work at {morning} so I'm exhausted.",
                "My shift starts at {morning} and I can't sleep.",
            ),
            _f(
                "has a lease that renews in {month}",
                "The building manager said to wait until {his} lease renews in {month}.",
                "{His} lease renews in {month}.",
            ),
        ),
        ("Should I call the police or the landlord?", "How do I deal with this?"),
        ("should I call the landlord?", "how do I deal with this?"),
        rels=(("neighbor", ""), ("downstairs neighbor", "")),
        age_range=(22, 60),
    ),
    _Scenario(
        "neighbors",
        _PERSON,
        (
            _f(
                "built a fence {feet} onto my yard",
                "{He} built a fence {feet} onto my property.",
                "The new fence is {feet} onto my side.",
            ),
            _f(
                "would cost me {amount} in survey fees",
                "A surveyor would cost me {amount}.",
                "Getting it surveyed would be {amount}.",
            ),
            _f(
                "has lived here {years}",
                "{He} has lived here {years} and says it's always been that way.",
                "{He} claims that in {years} nobody complained.",
            ),
            _f(
                "blocks my driveway with {his} {brand}",
                "{He} also parks {his} {brand} across my driveway.",
                "{His} {brand} blocks my driveway most mornings.",
            ),
        ),
        ("Is it worth the fight?", "What are my options?"),
        ("is it worth the fight?", "what are my options?"),
        rels=(("neighbor", ""), ("next door neighbor", "")),
        age_range=(30, 66),
    ),
    _Scenario(
        "cars",
        _f(
            "my {year} {brand}",
            "I ({page}) drive a {year} {brand} that I bought used.",
            "My car is a {year} {brand} and it's been reliable until now.",
            "Quick background: I'm {page} and my only car is a {year} {brand}.",
        ),
        (
            _f(
                "needs a {big_amount} transmission repair",
                "The mechanic says the transmission repair is {big_amount}.",
                "Fixing the transmission would be {big_amount}.",
            ),
            _f(
                "is only worth {big_amount2}",
                "The car is only worth about {big_amount2}.",
                "Realistically it's worth {big_amount2}.",
            ),
            _f(
                "is how I commute {miles} each way",
                "I drive {miles} each way to work.",
                "My commute is {miles} each way.",
            ),
            _f(
                "can't be fixed until {day}",
                "The shop can't look at it until {day}.",
                "The earliest the shop can fix it is {day}.",
            ),
        ),
        ("Fix it or buy something else?", "What would you do?"),
        ("should I fix it?", "what would you do?"),
    ),
    _Scenario(
        "cars",
        _f(
            "my {year} {brand}",
            "I ({page}) have a {year} {brand} that I love.",
            "My {year} {brand} is finally paid off.",
        ),
        (
            _f(
                "got hit on {day} by someone who drove off",
                "Someone hit it in a parking lot on {day} and drove off.",
                "On {day} somebody backed into it and left.",
            ),
            _f(
                "needs {amount} of bumper work",
                "The body shop quoted {amount} for the bumper.",
                "Fixing the bumper is {amount}.",
            ),
            _f(
                "has a {amount2} deductible", "My deductible is {amount2}.", "The deductible on my policy is {amount2}."
            ),
            _f(
                "has a witness, {name2}, who saw the plate",
                "A witness named {name2} got part of the plate.",
                "A guy named {name2} saw the plate.",
            ),
        ),
        ("Is it worth going through insurance?", "What should I do next?"),
        ("should I go through insurance?", "what should I do next?"),
    ),
    _Scenario(
        "friendship",
        _PERSON,
        (
            _f(
                "has cancelled on me {times} in a row",
                "{He} has cancelled on me {times} in a row.",
                "That's {times} in a row that {he} bailed on me.",
            ),
            _f("has been my friend for {years}", "We've been friends for {years}.", "I've known {him} for {years}."),
            _f(
                "partied in {place} after saying {he} was sick",
                "{He} posted photos from a party in {place} the night {he} said {he} was sick.",
                "{He} said {he} was sick, then posted party pics from {place}.",
            ),
            _f(
                "owes me {amount} from a concert in {month}",
                "{He} also owes me {amount} from a concert in {month}.",
                "There's still the {amount} {he} owes me from a concert in {month}.",
            ),
        ),
        ("Is this friendship worth saving?", "Should I confront {him}?"),
        ("should I confront {him}?", "is this friendship worth saving?"),
        rels=(("friend", ""), ("best friend", "")),
    ),
)

_DISTRACTORS: tuple[str, ...] = (
    "My sister {x_fname} lives in {x_place}, so I can't just crash with her.",
    "I also have a dentist appointment on {x_day}, which doesn't help.",
    "Last summer I spent {x_days} in {x_place} and it was great.",
    "My friend {x_mname} thinks I'm overthinking it.",
    "For context, I pay {x_amount} a month for my phone plan.",
    "I've been at my current job for {x_years}.",
    "My cousin {x_fname} went through something similar in {x_month}.",
    "I used to live in {x_place} before moving here.",
    "We watched a movie on {x_day} and everything seemed fine.",
    "My mom says I should call my uncle {x_mname} about it.",
    "The weather here has been awful since {x_month}.",
    "My gym membership renewed yesterday for {x_amount}.",
    "I've been trying to run {x_miles} a week to clear my head.",
    "My coworker {x_fname} says her brother had the same thing happen.",
)
_OPENERS: tuple[str, ...] = (
    "Throwaway for obvious reasons.",
    "Long time lurker, first time posting.",
    "Sorry if this is long, I'm on mobile.",
    "Not sure if this is the right sub.",
    "Okay so this has been bugging me for a while.",
)
_FEELINGS: tuple[str, ...] = (
    "I'm honestly so stressed about this.",
    "I don't want to overreact but it's really getting to me.",
    "I feel like I'm going crazy.",
    "Everyone I ask gives me a different answer.",
    "I hate confrontation so I've mostly kept quiet.",
    "It's starting to affect my sleep.",
)
_GENERIC_QUESTIONS: tuple[str, ...] = ("What would you do?", "Any advice?", "What should I do here?")
_CONNECTORS: tuple[str, ...] = ("Also, ", "On top of that, ", "To make it worse, ", "And ", "Plus, ")
_PRONOUNS: dict[str, dict[str, str]] = {
    "M": {"he": "he", "He": "He", "his": "his", "His": "His", "him": "him"},
    "F": {"he": "she", "He": "She", "his": "her", "His": "Her", "him": "her"},
}
_SPECIES: tuple[str, ...] = ("dog", "cat", "rabbit")
_SLOT_SUFFIX = re.compile(r"^x\d*_|\d+$")
_VALUE_KINDS = frozenset({*VALUE_POOLS, "age", "page", *QUANTITY_RANGES})
_UNIT_WORDS = frozenset(QUANTITY_RANGES) | {"am", "pm", "m", "f"}
_MIN_POST_WORDS, _MAX_POST_WORDS = 50, 110
_MIN_REF_WORDS, _MAX_REF_WORDS = 12, 30


def _slot_kind(key: str) -> str:
    return _SLOT_SUFFIX.sub("", key)


def _atoms(value: str) -> set[str]:
    """Numbers and words of a value, unit words excluded; two values of one post never share an atom."""
    words = set(re.findall(r"[a-z]+", value.lower())) - _UNIT_WORDS
    return set(re.findall(r"\d+", value.replace(",", ""))) | words


class _Slots(dict):
    """Template slot values, drawn on first use (``str.format_map``) and unique within a post."""

    def __init__(self, rng: random.Random, scenario: _Scenario) -> None:
        super().__init__()
        self.rng = rng
        self.scenario = scenario
        rel, gender = rng.choice(scenario.rels)
        self.gender = gender or rng.choice("MF")
        self.used: set[str] = set()
        self.update(_PRONOUNS[self.gender])
        self["rel"] = rel
        self["species"] = rng.choice(_SPECIES)
        self.poster_gender = rng.choice("MF")

    def _draw(self, key: str) -> str:
        rng, kind = self.rng, _slot_kind(key)
        if kind == "name" and key == "name":
            return rng.choice(MALE_NAMES if self.gender == "M" else FEMALE_NAMES)
        if kind == "age":
            return f"{rng.randint(*self.scenario.age_range)}{self.gender}"
        if kind == "page":
            return f"{rng.randint(19, 34)}{self.poster_gender}"
        if kind in QUANTITY_RANGES:
            return f"{rng.randint(*QUANTITY_RANGES[kind])} {kind}"
        return rng.choice(VALUE_POOLS[kind])

    def __missing__(self, key: str) -> str:
        if _slot_kind(key) not in _VALUE_KINDS:
            raise KeyError(key)
        value = self._draw(key)
        for _ in range(200):
            if not (_atoms(value) & self.used):
                break
            value = self._draw(key)
        self.used |= _atoms(value)
        self[key] = value
        return value


def _value_fields(template: str) -> list[str]:
    fields = [name for _, name, _, _ in Formatter().parse(template) if name]
    return list(dict.fromkeys(f for f in fields if _slot_kind(f) in _VALUE_KINDS))


def _sentence_case(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _after_connector(s: str) -> str:
    """Lower-case the first letter unless the sentence starts with "I" or a value (a proper noun)."""
    first = s.split(" ", 1)[0].strip(",.'")
    if first in ("I", "I'm", "I've", "I'd") or first.lower() in VALUE_VOCAB:
        return s
    return s[0].lower() + s[1:]


def _join_clauses(clauses: list[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _try_post(rng: random.Random, post_id: str) -> Post | None:
    """One attempt at a post; ``None`` when its post or reference length falls outside the allowed range."""
    scenario = rng.choice(_SCENARIOS)
    subject = scenario.subject
    if subject is _PERSON and rng.random() < 0.25:
        subject = _PERSON_NONAME
    slots = _Slots(rng, scenario)
    n_clauses = rng.randint(1, 3)
    chosen = rng.sample(scenario.clauses, n_clauses)

    sentences: list[str] = []
    if rng.random() < 0.5:
        sentences.append(rng.choice(_OPENERS))
    sentences.append(rng.choice(subject.posts).format_map(slots))
    facts = [Fact(subject.clause.format_map(slots), tuple(slots[k] for k in _value_fields(subject.clause)))]
    body: list[str] = []
    for spec in chosen:
        sentence = rng.choice(spec.posts).format_map(slots)
        if body and rng.random() < 0.35:
            sentence = rng.choice(_CONNECTORS) + _after_connector(sentence)
        body.append(_sentence_case(sentence))
        facts.append(Fact(spec.clause.format_map(slots), tuple(slots[k] for k in _value_fields(spec.clause))))

    distractor_values: list[str] = []
    for j, template in enumerate(rng.sample(_DISTRACTORS, rng.randint(1, 3))):
        template = template.replace("{x_", f"{{x{j}_")  # fresh slot values for each distractor sentence
        body.insert(rng.randint(1, len(body)), template.format_map(slots))
        distractor_values += [slots[k] for k in _value_fields(template)]
    sentences += body
    if rng.random() < 0.5:
        sentences.append(rng.choice(_FEELINGS))
    sentences.append(rng.choice(scenario.questions + _GENERIC_QUESTIONS).format_map(slots))
    text = " ".join(sentences)

    question = rng.choice(scenario.summary_questions + ("what should I do?",)).format_map(slots)
    reference = f"{facts[0].text} {_join_clauses([f.text for f in facts[1:]])}, {question}"
    if not (_MIN_POST_WORDS <= len(text.split()) <= _MAX_POST_WORDS):
        return None
    if not (_MIN_REF_WORDS <= len(reference.split()) <= _MAX_REF_WORDS):
        return None
    return Post(post_id, scenario.topic, text, tuple(facts), tuple(distractor_values), reference)


def generate_posts(n: int, seed: int, id_prefix: str = "p") -> list[Post]:
    """``n`` posts, deterministic by ``seed``; ids ``f"{id_prefix}{i:05d}"``."""
    rng = random.Random(seed)
    posts: list[Post] = []
    for i in range(n):
        post = None
        while post is None:  # rejection sampling on length keeps the stream deterministic
            post = _try_post(rng, f"{id_prefix}{i:05d}")
        posts.append(post)
    return posts
