"""Countdown-style arithmetic search: the default task domain.

Rules: a multiset of positive integers and a target. One operation takes two numbers of
the current multiset, combines them with + - * / and puts the result back. Results must
be positive integers: subtraction takes the larger minus the smaller (a zero result is
not allowed), division must be exact. Each number is used at most once; not every number
has to be used. The problem is solved when the target is in the multiset.

The *canonical state* of a step is the sorted tuple of the numbers that remain after it.
Different orders of operations reach the same state, so the reasoning graph is a DAG.
"""

from __future__ import annotations

from dataclasses import dataclass

State = tuple[int, ...]  # sorted ascending: the canonical form of a multiset of numbers

OPS: tuple[str, ...] = ("+", "-", "*", "/")
# How operations are written in reasoning text.
OP_SYMBOL = {"+": "+", "-": "-", "*": "×", "/": "÷"}


def canonical(numbers) -> State:
    return tuple(sorted(int(n) for n in numbers))


@dataclass(frozen=True)
class Problem:
    numbers: State  # canonical start state
    target: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "numbers", canonical(self.numbers))


@dataclass(frozen=True)
class Operation:
    """`a op b = result` with a >= b (so - and / read naturally)."""

    a: int
    op: str
    b: int
    result: int

    def text(self) -> str:
        return f"{self.a} {OP_SYMBOL[self.op]} {self.b} = {self.result}"


def combine(a: int, op: str, b: int) -> int | None:
    """The result of a op b under the rules (a >= b), or None when not allowed."""
    if a < b:
        a, b = b, a
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b > 0 and a % b == 0 else None
    raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def make_operation(a: int, op: str, b: int) -> Operation | None:
    if a < b:
        a, b = b, a
    r = combine(a, op, b)
    return None if r is None else Operation(a, op, b, r)


def legal_operations(state: State) -> list[Operation]:
    """Every distinct legal operation from a state, in a deterministic order.

    Operations that only repeat a value (x*1, x/1) are kept: they are legal, if useless.
    """
    seen: set[Operation] = set()
    out: list[Operation] = []
    n = len(state)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = state[j], state[i]  # state is sorted, so a >= b
            for op in OPS:
                o = make_operation(a, op, b)
                if o is not None and o not in seen:
                    seen.add(o)
                    out.append(o)
    return out


def apply(state: State, operation: Operation) -> State:
    """The state after `operation`; raises ValueError if the operation is not legal here."""
    rest = list(state)
    try:
        rest.remove(operation.a)
        rest.remove(operation.b)
    except ValueError:
        raise ValueError(f"{operation.text()} uses numbers not in {state}") from None
    if combine(operation.a, operation.op, operation.b) != operation.result:
        raise ValueError(f"{operation.text()} is not a legal operation")
    return canonical(rest + [operation.result])


def is_solved(state: State, target: int) -> bool:
    return target in state
