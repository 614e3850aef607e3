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

Step labels. A name may start with a label, `Step 3: combine 4 and 6`, and a backtrack may
cite the label alone (`<|reasoning_backtrack|>Step 3`) instead of copying the whole name.
The paper's template says only "name each step"; a short label is easier for a small model
to cite than a name it must copy token for token. Training data (dag.path_to_trajectory)
numbers steps by their depth on the current path, so after a backtrack to Step 2 the next
step is Step 3 again, and the latest step with a label is always the one on the current
path. Every reader resolves a target the same way, through `step_refs`: the latest earlier
step whose name, stripped name or label equals the stripped target.
"""

from __future__ import annotations

import re
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

# The longest way to close the reasoning from any point of an output: reasoning_start (when none was
# written), step_start, the start and end token of every field, step_end, reasoning_end (budget
# forcing's wrap-up, constraints.closing_token).
MAX_CLOSING_TOKENS = 2 * len(STEP_FIELDS) + 4

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


# ---------------------------------------------------------------------------- parse

ERROR_KINDS: tuple[str, ...] = (
    "text_before_reasoning",  # non-whitespace text or tokens before reasoning_start
    "missing_reasoning_start",  # no reasoning_start before reasoning_end (reasoning is read from the text's start)
    "missing_reasoning_end",  # the text ends without reasoning_end (the answer is then "")
    "unterminated_step",  # a step is cut off (text ends, reasoning_end, or a new step_start) before its step_end
    "missing_field",  # a step lacks one of name/thought/summary/reflection, or has them out of order
    "unexpected_token",  # a special token where it cannot stand (including any after reasoning_end)
    "stray_text",  # non-whitespace text between structural tokens, outside any field
    "missing_move",  # a step follows a step_end with no proceed/backtrack between them
    "dangling_move",  # a move right before reasoning_end or at the end of the text
    "unknown_backtrack_target",  # a backtrack names no earlier step and is not QUESTION
    "empty_reasoning",  # the reasoning holds no complete, well-formed step
)

# One alternation over the 14 literal tokens: every token ends in "|>" and holds no other
# "|>", so no token is a prefix of another and matching is linear in the text length.
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

# Inside a step, the tokens must come exactly in this order.
_STEP_SEQUENCE: tuple[str, ...] = tuple(t for _, start, end in STEP_FIELDS for t in (start, end)) + (STEP_END,)
_FIELD_TOKENS = frozenset(_STEP_SEQUENCE)
_MOVE_TOKENS = frozenset({PROCEED, BACKTRACK})


def _segments(text: str) -> list[tuple[int, str | None, str]]:
    """Split text into (position, token, piece): token is the special token, or None for plain text."""
    out: list[tuple[int, str | None, str]] = []
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        if m.start() > pos:
            out.append((pos, None, text[pos:m.start()]))
        out.append((m.start(), m.group(), m.group()))
        pos = m.end()
    if pos < len(text):
        out.append((pos, None, text[pos:]))
    return out


def _first_visible(pos: int, piece: str) -> int:
    """Offset of the first non-whitespace character of a text piece that starts at pos."""
    return pos + len(piece) - len(piece.lstrip())


def _short(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


class _BodyParser:
    """A state machine over the segments between reasoning_start and reasoning_end.

    States: "start" (nothing read yet), "after_step" (a step_end was read, a move is due),
    "after_move" (a move was read, a step_start is due), "step" (inside a step, expecting
    _STEP_SEQUENCE[k]), "skip_step" (inside a broken step: skip to its step_end or the next
    step_start) and "skip_body" (outside a step after an error: skip to the next step_start).
    """

    def __init__(self) -> None:
        self.errors: list[FormatError] = []
        self.steps: list[Step] = []
        self.moves: list[Move] = []
        self.known_names: set[str] = set()  # what can cite a kept step (see step_refs)
        self.pending: Move | None = None  # latest move read since the last kept step
        self.state = "start"
        self.k = 0  # index into _STEP_SEQUENCE while in "step"
        self.fields: list[str] = []
        self.step_pos = 0
        self.move_pos = 0

    def error(self, kind: str, pos: int, detail: str) -> None:
        self.errors.append(FormatError(kind, pos, detail))

    def run(self, segments: list[tuple[int, str | None, str]], end_pos: int, end_reason: str) -> None:
        i = 0
        while i < len(segments):
            pos, tok, piece = segments[i]
            i += 1
            if tok is None:
                self.on_text(pos, piece)
            elif tok == STEP_START:
                self.on_step_start(pos)
            elif tok in _MOVE_TOKENS:
                target = ""
                if tok == BACKTRACK and i < len(segments) and segments[i][1] is None:
                    target = segments[i][2]
                    i += 1  # the target text belongs to the move, whatever happens to the move
                self.on_move(pos, tok, target)
            elif tok in _FIELD_TOKENS:
                self.on_field_token(pos, tok)
            else:  # a repeated reasoning_start (reasoning_end never reaches the body)
                self.on_unexpected(pos, tok, "reasoning_start again inside the reasoning")
        self.on_end(end_pos, end_reason)

    # -- handlers, one per kind of segment
    def on_text(self, pos: int, piece: str) -> None:
        if self.state == "step" and self.k % 2 == 1:
            self.fields[-1] = piece  # field contents are verbatim
            return
        if self.state in ("skip_step", "skip_body") or piece.isspace():
            return
        where = "inside a step, between fields" if self.state == "step" else "between structural tokens"
        self.error("stray_text", _first_visible(pos, piece), f"{_short(piece.strip())} {where}")

    def on_step_start(self, pos: int) -> None:
        if self.state == "step":
            self.error("unterminated_step", self.step_pos, "a new step_start before this step's step_end")
        elif self.state == "after_step":
            self.error("missing_move", pos, "step_start right after step_end: proceed inserted")
            self.pending = "proceed"
        self.state, self.k, self.fields, self.step_pos = "step", 0, [], pos

    def on_move(self, pos: int, tok: str, target: str) -> None:
        name = "proceed" if tok == PROCEED else "backtrack"
        if self.state == "step":
            self.drop_step(pos, "unexpected_token", f"{name} inside a step (step_end missing?)")
            return
        if self.state in ("skip_step", "skip_body"):
            return
        if self.state != "after_step":
            # Skip just this move: the state (and any pending move) stays as it was.
            why = "before any step" if self.state == "start" else "right after another move"
            self.error("unexpected_token", pos, f"{name} {why}")
            return
        move: Move = "proceed"
        if tok == BACKTRACK:
            to = target.strip()
            move = Backtrack(to)
            if to != QUESTION and to not in self.known_names:
                self.error("unknown_backtrack_target", pos,
                           f"backtrack to {_short(to)}: no earlier step has that name or label "
                           f"and it is not {QUESTION!r}")
        self.pending, self.state, self.move_pos = move, "after_move", pos

    def on_field_token(self, pos: int, tok: str) -> None:
        if self.state == "step":
            expected = _STEP_SEQUENCE[self.k]
            if tok != expected:
                detail = f"expected {expected}, found {tok}"
                self.drop_step(pos, "missing_field", detail)
                if tok == STEP_END:  # the broken step is closed all the same: a move is due
                    self.state = "after_step"
                return
            self.k += 1
            if tok == STEP_END:
                self.keep_step()
            elif self.k % 2 == 1:
                self.fields.append("")  # a field opened: empty until its text arrives
            return
        if self.state == "skip_step":
            if tok == STEP_END:
                self.state = "after_step"
            return
        if self.state == "skip_body":
            return
        self.error("unexpected_token", pos, f"{tok} outside a step")
        self.state = "skip_body"

    def on_unexpected(self, pos: int, tok: str, detail: str) -> None:
        if self.state == "step":
            self.drop_step(pos, "unexpected_token", detail)
        elif self.state not in ("skip_step", "skip_body"):
            self.error("unexpected_token", pos, detail)

    def on_end(self, pos: int, reason: str) -> None:
        if self.state == "step":
            self.error("unterminated_step", self.step_pos, f"{reason} inside this step")
        elif self.state == "after_move":
            self.error("dangling_move", self.move_pos, f"no step follows this move ({reason}): move dropped")

    # -- steps
    def drop_step(self, pos: int, kind: str, detail: str) -> None:
        self.error(kind, pos, detail)
        self.state = "skip_step"

    def keep_step(self) -> None:
        step = Step(*self.fields)
        if self.steps:
            if self.pending is None:  # defensive: every path to a second kept step sets pending
                self.error("missing_move", self.step_pos, "no move before this step: proceed inserted")
                self.pending = "proceed"
            self.moves.append(self.pending)
        self.steps.append(step)
        self.known_names.update(step_refs(step.name))
        self.pending = None
        self.state = "after_step"


def parse(text: str) -> ParseResult:
    """Read a model's output forgivingly: the well-formed steps, their moves, the answer, and every error.

    Never raises for a str. Reasoning starts at the first reasoning_start that comes before the
    first reasoning_end and ends at that reasoning_end; the answer is the text after it, minus one
    leading newline ("" when reasoning_end is missing). Broken steps are dropped and reading resumes
    at the next step_start; a missing move between kept steps becomes "proceed" (with an error).
    Backtracks keep the stripped target text even when it names no earlier step (with an error).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse expects the model output as a str, got {type(text).__name__}; decode tokens first")
    segments = _segments(text)
    errors: list[FormatError] = []

    end_idx = next((i for i, s in enumerate(segments) if s[1] == REASONING_END), None)
    head = segments if end_idx is None else segments[:end_idx]
    start_idx = next((i for i, s in enumerate(head) if s[1] == REASONING_START), None)
    if start_idx is None:
        errors.append(FormatError("missing_reasoning_start", 0, "no reasoning_start: reading steps from the start"))
        body = head
    else:
        prefix = [s for s in head[:start_idx] if s[1] is not None or not s[2].isspace()]
        if prefix:
            pos, tok, piece = prefix[0]
            errors.append(FormatError("text_before_reasoning", pos if tok else _first_visible(pos, piece),
                                      f"{len(prefix)} segment(s) before reasoning_start, ignored"))
        body = head[start_idx + 1:]

    if end_idx is None:
        end_pos, reason, answer = len(text), "the text ends", ""
    else:
        end_pos, reason = segments[end_idx][0], "reasoning_end"
        answer = text[end_pos + len(REASONING_END):]
        answer = answer[1:] if answer.startswith("\n") else answer

    reader = _BodyParser()
    reader.run(body, end_pos, reason)
    errors += reader.errors

    if end_idx is None:
        errors.append(FormatError("missing_reasoning_end", len(text), "the text ends before reasoning_end"))
    else:
        after = [s for s in segments[end_idx + 1:] if s[1] is not None]
        if after:
            errors.append(FormatError("unexpected_token", after[0][0],
                                      f"{len(after)} special token(s) after reasoning_end, kept in the answer"))
    if not reader.steps:
        errors.append(FormatError("empty_reasoning", end_pos, "no complete, well-formed step"))

    errors.sort(key=lambda e: e.position)  # stable: errors at one position keep their order
    trace = Trace(tuple(reader.steps), tuple(reader.moves), answer)
    return ParseResult(trace, errors)


# ---------------------------------------------------------------------------- names, pretty

_LABEL_RE = re.compile(r"\s*(Step \d+)\s*:")


def labelled_name(number: int, name: str) -> str:
    """`Step {number}: {name}`: a name a backtrack can cite by its label alone."""
    return f"Step {number}: {name}"


def step_label(name: str) -> str | None:
    """The label a name starts with (`Step 3` of `Step 3: combine 4 and 6`), or None."""
    m = _LABEL_RE.match(name)
    return m.group(1) if m else None


def step_refs(name: str) -> set[str]:
    """Every text a backtrack may cite to return to the step called `name`."""
    refs = {name, name.strip()}
    label = step_label(name)
    if label is not None:
        refs.add(label)
    return refs


def resolve_backtrack(names: list[str], target: str) -> int | None:
    """Index of the step a backtrack to `target` returns to: the latest of `names` that
    `target` (stripped) cites (see step_refs); None when none does. QUESTION is the caller's."""
    to = target.strip()
    for k in range(len(names) - 1, -1, -1):
        if to in step_refs(names[k]):
            return k
    return None


def unique_step_names(names: list[str]) -> list[str]:
    """Make names unique: first occurrences unchanged, repeats get " (2)", " (3)", ...

    A generated name never collides with any name already in the list, so a backtrack can
    name any step by its unique name.
    """
    taken = set(names)
    seen: set[str] = set()
    next_number: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        n = next_number.get(name, 2)
        while f"{name} ({n})" in taken:
            n += 1
        unique = f"{name} ({n})"
        next_number[name] = n + 1
        taken.add(unique)
        out.append(unique)
    return out


def _labelled(label: str, text: str, indent: str) -> list[str]:
    """`label: first line`, further lines aligned under the first."""
    lines = text.split("\n")
    pad = indent + " " * (len(label) + 2)
    return [f"{indent}{label}: {lines[0]}".rstrip()] + [(pad + line).rstrip() for line in lines[1:]]


def pretty(trace_or_text: Trace | str) -> str:
    """A readable rendering for notebooks: numbered steps, labelled fields, moves, the answer.

    Raw text is parsed first, and its format errors are listed at the end.
    """
    if isinstance(trace_or_text, str):
        result = parse(trace_or_text)
        trace, errors = result.trace, result.errors
    elif isinstance(trace_or_text, Trace):
        trace, errors = trace_or_text, []
    else:
        raise TypeError(f"pretty expects a Trace or the raw model output (str), got {type(trace_or_text).__name__}")
    out: list[str] = []
    for i, step in enumerate(trace.steps):
        out.append(f"Step {i + 1}")
        for attr, _, _ in STEP_FIELDS:
            out += _labelled(attr, getattr(step, attr), "    ")
        if i < len(trace.moves):
            move = trace.moves[i]
            out.append("  → proceed" if move == "proceed" else f"  ↩ backtrack to {move.to}")
    if not trace.steps:
        out.append("(no steps)")
    out += _labelled("Answer", trace.answer, "")
    if errors:
        out.append(f"Format errors ({len(errors)}):")
        out += [f"  - {e.kind} at {e.position}: {e.detail}" for e in errors]
    return "\n".join(out)


__all__ = [
    "SPECIAL_TOKENS", "STEP_FIELDS", "MAX_CLOSING_TOKENS", "QUESTION", "Step", "Backtrack", "Move", "Trace",
    "render", "render_reasoning", "render_step", "render_move",
    "FormatError", "ParseResult", "ERROR_KINDS", "parse", "unique_step_names", "pretty",
    "labelled_name", "step_label", "step_refs", "resolve_backtrack",
]
