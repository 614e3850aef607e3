"""Domain-level reasoning traces: steps that know which states they connect.

A `Trajectory` is what synthesis produces and what the DAG is built from: every step
carries the canonical state it starts from and the state its text claims to reach, so
steps can be clustered (exactly, by state) and linked into one DAG per question.
`Trajectory.trace()` drops the states and gives the plain `format.Trace` that is rendered
into the 14-token text the model is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steiner_lib.format import Backtrack, Move, Step, Trace
from steiner_lib.tasks.countdown import Operation, State


@dataclass(frozen=True)
class StepRecord:
    parent: State  # canonical state the step starts from
    state: State  # canonical state the step's text claims to reach
    operation: Operation | None  # None when the step's text could not be read as an operation
    arithmetic_ok: bool  # False for a hallucinated step (claimed result is wrong)
    step: Step  # the step's text


def claimed_result(record: StepRecord) -> int:
    """The result a step's text claims: the number its state gained over the parent's rest."""
    rest = list(record.parent)
    rest.remove(record.operation.a)
    rest.remove(record.operation.b)
    gained = list(record.state)
    for x in rest:  # remove the untouched numbers; the one left is the claimed result
        gained.remove(x)
    return gained[0]


@dataclass(frozen=True)
class Trajectory:
    question_id: str
    source: str  # "shortcut" (forward only) or "augmented" (teacher continuation with backtracking)
    records: tuple[StepRecord, ...]
    moves: tuple[Move, ...]  # len(records) - 1 moves, as in format.Trace
    answer: str  # the visible answer text after reasoning_end
    solved: bool  # the last step's state holds the correct value
    meta: dict = field(default_factory=dict, compare=False)  # teacher statistics (see teachers.py)

    def trace(self) -> Trace:
        return Trace(tuple(r.step for r in self.records), tuple(self.moves), self.answer)

    @property
    def n_backtracks(self) -> int:
        return sum(isinstance(m, Backtrack) for m in self.moves)
