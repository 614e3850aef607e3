"""The step texts of the Countdown domain, in Steiner's SFT template, and their inverse.

Steiner's model names each step, writes the full thought, a summary (so that later turns
could keep only summaries) and a reflection. Here those four texts are a fixed template
filled from the operation: deterministic, with no rng, so that the same state always gets
the same summary and the DAG clusterer sees consistent texts.

A noisy teacher can make an arithmetic slip: the step then states the wrong result as if
it were right and continues from the claimed number, which is what a hallucinated step
looks like. `read_step_operation` reads a step's operation back from free text (the
template's, an LLM's or a trained model's), so any step can be mapped to a state.
"""

from __future__ import annotations

import re

from steiner_lib.format import Step
from steiner_lib.tasks.countdown import OP_SYMBOL, Operation, State, canonical, combine, expression


def _listed(numbers) -> str:
    return ", ".join(str(n) for n in numbers)


def _check_uses(parent: State, a: int, b: int) -> list[int]:
    """The numbers of `parent` left after taking a and b; ValueError if they are not there."""
    rest = list(parent)
    for n in (a, b):
        if n not in rest:
            raise ValueError(f"the operation uses {n}, which is not in the state {tuple(parent)}")
        rest.remove(n)
    return rest


def claimed_state(parent: State, operation: Operation, claimed_result: int | None = None) -> State:
    """The state a step claims to reach: a and b replaced by the claimed result (arithmetic unchecked).

    `claimed_result` defaults to operation.result (for operations read back from text, whose
    result is whatever the text claimed).
    """
    claimed = operation.result if claimed_result is None else claimed_result
    return canonical(_check_uses(parent, operation.a, operation.b) + [claimed])


def step_texts(parent: State, operation: Operation, claimed_result: int, options: tuple[int, ...]) -> Step:
    """The four texts of one step: name, thought, summary, reflection."""
    if not options:
        raise ValueError("step_texts needs the question's options to write the reflection; got none")
    a, sym, b = operation.a, OP_SYMBOL[operation.op], operation.b
    rest = _check_uses(parent, a, b)
    left = rest + [claimed_result]  # as the thought says it: the untouched numbers, then the new one
    new_state = canonical(left)
    thought = f"Combine {a} and {b}: {a} {sym} {b} = {claimed_result}. That leaves {_listed(left)}."
    summary = f"Numbers left: {_listed(new_state)}."
    if claimed_result in options:
        reflection = f"{claimed_result} is one of the options."
    else:
        # The (number, option) pair closest together; ties: smaller gap, then smaller option, number.
        gap, option, number = min((abs(o - n), o, n) for n in new_state for o in options)
        if gap == 0:  # an option was already among the numbers (it can only be the correct one)
            reflection = f"{number} is one of the options."
        else:
            reflection = f"Nearest option is {option}, {gap} away."
    return Step(name=f"{a} {sym} {b}", thought=thought, summary=summary, reflection=reflection)


ANSWER_FORMATS = ("scan", "letter")


def answer_text(operations: list[Operation], value: int, letter: str, choices=None) -> str:
    """The visible answer after reasoning: the expression and its value, then (given `choices`, the
    four choice texts in letter order as the prompt lists them) the option scan, and "Answer: X".

    The scan copies the options in order and says of each whether it is the value, up to the one
    that is ("A) 41 no\nB) 44 yes"). Without it the letter has to be looked up in one token from
    the prompt's list, which the CPU models never learnt (benchmarks/letter_lookup.py,
    benchmarks/answer_format.py).
    """
    scan = "" if choices is None else option_scan(choices, letter) + "\n\n"
    return f"{expression(operations)} = {value}\n\n{scan}Answer: {letter}"


def option_scan(choices, letter: str) -> str:
    """The options from A to `letter`, each followed by "no", the last by "yes"."""
    from steiner_lib.tasks.choice import LETTERS

    if letter not in LETTERS or len(choices) != len(LETTERS):
        raise ValueError(f"option_scan needs {len(LETTERS)} choices and a letter in {LETTERS}, got "
                         f"{len(choices)} and {letter!r}")
    k = LETTERS.index(letter)
    return "\n".join(f"{LETTERS[i]}) {choices[i]} {'yes' if i == k else 'no'}" for i in range(k + 1))


_SYMBOL_TO_OP = {"+": "+", "-": "-", "−": "-", "–": "-", "×": "*", "x": "*", "X": "*", "*": "*",
                 "·": "*", "÷": "/", "/": "/"}
_OPERATION_RE = re.compile(r"(\d+)\s*([+\-−–×xX*·÷/])\s*(\d+)\s*=\s*(\d+)")
_NAME_RE = re.compile(r"(\d+)\s*([+\-−–×xX*·÷/])\s*(\d+)")


def _as_operation(a: int, op: str, b: int, result: int, parent: State) -> Operation | None:
    if a < b:
        if op not in ("+", "*"):
            return None  # "3 - 50" or "3 ÷ 50" is not a legal way to write an operation
        a, b = b, a
    try:
        _check_uses(parent, a, b)
    except ValueError:
        return None
    return Operation(a, op, b, result)


def read_step_operation(step: Step, parent: State) -> Operation | None:
    """The operation a step's text performs, read as "a sym b = r", or None.

    The result is the one the text claims (check it with `countdown.combine`: a wrong one is
    a hallucinated step). Forgiving: any of + - − × x * ÷ /, any spacing; the first written
    operation whose numbers are in `parent` wins. A name "a sym b" alone (no "= r") is read
    too, with the true result.
    """
    for text in (step.thought, step.name):
        for m in _OPERATION_RE.finditer(text or ""):
            a, sym, b, r = m.groups()
            o = _as_operation(int(a), _SYMBOL_TO_OP[sym], int(b), int(r), parent)
            if o is not None:
                return o
    for m in _NAME_RE.finditer(step.name or ""):
        a, sym, b = int(m.group(1)), _SYMBOL_TO_OP[m.group(2)], int(m.group(3))
        r = combine(a, sym, b)
        if r is not None:
            o = _as_operation(a, sym, b, r, parent)
            if o is not None:
                return o
    return None


def writes_operation(step: Step) -> bool:
    """Whether the step's text writes an operation at all ("a sym b = r" in its thought or name, or
    "a sym b" in its name), on whatever numbers: it tells a step that picks numbers it does not hold
    from one that writes no operation (both read as None in `read_step_operation`)."""
    return any(_OPERATION_RE.search(t or "") for t in (step.thought, step.name)) or bool(_NAME_RE.search(step.name or ""))


__all__ = ["step_texts", "answer_text", "option_scan", "ANSWER_FORMATS", "read_step_operation", "claimed_state", "writes_operation"]


BACKTRACK_REASON = re.compile(r"^Backtracked: [^.]*\.\s*")


def backtrack_reason(abandoned_state: State, arithmetic_ok: bool, operation: Operation | None,
                     claimed_result: int | None, answer_reachable: bool) -> str:
    """Why a path left a step, said from what the solver can check without knowing the answer:
    a wrong result is named and corrected; a state from which no option can be made is a dead end."""
    if not arithmetic_ok and operation is not None and claimed_result is not None:
        return f"Backtracked: {operation.text()}, not {claimed_result}."
    listed = ", ".join(str(n) for n in abandoned_state)
    if not answer_reachable:
        return f"Backtracked: no option can be made from {listed}."
    return f"Backtracked: nothing left to try from {listed}."


def with_backtrack_reason(reflection: str, reason: str | None) -> str:
    """The reflection with any earlier "Backtracked: ..." sentence replaced by `reason` (or removed)."""
    rest = BACKTRACK_REASON.sub("", reflection)
    return f"{reason} {rest}" if reason else rest
