"""Teachers: the draft they write into, the noisy search teacher, the LLM teacher (tiny local model)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from steiner_lib import format as fmt
from steiner_lib.data.synthesis import augment, shortest_records
from steiner_lib.data.teachers import QUESTION_NODE, Draft, LLMTeacher, SearchTeacher, make_record, recover
from steiner_lib.format import Backtrack
from steiner_lib.tasks.countdown import (
    apply, distance_to_value, make_operation, successors,
)
from helpers import ONE_LAYER, make_questions, tiny_qwen2


QUESTIONS = make_questions(120)
BY_ID = {q.question_id: q for q in QUESTIONS}


def walk(t, q):
    """Independent re-reading of a trajectory: the node each step starts from (-1 = question),
    resolved from the moves by name alone, and each node's depth. Asserts the states chain."""
    names = [r.step.name for r in t.records]
    assert len(set(names)) == len(names), "step names must be unique"
    assert fmt.QUESTION not in names
    parents, depth = [], {-1: 0}
    for i, r in enumerate(t.records):
        if i == 0:
            parent = -1
        elif t.moves[i - 1] == "proceed":
            parent = i - 1
        else:
            to = t.moves[i - 1].to
            parent = -1 if to == fmt.QUESTION else names.index(to)
            assert parent < i, "a backtrack must name an earlier step"
        parents.append(parent)
        depth[i] = depth[parent] + 1
        assert r.parent == (q.problem.numbers if parent == -1 else t.records[parent].state)
        if r.arithmetic_ok:
            assert r.state == apply(r.parent, r.operation)
        else:  # a slip: a and b replaced by a wrong claimed result
            gained = Counter(r.state) - (Counter(r.parent) - Counter([r.operation.a, r.operation.b]))
            (claimed,) = list(gained.elements())
            assert claimed != r.operation.result
            assert sum(r.parent) - r.operation.a - r.operation.b + claimed == sum(r.state)
    return parents, depth


def recount(t, q):
    """Meta recounted from the records and moves only."""
    parents, depth = walk(t, q)
    target = q.problem.target
    wrong = [r.arithmetic_ok and distance_to_value(r.state, target) is None for r in t.records]
    slips = [not r.arithmetic_ok for r in t.records]
    errors = [i for i in range(len(t.records)) if wrong[i] or slips[i]]
    told = t.meta["cut_at"] + t.meta["explore_steps"]
    back = [i for i in range(1, len(t.records)) if isinstance(t.moves[i - 1], Backtrack)]
    after = [i for i in back if i >= told]
    undone = sum(depth[i - 1] - depth[parents[i]] for i in after)
    # the final path: follow parents from the last step
    node, path = len(t.records) - 1, []
    while node != -1:
        path.append(node)
        node = parents[node]
    return {
        "wrong_branch_steps": sum(wrong),
        "arithmetic_slips": sum(slips),
        "first_error_step": errors[0] if errors else None,
        "backtracks": len(back),
        "self_backtracks": len(back) - len(after),
        "backtrack_distance": undone,
        "answer_reached": target in t.records[-1].state and not any(slips[i] for i in path),
        "recovery_steps": len(t.records) - told,
    }


# --- Draft ---------------------------------------------------------------------------------


def test_draft_tracks_path_names_and_backtracks():
    q = QUESTIONS[0]
    draft = Draft(question=q)
    ops = successors(q.problem.numbers)
    first = make_record(q.problem.numbers, ops[0][0], ops[0][0].result, q.options)
    draft.add(first)
    with pytest.raises(ValueError, match="starts from"):
        draft.add(first)  # the draft is now at first.state, not at the question
    draft.backtrack_to(QUESTION_NODE, "Backtracked: why.")
    again = draft.add(first)  # the same step again: a unique name is made up
    assert draft.records[again].step.name == first.step.name + " (2)"
    assert draft.records[again].step.reflection.startswith("Backtracked: why. ")
    assert draft.moves == [Backtrack(fmt.QUESTION)]
    assert draft.path() == [1] and draft.depth(1) == 1
    assert draft.find(first.step.name) == 0  # the rendered (unique) names come first
    assert draft.find(first.step.name + " (2)") == 1 and draft.find(fmt.QUESTION) == QUESTION_NODE
    assert draft.find("no such step") is None
    with pytest.raises(ValueError, match="already at"):
        draft.backtrack_to(1)


def test_recover_returns_to_the_deepest_correct_state():
    q = next(q for q in QUESTIONS if len(shortest_records(q)) >= 2)
    prefix = shortest_records(q)[:1]
    draft = Draft.start(q, prefix)
    target = q.problem.target
    # take a step after which the answer cannot be reached, then any step after it
    bad = next(op for op, s in successors(draft.state) if distance_to_value(s, target) is None)
    draft.add(make_record(draft.state, bad, bad.result, q.options))
    if successors(draft.state):
        op = successors(draft.state)[0][0]
        draft.add(make_record(draft.state, op, op.result, q.options))
    draft.tell_answer()
    recover(draft)
    assert draft.moves[draft.told_at - 1] == Backtrack(prefix[0].step.name)
    assert draft.is_solved()
    assert "cannot reach" in draft.records[draft.told_at].step.reflection


def test_recover_backtracks_over_a_slip_even_when_the_state_looks_fine():
    q = QUESTIONS[1]
    op = successors(q.problem.numbers)[0][0]
    draft = Draft(question=q)
    draft.add(make_record(q.problem.numbers, op, op.result + 1, q.options))  # a slip
    draft.tell_answer()
    recover(draft)
    assert draft.moves[0] == Backtrack(fmt.QUESTION)
    assert f"not {op.result + 1}" in draft.records[1].step.reflection
    assert draft.is_solved()


# --- SearchTeacher ------------------------------------------------------------------------


def greedy_toward_options(state, q, max_steps):
    """The teacher's noiseless policy, re-implemented: reaches the answer without a wrong step?"""
    for _ in range(max_steps):
        if any(v in state for v in q.options):
            return q.problem.target in state
        succ = successors(state)
        if not succ:
            return False
        op, child = min(succ, key=lambda s: min(abs(s[0].result - o) for o in q.options))
        if distance_to_value(child, q.problem.target) is None:
            return False
        state = child
    return q.problem.target in state


def test_noiseless_teacher_makes_no_wrong_step_where_greedy_works():
    teacher = SearchTeacher(error_rate=0.0, arithmetic_error_rate=0.0, branching=3, max_explore_steps=10)
    checked = 0
    for q in QUESTIONS:
        records = shortest_records(q)
        for k in range(len(records)):
            start = records[k - 1].state if k else q.problem.numbers
            if not greedy_toward_options(start, q, 10):
                continue
            t = augment(q, "A", teacher, random.Random(k), cut_at=k)
            checked += 1
            assert t.meta["wrong_branch_steps"] == 0 and t.meta["arithmetic_slips"] == 0
            assert t.meta["first_error_step"] is None and t.meta["solved_unaided"]
            assert t.n_backtracks == 0 and t.meta["recovery_steps"] == 0
    assert checked > 20


def test_error_rate_one_makes_wrong_branches_and_backtracks():
    def ranked(state, q):  # the teacher's ranking, re-implemented: closeness to the nearest option
        return sorted((op for op, _ in successors(state)), key=lambda op: min(abs(op.result - o) for o in q.options))

    def run(error_rate):
        teacher = SearchTeacher(error_rate=error_rate, arithmetic_error_rate=0.0, branching=3,
                                max_explore_steps=4, self_backtracks=0)
        return [augment(q, "A", teacher, random.Random(i)) for i, q in enumerate(QUESTIONS[:60])]

    noisy, clean = run(1.0), run(0.0)
    for t in noisy:
        k = t.meta["cut_at"]
        for r in t.records[k:k + t.meta["explore_steps"]]:
            order = ranked(r.parent, BY_ID[t.question_id])
            assert r.operation in order[1:3] or len(order) == 1  # never the best, when there is a choice
    wrong = lambda ts: sum(t.meta["wrong_branch_steps"] for t in ts)  # noqa: E731
    assert wrong(noisy) > 1.5 * wrong(clean)
    assert sum(t.meta["backtracks"] > 0 for t in noisy) > sum(t.meta["backtracks"] > 0 for t in clean)
    assert all(t.meta["arithmetic_slips"] == 0 for t in noisy)


def test_arithmetic_slips_are_hallucinated_and_undone():
    teacher = SearchTeacher(error_rate=0.0, arithmetic_error_rate=1.0, branching=3, max_explore_steps=3,
                            self_backtracks=0)
    for i, q in enumerate(QUESTIONS[:40]):
        t = augment(q, "A", teacher, random.Random(i))
        k = t.meta["cut_at"]
        explored = t.records[k:k + t.meta["explore_steps"]]
        assert explored and all(not r.arithmetic_ok for r in explored)
        # the first explored step is already wrong: the answer-guided backtrack goes to the cut
        if not t.meta["solved_unaided"]:
            assert t.moves[k + len(explored) - 1] == Backtrack(t.records[k - 1].step.name if k else fmt.QUESTION)
            assert t.meta["backtrack_distance"] == len(explored)
        assert t.meta["first_error_step"] == k


def test_meta_matches_an_independent_recount():
    settings = [SearchTeacher(0.35, 0.05, 3, 4), SearchTeacher(0.8, 0.2, 2, 6), SearchTeacher(1.0, 0.5, 5, 3)]
    n_backtracking = 0
    for s, teacher in enumerate(settings):
        for i, q in enumerate(QUESTIONS[:50]):
            t = augment(q, "B", teacher, random.Random(1000 * s + i))
            expected = recount(t, q)
            assert {key: t.meta[key] for key in expected} == expected
            assert t.meta["answer_reached"] and t.solved
            assert t.meta["cut_at"] + t.meta["explore_steps"] + t.meta["recovery_steps"] == len(t.records)
            assert t.meta["explore_steps"] <= teacher.max_explore_steps
            assert t.meta["stop_reason"] in ("option", "dead_end", "max_steps")
            n_backtracking += t.n_backtracks > 0
    assert n_backtracking > 40


def test_search_teacher_rejects_bad_knobs():
    with pytest.raises(ValueError, match="error_rate"):
        SearchTeacher(error_rate=1.5)
    with pytest.raises(ValueError, match="branching"):
        SearchTeacher(branching=0)


# --- LLMTeacher -----------------------------------------------------------------------------


class ScriptedTeacher(LLMTeacher):
    """An LLMTeacher whose 'model' returns scripted continuations: tests the parsing and mapping."""

    def __init__(self, outputs):
        super().__init__("scripted", backend="transformers")
        self.outputs = list(outputs)
        self.prompts = []

    def build_prompt(self, user, prefill):  # no tokenizer needed
        return f"{user}\n\n{prefill}"

    def generate(self, prompt, seed):
        self.prompts.append(prompt)
        return self.outputs.pop(0)


def step_text(state, a, op, b, claimed, q):
    return fmt.render_step(make_record(state, make_operation(a, op, b), claimed, q.options).step)


def two_step_question():
    """A question whose start state has a step that makes the answer unreachable."""
    for q in QUESTIONS:
        records = shortest_records(q)
        if len(records) >= 2:
            bad = [op for op, s in successors(q.problem.numbers)
                   if distance_to_value(s, q.problem.target) is None and s != q.problem.numbers]
            if bad:
                return q, records, bad[0]
    raise AssertionError("no suitable question")


def test_llm_teacher_maps_a_good_continuation_without_fallback():
    q, records, bad = two_step_question()
    start = q.problem.numbers
    wrong = step_text(start, bad.a, bad.op, bad.b, bad.result, q)
    # phase 1: one wrong step, then the model ends its reasoning
    explore = wrong + "\n" + fmt.REASONING_END + "\nAnswer: A"
    # phase 2: backtrack to the question, then the shortest solution
    fixed = [fmt.BACKTRACK + fmt.QUESTION + "\n"]
    state = start
    for r in records:
        fixed.append(fmt.render_step(r.step) + "\n" + fmt.PROCEED + "\n")
        state = r.state
    recovery = "".join(fixed)[: -len(fmt.PROCEED + "\n")] + fmt.REASONING_END + "\nAnswer: B"
    teacher = ScriptedTeacher([explore, recovery])
    t = augment(q, "B", teacher, random.Random(0), cut_at=0)
    assert t.meta["fallback_recovery"] is False
    assert t.meta["format_errors"] == {}
    assert t.meta["stop_reason"] == "model_stopped"
    assert t.meta["wrong_branch_steps"] == 1 and t.meta["backtracks"] == 1
    assert t.moves[0] == Backtrack(fmt.QUESTION)
    assert [r.operation for r in t.records[1:]] == [r.operation for r in records]
    assert recount(t, q)["backtrack_distance"] == t.meta["backtrack_distance"] == 1
    assert "The correct answer is" in teacher.prompts[1] and "The correct answer is" not in teacher.prompts[0]


def test_llm_teacher_counts_errors_and_falls_back():
    q, records, bad = two_step_question()
    start = q.problem.numbers
    claimed = next(c for c in range(bad.result + 1, bad.result + 10) if c not in q.options)
    slip = step_text(start, bad.a, bad.op, bad.b, claimed, q)  # a wrong claimed result
    unreadable = fmt.render_step(fmt.Step("think", "Let me think about it.", "Hmm.", "Not sure."))
    explore = slip + "\n" + fmt.PROCEED + "\n" + unreadable + "\nstray words"
    recovery = fmt.BACKTRACK + "nowhere\n" + fmt.render_step(records[0].step)
    teacher = ScriptedTeacher([explore, recovery])
    t = augment(q, "C", teacher, random.Random(1), cut_at=0)
    errors = t.meta["format_errors"]
    assert errors["unreadable_step"] == 1 and errors["unresolved_backtrack"] == 1
    assert errors["stray_text"] == 1 and errors["missing_reasoning_end"] == 2
    assert errors["unknown_backtrack_target"] == 1
    assert t.meta["arithmetic_slips"] == 1 and t.meta["stop_reason"] == "parse"
    assert t.meta["explore_steps"] == 1 and not t.records[0].arithmetic_ok
    assert t.meta["fallback_recovery"] is True and t.solved
    assert t.moves[0] == Backtrack(fmt.QUESTION)
    assert {key: t.meta[key] for key in recount(t, q)} == recount(t, q)


def test_llm_teacher_stops_at_steps_it_cannot_use():
    q = next(q for q in QUESTIONS if any(op.op == "+" and op.a % op.b and op.b > 1
                                         for op, _ in successors(q.problem.numbers)))
    a, b = next((op.a, op.b) for op, _ in successors(q.problem.numbers) if op.a % op.b and op.b > 1)
    cases = {
        "unreadable_step": f"Combine: {max(q.problem.numbers) + 1000} + 1 = 2.",  # numbers not held
        "illegal_step": f"Combine {a} and {b}: {a} ÷ {b} = {a // b}.",  # inexact division
    }
    for kind, thought in cases.items():
        good = successors(q.problem.numbers)[0][0]
        step = fmt.render_step(fmt.Step("x", thought, "s", "r"))
        first = step_text(q.problem.numbers, good.a, good.op, good.b, good.result, q)
        teacher = ScriptedTeacher([step + fmt.PROCEED + first])  # reading stops at the bad step
        draft = Draft(question=q)
        teacher.continue_without_answer(q, draft, random.Random(0))
        assert draft.records == [] and draft.notes["format_errors"] == {kind: 1, "missing_reasoning_end": 1}
        assert draft.notes["stop_reason"] == "parse"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer Qwen2 with a byte-level BPE tokenizer trained here (the 14 tokens special)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # no hub access, ever
        yield build_tiny_model(tmp_path_factory.mktemp("tiny_teacher"))


def build_tiny_model(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", *fmt.SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [fmt.render_step(r.step) for q in QUESTIONS[:20] for r in shortest_records(q)]
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=8192).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_llm_teacher_with_a_tiny_local_model_runs_end_to_end(tiny_model):
    teacher = LLMTeacher(str(tiny_model), backend="transformers", max_new_tokens=32, temperature=1.0)
    for i, q in enumerate(QUESTIONS[:2]):
        t = augment(q, "D", teacher, random.Random(i))
        assert t.solved and t.meta["fallback_recovery"]  # a random model never reaches the answer
        assert sum(t.meta["format_errors"].values()) > 0
        assert not fmt.parse(fmt.render(t.trace())).errors
        assert {key: t.meta[key] for key in recount(t, q)} == recount(t, q)
    # same seed, same continuation
    assert teacher.generate("Numbers left: 3", 7) == teacher.generate("Numbers left: 3", 7)


def test_llm_teacher_generates_through_backends_generate(tiny_model, monkeypatch):
    from steiner_lib.generation import backends

    calls = []

    def fake_generate(model, tokenizer, prompts, **kwargs):
        calls.append((model, prompts, kwargs))
        return [[f"continuation {s}"] for s in kwargs["seed"]]

    monkeypatch.setattr(backends, "generate", fake_generate)
    teacher = LLMTeacher(str(tiny_model), max_new_tokens=9, temperature=0.5)
    assert teacher.generate_many(["a", "b"], [3, 4]) == ["continuation 3", "continuation 4"]
    assert teacher.generate("c", 7) == "continuation 7"
    (model, prompts, kwargs), _ = calls
    assert prompts == ["a", "b"] and kwargs["seed"] == [3, 4] and model is calls[1][0]  # loaded once
    assert (kwargs["max_new_tokens"], kwargs["temperature"], kwargs["backend"]) == (9, 0.5, "transformers")
    assert kwargs["reasoning_tokens"] is False and teacher.tokenizer.pad_token_id in kwargs["stop_token_ids"]


def test_llm_teacher_prompt_uses_the_chat_template_when_there_is_one(tiny_model):
    teacher = LLMTeacher(str(tiny_model))
    plain = teacher.build_prompt("QUESTION TEXT", "PREFILL")
    assert plain.startswith(teacher.system_prompt()) and plain.endswith("QUESTION TEXT\n\nPREFILL")
    teacher.tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    chat = teacher.build_prompt("QUESTION TEXT", "PREFILL")
    assert "<|im_start|>user\nQUESTION TEXT<|im_end|>" in chat and chat.endswith("<|im_start|>assistant\nPREFILL")


def test_vllm_backend_without_vllm_says_how_to_install():
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    teacher = LLMTeacher("some/model", backend="vllm")
    with pytest.raises(ImportError, match=r"pip install \.\[gpu\]"):
        teacher.generate("hello", 0)
    with pytest.raises(ValueError, match="backend"):
        LLMTeacher("some/model", backend="tgi")


def test_make_teacher_follows_the_params():
    import dataclasses as dc

    from steiner_lib.data.teachers import make_teacher
    from steiner_lib.params import TeacherParams

    search = make_teacher(TeacherParams(error_rate=0.2, branching=4, max_explore_steps=9, self_backtracks=5))
    assert isinstance(search, SearchTeacher) and search.error_rate == 0.2 and search.branching == 4
    assert search.max_explore_steps == 9 and search.self_backtracks == 5
    llm = make_teacher(dc.replace(TeacherParams(), kind="llm", model="some/model", backend="vllm"), prompt_seed=3)
    assert isinstance(llm, LLMTeacher) and llm.backend == "vllm" and llm.prompt_seed == 3
