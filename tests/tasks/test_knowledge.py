"""The base model's domain knowledge: arithmetic facts against brute force, list drills, probes."""

from __future__ import annotations

import random

import pytest

from steiner_lib.tasks import knowledge
from steiner_lib.tasks.choice import make_splits


def test_facts_are_every_legal_operation_under_the_cap():
    facts = knowledge.arithmetic_facts(12)
    brute = set()
    for a in range(1, 13):
        for b in range(1, a + 1):
            for sym, r in (("+", a + b), ("-", a - b), ("*", a * b), ("/", a // b if a % b == 0 else 0)):
                if 0 < r <= 12:
                    brute.add((a, sym, b, r))
    assert {(o.a, o.op, o.b, o.result) for o in facts} == brute
    assert len(facts) == len(brute)  # no repeats
    assert knowledge.fact_range(25, 100) == 100 and knowledge.fact_range(25, None) == 625
    with pytest.raises(ValueError, match="max_value=1"):
        knowledge.arithmetic_facts(1)


def test_drills_say_the_right_answer():
    rng = random.Random(0)
    assert knowledge.list_drill([9, 3, 5], "copy", rng) == ("Copy 9, 3, 5:", " 9, 3, 5.")
    assert knowledge.list_drill([9, 3, 5], "sort", rng) == ("Sort 9, 3, 5:", " 3, 5, 9.")
    prompt, answer = knowledge.list_drill([9, 3, 5, 7], "take", random.Random(1))
    taken = [int(x) for x in prompt.split(" from ")[0].removeprefix("Take ").split(" and ")]
    rest = [9, 3, 5, 7]
    for t in taken:
        rest.remove(t)
    assert answer == " " + ", ".join(map(str, rest)) + " left."
    with pytest.raises(ValueError, match="unknown drill kind 'reverse'"):
        knowledge.list_drill([1, 2, 3], "reverse", rng)
    with pytest.raises(ValueError, match="at least 3 numbers"):
        knowledge.list_drill([1, 2], "take", rng)
    kinds = [p.split(" ")[0] for p, _ in knowledge.drills(9, 25, 100, seed=0)]
    assert kinds == ["Copy", "Sort", "Take"] * 3
    assert all(max(int(x) for x in p.rstrip(":").replace(",", " ").split()[1:] if x.isdigit()) <= 100
               for p, _ in knowledge.drills(60, 25, 100, seed=1))


def test_corpus_holds_out_facts_and_is_plain_text():
    c = knowledge.knowledge_corpus(10, 40, fact_copies=2, n_drills=20, seed=0, heldout_share=0.1)
    lines = [line for t in c.texts for line in t.split("\n")]
    all_facts = knowledge.arithmetic_facts(40)
    assert len(c.heldout_facts) == round(0.1 * len(all_facts))
    assert sorted(c.train_facts + c.heldout_facts, key=str) == sorted(all_facts, key=str)
    held = {o.text() for o in c.heldout_facts}
    assert not held & set(lines)  # a held-out fact never appears in the corpus
    assert sum(line in {o.text() for o in c.train_facts} for line in lines) == 2 * len(c.train_facts)
    assert not any("<|" in t for t in c.texts)  # no reasoning or chat token
    assert knowledge.knowledge_corpus(10, 40, 2, 20, seed=0, heldout_share=0.1).texts == c.texts  # seeded
    with pytest.raises(ValueError, match="heldout_share=1"):
        knowledge.knowledge_corpus(10, 40, 1, 0, seed=0, heldout_share=1)


def test_corpus_for_questions_reads_the_ranges_from_the_questions():
    splits = make_splits(0, n_train=20, n_validation=0, n_diamond=0, n_hard=0, n_control=0, n_numbers=4,
                         max_number=12, min_steps=2, max_steps=3, diamond_max_backtracks=20,
                         hard_min_backtracks=100, max_result=50)
    c = knowledge.corpus_for_questions(splits["train"], fact_copies=1, n_drills=3, seed=0)
    assert c.max_value == 50 and c.max_number == max(max(q.problem.numbers) for q in splits["train"])
    with pytest.raises(ValueError, match="needs the training questions"):
        knowledge.corpus_for_questions([], 1, 1, seed=0)


def test_fact_probes_ask_without_the_answer():
    facts = knowledge.arithmetic_facts(6)[:3]
    prompts, answers = knowledge.fact_probes(facts)
    assert [p + a for p, a in zip(prompts, answers)] == [o.text() for o in facts]
    assert all(p.endswith(" =") for p in prompts)


def test_an_answer_counts_only_when_its_first_line_is_exact():
    assert knowledge.answered(" 85\n37 + 1 = 38", " 85")
    assert knowledge.answered("85", " 85")
    assert not knowledge.answered(" 855", " 85") and not knowledge.answered(" 8\n5", " 85")
    assert not knowledge.answered("", " 85")
    assert knowledge.answered(" 3, 7, 9.\nSort", " 3, 7, 9.")


def _value_line(line: str) -> tuple[str, int]:
    expression, value = line.rsplit(" = ", 1)
    a, sym, b = expression.split(" ")
    assert {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b),
            "÷": int(a) // int(b)}[sym] == int(value)
    return expression, int(value)


@pytest.mark.parametrize("answer_format", ["scan", "letter"])
def test_option_drills_name_the_letter_of_the_value(answer_format):
    drills = knowledge.option_drills(200, 60, seed=0, answer_format=answer_format)
    assert drills == knowledge.option_drills(200, 60, seed=0, answer_format=answer_format)  # seeded
    letters = set()
    for prompt, continuation, letter in drills:
        lines = prompt.split("\n")
        options = dict(line.split(") ", 1) for line in lines[:4])
        assert list(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
        assert all(1 <= int(v) <= 60 for v in options.values())
        assert prompt.endswith("\n\n") and lines[-2] == ""
        _, value = _value_line(lines[-3])
        assert options[letter] == str(value)  # the letter names the option that holds the value
        gap = lines[5:-4]
        assert len(gap) <= 4 and all(line.endswith(".") and " = " in line for line in gap)
        assert continuation.endswith(f"Answer: {letter}")
        if answer_format == "scan":  # A.. the letter, each option with no / yes against the value
            scan = continuation.split("\n\n")[0].split("\n")
            k = "ABCD".index(letter)
            assert scan == [f"{c}) {options[c]} {'yes' if i == k else 'no'}" for i, c in enumerate("ABCD"[:k + 1])]
        else:
            assert continuation == f"Answer: {letter}"
        letters.add(letter)
    assert letters == {"A", "B", "C", "D"}  # the letter moves around
    with pytest.raises(ValueError, match="max_value=4"):
        knowledge.option_drills(1, 4, seed=0)
    with pytest.raises(ValueError, match="answer_format='bold'"):
        knowledge.option_drills(1, 60, seed=0, answer_format="bold")


def test_corpus_pages_the_option_drills():
    c = knowledge.knowledge_corpus(10, 40, fact_copies=0, n_drills=0, seed=0, n_option_drills=20, per_document=16)
    drills = [p + a for p, a, _ in knowledge.option_drills(20, 40, seed=0)]
    assert c.texts == ["\n\n".join(drills[i:i + 4]) for i in range(0, 20, 4)]
    assert knowledge.knowledge_corpus(10, 40, 0, 0, seed=0).texts == []  # none asked, none written
    with pytest.raises(ValueError, match="n_option_drills=-1"):
        knowledge.knowledge_corpus(10, 40, 0, 0, seed=0, n_option_drills=-1)
