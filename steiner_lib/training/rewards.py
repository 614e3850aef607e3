"""Step-level rewards for RL: each step of a generated trace is scored by the DAG node it reaches.

Steiner's RL stage weighted each step's reward by its DAG node's in-degree, out-degree,
distance from the question and distance to the answer, "to balance exploration breadth and
depth"; no formula was published. This module writes one down. Every weight is a knob of
`RewardWeights`.

The formula. Let D = max(1, n - 1) for a question with n start numbers (the most operations
it allows, so every distance below is at most D). A step that reaches the legal state v gets

    r(v) =   w_in_degree     * log(1 + in_degree(v))        many ways reach v: a robust state
           + w_out_degree    * log(1 + out_degree(v))       breadth: many continuations from v
           - w_dist_question * dist_from_question(v) / D    depth penalty
           + w_dist_answer   * progress(v)                  progress toward the answer

    progress(v) = 1 - dist_to_answer(v) / D,  or  unreachable_value  at a dead end (no answer reachable).

Steps that reach no legal state get no features, only a penalty:
- a *hallucinated* step (its stated result is wrong), one that builds on an earlier hallucinated
  step not backtracked past (*after_hallucination*), one whose operation is not on the numbers it
  has (*not_held*) and one that writes no operation (*unreadable*) get r = -hallucination_penalty.

Outside the steps:
- the *outcome*: `outcome` if the final answer is correct (its "Answer: X" letter is the
  correct one), else 0, credited to the answer segment (reasoning_end, the visible answer and
  the end-of-turn token: the decision to stop and what is answered);
- the *format*: a completion that does not parse cleanly (any `format.parse` error, or no
  "Answer: X" line) gets -format_penalty added to every token.

Mapping a step to a node. The completion is parsed forgivingly (`format.parse`) and its path
followed from the question: proceed continues from the last step's state, a backtrack returns
to the state after the named step (or to the question for QUESTION; an unknown name is read
as proceed, and is a format error). Each step's operation is read back from its text
(`tasks.text.read_step_operation`) and checked against the current state. The state it reaches
is looked up in the question's DAG by its canonical state (the node attribute `state`); a legal
state the DAG never saw gets its features from the solver instead:
- dist_from_question = n - len(state) (each operation removes one number: exact),
- dist_to_answer = countdown.distance_to_value(state, target) (exact, None at a dead end),
- in_degree / out_degree: the degrees the state *would* have if it joined the DAG linked to every
  DAG state one legal operation before / after it (a stand-in: the DAG's own degrees count only
  the edges the teacher explored, so these are an upper bound on what exploration would show).
A DAG node keeps the DAG's features even where the solver knows better (a DAG "dead end" that the
teacher merely never finished): the paper's reward reads the DAG, and so does this one.

Credit. `segments` cuts the completion text into consecutive pieces that cover it: each step
owns the text from the end of the previous step (the move and newline before it; for the
first step, reasoning_start) to its own step_end, so a move is judged by the step it leads
into; the answer segment is everything after the last step. `token_rewards` gives each token
the reward of the segment holding its first character.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from steiner_lib import format as fmt
from steiner_lib.format import Backtrack
from steiner_lib.params import RlParams
from steiner_lib.tasks import text as task_text
from steiner_lib.tasks.countdown import (
    OP_SYMBOL, State, apply, canonical, combine, distance_to_value, successors, verify_expression,
)

# What a step can be: "ok" reaches a legal state and is scored by its features; the others get
# -hallucination_penalty (wrong result / built on a wrong result / an operation on numbers not held /
# no operation written). The names of the last two are those of notebook 04's step replay.
STEP_STATUSES = ("ok", "hallucinated", "after_hallucination", "not_held", "unreadable")


@dataclass
class RewardWeights:
    """The knobs of the step reward (see the module docstring for the formula). Each field is the
    preset key rl_<field>, and its default is read from the schema (params.RlParams) so the two
    cannot drift."""

    w_in_degree: float = RlParams.w_in_degree  # log(1 + in-degree): states many paths reach
    w_out_degree: float = RlParams.w_out_degree  # log(1 + out-degree): breadth, many explored continuations
    w_dist_question: float = RlParams.w_dist_question  # depth penalty per step from the question (scaled by D)
    w_dist_answer: float = RlParams.w_dist_answer  # progress: 1 - dist_to_answer / D (scaled by this weight)
    outcome: float = RlParams.outcome  # added to the answer segment when the final letter is correct
    hallucination_penalty: float = RlParams.hallucination_penalty  # wrong arithmetic, no legal operation, or after such a step
    format_penalty: float = RlParams.format_penalty  # off every token of a completion that does not parse cleanly
    unreachable_value: float = RlParams.unreachable_value  # what progress is at a dead end (no answer reachable)

    @classmethod
    def from_params(cls, rl_params) -> "RewardWeights":
        """The weights of the preset's rl section (params.RlParams)."""
        return cls(**{f.name: getattr(rl_params, f.name) for f in fields(cls)})

    def __post_init__(self) -> None:
        bad = [f"{k}={v!r}" for k, v in asdict(self).items()
               if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise ValueError(f"RewardWeights needs finite numbers; got {', '.join(bad)}")
        for name in ("hallucination_penalty", "format_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardWeights {name}={getattr(self, name)}: a penalty is subtracted, so give "
                                 f"it as a number >= 0")


@dataclass
class StepReward:
    """One parsed step of a completion, the node features it was scored with, and its reward."""

    index: int
    name: str
    span: tuple[int, int] | None  # characters of the step (step_start .. step_end) in the completion
    status: str  # one of STEP_STATUSES
    operation: str | None  # the operation as read back from the step ("16 × 9 = 144"), claimed result
    parent: State  # the state the step starts from
    state: State | None  # the state it reaches (the claimed one for a hallucinated step)
    in_dag: bool  # the state was found among the DAG's nodes (False: solver features, or none)
    node: int | None  # its DAG node
    in_degree: float  # NaN when the step has no features (not "ok")
    out_degree: float
    dist_from_question: float
    dist_to_answer: float  # NaN at a dead end, or without features
    answer_reachable: bool | None
    is_answer: bool  # the state holds the target
    decision: str  # what follows the step: proceed | backtrack | end | truncated (no reasoning_end)
    backtrack_to: str | None
    terms: dict[str, float]  # each term of the formula; reward == sum(terms.values())
    reward: float


@dataclass
class Segment:
    start: int  # character offsets in the completion, [start, end)
    end: int
    kind: str  # "step" or "answer"
    step: int | None  # index into StepRewards.steps for a step segment
    reward: float  # what each of its tokens gets (format penalty included)


@dataclass
class StepRewards:
    """Everything `step_rewards` read from one completion."""

    text: str
    steps: list[StepReward]
    answer_span: tuple[int, int]  # characters after the last step (or the whole text without steps)
    answer_letter: str | None  # the "Answer: X" letter of the visible answer, if any
    correct_letter: str | None
    outcome_correct: bool
    outcome_reward: float
    format_valid: bool
    parse_errors: list[str]  # error kinds (format.ERROR_KINDS, plus "missing_answer_letter")
    format_penalty: float  # applied to every token (0 when format_valid)
    question_id: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_backtracks(self) -> int:
        return sum(s.decision == "backtrack" for s in self.steps)

    @property
    def episode_return(self) -> float:
        """One number per completion: the step rewards, the outcome, and the format penalty once."""
        return sum(s.reward for s in self.steps) + self.outcome_reward - self.format_penalty

    def segments(self) -> list[Segment]:
        """Consecutive segments covering the text: one per located step, then the answer."""
        out: list[Segment] = []
        cursor = 0
        for s in self.steps:
            if s.span is None:  # not located in the text (see step_spans): its tokens go to the next segment
                continue
            out.append(Segment(cursor, s.span[1], "step", s.index, s.reward - self.format_penalty))
            cursor = s.span[1]
        out.append(Segment(cursor, max(cursor, len(self.text)), "answer", None,
                           self.outcome_reward - self.format_penalty))
        return out


# ---------------------------------------------------------------------------- parsing helpers

# Text between the tokens of one step: anything that is not a reasoning token (the parser keeps a
# step with stray text between its fields, and so must the span search).
_GAP = r"(?:(?!<\|reasoning_)[\s\S])*?"


def step_spans(text: str, steps: Sequence[fmt.Step]) -> list[tuple[int, int] | None]:
    """The character span (step_start .. step_end) of each parsed step, in order, or None if not found.

    The parser keeps only well-formed steps, verbatim, in text order, so each is searched for
    after the previous one with its exact field texts.
    """
    cursor = _reasoning_start(text)
    out: list[tuple[int, int] | None] = []
    for step in steps:
        parts = [re.escape(fmt.STEP_START)]
        for attr, start, end in fmt.STEP_FIELDS:
            parts += [_GAP, re.escape(start), re.escape(getattr(step, attr)), re.escape(end)]
        parts += [_GAP, re.escape(fmt.STEP_END)]
        m = re.compile("".join(parts)).search(text, cursor)
        if m is None:
            out.append(None)
            continue
        out.append((m.start(), m.end()))
        cursor = m.end()
    return out


def _reasoning_start(text: str) -> int:
    """Where parsing starts: the first reasoning_start before the first reasoning_end (else 0)."""
    start = text.find(fmt.REASONING_START)
    end = text.find(fmt.REASONING_END)
    return start if start >= 0 and (end < 0 or start < end) else 0


# simple-evals' multiple-choice answer pattern (OpenAI simple-evals, GPQA): first match wins.
ANSWER_RE = re.compile(r"(?i)Answer[ \t]*:[ \t]*\$?([A-D])\$?")


def answer_letter(answer: str) -> str | None:
    m = ANSWER_RE.search(answer or "")
    return m.group(1).upper() if m else None


def _expression_reaches_target(answer: str, problem) -> bool:
    """Without a letter to check: the visible answer's first line "EXPR = VALUE" must reach the target."""
    first = (answer or "").strip().split("\n", 1)[0]
    expr = first.rsplit("=", 1)[0] if "=" in first else first
    return verify_expression(problem, expr)


# ---------------------------------------------------------------------------- node features


class DagIndex:
    """A question's DAG as a lookup from canonical state to the node features the reward uses.

    Node attributes `in_degree` .. `answer_reachable` come from `dag.node_features`; a graph
    without them (not passed through notebook 02's feature table) gets them computed here.
    """

    def __init__(self, graph, start: State, target: int, max_result: int | None = None):
        self.start, self.target, self.max_result = canonical(start), int(target), max_result
        self.graph = graph
        self.node_of: dict[State, int] = {}
        self.states: list[State] = []
        if graph is None:
            return
        if any("dist_to_answer" not in d for _, d in graph.nodes(data=True)):
            from steiner_lib.data import dag

            dag.node_features(graph)  # fills the node attributes in place, as notebook 02 does
        best: dict[State, tuple] = {}
        for n, d in graph.nodes(data=True):
            s = canonical(d["state"])
            key = (-int(d.get("n_members", 0) or 0), n)  # several nodes, one state (loose clustering): the biggest
            if s not in best or key < best[s]:
                best[s] = key
        self.node_of = {s: key[1] for s, key in best.items()}
        self.states = list(self.node_of)

    def features(self, state: State) -> tuple[dict, int | None]:
        """(features, node): from the DAG when it holds the state, else from the solver (node None)."""
        n = self.node_of.get(state)
        if n is not None:
            d = self.graph.nodes[n]
            dq = _float(d.get("dist_from_question"))
            if math.isnan(dq):
                dq = float(len(self.start) - len(state))
            da = _float(d.get("dist_to_answer"))
            reachable = bool(d.get("answer_reachable", not math.isnan(da)))
            return {"in_degree": float(self.graph.in_degree(n)), "out_degree": float(self.graph.out_degree(n)),
                    "dist_from_question": dq, "dist_to_answer": da if reachable else math.nan,
                    "answer_reachable": reachable}, n
        return self.solver_features(state), None

    def solver_features(self, state: State) -> dict:
        """Features of a legal state the DAG does not hold (see the module docstring)."""
        cap = self.max_result
        children = {child for _, child in successors(state, cap)}
        in_deg = sum(1 for s in self.states if any(child == state for _, child in successors(s, cap)))
        out_deg = sum(1 for s in self.states if s in children)
        d = distance_to_value(state, self.target, cap)
        return {"in_degree": float(in_deg), "out_degree": float(out_deg),
                "dist_from_question": float(len(self.start) - len(state)),
                "dist_to_answer": math.nan if d is None else float(d), "answer_reachable": d is not None}


def _float(x) -> float:
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def feature_reward(features: dict, depth: int, w: RewardWeights) -> dict[str, float]:
    """The terms of r(v) for a legal state's features (their sum is the step's reward)."""
    progress = (1.0 - features["dist_to_answer"] / depth) if features["answer_reachable"] else w.unreachable_value
    return {
        "in_degree": w.w_in_degree * math.log1p(features["in_degree"]),
        "out_degree": w.w_out_degree * math.log1p(features["out_degree"]),
        "dist_question": -w.w_dist_question * features["dist_from_question"] / depth,
        "dist_answer": w.w_dist_answer * progress,
    }


# ---------------------------------------------------------------------------- scoring a completion


def _problem(question):
    return getattr(question, "problem", question)


def step_rewards(completion_text: str, question, graph, weights: RewardWeights | None = None,
                 letter: str | None = None) -> StepRewards:
    """Score one completion step by step. Never raises for a str.

    question: a choice.CountdownQuestion (or a countdown.Problem); graph: its DAG (nx.DiGraph from
    dataset.load_dags / build_dags), or None to take every feature from the solver; letter: the
    correct letter of the prompt the completion answers. Without a letter the outcome is judged by
    the visible answer's expression instead (it must reach the target).
    """
    if not isinstance(completion_text, str):
        raise TypeError(f"step_rewards expects the decoded completion (str), got {type(completion_text).__name__}")
    w = weights or RewardWeights()
    problem = _problem(question)
    start, target = problem.numbers, problem.target
    depth = max(1, len(start) - 1)
    cap = getattr(problem, "max_result", None)
    index = DagIndex(graph, start, target, cap)

    parsed = fmt.parse(completion_text)
    trace = parsed.trace
    spans = step_spans(completion_text, trace.steps)

    after: list[tuple[State, bool]] = []  # (state after step i, grounded: reached by correct arithmetic only)
    steps: list[StepReward] = []
    for i, step in enumerate(trace.steps):
        parent, grounded = (start, True)
        if i > 0:
            parent, grounded = _resume(trace, i, after, start)
        if i < len(trace.moves):
            move = trace.moves[i]
            decision = "proceed" if move == "proceed" else "backtrack"
            back_to = move.to if isinstance(move, Backtrack) else None
        else:  # the last kept step: what the text does next, even if what follows was cut off
            decision, back_to = _last_decision(completion_text, spans[i])

        op = task_text.read_step_operation(step, parent)
        nan = math.nan
        feats = {"in_degree": nan, "out_degree": nan, "dist_from_question": nan, "dist_to_answer": nan,
                 "answer_reachable": None}
        node, in_dag, op_text = None, False, None
        if op is None:
            status = "not_held" if task_text.writes_operation(step) else "unreadable"
            state, next_grounded = None, grounded
        else:
            op_text = f"{op.a} {OP_SYMBOL[op.op]} {op.b} = {op.result}"
            if combine(op.a, op.op, op.b, cap) != op.result:
                status, state, next_grounded = "hallucinated", task_text.claimed_state(parent, op), False
            else:
                state = apply(parent, op, cap)
                status, next_grounded = ("ok", True) if grounded else ("after_hallucination", False)
        if status == "ok":
            feats, node = index.features(state)
            in_dag = node is not None
            terms = feature_reward(feats, depth, w)
        else:
            terms = {"hallucination": -w.hallucination_penalty}
        after.append((state if state is not None else parent, next_grounded))
        steps.append(StepReward(
            index=i, name=step.name, span=spans[i], status=status, operation=op_text, parent=parent,
            state=state, in_dag=in_dag, node=node, in_degree=feats["in_degree"], out_degree=feats["out_degree"],
            dist_from_question=feats["dist_from_question"], dist_to_answer=feats["dist_to_answer"],
            answer_reachable=feats["answer_reachable"], is_answer=status == "ok" and target in state,
            decision=decision, backtrack_to=back_to, terms=terms, reward=float(sum(terms.values())),
        ))

    got = answer_letter(trace.answer)
    correct = (got is not None and got == letter.strip().upper()) if letter else \
        _expression_reaches_target(trace.answer, problem)
    errors = [e.kind for e in parsed.errors] + ([] if got else ["missing_answer_letter"])
    valid = not errors
    last = max((s.span[1] for s in steps if s.span is not None), default=0)
    return StepRewards(
        text=completion_text, steps=steps, answer_span=(last, len(completion_text)), answer_letter=got,
        correct_letter=letter, outcome_correct=bool(correct), outcome_reward=w.outcome if correct else 0.0,
        format_valid=valid, parse_errors=errors, format_penalty=0.0 if valid else w.format_penalty,
        question_id=getattr(question, "question_id", None),
    )


_AFTER_LAST_STEP = re.compile("|".join(re.escape(t) for t in (fmt.PROCEED, fmt.BACKTRACK, fmt.REASONING_END,
                                                                 fmt.STEP_START)))


def _last_decision(text: str, span: tuple[int, int] | None) -> tuple[str, str | None]:
    """After the last complete step: end (reasoning_end), proceed / backtrack (a move whose next step
    was cut off or broken), or truncated (the text just stops)."""
    m = _AFTER_LAST_STEP.search(text, span[1]) if span is not None else None
    if m is None:
        return "truncated", None
    if m.group() == fmt.REASONING_END:
        return "end", None
    if m.group() == fmt.BACKTRACK:
        target = re.match(r"[^<\n]*", text[m.end():]).group().strip()
        return "backtrack", target
    return "proceed", None  # a proceed, or a step_start with the move missing (the parser reads proceed)


def _resume(trace: fmt.Trace, i: int, after: list[tuple[State, bool]], start: State) -> tuple[State, bool]:
    """The state step i starts from, after the move that precedes it."""
    move = trace.moves[i - 1]
    if isinstance(move, Backtrack):
        if move.to == fmt.QUESTION:
            return start, True
        k = fmt.resolve_backtrack([s.name for s in trace.steps[:i]], move.to)  # as format.parse resolves it
        if k is not None:
            return after[k]
    return after[i - 1]  # proceed, or a backtrack to a name no earlier step has (read as proceed)


# ---------------------------------------------------------------------------- tokens


def completion_token_offsets(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded completion (special tokens kept) and each token's character span in it.

    Byte-level tokenizers split a multi-byte character (×, ÷) over several tokens; such tokens
    are decoded together and share the character's span. If piecewise decoding does not
    reproduce the whole text, every prefix is decoded instead (slower, always consistent).
    """
    ids = [int(t) for t in token_ids]

    def dec(xs):
        return tokenizer.decode(xs, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    full = dec(ids)
    spans: list[tuple[int, int]] = []
    pieces: list[str] = []
    pos, first = 0, 0
    for i in range(len(ids)):
        piece = dec(ids[first:i + 1])
        # A trailing U+FFFD is an unfinished UTF-8 character: wait for its next byte (at most 4 tokens).
        if piece.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - first < 4:
            continue
        spans += [(pos, pos + len(piece))] * (i + 1 - first)
        pieces.append(piece)
        pos, first = pos + len(piece), i + 1
    if "".join(pieces) == full:
        return full, spans
    spans, prev = [], 0
    for i in range(len(ids)):
        end = max(prev, min(len(full), len(dec(ids[:i + 1]))))
        spans.append((prev, end))
        prev = end
    return full, spans


def token_segments(step_rewards: StepRewards, completion_token_offsets: Sequence[tuple[int, int]]) -> list[int]:
    """For each token, the index (into step_rewards.segments()) of the segment holding its first character."""
    segs = step_rewards.segments()
    starts = [s.start for s in segs]
    return [max(0, bisect_right(starts, start) - 1) for start, _ in completion_token_offsets]


def token_rewards(step_rewards: StepRewards, completion_token_offsets: Sequence[tuple[int, int]]) -> list[float]:
    """Per-token rewards: each token gets its segment's reward (see the module docstring).

    Tokens of a step (and of the move before it) get that step's reward; tokens after the last
    step (reasoning_end, the visible answer, the end-of-turn token) get the outcome reward; every
    token of a completion that does not parse cleanly also carries -format_penalty.
    """
    segs = step_rewards.segments()
    return [segs[k].reward for k in token_segments(step_rewards, completion_token_offsets)]


# ---------------------------------------------------------------------------- tables

REWARD_TABLE_COLUMNS = (
    "question_id", "completion", "train_step", "step", "name", "status", "decision", "in_dag", "node",
    "in_degree", "out_degree", "dist_from_question", "dist_to_answer", "answer_reachable", "is_answer",
    "reward", "term_in_degree", "term_out_degree", "term_dist_question", "term_dist_answer",
    "term_hallucination", "outcome_correct", "format_valid",
)


def reward_table(step_rewards_list: Sequence[StepRewards]):
    """One row per scored step: its features, decision, status, reward and each term of the reward.

    `completion` numbers the completions in the order given, so rows group back into episodes;
    `train_step` is the RL step that sampled it (meta["step"], set by rl.StepGRPOTrainer), if any.
    """
    import pandas as pd

    rows = []
    for c, sr in enumerate(step_rewards_list):
        for s in sr.steps:
            rows.append({
                "question_id": sr.question_id, "completion": c, "train_step": sr.meta.get("step"), "step": s.index, "name": s.name,
                "status": s.status, "decision": s.decision, "in_dag": s.in_dag, "node": s.node,
                "in_degree": s.in_degree, "out_degree": s.out_degree,
                "dist_from_question": s.dist_from_question, "dist_to_answer": s.dist_to_answer,
                "answer_reachable": s.answer_reachable, "is_answer": s.is_answer, "reward": s.reward,
                **{f"term_{k}": s.terms.get(k, 0.0) for k in
                   ("in_degree", "out_degree", "dist_question", "dist_answer", "hallucination")},
                "outcome_correct": sr.outcome_correct, "format_valid": sr.format_valid,
            })
    return pd.DataFrame(rows, columns=list(REWARD_TABLE_COLUMNS))


STATUS_MEANINGS = {
    "ok": "a correct operation on numbers the state holds: its DAG node's features set the reward",
    "hallucinated": "an operation on numbers the state holds, with a wrong result",
    "after_hallucination": "a correct operation, but after an earlier hallucinated step",
    "not_held": "an operation written, but not on numbers the state holds (it uses a number it does not have)",
    "unreadable": "no operation written at all",
}


TERMS = ("in_degree", "out_degree", "dist_question", "dist_answer", "hallucination")


def term_contributions(table) -> "pd.DataFrame":
    """How each term of the step reward contributed over the scored rollout steps (reward_table's
    rows): per term, the steps it applied to, its mean and spread there, and its share of the total
    absolute reward, so a reader sees which DAG feature actually moves the reward."""
    import pandas as pd

    rows = {}
    total = sum(table[f"term_{t}"].abs().sum() for t in TERMS if f"term_{t}" in table) if len(table) else 0.0
    for t in TERMS:
        col = f"term_{t}"
        if col not in table:
            continue
        v = pd.to_numeric(table[col], errors="coerce").dropna()
        v = v[v != 0] if t == "hallucination" else v
        rows[t] = {"steps": int(len(v)), "mean": float(v.mean()) if len(v) else float("nan"),
                   "std": float(v.std()) if len(v) > 1 else float("nan"),
                   "share of |reward|": float(v.abs().sum() / total) if total else float("nan")}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "reward term"
    return out


def ok_step_share(table) -> float:
    """Share of scored rollout steps that replay to a legal state (status "ok"), NaN with no step."""
    return float((table["status"] == "ok").mean()) if len(table) else float("nan")


def status_paragraph(table) -> str:
    """Markdown from reward_table's rows: how many scored steps had each status, with their mean
    reward, and how many steps the node-feature terms of the reward reached at all."""
    n = len(table)
    if n == 0:
        return "No rollout step was scored."
    counts = table["status"].value_counts()
    means = table.groupby("status")["reward"].mean()
    parts = [f"**{status}** {int(counts[status])} ({100 * counts[status] / n:.1f}%, mean reward "
             f"{means[status]:+.2f}): {STATUS_MEANINGS.get(status, status)}" for status in counts.index]
    ok_share = 100 * counts.get("ok", 0) / n
    text = f"Of {n} scored rollout steps:\n\n" + "\n".join(f"- {p}" for p in parts) + "\n\n"
    text += f"The node-feature terms of the step reward applied to {ok_share:.1f}% of the steps"
    top, top_share = counts.index[0], 100 * counts.iloc[0] / n
    if top != "ok" and top_share >= 90:
        text += (f"; {top_share:.1f}% earned the same {top} penalty, so at this scale the step reward is "
                 f"close to a constant per step: the DAG features it is built from barely reach the policy.")
    else:
        text += "."
    return text


__all__ = [
    "STATUS_MEANINGS", "status_paragraph", "ok_step_share", "term_contributions", "TERMS",
    "RewardWeights", "StepReward", "StepRewards", "Segment", "DagIndex", "step_rewards", "step_spans",
    "feature_reward", "answer_letter", "completion_token_offsets", "token_segments", "token_rewards",
    "reward_table",
]
