"""Batched synthesis with the LLM teacher: the same trajectories as one question at a time, fewer calls."""

from __future__ import annotations

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access, ever

import pytest  # noqa: E402
from helpers import make_questions  # noqa: E402

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.data import synthesis  # noqa: E402
from steiner_lib.data.teachers import LLMTeacher  # noqa: E402
from steiner_lib.tasks import choice, text  # noqa: E402
from steiner_lib.tasks.countdown import make_operation  # noqa: E402

QUESTIONS = make_questions(5, seed=3)
LETTERS = [choice.format_prompt(q.to_choice(), seed=0)[1] for q in QUESTIONS]


class ScriptedLLM(LLMTeacher):
    """An LLM teacher whose 'model' reads the numbers left from the prompt and, by seed, writes a
    correct step, a step with a wrong result (a slip), or nothing usable."""

    def __init__(self):
        super().__init__("scripted", max_new_tokens=8)
        self.calls: list[int] = []

    def build_prompt(self, user, prefill):  # no tokenizer needed
        return user + "\n" + prefill

    def generate(self, prompt, seed):
        left = re.findall(r"Numbers left: ([0-9, ]+)\.", prompt)
        numbers = [int(n) for n in (left[-1] if left else re.search(r"numbers ([0-9, ]+) \(", prompt).group(1))
                   .split(",")]
        if seed % 3 == 2 or len(numbers) < 2:
            return "I am not sure." + fmt.REASONING_END
        a, b = sorted(numbers)[-2:]
        op = make_operation(b, "+", a)
        claimed = op.result + (seed % 3)  # seed % 3 == 1: an arithmetic slip
        return fmt.render_step(text.step_texts(tuple(numbers), op, claimed, (0, 0, 0, 0))) + fmt.PROCEED

    def generate_many(self, prompts, seeds):  # the teacher's one generation call (backends.generate)
        self.calls.append(len(prompts))
        return [self.generate(p, s) for p, s in zip(prompts, seeds)]


def sequential(teacher, n):
    out = []
    for q, letter in zip(QUESTIONS, LETTERS):
        out += synthesis.question_trajectories(q, letter, teacher, n, seed=11)
    return out


def test_batched_synthesis_equals_one_question_at_a_time():
    teacher = ScriptedLLM()
    batched = synthesis.synthesize_batched(QUESTIONS, LETTERS, teacher, 3, seed=11, progress=False, batch_size=2)
    assert batched == sequential(ScriptedLLM(), 3)
    metas = [t.meta for t in batched if t.source == "augmented"]
    assert len(metas) == 15
    assert any(m["arithmetic_slips"] for m in metas) and any(m["format_errors"] for m in metas)
    assert any(m["explore_steps"] for m in metas)  # continuations were read, not only fallen back on
    # every exploration call is batched (chunks of at most 2), and questions are served together
    assert max(teacher.calls) == 2 and len(teacher.calls) < 2 * 15


def test_synthesize_uses_the_batched_path_for_the_llm_teacher():
    teacher = ScriptedLLM()
    out = synthesis.synthesize(QUESTIONS, LETTERS, teacher, 2, seed=11, progress=False)
    assert teacher.calls and out == sequential(ScriptedLLM(), 2)
    with pytest.raises(ValueError, match="workers=1"):
        synthesis.synthesize(QUESTIONS, LETTERS, ScriptedLLM(), 1, seed=11, progress=False, workers=2)


def test_batched_synthesis_with_a_tiny_local_model(tmp_path):
    from steiner_lib.dryrun import build_hub_standin

    path = build_hub_standin(tmp_path / "m")
    a = synthesis.synthesize(QUESTIONS[:3], LETTERS[:3], LLMTeacher(str(path), max_new_tokens=12, temperature=1.0),
                             2, seed=5, progress=False)
    b = [t for q, letter in zip(QUESTIONS[:3], LETTERS[:3]) for t in synthesis.question_trajectories(
        q, letter, LLMTeacher(str(path), max_new_tokens=12, temperature=1.0), 2, seed=5)]
    assert a == b and all(t.solved for t in a)
