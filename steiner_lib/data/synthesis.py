"""Steiner's backtracking data synthesis by truncation augmentation.

Forward-only "shortcut" chain-of-thought data has no backtracking in it. Steiner cut a
shortcut path at a random step, hid the answer and let a strong LLM continue from the prefix
(it explores and makes mistakes), then gave it the correct answer so it backtracked to where it
went wrong and reached the answer. Here the shortcut is the exact solver's shortest solution
and the continuation comes from a teacher (steiner_lib.data.teachers).

Per question, `synthesize` writes one shortcut trajectory and N augmented ones, each from a
random.Random seeded by (seed, question_id): the output does not depend on question order or
on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import warnings
from functools import lru_cache
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from steiner_lib.data.teachers import Draft, LLMTeacher, Teacher, make_record
from steiner_lib.data.traces import StepRecord, Trajectory
from steiner_lib.format import Backtrack, Step
from steiner_lib.tasks import text
from steiner_lib.tasks.choice import CountdownQuestion
from steiner_lib.tasks.countdown import Operation, solve


@lru_cache(maxsize=1024)  # a question's shortcut and all its augmentations start from it
def shortest_records(q: CountdownQuestion) -> tuple[StepRecord, ...]:
    """The exact solver's shortest solution as step records (template texts, canonical states)."""
    ops = solve(q.problem)
    if ops is None:
        raise ValueError(f"question {q.question_id}: {q.problem.target} cannot be made from "
                         f"{q.problem.numbers}; build questions with choice.make_countdown_question")
    records, state = [], q.problem.numbers
    for op in ops:
        records.append(make_record(state, op, op.result, tuple(q.options)))
        state = records[-1].state
    return tuple(records)


def shortcut_trajectory(q: CountdownQuestion, letter: str) -> Trajectory:
    """The forward-only trace of the shortest solution: every move "proceed", solved."""
    records = shortest_records(q)
    draft = Draft.start(q, records)  # the draft makes step names unique
    answer = text.answer_text([r.operation for r in records], q.problem.target, letter)
    return Trajectory(q.question_id, "shortcut", tuple(draft.records), tuple(draft.moves), answer,
                      solved=True, meta={})


def augment(q: CountdownQuestion, letter: str, teacher: Teacher, rng: random.Random,
            cut_at: int | None = None) -> Trajectory:
    """Truncation augmentation: keep the first k steps of the shortest solution (k uniform in
    [0, len - 1] unless `cut_at` is given; 0 = start from the question), let the teacher
    explore without the answer, then give it the answer. meta: see steiner_lib.data.teachers."""
    draft = _cut(q, rng, cut_at)
    teacher.continue_without_answer(q, draft, rng)
    draft.tell_answer()
    teacher.continue_with_answer(q, draft, rng)
    return _finish(q, letter, teacher, draft)


def _cut(q: CountdownQuestion, rng: random.Random, cut_at: int | None = None) -> Draft:
    """The draft of an augmentation: the shortest solution's first k steps (k drawn from rng)."""
    records = shortest_records(q)
    k = rng.randrange(len(records)) if cut_at is None else cut_at
    if not 0 <= k < len(records):
        raise ValueError(f"cut_at={cut_at}: the shortest solution of {q.question_id} has "
                         f"{len(records)} steps, so cut_at must be in 0..{len(records) - 1}")
    return Draft.start(q, records[:k])


def _finish(q: CountdownQuestion, letter: str, teacher, draft: Draft) -> Trajectory:
    if not draft.is_solved():
        raise RuntimeError(f"{type(teacher).__name__} left {q.question_id} unsolved; "
                           f"continue_with_answer must end on the answer (see teachers.recover)")
    ops = [draft.records[i].operation for i in draft.path()]
    trajectory = draft.to_trajectory(text.answer_text(ops, q.problem.target, letter))
    trajectory.meta["teacher"] = type(teacher).__name__
    return trajectory


def question_trajectories(q: CountdownQuestion, letter: str, teacher: Teacher,
                          augmentations_per_question: int, seed: int) -> list[Trajectory]:
    """One shortcut and N augmented trajectories, from a random.Random seeded by (seed, question_id)."""
    rng = random.Random(f"{seed}:{q.question_id}")  # str seeds hash with SHA-512: stable everywhere
    return [shortcut_trajectory(q, letter)] + [
        augment(q, letter, teacher, rng) for _ in range(augmentations_per_question)]


def synthesize_batched(questions: list[CountdownQuestion], letters: list[str], teacher: LLMTeacher,
                       augmentations_per_question: int, seed: int, progress: bool = True,
                       batch_size: int = 512) -> list[Trajectory]:
    """`synthesize` for the LLM teacher, its requests batched across questions (vLLM serves a batch
    at once; one request at a time would decode at single-sequence speed).

    Round r writes every question's r-th augmentation: all cuts, then the exploration requests in
    batches of `batch_size`, then the recovery requests. Each question keeps its own
    random.Random(seed:question_id), drawn in the order `augment` draws it, so the output is
    exactly that of `question_trajectories` one question at a time (tests/data/test_synthesis_batched.py).
    """
    rngs = [random.Random(f"{seed}:{q.question_id}") for q in questions]
    out = [[shortcut_trajectory(q, letter)] for q, letter in zip(questions, letters)]
    bar = tqdm(total=len(questions) * augmentations_per_question, desc="synthesis (batched)", unit="trace",
               disable=not progress)

    def run(requests: list, absorb) -> None:
        todo = [(i, r) for i, r in enumerate(requests) if r is not None]
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo:lo + batch_size]
            texts = teacher.generate_many([r[0] for _, r in chunk], [r[1] for _, r in chunk])
            for (i, (_, _, prefill)), text_ in zip(chunk, texts):
                absorb(i, prefill, text_)

    try:
        for _ in range(augmentations_per_question):
            drafts = [_cut(q, rng) for q, rng in zip(questions, rngs)]
            run([teacher.exploration_request(q, d, rng) for q, d, rng in zip(questions, drafts, rngs)],
                lambda i, prefill, text_: teacher.absorb_exploration(drafts[i], prefill, text_))
            for d in drafts:
                d.tell_answer()
            recoveries = [teacher.recovery_request(q, d, rng) for q, d, rng in zip(questions, drafts, rngs)]
            run(recoveries, lambda i, prefill, text_: teacher.absorb_recovery(drafts[i], prefill, text_))
            for i, (q, letter, d) in enumerate(zip(questions, letters, drafts)):
                if recoveries[i] is None:
                    teacher.absorb_recovery(d)
                out[i].append(_finish(q, letter, teacher, d))
                bar.update(1)
    finally:
        bar.close()
    return [t for ts in out for t in ts]


# The job a forked worker runs: set before the pool starts, so children inherit it unpickled.
_JOB: tuple | None = None


def _run_chunk(bounds: tuple[int, int]) -> list[tuple]:
    questions, letters, teacher, n, seed = _JOB
    return [_pack(t) for i in range(*bounds)
            for t in question_trajectories(questions[i], letters[i], teacher, n, seed)]


def _pack(t: Trajectory) -> tuple:
    """Plain tuples: they cross the process boundary faster than pickled dataclasses."""
    records = tuple((r.parent, r.state, r.operation and (r.operation.a, r.operation.op, r.operation.b,
                     r.operation.result), r.arithmetic_ok, (r.step.name, r.step.thought, r.step.summary,
                     r.step.reflection)) for r in t.records)
    moves = tuple(None if m == "proceed" else m.to for m in t.moves)
    return t.question_id, t.source, records, moves, t.answer, t.solved, t.meta


def _unpack(packed: tuple) -> Trajectory:
    question_id, source, records, moves, answer, solved, meta = packed
    return Trajectory(
        question_id, source,
        tuple(StepRecord(parent, state, op and Operation(*op), ok, Step(*texts))
              for parent, state, op, ok, texts in records),
        tuple("proceed" if m is None else Backtrack(m) for m in moves), answer, solved, meta)


def synthesize(questions: list[CountdownQuestion], letters: list[str], teacher: Teacher,
               augmentations_per_question: int, seed: int, progress: bool = True,
               workers: int = 1) -> list[Trajectory]:
    """Shortcut + N augmented trajectories per question, in question order.

    `letters[i]` is the correct letter of question i in its prompt (choice.format_prompt).
    `workers` > 1 forks processes over chunks of questions; the output is identical for any
    number of workers. The LLM teacher runs in one process (its model is not fork-safe; batch
    on a GPU instead).
    """
    global _JOB
    questions, letters = list(questions), list(letters)
    if len(questions) != len(letters):
        raise ValueError(f"{len(questions)} questions but {len(letters)} letters: give one letter per question")
    if augmentations_per_question < 0 or workers < 1:
        raise ValueError(f"need augmentations_per_question >= 0 and workers >= 1, "
                         f"got {augmentations_per_question} and {workers}")
    if workers > 1 and isinstance(teacher, LLMTeacher):
        raise ValueError("synthesize(workers > 1) forks processes, which an LLMTeacher's model does not "
                         "survive: use workers=1 with the LLM teacher")
    if isinstance(teacher, LLMTeacher):  # same output, generation batched across questions
        return synthesize_batched(questions, letters, teacher, augmentations_per_question, seed, progress)
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        warnings.warn("this platform cannot fork processes; synthesizing in one process instead")
        workers = 1
    bar = tqdm(total=len(questions), desc="synthesis", unit="question", disable=not progress)
    out: list[Trajectory] = []
    try:
        if workers == 1:
            for q, letter in zip(questions, letters):
                out += question_trajectories(q, letter, teacher, augmentations_per_question, seed)
                bar.update(1)
            return out
        size = max(1, math.ceil(len(questions) / (workers * 16)))
        chunks = [(lo, min(lo + size, len(questions))) for lo in range(0, len(questions), size)]
        _JOB = (questions, letters, teacher, augmentations_per_question, seed)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for (lo, hi), packed in zip(chunks, pool.imap(_run_chunk, chunks)):
                out += map(_unpack, packed)
                bar.update(hi - lo)
        return out
    finally:
        _JOB = None
        bar.close()


def teacher_error_table(trajectories: list[Trajectory]) -> pd.DataFrame:
    """One row per augmented trajectory: question_id, the teacher meta, and the trace shape.

    format_errors ({kind: count}) becomes a total column plus one column per kind
    ("format_errors.<kind>", 0 where absent).
    """
    rows = []
    for t in trajectories:
        if t.source != "augmented":
            continue
        row = {"question_id": t.question_id, "n_steps": len(t.records), "solved": t.solved}
        for key, value in t.meta.items():
            if isinstance(value, dict):
                row[key] = sum(value.values())
                for kind, n in value.items():
                    row[f"{key}.{kind}"] = n
            else:
                row[key] = value
        rows.append(row)
    df = pd.DataFrame(rows)
    kinds = [c for c in df.columns if c.startswith("format_errors.")]
    if kinds:
        df[kinds] = df[kinds].fillna(0).astype(int)
    return df


# --- Save and load: JSON Lines, one trajectory per line --------------------------------------


def trajectory_to_dict(t: Trajectory) -> dict:
    return {
        "question_id": t.question_id,
        "source": t.source,
        "records": [{
            "parent": list(r.parent),
            "state": list(r.state),
            "operation": None if r.operation is None else
            {"a": r.operation.a, "op": r.operation.op, "b": r.operation.b, "result": r.operation.result},
            "arithmetic_ok": r.arithmetic_ok,
            "step": {"name": r.step.name, "thought": r.step.thought, "summary": r.step.summary,
                     "reflection": r.step.reflection},
        } for r in t.records],
        "moves": ["proceed" if m == "proceed" else {"backtrack": m.to} for m in t.moves],
        "answer": t.answer,
        "solved": t.solved,
        "meta": t.meta,
    }


def trajectory_from_dict(d: dict) -> Trajectory:
    records = tuple(StepRecord(
        parent=tuple(r["parent"]),
        state=tuple(r["state"]),
        operation=None if r["operation"] is None else Operation(**r["operation"]),
        arithmetic_ok=r["arithmetic_ok"],
        step=Step(**r["step"]),
    ) for r in d["records"])
    moves = tuple("proceed" if m == "proceed" else Backtrack(m["backtrack"]) for m in d["moves"])
    return Trajectory(d["question_id"], d["source"], records, moves, d["answer"], d["solved"], dict(d["meta"]))


def save_trajectories(trajectories: list[Trajectory], path) -> Path:
    """Write JSON Lines atomically (a temp file beside `path`, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for t in trajectories:
                f.write(json.dumps(trajectory_to_dict(t), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_trajectories(path) -> list[Trajectory]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trajectories file; run the synthesis stage (notebook 01) first")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(trajectory_from_dict(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: not a saved trajectory ({e}); rewrite it with "
                                     f"save_trajectories") from e
    return out


def teacher_error_rates(errors: pd.DataFrame) -> dict[str, float]:
    """Headline rates over augmented traces (the stage manifest records them)."""
    n = max(len(errors), 1)
    steps = max(int(errors["explore_steps"].sum()), 1) if len(errors) else 1
    return {
        "traces_with_an_error": float(errors["first_error_step"].notna().sum() / n),
        "wrong_branch_steps_per_explored_step": float(errors["wrong_branch_steps"].sum() / steps),
        "arithmetic_slips_per_explored_step": float(errors["arithmetic_slips"].sum() / steps),
        "solved_unaided": float(errors["solved_unaided"].mean()) if len(errors) else 0.0,
        "false_success": float(errors["false_success"].mean()) if len(errors) else 0.0,
        "mean_backtracks": float(errors["backtracks"].mean()) if len(errors) else 0.0,
        "mean_backtrack_distance": float(errors["backtrack_distance"].mean()) if len(errors) else 0.0,
        "answer_reached": float(errors["answer_reached"].mean()) if len(errors) else 0.0,
    }


def teacher_error_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """The rates above as a readable two-column table."""
    labels = {
        "traces_with_an_error": "traces with at least one error",
        "wrong_branch_steps_per_explored_step": "wrong-branch steps per explored step",
        "arithmetic_slips_per_explored_step": "arithmetic slips per explored step",
        "solved_unaided": "solved before being told the answer",
        "false_success": "false success (reached an option only through a slip)",
        "mean_backtracks": "backtracks per trace (mean)",
        "mean_backtrack_distance": "steps undone by the recovery backtrack (mean per trace)",
        "answer_reached": "reached the answer in the end",
    }
    rates = teacher_error_rates(errors)
    table = pd.DataFrame({"value": [round(rates[k], 3) for k in labels]}, index=list(labels.values()))
    table.index.name = f"over {len(errors)} augmented traces"
    return table
