"""Four-choice questions in GPQA-Diamond's schema, and the Countdown benchmark built from them.

The paper evaluates on GPQA-Diamond: a question and four answers, one correct, no
chain-of-thought prompt. Here a Countdown problem becomes such a question: "which of these
four values can be made from these numbers?". The three wrong options are the unreachable
values nearest to the target, so every option looks plausible and exactly one is provably
right (`reachable_values`). Questions are stored in GPQA's own CSV columns, so the same
loader and prompt code also reads the real GPQA-Diamond file.

Splits: train (any difficulty); validation and diamond (search needed and feasible: the greedy
shortcut fails and the reference search backtracks at most `diamond_max_backtracks` times); hard
(the greedy shortcut fails and the reference search backtracks at least `hard_min_backtracks`
times: search the data's own teacher rarely finishes unaided); control (no search needed).
The rules read only the exact solver's search, never a model's scores. A start multiset belongs to
one side only, training or evaluation, fixed by a hash of the numbers themselves, so no
evaluation question shares its numbers with a training question, whatever the seed.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from steiner_lib.tasks.countdown import (
    Problem, State, canonical, check_problem_knobs, draw_numbers, draw_target, greedy_solve,
    reachable_values, reference_search, solve,
)

GPQA_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                "Incorrect Answer 3")
RECORD_ID = "Record ID"
LETTERS = "ABCD"


@dataclass(frozen=True)
class ChoiceQuestion:
    """One four-choice question as GPQA stores it (the real GPQA loads into this too)."""

    question: str
    correct: str
    incorrect: tuple[str, str, str]
    record_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "incorrect", tuple(self.incorrect))
        if len(self.incorrect) != 3:
            raise ValueError(f"a ChoiceQuestion needs 3 incorrect answers, got {len(self.incorrect)}")


# --- Countdown as a four-choice question ----------------------------------------------------


def question_text(numbers, max_result: int | None = None) -> str:
    """The question; a capped problem states its cap (`parse_question_cap` reads it back)."""
    listed = ", ".join(str(n) for n in canonical(numbers))
    cap = "" if max_result is None else f" of at most {max_result}"
    return (f"Using some of the numbers {listed} (each at most once) and + − × ÷, with every "
            f"intermediate result a positive whole number{cap}, exactly one of the following values "
            f"can be made. Which one?")


_NUMBERS_RE = re.compile(r"numbers?\s*:?\s*((?:\d+\s*(?:,|\band\b|&)?\s*)+)", re.IGNORECASE)
_CAP_RE = re.compile(r"whole numbers?\s+(?:of\s+)?at most\s+(\d+)", re.IGNORECASE)


def parse_question_cap(text: str) -> int | None:
    """The cap on results a question states (inverse of `question_text`), None if it states none."""
    m = _CAP_RE.search(text or "")
    return int(m.group(1)) if m else None


def parse_question_text(text: str) -> State | None:
    """The start numbers of a question text (inverse of `question_text`), None if there are none.

    Forgiving: "numbers 3, 7, 25 and 50", "Numbers: 3 7 25 50" all read.
    """
    m = _NUMBERS_RE.search(text or "")
    if not m:
        return None
    found = re.findall(r"\d+", m.group(1))
    return canonical(found) if found else None


@dataclass(frozen=True)
class CountdownQuestion:
    problem: Problem
    distractors: tuple[int, int, int]  # unreachable values near the target
    question_id: str

    @property
    def options(self) -> tuple[int, int, int, int]:
        """The four values, correct first (the order is shuffled only when a prompt is made)."""
        return (self.problem.target, *self.distractors)

    def to_choice(self) -> ChoiceQuestion:
        return ChoiceQuestion(question_text(self.problem.numbers, self.problem.max_result), str(self.problem.target),
                              tuple(str(d) for d in self.distractors), self.question_id)


def make_countdown_question(problem: Problem, rng: random.Random,
                            question_id: str) -> CountdownQuestion | None:
    """Distractors: unreachable values as near the target as possible, on both sides.

    The correct value's rank among the four options is drawn uniformly (k distractors below
    it, 3 - k above, each side the nearest unreachable values), so neither "pick a middle
    value" nor "pick an extreme" beats chance. Only values in [target/2, target*2] count;
    None when no rank can be filled. Under a cap, distractors stay at or below it (a value above
    the cap would be ruled out by the question text alone).
    """
    target = problem.target
    reachable = reachable_values(problem.numbers, problem.max_result)
    if target not in reachable:
        raise ValueError(f"target {target} cannot be made from {problem.numbers}: not a valid problem")
    lo, hi = max(1, (target + 1) // 2), 2 * target  # ceil(target / 2) .. 2 * target
    if problem.max_result is not None:
        hi = min(hi, problem.max_result)
    below = [v for v in range(target - 1, lo - 1, -1) if v not in reachable][:3]
    above = [v for v in range(target + 1, hi + 1) if v not in reachable][:3]
    ranks = [0, 1, 2, 3]
    rng.shuffle(ranks)
    for k in ranks:  # k distractors below the target, 3 - k above
        if len(below) >= k and len(above) >= 3 - k:
            return CountdownQuestion(problem, tuple(below[:k] + above[:3 - k]), question_id)
    return None


# --- The GPQA CSV schema -----------------------------------------------------------------


def write_gpqa_csv(questions: list[ChoiceQuestion], path) -> None:
    """Write questions as a GPQA-schema CSV ("Record ID" + GPQA_COLUMNS), atomically."""
    path = Path(path)
    rows = [{RECORD_ID: q.record_id, "Question": q.question, "Correct Answer": q.correct,
             "Incorrect Answer 1": q.incorrect[0], "Incorrect Answer 2": q.incorrect[1],
             "Incorrect Answer 3": q.incorrect[2]} for q in questions]
    frame = pd.DataFrame(rows, columns=[RECORD_ID, *GPQA_COLUMNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, path)  # readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_gpqa_csv(path) -> list[ChoiceQuestion]:
    """Read a GPQA-schema CSV (ours or the real GPQA file; extra columns are ignored)."""
    # Everything as text: "None of the above" or "NA" stay strings, and "07" stays "07".
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in GPQA_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not in the GPQA schema: missing column(s) {missing}; "
                         f"expected {list(GPQA_COLUMNS)} (other columns are ignored)")
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        row = dict(zip(frame.columns, row))
        record_id = row.get(RECORD_ID, "").strip() or str(i)
        out.append(ChoiceQuestion(
            question=row["Question"].strip(),
            correct=row["Correct Answer"].strip(),
            incorrect=tuple(row[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)),
            record_id=record_id,
        ))
    return out


# --- Prompts, as OpenAI simple-evals' GPQA eval makes them ---------------------------------


def shuffle_choices(q: ChoiceQuestion | CountdownQuestion, seed: int) -> tuple[list[str], str]:
    """The four choice texts in letter order A-D and the correct letter.

    A seeded permutation of [correct, incorrect 1-3] as in simple-evals, seeded per question
    (f"{seed}-{record_id}") so that it does not depend on which other questions are asked.
    """
    if isinstance(q, CountdownQuestion):
        q = q.to_choice()
    texts = [q.correct, *q.incorrect]
    permutation = random.Random(f"{seed}-{q.record_id}").sample(range(4), 4)
    return [texts[i] for i in permutation], LETTERS[permutation.index(0)]


def format_prompt(q: ChoiceQuestion | CountdownQuestion, seed: int) -> tuple[str, str]:
    """The user prompt "<question>\\n\\nA) ..\\nB) ..\\nC) ..\\nD) .." and the correct letter.

    No chain-of-thought instruction: the paper evaluates without CoT prompting.
    """
    prompt, letter, _ = format_prompt_and_choices(q, seed)
    return prompt, letter


def format_prompt_and_choices(q: ChoiceQuestion | CountdownQuestion, seed: int) -> tuple[str, str, list[str]]:
    """`format_prompt` and the four choice texts in the letter order it shows (an answer that scans
    the options needs them)."""
    if isinstance(q, CountdownQuestion):
        q = q.to_choice()
    choices, letter = shuffle_choices(q, seed)
    return q.question + "\n\n" + options_block(choices), letter, choices


def options_block(choices) -> str:
    """The four choices as the prompt lists them: "A) ..\nB) ..\nC) ..\nD) .."."""
    return "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))


# --- Difficulty and splits ---------------------------------------------------------------

SPLITS = ("train", "validation", "diamond", "hard", "control")
EVALUATION_SPLITS = ("validation", "diamond", "hard", "control")


def difficulty(problem: Problem) -> dict:
    """How hard a problem is for a searcher without an oracle."""
    shortest = solve(problem)
    if shortest is None:
        raise ValueError(f"target {problem.target} cannot be made from {problem.numbers}")
    return {
        "greedy_solves": greedy_solve(problem) is not None,
        "search_backtracks": reference_search(problem).backtracks,
        "shortest_steps": len(shortest),
    }


def is_diamond(d: dict, max_backtracks: int) -> bool:
    """The diamond rule: the greedy shortcut fails, and the reference search finds the answer within
    `max_backtracks` backtracks (search is needed, and a searcher without the answer can finish it)."""
    return not d["greedy_solves"] and d["search_backtracks"] <= max_backtracks


def is_hard(d: dict, min_backtracks: int) -> bool:
    """The hard rule: the greedy shortcut fails and the reference search backtracks at least this often."""
    return not d["greedy_solves"] and d["search_backtracks"] >= min_backtracks


def needs_no_search(d: dict) -> bool:
    return d["greedy_solves"] and d["search_backtracks"] == 0


def is_evaluation_state(numbers) -> bool:
    """Which side a start multiset belongs to: half of all multisets are kept for evaluation.

    A hash of the numbers alone (no seed), so the partition is the same in every run.
    """
    key = ",".join(str(n) for n in canonical(numbers)).encode()
    return hashlib.blake2b(key, digest_size=8).digest()[0] & 1 == 1


def make_splits(rng_seed: int, n_train: int, n_validation: int, n_diamond: int, n_hard: int, n_control: int,
                n_numbers: int, max_number: int, min_steps: int, max_steps: int,
                diamond_max_backtracks: int, hard_min_backtracks: int,
                max_result: int | None = None) -> dict[str, list[CountdownQuestion]]:
    """The five splits, deterministic for a seed, start states disjoint across splits.

    train: any problem from a training-side start state (a state may appear with several
    targets). Evaluation-side states give one question each: to diamond (then validation) when
    the diamond rule holds, to hard when the hard rule holds, to control when no search is
    needed, else nothing. max_result caps every result (countdown's rules; the question says so).
    """
    check_problem_knobs(n_numbers, max_number, min_steps, max_steps, max_result)
    if diamond_max_backtracks >= hard_min_backtracks:
        raise ValueError(f"diamond_max_backtracks={diamond_max_backtracks} must be below hard_min_backtracks="
                         f"{hard_min_backtracks}: a question cannot be both diamond and hard")
    wanted = {"train": n_train, "validation": n_validation, "diamond": n_diamond, "hard": n_hard,
              "control": n_control}
    for name, n in wanted.items():
        if n < 0:
            raise ValueError(f"n_{name}={n}: a split size cannot be negative")
    rng = random.Random(rng_seed)
    splits: dict[str, list[CountdownQuestion]] = {name: [] for name in SPLITS}
    train_problems: set[Problem] = set()
    used_eval_states: set[State] = set()

    def room(name: str) -> bool:
        return len(splits[name]) < wanted[name]

    def add(name: str, problem: Problem) -> bool:
        q = make_countdown_question(problem, rng, f"{name}-{len(splits[name]):05d}")
        if q is not None:
            splits[name].append(q)
        return q is not None

    max_draws = 50 * sum(wanted.values()) + 20_000
    draws = 0
    while any(room(name) for name in SPLITS) and draws < max_draws:
        draws += 1
        numbers = draw_numbers(rng, n_numbers, max_number)
        evaluation = is_evaluation_state(numbers)
        # Decide cheaply, before any search, whether this draw can be used at all.
        if evaluation and (numbers in used_eval_states or not any(room(s) for s in EVALUATION_SPLITS)):
            continue
        if not evaluation and not room("train"):
            continue
        target = draw_target(rng, numbers, min_steps, max_steps, max_result)
        if target is None:
            continue
        problem = Problem(numbers, target, max_result)
        if not evaluation:
            if problem not in train_problems and add("train", problem):
                train_problems.add(problem)
            continue
        search_room = room("diamond") or room("validation") or room("hard")
        if not search_room and greedy_solve(problem) is None:
            continue  # only control has room, and greedy fails: skip the (costly) search
        d = difficulty(problem)
        if is_diamond(d, diamond_max_backtracks):
            name = "diamond" if room("diamond") else "validation" if room("validation") else None
        elif is_hard(d, hard_min_backtracks):
            name = "hard" if room("hard") else None
        elif needs_no_search(d):
            name = "control" if room("control") else None
        else:
            name = None
        if name is not None and add(name, problem):
            used_eval_states.add(numbers)

    short = {name: (len(splits[name]), wanted[name]) for name in SPLITS if room(name)}
    if short:
        advice = {
            "train": "raise max_number or n_numbers (more distinct problems), or lower n_train",
            "validation": "raise diamond_max_backtracks or lower n_validation",
            "diamond": "raise diamond_max_backtracks or lower n_diamond",
            "hard": "lower hard_min_backtracks or n_hard, or make problems harder "
                    "(raise n_numbers, max_number, max_steps or max_result)",
            "control": "lower n_control, or make problems easier (lower min_steps)",
        }
        detail = "; ".join(f"{name}: {got} of {want} ({advice[name]})" for name, (got, want) in short.items())
        raise ValueError(f"could not fill every split after {draws} random draws of {n_numbers} numbers "
                         f"from 1..{max_number}: {detail}")
    check_disjoint(splits)
    return splits


def splits_for(task, seed: int, **sizes: int) -> dict[str, list[CountdownQuestion]]:
    """`make_splits` from a preset's task section (params.TaskParams); `sizes` overrides n_<split>."""
    n = {f"n_{name}": sizes.pop(f"n_{name}", getattr(task, f"n_{name}")) for name in SPLITS}
    if sizes:
        raise TypeError(f"splits_for got unknown sizes {sorted(sizes)}; expected n_<split> for {SPLITS}")
    return make_splits(seed, **n, n_numbers=task.n_numbers, max_number=task.max_number,
                       min_steps=task.min_steps, max_steps=task.max_steps,
                       diamond_max_backtracks=task.diamond_max_backtracks,
                       hard_min_backtracks=task.hard_min_backtracks, max_result=task.max_result)


def check_disjoint(splits: dict[str, list[CountdownQuestion]]) -> None:
    """Raise ValueError if an evaluation split shares a start state with train or another split."""
    states = {name: {q.problem.numbers for q in qs} for name, qs in splits.items()}
    problems = []
    names = list(states)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = states[a] & states[b]
            if shared:
                shown = sorted(shared)[:5]
                problems.append(f"{a} and {b} share {len(shared)} start state(s), e.g. {shown}")
    if problems:
        raise ValueError("splits are not disjoint: " + "; ".join(problems))


def split_summary(splits: dict[str, list[CountdownQuestion]]) -> "pd.DataFrame":
    """One row per split: size and mean difficulty (shortest steps, greedy solve share, search backtracks)."""
    rows = []
    for name, questions in splits.items():
        ds = [difficulty(q.problem) for q in questions]
        n = max(len(ds), 1)
        rows.append({
            "split": name, "questions": len(questions),
            "distinct start states": len({q.problem.numbers for q in questions}),
            "shortest solution (ops)": round(sum(d["shortest_steps"] for d in ds) / n, 2),
            "greedy solves": round(sum(d["greedy_solves"] for d in ds) / n, 3),
            "search backtracks": round(sum(d["search_backtracks"] for d in ds) / n, 1),
        })
    return pd.DataFrame(rows).set_index("split")
