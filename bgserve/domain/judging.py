"""The pairwise judge's side that needs no network: which answer goes first, the
messages sent, how a reply is read, how two orders combine, and the win rate. Pure.

A judge model tends to prefer the answer in one position; the order is therefore drawn
per case (deterministically from the case id and a seed, so a rerun asks the same
questions), and with ``both_orders`` each case is asked twice, once each way: green
wins only when both answers say so, loses only when both prefer blue, and anything else
is a tie.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from bgserve.domain.confidence import Interval, wilson_interval

__all__ = [
    "DEFAULT_RUBRIC",
    "Choice",
    "JudgeSummary",
    "Judgement",
    "Outcome",
    "combine",
    "green_first",
    "judge_messages",
    "parse_choice",
    "summarize_judgements",
]

Outcome = Literal["win", "lose", "tie", "error"]
Choice = Literal["A", "B", "TIE"]

DEFAULT_RUBRIC = (
    "The better answer follows the instructions in the input, is correct, complete and "
    "concise, and contains nothing invented."
)
_CHOICE = re.compile(r"\b(A|B|TIE)\b")


def green_first(case_id: str, seed: str) -> bool:
    """Whether green's answer is shown as A for this case: a fair coin per case that is
    the same on every run with the same seed."""
    return random.Random(f"{seed}:{case_id}").random() < 0.5


def judge_messages(
    rubric: str,
    inputs: Mapping[str, str],
    answer_a: str,
    answer_b: str,
    conversation: Sequence[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """The chat messages asking which of two answers better fulfils ``rubric``;
    ``conversation`` is the case's client messages as ``(role, content)``, shown after
    the inputs (the answers reply to its last message)."""
    shown_inputs = "\n".join(f"{name}: {value}" for name, value in inputs.items())
    if conversation:
        turns = "\n".join(f"{role}: {content}" for role, content in conversation)
        shown_inputs += f"\n\nConversation (the answers reply to its last message):\n{turns}"
    return [
        {
            "role": "system",
            "content": "You compare two answers to the same input against a rubric. Reply "
            "with exactly one word: A if answer A is better, B if answer B is better, TIE "
            "if neither is better.",
        },
        {
            "role": "user",
            "content": f"Rubric:\n{rubric}\n\nInput:\n{shown_inputs}\n\n"
            f"Answer A:\n{answer_a}\n\nAnswer B:\n{answer_b}\n\nWhich answer is better: "
            "A, B or TIE?",
        },
    ]


def parse_choice(reply: str) -> Choice:
    """The first A, B or TIE word of ``reply`` (case-insensitive). Raises ValueError."""
    found = _CHOICE.search(reply.upper())
    if found is None:
        raise ValueError(f"the judge's reply {reply[:80]!r} names neither A, B nor TIE")
    choice: Choice = found.group(1)  # type: ignore[assignment]
    return choice


def _for_green(choice: Choice, green_is_a: bool) -> Outcome:
    if choice == "TIE":
        return "tie"
    return "win" if (choice == "A") == green_is_a else "lose"


class Judgement(BaseModel):
    """The judge's outcome for green on one case, and what each asked order answered."""

    outcome: Outcome
    orders: list[str]
    """One entry per order asked, e.g. ``green as A: A``."""
    error: str | None = None


def combine(answers: Sequence[tuple[bool, Choice]]) -> Judgement:
    """One judgement from the ``(green_is_a, choice)`` of each order asked."""
    outcomes = {_for_green(choice, green_is_a) for green_is_a, choice in answers}
    orders = [f"green as {'A' if g else 'B'}: {choice}" for g, choice in answers]
    outcome: Outcome = outcomes.pop() if len(outcomes) == 1 else "tie"
    return Judgement(outcome=outcome, orders=orders)


class JudgeSummary(BaseModel):
    """Green's record against blue in the judge's eyes; ties count half a win."""

    model: str
    both_orders: bool
    wins: int
    losses: int
    ties: int
    errors: int
    judged: int
    win_rate: float | None
    interval: Interval | None


def summarize_judgements(
    judgements: Sequence[Judgement], model: str, both_orders: bool, confidence: float
) -> JudgeSummary:
    """Counts, green's win rate and its Wilson interval over the judged cases."""
    count = {o: sum(j.outcome == o for j in judgements) for o in ("win", "lose", "tie", "error")}
    judged = count["win"] + count["lose"] + count["tie"]
    points = count["win"] + count["tie"] / 2
    return JudgeSummary(
        model=model,
        both_orders=both_orders,
        wins=count["win"],
        losses=count["lose"],
        ties=count["tie"],
        errors=count["error"],
        judged=judged,
        win_rate=points / judged if judged else None,
        interval=wilson_interval(points, judged, confidence),
    )
