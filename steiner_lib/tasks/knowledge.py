"""What a base model knows before it sees a search trace: the domain's arithmetic and list skills.

The paper's base (Qwen2.5) already adds, multiplies and copies numbers from its context; Steiner's
stages teach it to *search*. A model trained from scratch here has to get that knowledge somewhere,
or every later stage measures a model that cannot do one correct step. This module writes it as
plain text, never with a reasoning token and never as a search:

- arithmetic facts: every legal operation `a op b = r` (a >= b) of the task's rules over the values
  the task reaches (1..max_value), one per line, in the same symbols as the step texts;
- list drills: copying a short list of numbers, sorting it, and taking two numbers out of it;
- option drills: four options as a question lists them, a few worked lines, a value, and the visible
  answer that names the option holding it (`text.answer_text`): reading a multiple-choice list,
  which an instruct model brings and which the stages never teach (04 measured a letter at chance
  even after a correct value, `scoring.letter_holds_value`).

A share of the facts is held out of the corpus, so notebook 03 can report the base model's
accuracy on facts it never read next to facts it read (`probe_accuracy`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from steiner_lib.tasks.choice import LETTERS, options_block
from steiner_lib.tasks.countdown import OPS, Operation, make_operation
from steiner_lib.tasks.text import ANSWER_FORMATS, answer_text


def arithmetic_facts(max_value: int) -> list[Operation]:
    """Every legal operation a op b with max_value >= a >= b >= 1 and a result <= max_value."""
    if max_value < 2:
        raise ValueError(f"max_value={max_value}: arithmetic facts need values up to at least 2")
    out = []
    for a in range(1, max_value + 1):
        for b in range(1, a + 1):
            for op in OPS:
                o = make_operation(a, op, b, max_value)
                if o is not None:
                    out.append(o)
    return out


def fact_range(max_number: int, max_result: int | None) -> int:
    """The values whose arithmetic the base learns: up to the task's cap, or max_number squared
    when the task has no cap (the products of two start numbers)."""
    return max_result if max_result is not None else max_number * max_number


def _listed(numbers) -> str:
    return ", ".join(str(n) for n in numbers)


DRILL_KINDS = ("copy", "sort", "take")


def list_drill(numbers: list[int], kind: str, rng: random.Random) -> tuple[str, str]:
    """(prompt, answer) of one drill on `numbers`: copy, sort, or take two numbers out."""
    if kind == "copy":
        return f"Copy {_listed(numbers)}:", f" {_listed(numbers)}."
    if kind == "sort":
        return f"Sort {_listed(numbers)}:", f" {_listed(sorted(numbers))}."
    if kind == "take":
        if len(numbers) < 3:
            raise ValueError("a take drill needs at least 3 numbers (two taken, at least one left)")
        i, j = sorted(rng.sample(range(len(numbers)), 2))
        rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
        return f"Take {numbers[i]} and {numbers[j]} from {_listed(numbers)}:", f" {_listed(rest)} left."
    raise ValueError(f"unknown drill kind {kind!r}; expected copy, sort or take")


def random_numbers(rng: random.Random, max_number: int, max_value: int, length: int) -> list[int]:
    """A list like a Countdown state: mostly start-range numbers (1..max_number), some larger results."""
    return [rng.randint(1, max_number) if rng.random() < 0.6 else rng.randint(1, max_value) for _ in range(length)]


def drills(n: int, max_number: int, max_value: int, seed: int,
           kinds: tuple[str, ...] = DRILL_KINDS) -> list[tuple[str, str]]:
    """n (prompt, answer) list drills on lists of 3 to 5 numbers, the kinds in turn."""
    rng = random.Random(f"{seed}-drills")
    out = []
    for i in range(n):
        numbers = random_numbers(rng, max_number, max_value, rng.randint(3, 5))
        out.append(list_drill(numbers, kinds[i % len(kinds)], rng))
    return out


def option_drill(rng: random.Random, facts: list[Operation], facts_by_result: dict[int, list[Operation]],
                 max_value: int, max_gap_lines: int = 4, answer_format: str = "letter") -> tuple[str, str, str]:
    """(prompt, continuation, letter) of one option drill: the options block, 0..max_gap_lines worked
    facts and the value's line; the continuation is the rest of the visible answer
    (`text.answer_text` in `answer_format`: the option scan, then "Answer: X"). `facts` are the worked
    lines to draw from, `facts_by_result` the same facts by their result.

    The value is the result of a fact; the three other options are distinct values among the eight
    nearest it (within [value/2, 2 value] when there is room, as a question's distractors are), so
    the letter must be found by the value, not by its size. The worked lines put numbers, options
    among them, between the list and the answer, so the lookup cannot count positions.
    """
    value = rng.choice(sorted(facts_by_result))
    lo, hi = max(1, (value + 1) // 2), min(max_value, 2 * value)
    pool = [v for v in range(lo, hi + 1) if v != value]
    if len(pool) < 3:  # a small value: its neighbours in 1..max_value
        pool = [v for v in range(1, max_value + 1) if v != value]
    pool = sorted(pool, key=lambda v: (abs(v - value), v))[:8]  # near values, as distractors are
    choices = rng.sample(pool, 3) + [value]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(value)]
    gap = [f"{o.text()}." for o in (rng.choice(facts) for _ in range(rng.randint(0, max_gap_lines)))]
    worked = "\n\n" + "\n".join(gap) if gap else ""
    answer = answer_text([rng.choice(facts_by_result[value])], value, letter,
                         [str(c) for c in choices] if answer_format == "scan" else None)
    head, rest = split_after_value(answer)
    return options_block(choices) + worked + "\n\n" + head, rest, letter


def split_after_value(answer: str) -> tuple[str, str]:
    """A visible answer cut after its value line and the blank line: (".. = 41\n\n", the rest)."""
    cut = answer.index("\n\n") + 2
    return answer[:cut], answer[cut:]


def option_drills(n: int, max_value: int, seed: int, max_gap_lines: int = 4,
                  answer_format: str = "letter") -> list[tuple[str, str, str]]:
    """n option drills (`option_drill`) over the values some fact reaches (1..max_value)."""
    if max_value < 5:
        raise ValueError(f"max_value={max_value}: option drills need at least 5 values to draw four options from")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format={answer_format!r}: expected one of {ANSWER_FORMATS}")
    by_result: dict[int, list[Operation]] = {}
    for o in arithmetic_facts(max_value):
        by_result.setdefault(o.result, []).append(o)
    facts = [o for ops in by_result.values() for o in ops]  # grouped by result: the order drills draw from
    rng = random.Random(f"{seed}-option-drills")
    return [option_drill(rng, facts, by_result, max_value, max_gap_lines, answer_format) for _ in range(n)]


def letter_accuracy(model, tokenizer, prompts: list[str], letters: list[str], max_new_tokens: int = 48,
                    batch_size: int = 64) -> list[bool]:
    """Greedy continuation of each prompt; correct when its first "Answer: X" names the letter."""
    from steiner_lib.evaluation.scoring import ANSWER_RE
    from steiner_lib.generation import inference

    if len(prompts) != len(letters):
        raise ValueError(f"{len(prompts)} prompts but {len(letters)} letters")
    if not prompts:
        return []
    outs = inference.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                              batch_size=batch_size)
    found = [ANSWER_RE.search(o[0]) for o in outs]
    return [m is not None and m.group(1) == letter for m, letter in zip(found, letters)]


@dataclass
class KnowledgeCorpus:
    texts: list[str]  # documents for the base corpus: fact tables and drill pages
    train_facts: list[Operation]
    heldout_facts: list[Operation]  # never in `texts`
    max_number: int  # the start numbers' range, 1..max_number
    max_value: int  # the facts' range, 1..max_value


def knowledge_corpus(max_number: int, max_value: int, fact_copies: int, n_drills: int, seed: int,
                     heldout_share: float = 0.05, per_document: int = 32, n_option_drills: int = 0,
                     answer_format: str = "letter") -> KnowledgeCorpus:
    """The base model's arithmetic, list and option-reading knowledge as plain-text documents.

    Facts: each copy is a fresh shuffle of the training facts, cut into documents of
    `per_document` lines ("37 + 48 = 85"). Drills: pages of `per_document` lines ("Sort 9, 3: 3, 9.").
    Option drills (`option_drill`, visible answers in `answer_format`): pages of `per_document // 4`
    drills, a blank line between two (each is several lines).
    """
    if fact_copies < 0 or n_drills < 0 or n_option_drills < 0:
        raise ValueError(f"fact_copies={fact_copies}, n_drills={n_drills}, n_option_drills={n_option_drills}: "
                         "counts cannot be negative")
    if not 0 <= heldout_share < 1:
        raise ValueError(f"heldout_share={heldout_share}: must be in [0, 1)")
    rng = random.Random(f"{seed}-facts")
    facts = arithmetic_facts(max_value)
    rng.shuffle(facts)
    n_held = round(heldout_share * len(facts))
    heldout, train = facts[:n_held], facts[n_held:]
    lines = []
    for _ in range(fact_copies):
        copy = list(train)
        rng.shuffle(copy)
        lines += [o.text() for o in copy]
    drill_lines = [p + a for p, a in drills(n_drills, max_number, max_value, seed)]
    texts = []
    for block in (lines, drill_lines):
        texts += ["\n".join(block[i:i + per_document]) for i in range(0, len(block), per_document)]
    options = ([p + a for p, a, _ in option_drills(n_option_drills, max_value, seed, answer_format=answer_format)]
               if n_option_drills else [])
    page = max(1, per_document // 4)
    texts += ["\n\n".join(options[i:i + page]) for i in range(0, len(options), page)]
    return KnowledgeCorpus(texts, train, heldout, max_number, max_value)


def corpus_for_questions(questions, fact_copies: int, n_drills: int, seed: int,
                         heldout_share: float = 0.05, n_option_drills: int = 0,
                         answer_format: str = "letter") -> KnowledgeCorpus:
    """`knowledge_corpus` over the ranges the training questions reach: start numbers up to the
    largest one they hold, facts up to their cap (`fact_range`)."""
    questions = list(questions)
    if not questions:
        raise ValueError("corpus_for_questions needs the training questions to read the task's ranges from")
    max_number = max(max(q.problem.numbers) for q in questions)
    caps = {q.problem.max_result for q in questions}
    if len(caps) != 1:
        raise ValueError(f"the training questions state different caps {sorted(caps, key=str)}: one task, one cap")
    max_value = fact_range(max_number, caps.pop())
    return knowledge_corpus(max_number, max_value, fact_copies, n_drills, seed, heldout_share,
                            n_option_drills=n_option_drills, answer_format=answer_format)


def fact_probes(facts: list[Operation]) -> tuple[list[str], list[str]]:
    """(prompts, answers) that ask each fact: "37 + 48 =" -> " 85"."""
    return [o.text().rsplit(" = ", 1)[0] + " =" for o in facts], [f" {o.result}" for o in facts]


def probe_accuracy(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 128,
                   progress: bool = False) -> list[bool]:
    """Greedy continuation of each prompt; correct when its first line is the answer exactly."""
    from steiner_lib.generation import inference

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return []
    longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    outs = inference.generate(model, tokenizer, prompts, max_new_tokens=longest + 2, temperature=0.0,
                              batch_size=batch_size, progress=progress)
    return [answered(o[0], a) for o, a in zip(outs, answers)]


def answered(continuation: str, answer: str) -> bool:
    """Whether a continuation gives the answer: its first line, stripped, is the answer exactly."""
    return continuation.split("\n", 1)[0].strip() == answer.strip()
