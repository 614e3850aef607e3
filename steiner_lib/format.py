"""Steiner's reasoning format: the 14 special tokens, the step schema, render and parse.

A reasoning trace is

    <|reasoning_start|>
    <|reasoning_step_start|>
      <|reasoning_step_name_start|>NAME<|reasoning_step_name_end|>
      <|reasoning_step_thought_start|>THOUGHT<|reasoning_step_thought_end|>
      <|reasoning_step_summary_start|>SUMMARY<|reasoning_step_summary_end|>
      <|reasoning_step_reflection_start|>REFLECTION<|reasoning_step_reflection_end|>
    <|reasoning_step_end|>
    <|reasoning_proceed|>            (or <|reasoning_backtrack|>NAME OF THE STEP RETURNED TO)
    <|reasoning_step_start|> ... <|reasoning_step_end|>
    <|reasoning_end|>
    VISIBLE ANSWER

(the indentation above is for reading; `render` writes no indentation, only the newlines
 listed in `render`'s docstring). A backtrack returns to the state reached *after* the
 named step; the reserved name `QUESTION` returns to the question itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

REASONING_START = "<|reasoning_start|>"
REASONING_END = "<|reasoning_end|>"
PROCEED = "<|reasoning_proceed|>"
BACKTRACK = "<|reasoning_backtrack|>"
STEP_START = "<|reasoning_step_start|>"
STEP_END = "<|reasoning_step_end|>"
NAME_START = "<|reasoning_step_name_start|>"
NAME_END = "<|reasoning_step_name_end|>"
THOUGHT_START = "<|reasoning_step_thought_start|>"
THOUGHT_END = "<|reasoning_step_thought_end|>"
SUMMARY_START = "<|reasoning_step_summary_start|>"
SUMMARY_END = "<|reasoning_step_summary_end|>"
REFLECTION_START = "<|reasoning_step_reflection_start|>"
REFLECTION_END = "<|reasoning_step_reflection_end|>"

# The 14 tokens in the order of the released tokenizer (peakji/steiner-32b-preview).
SPECIAL_TOKENS: tuple[str, ...] = (
    REASONING_START, REASONING_END, PROCEED, BACKTRACK, STEP_START, STEP_END,
    NAME_START, NAME_END, THOUGHT_START, THOUGHT_END,
    SUMMARY_START, SUMMARY_END, REFLECTION_START, REFLECTION_END,
)

# The four fields of a step, in order, with their delimiting tokens.
STEP_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", NAME_START, NAME_END),
    ("thought", THOUGHT_START, THOUGHT_END),
    ("summary", SUMMARY_START, SUMMARY_END),
    ("reflection", REFLECTION_START, REFLECTION_END),
)

# Reserved backtrack target: return to the question (before any step).
QUESTION = "QUESTION"


@dataclass(frozen=True)
class Step:
    name: str
    thought: str
    summary: str
    reflection: str


@dataclass(frozen=True)
class Backtrack:
    """Return to the state after the step called `to` (or to the question, `QUESTION`)."""

    to: str


Move = Union[Literal["proceed"], Backtrack]


@dataclass(frozen=True)
class Trace:
    """Steps, the move after each step but the last (len(moves) == len(steps) - 1), the answer."""

    steps: tuple[Step, ...]
    moves: tuple[Move, ...]
    answer: str

    def __post_init__(self) -> None:
        if len(self.steps) and len(self.moves) != len(self.steps) - 1:
            raise ValueError(
                f"a trace with {len(self.steps)} steps needs {len(self.steps) - 1} moves, got {len(self.moves)}"
            )

    @property
    def n_backtracks(self) -> int:
        return sum(isinstance(m, Backtrack) for m in self.moves)


def render_step(step: Step) -> str:
    parts = [STEP_START]
    for attr, start, end in STEP_FIELDS:
        parts += [start, getattr(step, attr), end]
    parts.append(STEP_END)
    return "".join(parts)


def render_move(move: Move) -> str:
    if move == "proceed":
        return PROCEED
    return f"{BACKTRACK}{move.to}"


def render_reasoning(trace: Trace) -> str:
    """The reasoning part only: reasoning_start ... reasoning_end (no answer).

    Layout: a newline after reasoning_start, after every step_end and after every move.
    """
    out = [REASONING_START, "\n"]
    for i, step in enumerate(trace.steps):
        out += [render_step(step), "\n"]
        if i < len(trace.moves):
            out += [render_move(trace.moves[i]), "\n"]
    out.append(REASONING_END)
    return "".join(out)


def render(trace: Trace) -> str:
    """The whole assistant output: reasoning, a newline, then the visible answer."""
    return render_reasoning(trace) + "\n" + trace.answer


@dataclass(frozen=True)
class FormatError:
    kind: str  # one of ERROR_KINDS
    position: int  # character offset in the parsed text
    detail: str = ""


@dataclass
class ParseResult:
    trace: Trace  # what could be read (complete steps only)
    errors: list[FormatError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.errors:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        return counts


# TODO(parser): ERROR_KINDS and parse(text) -> ParseResult are implemented below.

__all__ = [
    "SPECIAL_TOKENS", "STEP_FIELDS", "QUESTION", "Step", "Backtrack", "Move", "Trace",
    "render", "render_reasoning", "render_step", "render_move",
    "FormatError", "ParseResult", "ERROR_KINDS", "parse",
]
