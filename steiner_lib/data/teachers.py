"""Teachers for truncation augmentation: they continue a cut shortcut path, make mistakes, and
backtrack once they are told the answer.

Steiner cut forward-only solutions at a random step, hid the answer, let a strong LLM continue
(it explores and goes wrong), then gave it the answer so it backtracked to where it went wrong.
Two teachers play the LLM here:

- `SearchTeacher` (default): a noisy best-first search toward the four options. Cheap, and its
  mistakes are real: wrong branches (the correct value is no longer reachable) and arithmetic
  slips (a claimed result that is wrong, after which its numbers are hallucinated).
- `LLMTeacher`: a causal language model (transformers, or vLLM on a GPU) prompted with the
  question and the prefix in the 14-token format; its output is parsed forgivingly.

The teacher interface works on a `Draft`, the trajectory being written (records, moves, and
where the next step starts). A teacher appends to it in two calls:

    teacher.continue_without_answer(q, draft, rng)   # explore; may backtrack on its own
    draft.tell_answer()
    teacher.continue_with_answer(q, draft, rng)      # backtrack if needed, reach the answer

(the synthesis module does exactly this). Both teachers leave `Draft.notes` with stop_reason,
format_errors and fallback_recovery, and `trajectory_meta(draft)` computes every other
statistic from the records themselves, so the two teachers' meta always mean the same:

    cut_at              prefix steps kept from the shortest solution (k)
    explore_steps       steps written before the answer was given
    recovery_steps      steps written after the answer was given
    wrong_branch_steps  steps with correct arithmetic whose state can no longer reach the answer
    arithmetic_slips    steps whose claimed result is wrong (arithmetic_ok False)
    first_error_step    index of the first wrong-branch or slip step (None if there is none)
    solved_unaided      exploration ended on the answer along a slip-free path
    false_success       exploration ended on an option along a path with a slip
    backtracks          backtrack moves in the whole trajectory
    self_backtracks     of which made before the answer was given
    backtrack_distance  steps undone by the backtracks made after the answer was given
    answer_reached      the last step's state holds the answer along a slip-free path
    stop_reason         why exploration stopped: option (a state holds an option), max_steps,
                        dead_end (search teacher), parse (LLM: a step it could not use),
                        model_stopped (LLM: no further complete step in its output)
    format_errors       {kind: count} of malformed LLM output ({} for the search teacher)
    fallback_recovery   the exact recovery had to finish the trace (LLM failed to)
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from steiner_lib import format as fmt
from steiner_lib.data.traces import StepRecord, Trajectory, claimed_result
from steiner_lib.format import Backtrack, Move
from steiner_lib.params import TeacherParams
from steiner_lib.tasks import text
from steiner_lib.tasks.choice import CountdownQuestion
from steiner_lib.tasks.countdown import (
    Operation, Problem, State, combine, distance_to_value, solve, successors,
)

QUESTION_NODE = -1  # the node index of the question (the state before any step)


# --- Steps and the draft they are written into -------------------------------------------


def make_record(parent: State, operation: Operation, claimed_result: int,
                options: tuple[int, ...]) -> StepRecord:
    """A step in the domain's template texts (text.step_texts); a slip when claimed != true result."""
    return StepRecord(
        parent=parent,
        state=text.claimed_state(parent, operation, claimed_result),
        operation=operation,
        arithmetic_ok=claimed_result == operation.result,
        step=text.step_texts(parent, operation, claimed_result, options),
    )


def state_text(state: State) -> str:
    return "[" + ", ".join(map(str, state)) + "]"


@dataclass
class Draft:
    """A trajectory being written. Node i is the state after record i; node -1 is the question.

    Every record hangs off the node it started from (`parents`), so the current path, the
    depth of a node and the steps a backtrack undoes are all read off this tree.
    """

    question: CountdownQuestion
    cut_at: int = 0
    records: list[StepRecord] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # node each record starts from
    current: int = QUESTION_NODE  # node the next step starts from
    told_at: int | None = None  # len(records) when the answer was given
    told_node: int | None = None  # current node when the answer was given
    notes: dict = field(default_factory=lambda: {"stop_reason": None, "format_errors": {},
                                                 "fallback_recovery": False})
    raw_names: list[str] = field(default_factory=list)  # names as the teacher wrote them
    backtrack_log: list[tuple[int, int, int]] = field(default_factory=list)  # (len(records), from, to)
    _pending: Move | None = None
    _reason: str | None = None

    @classmethod
    def start(cls, question: CountdownQuestion, prefix: Sequence[StepRecord]) -> "Draft":
        """A draft holding the first `len(prefix)` steps of a forward path."""
        draft = cls(question=question, cut_at=len(prefix))
        for record in prefix:
            draft.add(record)
        return draft

    @property
    def target(self) -> int:
        return self.question.problem.target

    @property
    def max_result(self) -> int | None:
        return self.question.problem.max_result

    @property
    def options(self) -> tuple[int, ...]:
        return tuple(self.question.options)

    def node_state(self, node: int) -> State:
        return self.question.problem.numbers if node == QUESTION_NODE else self.records[node].state

    @property
    def state(self) -> State:
        return self.node_state(self.current)

    def node_name(self, node: int) -> str:
        return fmt.QUESTION if node == QUESTION_NODE else self.records[node].step.name

    def path(self, node: int | None = None) -> list[int]:
        """Record indices from the question to `node` (default: the current node)."""
        node = self.current if node is None else node
        out = []
        while node != QUESTION_NODE:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def depth(self, node: int) -> int:
        return len(self.path(node))

    def find(self, name: str) -> int | None:
        """The node a backtrack to `name` returns to: the latest step with that name, or the question."""
        name = name.strip()
        if name == fmt.QUESTION:
            return QUESTION_NODE
        for names in ([r.step.name for r in self.records], self.raw_names):
            for i in range(len(names) - 1, -1, -1):
                if names[i].strip() == name:
                    return i
        return None

    def add(self, record: StepRecord) -> int:
        """Append a step starting at the current node; returns its index."""
        if record.parent != self.state:
            raise ValueError(f"step {record.step.name!r} starts from {record.parent} but the draft is at "
                             f"{self.state}: backtrack first, or build the step from draft.state")
        step = record.step
        taken = {r.step.name for r in self.records}
        name, n = step.name, 1
        while name in taken or name == fmt.QUESTION:  # a backtrack names its target by name
            n += 1
            name = f"{step.name} ({n})"
        if self._reason:
            step = dataclasses.replace(step, reflection=f"{self._reason} {step.reflection}")
        if name != step.name or step is not record.step:
            record = dataclasses.replace(record, step=dataclasses.replace(step, name=name))
        if self.records:
            self.moves.append(self._pending or "proceed")
        self._pending, self._reason = None, None
        self.records.append(record)
        self.raw_names.append(step.name)
        self.parents.append(self.current)
        self.current = len(self.records) - 1
        return self.current

    def backtrack_to(self, node: int, reason: str | None = None) -> None:
        """Return to `node` (an earlier step, or QUESTION_NODE); the next step says `reason`."""
        if not QUESTION_NODE <= node < len(self.records):
            raise ValueError(f"cannot backtrack to node {node}: the draft has {len(self.records)} steps")
        if node == self.current:
            raise ValueError(f"already at node {node}; a backtrack must return to another step")
        if not self.records:
            raise ValueError("cannot backtrack before the first step (a move needs a step before it)")
        origin = self.current
        if self._pending is not None:  # two backtracks in a row are one move: from the first origin
            origin = self.backtrack_log.pop()[1]
            if node == origin:  # back where the first one started: no move at all
                self.current, self._pending, self._reason = node, None, None
                return
        self.backtrack_log.append((len(self.records), origin, node))
        self.current = node
        self._pending = Backtrack(self.node_name(node))
        self._reason = reason

    def tell_answer(self) -> None:
        self.told_at = len(self.records)
        self.told_node = self.current

    def valid_prefix(self, node: int | None = None) -> int:
        """The deepest node on the path to `node` from which the answer is still reachable with
        correct arithmetic (every step up to it correct, distance_to_value not None)."""
        keep = QUESTION_NODE
        for i in self.path(node):
            r = self.records[i]
            if not r.arithmetic_ok or distance_to_value(r.state, self.target, self.max_result) is None:
                break
            keep = i
        return keep

    def is_solved(self, node: int | None = None) -> bool:
        node = self.current if node is None else node
        return self.target in self.node_state(node) and self.valid_prefix(node) == node

    def to_trajectory(self, answer: str, source: str = "augmented") -> Trajectory:
        if self._pending is not None:
            raise ValueError("the draft ends with a backtrack and no step after it")
        return Trajectory(
            question_id=self.question.question_id, source=source, records=tuple(self.records),
            moves=tuple(self.moves), answer=answer, solved=self.is_solved(), meta=trajectory_meta(self),
        )


def trajectory_meta(draft: Draft) -> dict:
    """Teacher statistics computed from the draft's records (see the module docstring)."""
    target, records = draft.target, draft.records
    told_at = len(records) if draft.told_at is None else draft.told_at
    told_node = draft.current if draft.told_node is None else draft.told_node
    wrong = [r.arithmetic_ok and distance_to_value(r.state, target, draft.max_result) is None for r in records]
    slips = [not r.arithmetic_ok for r in records]
    errors = [i for i in range(len(records)) if wrong[i] or slips[i]]
    told_path = draft.path(told_node)
    exploration_slipped = any(slips[i] for i in told_path)
    ended_on_option = any(v in draft.node_state(told_node) for v in draft.options)
    after = [(f, t) for n, f, t in draft.backtrack_log if n >= told_at]
    return {
        "cut_at": draft.cut_at,
        "explore_steps": told_at - draft.cut_at,
        "recovery_steps": len(records) - told_at,
        "wrong_branch_steps": sum(wrong),
        "arithmetic_slips": sum(slips),
        "first_error_step": errors[0] if errors else None,
        "solved_unaided": draft.is_solved(told_node),
        "false_success": ended_on_option and exploration_slipped,
        "backtracks": len(draft.backtrack_log),
        "self_backtracks": len(draft.backtrack_log) - len(after),
        "backtrack_distance": sum(draft.depth(f) - draft.depth(t) for f, t in after),
        "answer_reached": draft.is_solved(),
        "stop_reason": draft.notes.get("stop_reason"),
        "format_errors": dict(draft.notes.get("format_errors", {})),
        "fallback_recovery": bool(draft.notes.get("fallback_recovery", False)),
    }


def recover(draft: Draft) -> None:
    """The exact recovery, given the answer: backtrack to the deepest state on the current path
    from which the answer is still reachable with correct arithmetic (the question at worst),
    then follow a shortest solution from there. Nothing to do when already solved."""
    if draft.is_solved():
        return
    target = draft.target
    keep = draft.valid_prefix()
    if keep != draft.current:
        path = draft.path()
        wrong = draft.records[path[path.index(keep) + 1] if keep != QUESTION_NODE else path[0]]
        if wrong.arithmetic_ok:
            why = f"Backtracked: {state_text(wrong.state)} cannot reach {target}."
        else:
            why = f"Backtracked: {wrong.operation.text()}, not {claimed_result(wrong)}."
        if target in draft.node_state(keep):  # nothing would follow the backtrack:
            keep = draft.parents[keep]  # return one step earlier and redo that step
        draft.backtrack_to(keep, why)
    for op in solve(Problem(draft.state, target, draft.max_result)):
        draft.add(make_record(draft.state, op, op.result, draft.options))


# --- The teacher interface ------------------------------------------------------------------


class Teacher(Protocol):
    """Continues a draft in two phases; see the module docstring."""

    def continue_without_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        """Explore from draft.current toward the options, not knowing which one is right."""

    def continue_with_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        """Knowing q.problem.target: backtrack where needed and reach it (draft.is_solved() after)."""


# --- The search teacher ----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchTeacher:
    """A noisy best-first search toward the options: the default, cheap teacher.

    Without the answer it knows the four options but not which is right. At each state it ranks
    the untried legal operations by how close their result is to the nearest option; with
    probability `error_rate` it takes a random one of ranks 2..`branching` instead of the best;
    with probability `arithmetic_error_rate` it writes a result off by 1 or 2 (a hallucinated
    step: its state carries the wrong number from then on). It stops on a state holding an
    option (after a slip that can be a wrong one: a false success), after `max_explore_steps`
    steps, or at a dead end (one number left), where it first backtracks on its own up to
    `self_backtracks` times: to the last state where it took a non-best operation, or to where
    it started exploring, and tries the best untried operation there.
    Given the answer it runs `recover` (exact: the deepest still-correct state, then a shortest
    solution).
    """

    # Defaults read from the schema (params.TeacherParams), the one place they live.
    error_rate: float = TeacherParams.error_rate
    arithmetic_error_rate: float = TeacherParams.arithmetic_error_rate
    branching: int = TeacherParams.branching
    max_explore_steps: int = TeacherParams.max_explore_steps
    self_backtracks: int = TeacherParams.self_backtracks

    def __post_init__(self) -> None:
        for name in ("error_rate", "arithmetic_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SearchTeacher {name}={getattr(self, name)}: a probability in [0, 1]")
        if self.branching < 1 or self.max_explore_steps < 0 or self.self_backtracks < 0:
            raise ValueError(f"SearchTeacher needs branching >= 1, max_explore_steps >= 0 and "
                             f"self_backtracks >= 0; got {self.branching}, {self.max_explore_steps}, "
                             f"{self.self_backtracks}")

    @staticmethod
    def rank(state: State, options: tuple[int, ...], exclude=frozenset(),
             max_result: int | None = None) -> list[Operation]:
        """Legal operations by |result - nearest option| (ties: legal order), minus `exclude`."""
        scored = [(min([abs(op.result - o) for o in options]), i, op)
                  for i, (op, _) in enumerate(successors(state, max_result)) if op not in exclude]
        scored.sort(key=lambda s: s[:2])  # (closeness, legal order): never compares Operations
        return [op for _, _, op in scored]

    def continue_without_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        options = draft.options
        start = draft.current
        tried: dict[int, set[Operation]] = {}
        guessed: set[int] = set()  # nodes where a non-best operation was taken
        backtracks_left = self.self_backtracks
        steps = 0
        stop = "max_steps"
        while True:
            state = draft.state
            if any(v in state for v in options):
                stop = "option"
                break
            if steps >= self.max_explore_steps:
                stop = "max_steps"
                break
            ranked = self.rank(state, options, tried.get(draft.current, ()), draft.max_result)
            if not ranked:
                back = self._self_backtrack_node(draft, start, guessed, tried) if backtracks_left else None
                if back is None:
                    stop = "dead_end"
                    break
                backtracks_left -= 1
                draft.backtrack_to(back, f"Backtracked: {state_text(state)} is a dead end.")
                continue
            op, node = ranked[0], draft.current
            alternatives = ranked[1:self.branching]
            if alternatives and rng.random() < self.error_rate:
                op = rng.choice(alternatives)
                guessed.add(node)
            claimed = op.result
            if rng.random() < self.arithmetic_error_rate:
                claimed = slip(op.result, rng)
            tried.setdefault(node, set()).add(op)
            draft.add(make_record(state, op, claimed, options))
            steps += 1
        draft.notes["stop_reason"] = stop

    def _self_backtrack_node(self, draft: Draft, start: int, guessed: set[int],
                             tried: dict[int, set[Operation]]) -> int | None:
        """Where a stuck teacher returns: its last guess on the path, else where it started."""
        explored = draft.path()[len(draft.path(start)):]  # steps on the path since exploring began
        node = ([start] + [n for n in explored if n in guessed])[-1]
        if node == draft.current or not self.rank(draft.node_state(node), draft.options, tried.get(node, ()),
                                                   draft.max_result):
            return None
        return node

    def continue_with_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        recover(draft)


def slip(result: int, rng: random.Random) -> int:
    """A wrong result off by 1 or 2, still positive (what a hallucinated step writes)."""
    delta = rng.choice((-2, -1, 1, 2))
    return result + delta if result + delta > 0 else result + abs(delta)


# --- The LLM teacher ---------------------------------------------------------------------------

HINT = "The correct answer is {value}. Backtrack to where the reasoning went wrong and reach it."

SYSTEM_PROMPT = """\
You solve arithmetic puzzles by reasoning in steps, in this exact format (the special tokens included).
A step is
{step_start}{name_start}NAME{name_end}{thought_start}THOUGHT{thought_end}\
{summary_start}SUMMARY{summary_end}{reflection_start}REFLECTION{reflection_end}{step_end}
and one step combines two of the remaining numbers. After a step write {proceed} to go on from it, or
{backtrack}NAME to return to the numbers left after the step called NAME ({question} returns to the start)
and go on from there. Finish with {reasoning_end}, then the answer. An example step:
{example}"""

BACKENDS = ("transformers", "vllm")


def end_of_text_ids(model, tokenizer) -> list[int]:
    """Tokens that end the teacher's continuation besides the eos: the padding token and the model's own
    end-of-sequence ids (an instruct model's generation config often lists more than its tokenizer's eos)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # a VLLMModel has none: vLLM reads it
    eos = eos if isinstance(eos, list) else [] if eos is None else [eos]
    return [i for i in (tokenizer.pad_token_id, *eos) if i is not None]


def reasoning_so_far(draft: Draft, open_move: bool = False) -> str:
    """The draft rendered as the start of a reasoning block (no reasoning_end), ending after the
    last step, or after a proceed when `open_move` (so the model writes the next step)."""
    trace = fmt.Trace(tuple(r.step for r in draft.records), tuple(draft.moves), "")
    text_ = fmt.render_reasoning(trace)[: -len(fmt.REASONING_END)]
    if open_move and draft.records:
        text_ += fmt.render_move("proceed") + "\n"
    return text_


class LLMTeacher:
    """A causal LM as the teacher: Steiner's "strong LLM" continuing a truncated prefix.

    Both phases prompt the model with the question (the 4-choice prompt of
    `choice.format_prompt`; the second time followed by HINT) and pre-fill its reply with the
    reasoning so far in the 14-token format, so the model continues it. The continuation is
    parsed with `format.parse` (never raises); every format error is counted by kind in
    notes["format_errors"], as are the domain errors that end reading: "unreadable_step" (no
    operation in the thought), "illegal_step" (numbers not available, or an operation the rules
    forbid) and "unresolved_backtrack". Steps that read are mapped to states with
    `text.read_step_operation` (a wrong claimed result is kept as an arithmetic slip). Reading
    stops at the first state holding an option (phase 1) or the answer (phase 2). If the model
    has not reached the answer after phase 2, the exact `recover` finishes the trace and
    notes["fallback_recovery"] is set, so every trajectory is a valid trace.

    The model (a hub name or a local path) is loaded lazily, by backends.load_model (foreign: its
    own tokenizer, unchanged; on the GPU when there is one), and generates by backends.generate:
    backend="transformers" is model.generate in this process, backend="vllm" a vLLM engine over
    `tensor_parallel_size` GPUs (`pip install .[gpu]`; imported only when used). Each request is
    seeded from the rng the teacher is given and draws what it would draw alone, in any batch.
    """

    def __init__(self, model_name_or_path: str, backend: str = "transformers", max_new_tokens: int = 512,
                 temperature: float = 0.7, prompt_seed: int = 0,
                 max_explore_steps: int | None = None, tensor_parallel_size: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"LLMTeacher backend={backend!r}: choose one of {BACKENDS}")
        if max_new_tokens < 1 or temperature < 0:
            raise ValueError(f"LLMTeacher needs max_new_tokens >= 1 and temperature >= 0, "
                             f"got {max_new_tokens} and {temperature}")
        self.model_name_or_path = str(model_name_or_path)
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.prompt_seed = prompt_seed
        self.max_explore_steps = max_explore_steps
        self.tensor_parallel_size = tensor_parallel_size  # vLLM only: GPUs the model is split over
        self._loaded = None  # (model, tokenizer) from backends.load_model, on first use

    # -- prompts --

    @staticmethod
    def system_prompt() -> str:
        from steiner_lib.tasks.countdown import make_operation

        parent = (3, 7, 25, 50)
        example = text.step_texts(parent, make_operation(50, "*", 3), 150, (150, 160, 170, 180))
        return SYSTEM_PROMPT.format(
            step_start=fmt.STEP_START, step_end=fmt.STEP_END, name_start=fmt.NAME_START,
            name_end=fmt.NAME_END, thought_start=fmt.THOUGHT_START, thought_end=fmt.THOUGHT_END,
            summary_start=fmt.SUMMARY_START, summary_end=fmt.SUMMARY_END,
            reflection_start=fmt.REFLECTION_START, reflection_end=fmt.REFLECTION_END,
            proceed=fmt.PROCEED, backtrack=fmt.BACKTRACK, question=fmt.QUESTION,
            reasoning_end=fmt.REASONING_END, example=fmt.render_step(example),
        )

    def question_prompt(self, q: CountdownQuestion) -> str:
        from steiner_lib.tasks.choice import format_prompt

        return format_prompt(q.to_choice(), self.prompt_seed)[0]

    def build_prompt(self, user: str, prefill: str) -> str:
        """System + user message (chat template when the tokenizer has one), then the pre-fill."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            head = tok.apply_chat_template(
                [{"role": "system", "content": self.system_prompt()}, {"role": "user", "content": user}],
                tokenize=False, add_generation_prompt=True)
        else:
            head = f"{self.system_prompt()}\n\n{user}\n\n"
        return head + prefill

    # -- generation --

    def _model_and_tokenizer(self):
        if self._loaded is None:
            from steiner_lib.generation import backends

            self._loaded = backends.load_model(self.model_name_or_path, self.backend, self.tensor_parallel_size,
                                               foreign=True)
        return self._loaded

    @property
    def tokenizer(self):
        return self._model_and_tokenizer()[1]

    def generate(self, prompt: str, seed: int) -> str:
        """The model's continuation of `prompt` (special tokens kept, stopped at end-of-sequence)."""
        return self.generate_many([prompt], [seed])[0]

    def generate_many(self, prompts: list[str], seeds: list[int]) -> list[str]:
        """`generate` for many prompts in one backends.generate call, each request seeded as if alone."""
        from steiner_lib.generation import backends

        model, tok = self._model_and_tokenizer()
        outputs = backends.generate(model, tok, list(prompts), max_new_tokens=self.max_new_tokens,
                                    temperature=self.temperature, seed=list(seeds), progress=False,
                                    backend=self.backend, stop_token_ids=end_of_text_ids(model, tok),
                                    reasoning_tokens=False)
        return [samples[0] for samples in outputs]

    # -- the two phases; each is a request (prompt, seed, pre-fill) and an absorb, so that
    # synthesis.synthesize_batched can send many drafts' requests in one generate_many call --

    def exploration_request(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> tuple[str, int, str]:
        prefill = reasoning_so_far(draft, open_move=True)
        return self.build_prompt(self.question_prompt(q), prefill), rng.randrange(2**31), prefill

    def absorb_exploration(self, draft: Draft, prefill: str, out: str) -> None:
        options = draft.options
        draft.notes["stop_reason"] = self.absorb(
            draft, prefill + out, done=lambda d: any(v in d.state for v in options),
            limit=self.max_explore_steps)

    def recovery_request(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> tuple[str, int, str] | None:
        """None when the draft already holds the answer (no generation, no random draw)."""
        if draft.is_solved():
            return None
        user = self.question_prompt(q) + "\n\n" + HINT.format(value=draft.target)
        prefill = reasoning_so_far(draft)
        return self.build_prompt(user, prefill), rng.randrange(2**31), prefill

    def absorb_recovery(self, draft: Draft, prefill: str | None = None, out: str | None = None) -> None:
        if prefill is not None:
            self.absorb(draft, prefill + out, done=lambda d: d.is_solved())
        if not draft.is_solved():
            draft.notes["fallback_recovery"] = True
            recover(draft)

    def continue_without_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        prompt, seed, prefill = self.exploration_request(q, draft, rng)
        self.absorb_exploration(draft, prefill, self.generate(prompt, seed))

    def continue_with_answer(self, q: CountdownQuestion, draft: Draft, rng: random.Random) -> None:
        request = self.recovery_request(q, draft, rng)
        if request is None:
            self.absorb_recovery(draft)
        else:
            prompt, seed, prefill = request
            self.absorb_recovery(draft, prefill, self.generate(prompt, seed))

    @staticmethod
    def absorb(draft: Draft, reasoning: str, done, limit: int | None = None) -> str:
        """Append the steps of `reasoning` beyond the draft's own to the draft; returns why it stopped.

        `reasoning` is the pre-fill (the draft rendered) plus the model's continuation.
        """
        errors = draft.notes.setdefault("format_errors", {})

        def count(kind: str) -> None:
            errors[kind] = errors.get(kind, 0) + 1

        parsed = fmt.parse(reasoning)
        for kind, n in parsed.error_kinds().items():
            errors[kind] = errors.get(kind, 0) + n
        steps, moves = parsed.trace.steps, parsed.trace.moves
        added = 0
        for g in range(len(draft.records), len(steps)):
            if done(draft):
                return "option" if draft.told_at is None else "answer"
            if limit is not None and added >= limit:
                return "max_steps"
            node = draft.current
            move = moves[g - 1] if g > 0 else "proceed"
            if isinstance(move, Backtrack):
                node = draft.find(move.to)
                if node is None or not draft.records:
                    count("unresolved_backtrack")
                    return "parse"
            parent = draft.node_state(node)
            op = text.read_step_operation(steps[g], parent)
            if op is None:
                count("unreadable_step")
                return "parse"
            true = combine(op.a, op.op, op.b, draft.max_result)  # read_step_operation gives a >= b, numbers in parent
            if true is None or op.result < 1:
                count("illegal_step")
                return "parse"
            operation = Operation(op.a, op.op, op.b, true)
            if node != draft.current:
                draft.backtrack_to(node)
            draft.add(StepRecord(parent, text.claimed_state(parent, operation, op.result), operation,
                                 op.result == true, steps[g]))
            added += 1
        if done(draft):
            return "option" if draft.told_at is None else "answer"
        return "max_steps" if limit is not None and added >= limit else "model_stopped"


def search_teacher(teacher_params) -> SearchTeacher:
    """The search teacher at a params section's error rates: the data's teacher in the CPU presets, and
    the reference searcher of notebooks 04 and 06 in every preset (an LLM teacher included)."""
    p = teacher_params
    return SearchTeacher(error_rate=p.error_rate, arithmetic_error_rate=p.arithmetic_error_rate,
                         branching=p.branching, max_explore_steps=p.max_explore_steps,
                         self_backtracks=p.self_backtracks)


def make_teacher(teacher_params, prompt_seed: int = 0) -> "SearchTeacher | LLMTeacher":
    """The teacher a params section (steiner_lib.params.TeacherParams) asks for.

    `prompt_seed`: the seed the letters were made with (choice.format_prompt), so an LLM
    teacher sees the options in the same order as the student's prompt.
    """
    p = teacher_params
    if p.kind == "search":
        return search_teacher(p)
    return LLMTeacher(p.model, backend=p.backend, max_new_tokens=p.max_new_tokens,
                      temperature=p.temperature, max_explore_steps=p.max_explore_steps,
                      prompt_seed=prompt_seed, tensor_parallel_size=p.tensor_parallel)


def solve_unaided(teacher: SearchTeacher, q: CountdownQuestion, max_steps: int, seed: int) -> dict:
    """The search teacher on a question it is never told the answer of: a reference for the models.

    The teacher explores from the question for at most `max_steps` steps, with no arithmetic slips
    and a self-backtrack allowed at every dead end (it searches as long as its budget lasts), and
    stops on a state that holds an option. Returns solved (that option is the answer, reached by
    correct arithmetic), steps and backtracks.
    """
    explorer = dataclasses.replace(teacher, arithmetic_error_rate=0.0, max_explore_steps=max_steps,
                                   self_backtracks=max_steps)
    draft = Draft.start(q, [])
    explorer.continue_without_answer(q, draft, random.Random(f"{seed}-unaided-{q.question_id}"))
    return {"solved": draft.is_solved(), "steps": len(draft.records), "backtracks": len(draft.backtrack_log)}
