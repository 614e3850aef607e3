"""Countdown-style arithmetic search: the default task domain.

Rules: a multiset of positive integers and a target. One operation takes two numbers of
the current multiset, combines them with + - * / and puts the result back. Results must
be positive integers: subtraction takes the larger minus the smaller (a zero result is
not allowed), division must be exact. Each number is used at most once; not every number
has to be used. The problem is solved when the target is in the multiset.

Optionally a problem caps every result at `max_result` (a rule its question states): an
operation whose result would exceed it is not legal. The cap keeps the values a problem
reaches in a range whose arithmetic a small model can learn; None means no cap. Every
function below that applies the rules takes the cap as `max_result` (a Problem carries it).

The *canonical state* of a step is the sorted tuple of the numbers that remain after it.
Different orders of operations reach the same state, so the reasoning graph is a DAG.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

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
    max_result: int | None = None  # every result must be <= this (None: no cap)

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


def _exact(a: int, op: str, b: int) -> int | None:
    """a op b (a >= b) under the rules without a cap, or None when not allowed."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b > 0 and a % b == 0 else None
    raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def combine(a: int, op: str, b: int, max_result: int | None = None) -> int | None:
    """The result of a op b under the rules (a >= b), or None when not allowed."""
    if a < b:
        a, b = b, a
    r = _exact(a, op, b)
    return None if r is None or (max_result is not None and r > max_result) else r


def make_operation(a: int, op: str, b: int, max_result: int | None = None) -> Operation | None:
    if a < b:
        a, b = b, a
    r = combine(a, op, b, max_result)
    return None if r is None else Operation(a, op, b, r)


def legal_operations(state: State, max_result: int | None = None) -> list[Operation]:
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
                o = make_operation(a, op, b, max_result)
                if o is not None and o not in seen:
                    seen.add(o)
                    out.append(o)
    return out


def apply(state: State, operation: Operation, max_result: int | None = None) -> State:
    """The state after `operation`; raises ValueError if the operation is not legal here."""
    rest = list(state)
    try:
        rest.remove(operation.a)
        rest.remove(operation.b)
    except ValueError:
        raise ValueError(f"{operation.text()} uses numbers not in {state}") from None
    if combine(operation.a, operation.op, operation.b, max_result) != operation.result:
        raise ValueError(f"{operation.text()} is not a legal operation"
                         + ("" if max_result is None else f" (results at most {max_result})"))
    return canonical(rest + [operation.result])


def is_solved(state: State, target: int) -> bool:
    return target in state


# --- Search over states -------------------------------------------------------------
#
# Everything below is memoised on canonical states: the same state recurs across the steps of
# one problem (the DAG) and across problems (small numbers repeat), and the teachers ask
# `distance_to_value` for every step of every synthesized trace. The caches are bounded so
# that five-number problems stay near 1 GB per process.


@lru_cache(maxsize=1 << 16)
def successors(state: State, max_result: int | None = None) -> tuple[tuple[Operation, State], ...]:
    """Every legal operation from a canonical state with the state it leads to.

    Same operations in the same order as `legal_operations` (a test checks it), built
    directly: this runs for every state the reference search expands.
    """
    out = []
    seen_pairs = set()
    n = len(state)
    for i in range(n):
        b = state[i]
        for j in range(i + 1, n):
            a = state[j]
            if (a, b) in seen_pairs:  # a repeated number gives the same operations again
                continue
            seen_pairs.add((a, b))
            rest = state[:i] + state[i + 1:j] + state[j + 1:]
            for op in OPS:
                r = combine(a, op, b, max_result)
                if r is not None:
                    out.append((Operation(a, op, b, r), tuple(sorted(rest + (r,)))))
    return tuple(out)


def _pair_results(a: int, b: int, max_result: int | None = None) -> tuple[int, ...]:
    """Every legal result of combining a >= b (the same rules as `combine`, inlined for speed)."""
    if a > b:
        out = (a + b, a - b, a * b, a // b) if a % b == 0 else (a + b, a - b, a * b)
    else:
        out = (a + b, a * b, 1)  # a == b: a - a = 0 is not allowed, a / a = 1
    return out if max_result is None else tuple(r for r in out if r <= max_result)


@lru_cache(maxsize=1 << 17)
def _value_levels(state: State, max_result: int | None = None) -> tuple[frozenset[int], ...]:
    """levels[k] = every value held by some state reachable from `state` in at most k operations.

    A state of n numbers allows at most n - 1 operations, so there are max(n, 1) levels and the
    last one holds every reachable value. Built from the distinct child states' levels with set
    unions (C speed); child states are made here directly, without Operation objects, because
    this recursion is the hot loop of problem generation.
    """
    base = frozenset(state)
    n = len(state)
    if n < 2:
        return (base,)
    if n == 2:
        b, a = state
        return (base, base.union(_pair_results(a, b, max_result)))
    if n == 3:  # inlined: the two-number children are not worth a cached call each
        x, y, z = state
        one, two = set(state), set()
        for c, a, b in ((x, z, y), (y, z, x), (z, y, x)):  # c: the number left out; a >= b
            for r in _pair_results(a, b, max_result):
                one.add(r)
                two.update(_pair_results(r, c, max_result) if r >= c else _pair_results(c, r, max_result))
        return (base, frozenset(one), frozenset(two.union(one)))
    children: set[State] = set()
    for i in range(n):
        b = state[i]
        for j in range(i + 1, n):
            a = state[j]
            rest = state[:i] + state[i + 1:j] + state[j + 1:]
            for r in _pair_results(a, b, max_result):
                children.add(tuple(sorted(rest + (r,))))
    kids = [_value_levels(child, max_result) for child in children]
    levels = [base]
    for k in range(1, n):
        levels.append(base.union(*(kid[k - 1] for kid in kids)))
    return tuple(levels)


def _as_state(numbers) -> State:
    return numbers if type(numbers) is tuple else canonical(numbers)


def reachable_values(numbers, max_result: int | None = None) -> frozenset[int]:
    """Every value that appears in any state reachable from `numbers` (start numbers included)."""
    return _value_levels(canonical(numbers), max_result)[-1]


def distance_to_value(state: State, value: int, max_result: int | None = None) -> int | None:
    """Fewest operations from `state` to a state holding `value` (0 if held), None if unreachable."""
    for k, values in enumerate(_value_levels(_as_state(state), max_result)):
        if value in values:
            return k
    return None


def solve(problem: Problem) -> list[Operation] | None:
    """A shortest solution (fewest operations), or None when the target cannot be reached.

    Walks down the distances: from each state take the first operation (in legal order) whose
    result state is one operation closer to the target, so the answer is deterministic.
    """
    state, target, cap = problem.numbers, problem.target, problem.max_result
    d = distance_to_value(state, target, cap)
    if d is None:
        return None
    ops: list[Operation] = []
    while d > 0:
        for op, child in successors(state, cap):
            if distance_to_value(child, target, cap) == d - 1:
                ops.append(op)
                state, d = child, d - 1
                break
    return ops


def greedy_solve(problem: Problem) -> list[Operation] | None:
    """The shortcut heuristic: always take the result closest to the target, never backtrack.

    Ties go to the earlier operation in legal order. Returns the operations if the target is
    reached, else None.
    """
    state, target = problem.numbers, problem.target
    ops: list[Operation] = []
    while target not in state:
        succ = successors(state, problem.max_result)
        if not succ:
            return None
        op, state = min(succ, key=lambda s: abs(s[0].result - target))
        ops.append(op)
    return ops


@dataclass
class SearchStats:
    solved: bool
    operations: list[Operation]  # the solution found ([] when not solved)
    backtracks: int  # branches abandoned (returns from a dead end)
    expansions: int  # states whose children were generated


class _BudgetExhausted(Exception):
    pass


def reference_search(problem: Problem, max_expansions: int = 10_000) -> SearchStats:
    """Depth-first search, closest result first, stopping at the first solution. Defines difficulty.

    Children are ordered by |result - target| (ties: legal order), so the first path tried is
    exactly `greedy_solve`'s: greedy solves a problem iff this search needs no backtrack. A
    state already entered (through another order of operations) is not entered again.
    """
    target = problem.target
    path: list[Operation] = []
    visited = {problem.numbers}
    counts = {"backtracks": 0, "expansions": 0}
    key = lambda s: abs(s[0].result - target)  # noqa: E731

    def dfs(state: State) -> bool:
        if target in state:
            return True
        if counts["expansions"] >= max_expansions:
            raise _BudgetExhausted
        counts["expansions"] += 1
        for op, child in sorted(successors(state, problem.max_result), key=key):
            if child in visited:
                continue
            visited.add(child)
            path.append(op)
            if dfs(child):
                return True
            path.pop()
            counts["backtracks"] += 1
        return False

    try:
        solved = dfs(problem.numbers)
    except _BudgetExhausted:
        solved = False
    return SearchStats(solved, list(path) if solved else [], counts["backtracks"], counts["expansions"])


# --- Answers as expressions --------------------------------------------------------------

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_COMMUTATIVE = {"+", "*"}


def expression(operations: list[Operation]) -> str:
    """One arithmetic expression for a solution: "(50 × 3) + 25 + 7".

    Intermediate results are replaced by the expressions that made them. A compound operand is
    parenthesised unless the reading is unambiguous and natural: a left operand of the same
    precedence (left to right), or a right operand of the same commutative operation.
    """
    if not operations:
        raise ValueError("expression() needs at least one operation; a start number needs no expression")
    made: list[tuple[int, str, str | None]] = []  # (value, text, its top-level op) of unused results

    def operand(value: int, op: str, side: str) -> str:
        for i in range(len(made)):  # the earliest unused result with this value (reads in order)
            if made[i][0] == value:
                _, text, inner = made.pop(i)
                if side == "left":
                    plain = _PRECEDENCE[inner] == _PRECEDENCE[op]
                else:
                    plain = inner == op and op in _COMMUTATIVE
                return text if plain else f"({text})"
        return str(value)  # a start number

    for o in operations:
        left = operand(o.a, o.op, "left")
        right = operand(o.b, o.op, "right")
        made.append((o.result, f"{left} {OP_SYMBOL[o.op]} {right}", o.op))
    return made[-1][1]  # the expression of the last operation's result


_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_TO_ASCII = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "x": "*", "X": "*"})


def verify_expression(problem: Problem, expr: str) -> bool:
    """True iff `expr` reaches problem.target under the rules; never raises.

    Accepts + - × * ÷ / and parentheses. Parsed with `ast` (never evaluated as code); every
    number must come from the start numbers (each at most once) and every intermediate result
    must be a positive integer.
    """
    try:
        if not isinstance(expr, str) or len(expr) > 10_000:
            return False
        tree = ast.parse(expr.strip().translate(_TO_ASCII), mode="eval")
        available = Counter(problem.numbers)

        def value(node) -> Fraction:
            if isinstance(node, ast.Constant) and type(node.value) is int:
                if available[node.value] <= 0:
                    raise ValueError(f"{node.value} is not available")
                available[node.value] -= 1
                return Fraction(node.value)
            if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
                left, right = value(node.left), value(node.right)
                op = _AST_OPS[type(node.op)]
                r = {"+": lambda: left + right, "-": lambda: left - right,
                     "*": lambda: left * right, "/": lambda: left / right}[op]()
                if r.denominator != 1 or r <= 0:
                    raise ValueError(f"intermediate result {r} is not a positive integer")
                if problem.max_result is not None and r > problem.max_result:
                    raise ValueError(f"intermediate result {r} is above the cap {problem.max_result}")
                return r
            raise ValueError(f"{type(node).__name__} is not allowed")

        return value(tree.body) == problem.target
    except Exception:  # malformed input of any kind is simply a wrong answer
        return False


# --- Problem generation -------------------------------------------------------------------


def draw_numbers(rng: random.Random, n_numbers: int, max_number: int) -> State:
    """Random start numbers from 1..max_number, repeats allowed (the first half of generate_problem)."""
    return canonical(rng.randint(1, max_number) for _ in range(n_numbers))


def draw_target(rng: random.Random, numbers: State, min_steps: int, max_steps: int,
                max_result: int | None = None) -> int | None:
    """A target drawn uniformly among the values whose shortest solution from `numbers` takes
    min_steps..max_steps operations, or None when there is none (the second half of generate_problem).
    """
    levels = _value_levels(_as_state(numbers), max_result)
    if min_steps < 1 or max_steps < min_steps or max_steps >= len(levels):
        return None
    # Reachable within max_steps but not within min_steps - 1. Start numbers have distance 0 and
    # min_steps >= 1, so they are never targets.
    candidates = levels[max_steps] - levels[min_steps - 1]
    return rng.choice(sorted(candidates)) if candidates else None


def check_problem_knobs(n_numbers: int, max_number: int, min_steps: int, max_steps: int,
                        max_result: int | None = None) -> None:
    """Raise ValueError naming the knob when no problem could ever satisfy these settings."""
    if max_result is not None and max_result <= max_number:
        raise ValueError(f"max_result={max_result} must be above max_number={max_number}: a cap at or "
                         f"below the start numbers leaves almost no operation legal (raise max_result, "
                         f"or set it to null for no cap)")
    if n_numbers < 2:
        raise ValueError(f"n_numbers={n_numbers}: a problem needs at least 2 numbers")
    if max_number < 1:
        raise ValueError(f"max_number={max_number}: start numbers are drawn from 1..max_number, so it must be >= 1")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    if max_steps > n_numbers - 1:
        raise ValueError(f"max_steps={max_steps} but {n_numbers} numbers allow at most {n_numbers - 1} "
                         f"operations: lower max_steps or raise n_numbers")


def generate_problem(rng: random.Random, n_numbers: int, max_number: int, min_steps: int,
                     max_steps: int, max_attempts: int = 1_000, max_result: int | None = None) -> Problem:
    """A random problem: start numbers drawn from 1..max_number (repeats allowed), target drawn
    uniformly among the values whose shortest solution takes min_steps..max_steps operations
    and that are not start numbers.
    """
    check_problem_knobs(n_numbers, max_number, min_steps, max_steps, max_result)
    for _ in range(max_attempts):
        numbers = draw_numbers(rng, n_numbers, max_number)
        target = draw_target(rng, numbers, min_steps, max_steps, max_result)
        if target is not None:
            return Problem(numbers, target, max_result)
    raise ValueError(
        f"no problem with a shortest solution of {min_steps}..{max_steps} operations found in "
        f"{max_attempts} random draws of {n_numbers} numbers from 1..{max_number}: "
        f"raise max_number or n_numbers, or lower min_steps"
    )
