"""Tests for steiner_lib.training.rl: per-token GRPO advantages (the credit-assignment test), the trainer, the stage."""

from __future__ import annotations

import math
import os
import statistics

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func (used to inject crafted completions)


from helpers import tiny_qwen2  # noqa: E402
from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.data import dag  # noqa: E402
from steiner_lib.data.traces import StepRecord, Trajectory  # noqa: E402
from steiner_lib.format import Backtrack, Trace  # noqa: E402
from steiner_lib.params import RlParams  # noqa: E402
from steiner_lib.tasks import choice  # noqa: E402
from steiner_lib.tasks import text as task_text  # noqa: E402
from steiner_lib.tasks.choice import CountdownQuestion  # noqa: E402
from steiner_lib.tasks.countdown import Problem, apply, make_operation  # noqa: E402
from steiner_lib.training import modeling, rl  # noqa: E402
from steiner_lib.training.rewards import RewardWeights  # noqa: E402

START, TARGET = (2, 3, 4, 5), 26
OPTIONS = (26, 25, 27, 28)
Q = CountdownQuestion(Problem(START, TARGET), OPTIONS[1:], "q1")
LETTER = choice.format_prompt(Q, seed=0)[1]
WRONG = next(x for x in "ABCD" if x != LETTER)


def rl_config(seed=0, **overrides) -> rl.RLStageConfig:
    """The stage config of the schema's rl defaults (params.RlParams) with a test's overrides."""
    return rl.stage_config(RlParams(), seed, **overrides)


# ---------------------------------------------------------------------------- fixtures


def step(parent, a, op, b):
    o = make_operation(a, op, b)
    return task_text.step_texts(parent, o, o.result, OPTIONS)


def record(parent, a, op, b):
    o = make_operation(a, op, b)
    return StepRecord(parent, apply(parent, o), o, True, step(parent, a, op, b))


@pytest.fixture(scope="module")
def graph():
    """The hand DAG of tests/training/test_rewards.py (degrees and distances are listed there)."""
    a1, b1 = record(START, 2, "*", 3), record(START, 4, "*", 5)
    a2 = record(a1.state, 4, "*", 5)
    a3 = record(a2.state, 6, "+", 20)
    trajs = [Trajectory("q1", "shortcut", (a1, a2, a3), ("proceed", "proceed"), "", True),
             Trajectory("q1", "augmented", (b1, record(b1.state, 2, "+", 3), record(b1.state, 2, "*", 3), a3),
                        ("proceed", Backtrack(b1.step.name), "proceed"), "", True)]
    G = dag.build_dag("q1", START, TARGET, trajs, dag.cluster_trajectories(trajs))
    dag.node_features(G)
    return G


GOOD_STEPS = [step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5), step((6, 20), 6, "+", 20)]
DETOUR_STEPS = [step(START, 4, "*", 5), step((2, 3, 20), 3, "+", 2), step((2, 3, 20), 2, "*", 3),
                step((6, 20), 6, "+", 20)]


def completion_text(steps, moves, letter) -> str:
    return fmt.render(Trace(tuple(steps), tuple(moves), f"(2 × 3) + (4 × 5) = 26\n\nAnswer: {letter}")) + modeling.IM_END


GOOD = completion_text(GOOD_STEPS, ["proceed"] * 2, LETTER)  # right path, right letter
DETOUR = completion_text(DETOUR_STEPS, ["proceed", Backtrack(DETOUR_STEPS[0].name), "proceed"], WRONG)  # dead end, wrong letter


def r(in_deg, out_deg, dq, da):
    """The reward formula with the default weights, D = 3 (as in tests/training/test_rewards.py)."""
    progress = -0.5 if da is None else 1 - da / 3
    return 0.1 * math.log(1 + in_deg) + 0.1 * math.log(1 + out_deg) - 0.2 * dq / 3 + progress


# Segment rewards by hand: each step's, then the answer's (outcome 1 for the right letter, else 0).
GOOD_REWARDS = [r(1, 1, 1, 2), r(2, 1, 2, 1), r(1, 0, 3, 0), 1.0]
DETOUR_REWARDS = [r(1, 2, 1, 2), r(1, 0, 2, None), r(2, 1, 2, 1), r(1, 0, 3, 0), 0.0]


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [GOOD, DETOUR] * 3 + modeling.regular_text()[:5]
    return modeling.train_bpe_tokenizer(corpus, vocab_size=400)


def tiny_model(tokenizer, seed: int = 0):
    model = tiny_qwen2(tokenizer, seed, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=2048, bos_token_id=None, tie_word_embeddings=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def crafted_rollout(tokenizer, texts):
    """A TRL rollout_func that answers the i-th prompt of a batch with texts[i % len(texts)]."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def rollout(prompts, trainer):
        return {"prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
                "completion_ids": [list(ids[i % len(ids)]) for i in range(len(prompts))], "logprobs": None}

    return rollout


def make_trainer(tokenizer, graph, tmp_path, texts, credit="step", beta=0.0, batch_size=2):
    cfg = rl_config(steps=1, batch_size=batch_size, num_generations=2, beta=beta, credit=credit,
                    max_completion_length=2048, logging_steps=1, progress=False, learning_rate=1e-3)
    scorer = rl.StepRewardScorer(tokenizer, {"q1": Q}, {"q1": graph}, RewardWeights())
    model = tiny_model(tokenizer)
    with rl._reference_is_current_policy(model, beta, str(tmp_path)):
        trainer = rl.StepGRPOTrainer(model=model, scorer=scorer, args=rl.grpo_config(cfg, str(tmp_path)),
                                     train_dataset=rl.rl_dataset({"q1": Q}), processing_class=tokenizer,
                                     credit=credit, rollout_func=crafted_rollout(tokenizer, texts))
    return trainer


def token_starts(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    from steiner_lib.training.rewards import completion_token_offsets

    decoded, offsets = completion_token_offsets(tokenizer, ids)
    assert decoded == text
    return [a for a, _ in offsets]


def segment_bounds(text, steps):
    """Segment starts by hand: 0, then the end of each step's rendered text (the answer starts after the last)."""
    bounds, cursor = [0], 0
    for s in steps:
        cursor = text.index(fmt.render_step(s), cursor) + len(fmt.render_step(s))
        bounds.append(cursor)
    return bounds  # segment k is [bounds[k], bounds[k + 1]); the last segment runs to the end


def expected_token_advantages(tokenizer, text, steps, seg_adv):
    bounds = segment_bounds(text, steps)
    return [seg_adv[max(k for k in range(len(bounds)) if bounds[k] <= a)] for a in token_starts(tokenizer, text)]


# ---------------------------------------------------------------------------- the pure function


def test_group_token_advantages_by_hand():
    segs = [[1.0, 3.0], [2.0]]  # one group of two completions: pool {1, 3, 2}, mean 2, sd 1
    toks = [[0, 0, 1], [0, 0]]
    got = rl.group_token_advantages(segs, toks, num_generations=2, eps=0.0)
    assert got == [[-1.0, -1.0, 1.0], [0.0, 0.0]]
    rtg = rl.group_token_advantages(segs, toks, num_generations=2, credit="return_to_go", eps=0.0)
    assert rtg == [[0.0, 0.0, 1.0], [0.0, 0.0]]  # step 1 answers for step 2: -1 + 1
    none = rl.group_token_advantages([[1.0, 5.0], [3.0]], [[0, 1], [0]], 2, scale_rewards="none")
    assert none == [[-2.0, 2.0], [0.0]]
    two_groups = rl.group_token_advantages([[0.0], [2.0], [10.0], [10.0]], [[0], [0], [0], [0]], 2, eps=0.0)
    assert two_groups[0][0] == pytest.approx(-1 / math.sqrt(2)) and two_groups[2:] == [[0.0], [0.0]]
    batch = rl.group_token_advantages([[0.0], [2.0], [10.0], [10.0]], [[0], [0], [0], [0]], 2,
                                      scale_rewards="batch", eps=0.0)
    assert batch[0][0] == pytest.approx(-1 / statistics.stdev([0, 2, 10, 10]))
    with pytest.raises(ValueError, match="groups of 2"):
        rl.group_token_advantages([[1.0]] * 3, [[0]] * 3, 2)
    with pytest.raises(ValueError, match="sequence"):
        rl.group_token_advantages([[1.0]] * 2, [[0]] * 2, 2, credit="sequence")


# ---------------------------------------------------------------------------- the credit-assignment test


def test_each_step_gets_its_own_advantage_in_the_trainer(tokenizer, graph, tmp_path):
    """TRL's own _generate_and_score_completions on a group of two crafted completions.

    GOOD: three steps on the DAG's best path, right letter. DETOUR: a step into a dead end, a
    backtrack, the path, wrong letter. Every token's advantage must be (its segment's reward -
    the group mean over all 9 segments) / (their sd + 1e-4), the rewards computed by hand.
    """
    trainer = make_trainer(tokenizer, graph, tmp_path, [GOOD, DETOUR])
    trainer.model.train()
    row = trainer.train_dataset[0]
    assert row["letter"] == LETTER
    out = trainer._generate_and_score_completions([dict(row), dict(row)])

    pool = GOOD_REWARDS + DETOUR_REWARDS
    mu, sd = statistics.fmean(pool), statistics.stdev(pool)
    adv = out["advantages"]
    n_good, n_detour = (len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (GOOD, DETOUR))
    assert tuple(adv.shape) == (2, max(n_good, n_detour))  # (batch, completion tokens): not one number per completion
    for i, (text, steps, seg_rewards, n) in enumerate([(GOOD, GOOD_STEPS, GOOD_REWARDS, n_good),
                                                       (DETOUR, DETOUR_STEPS, DETOUR_REWARDS, n_detour)]):
        want = expected_token_advantages(tokenizer, text, steps, [(x - mu) / (sd + 1e-4) for x in seg_rewards])
        assert adv[i, :n].tolist() == pytest.approx(want, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0  # padding
    # Spot checks: the first token inside a step carries that step's advantage.
    def at_step(i, text, steps, k):
        where = text.index(fmt.render_step(steps[k]))
        return adv[i, next(j for j, a in enumerate(token_starts(tokenizer, text)) if a >= where)].item()

    good_first, good_second = at_step(0, GOOD, GOOD_STEPS, 0), at_step(0, GOOD, GOOD_STEPS, 1)
    dead_end = at_step(1, DETOUR, DETOUR_STEPS, 1)
    assert good_first == pytest.approx((GOOD_REWARDS[0] - mu) / (sd + 1e-4), abs=1e-5)
    assert good_second == pytest.approx((GOOD_REWARDS[1] - mu) / (sd + 1e-4), abs=1e-5)
    assert dead_end == pytest.approx((DETOUR_REWARDS[1] - mu) / (sd + 1e-4), abs=1e-5)
    assert dead_end < 0 < good_second and good_first != good_second  # one completion, two advantages
    # TRL's scalar reward is the episode return (logged as `reward`).
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx(
        statistics.fmean([sum(GOOD_REWARDS), sum(DETOUR_REWARDS)]), abs=1e-5)
    assert trainer._metrics["train"]["episode/backtracks"][-1] == 0.5
    assert trainer._metrics["train"]["episode/solved"][-1] == 0.5


def test_sequence_credit_is_plain_grpo(tokenizer, graph, tmp_path):
    trainer = make_trainer(tokenizer, graph, tmp_path, [GOOD, DETOUR], credit="sequence")
    trainer.model.train()
    row = dict(trainer.train_dataset[0])
    adv = trainer._generate_and_score_completions([row, dict(row)])["advantages"]
    returns = [sum(GOOD_REWARDS), sum(DETOUR_REWARDS)]
    mu, sd = statistics.fmean(returns), statistics.stdev(returns)
    assert adv.shape == (2,) and adv.tolist() == pytest.approx([(x - mu) / (sd + 1e-4) for x in returns], abs=1e-4)


@pytest.mark.parametrize("credit,learns", [("sequence", False), ("step", True)])
def test_identical_completions_learn_only_with_step_credit(tokenizer, graph, tmp_path, credit, learns):
    """Every completion of the group is GOOD: plain GRPO sees zero advantage and the weights do not
    move; step credit still separates GOOD's steps, so the loss has a gradient through TRL's
    _compute_loss with (B, T) advantages. beta > 0: the reference is the in-memory policy."""
    trainer = make_trainer(tokenizer, graph, tmp_path, [GOOD], credit=credit, beta=0.04)
    assert trainer.model.config._name_or_path != str(tmp_path / "reference")  # restored after init
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    moved = any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    assert moved is learns
    log = rl.log_frame(trainer.state.log_history)
    assert log["kl"].iloc[0] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the first step
    assert log["format_valid_share"].iloc[0] == 1.0 and log["solve_rate"].iloc[0] == 1.0


# ---------------------------------------------------------------------------- the stage, end to end


@pytest.fixture(scope="module")
def pipeline():
    """A tiny real data set: 12 questions -> synthesis -> DAGs (the library's own pipeline)."""
    from steiner_lib.data import dataset, synthesis, teachers

    splits = choice.make_splits(rng_seed=0, n_train=12, n_validation=0, n_diamond=0, n_hard=0, n_control=0, n_numbers=4,
                                max_number=25, min_steps=2, max_steps=3, diamond_max_backtracks=20, hard_min_backtracks=100)
    qs = {q.question_id: q for q in splits["train"]}
    letters = [choice.format_prompt(q, seed=0)[1] for q in qs.values()]
    trajs = synthesis.synthesize(list(qs.values()), letters, teachers.SearchTeacher(), augmentations_per_question=2,
                                 seed=0, progress=False)
    graphs = dataset.build_dags(dataset.group_by_question(trajs), qs, progress=False)
    corpus = [fmt.render(t.trace()) for t in trajs] + modeling.regular_text()[:5]
    return qs, graphs, modeling.train_bpe_tokenizer(corpus, vocab_size=400)


def test_train_rl_end_to_end_logs_the_metrics(pipeline, tmp_path, capsys):
    qs, graphs, tok = pipeline
    path = tmp_path / "tiny"
    tiny_model(tok).save_pretrained(path)  # built and saved locally; TRL loads policy and reference from it
    cfg = rl_config(steps=2, batch_size=4, num_generations=2, max_completion_length=24, beta=0.04,
                    logging_steps=1, progress=False, seed=3)
    res = rl.train_rl(str(path), tok, qs, graphs, RewardWeights(), cfg)
    assert "{'loss'" not in capsys.readouterr().out  # progress=False: no log dict printed per step either
    assert res.steps == 2 and len(res.log) == 2
    assert list(res.log.columns[:len(rl.LOG_COLUMNS)]) == list(rl.LOG_COLUMNS.values())
    first = res.log.iloc[0]
    assert 1 <= first["completion_length"] <= 24 and math.isfinite(first["kl"]) and math.isfinite(first["mean_reward"])
    for col in ("backtracks_per_episode", "format_valid_share", "solve_rate"):
        assert 0 <= first[col] <= 1 if col != "backtracks_per_episode" else first[col] >= 0
    assert len(res.scored) == 8 and [s.meta["step"] for s in res.scored] == [0] * 4 + [1] * 4
    assert {s.question_id for s in res.scored} <= set(qs)
    assert list(res.reward_table().columns)[:3] == ["question_id", "completion", "train_step"]
    # Same seed, same rollouts.
    again = rl.train_rl(str(path), tok, qs, graphs, RewardWeights(), cfg)
    assert [s.text for s in again.scored] == [s.text for s in res.scored]


def test_lean_rollouts_are_the_tokens_trl_generates(tokenizer, graph, tmp_path):
    """The lean hook (StepGRPOTrainer._generate_single_turn) against TRL's own model.generate path, same seed."""
    cfg = rl_config(steps=1, batch_size=4, num_generations=2, max_completion_length=40, progress=False,
                    temperature=0.9, beta=0.0)
    model = tiny_model(tokenizer)
    with rl._reference_is_current_policy(model, 0.0, str(tmp_path)):
        trainer = rl.StepGRPOTrainer(model=model, args=rl.grpo_config(cfg, str(tmp_path)), train_dataset=rl.rl_dataset(
            {"q1": Q}), processing_class=tokenizer, lean_rollouts=True,
            scorer=rl.StepRewardScorer(tokenizer, {"q1": Q}, {"q1": graph}, RewardWeights()))
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in
               (modeling.chat_text("Which one?"), modeling.chat_text(GOOD[:60]))] * 2
    runs = {}
    for lean in (True, False):
        trainer.lean_rollouts = lean
        with torch.random.fork_rng():
            torch.manual_seed(7)
            runs[lean], logprobs = trainer._generate_single_turn(prompts, None, {}, 2)
    assert runs[True] == runs[False] and logprobs is None
    assert all(1 <= len(c) <= 40 for c in runs[True])


# ---------------------------------------------------------------------------- small pieces


def test_rl_dataset_prompts_and_letters():
    data = rl.rl_dataset([Q], prompt_seed=5)
    user, letter = choice.format_prompt(Q, seed=5)
    assert data[0] == {"prompt": modeling.chat_text(user), "question_id": "q1", "letter": letter}
    with pytest.raises(ValueError, match="no questions"):
        rl.rl_dataset({})


def test_scorer_scores_ids_and_needs_every_graph(tokenizer, graph):
    with pytest.raises(ValueError, match="no DAG"):
        rl.StepRewardScorer(tokenizer, {"q1": Q, "q2": Q}, {"q1": graph})
    scorer = rl.StepRewardScorer(tokenizer, {"q1": Q}, {"q1": graph})
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (GOOD, DETOUR)]
    got = scorer(prompts=["p", "p"], completions=["", ""], completion_ids=ids, question_id=["q1", "q1"],
                 letter=[LETTER, LETTER])
    assert got == pytest.approx([sum(GOOD_REWARDS), sum(DETOUR_REWARDS[:-1]) + 0.0])
    assert scorer.score(ids[0], "q1", LETTER)[0].text == GOOD


def test_config_errors_name_the_knob():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        rl_config(batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="num_generations=1"):
        rl_config(num_generations=1)
    with pytest.raises(ValueError, match="credit='tokens'"):
        rl_config(credit="tokens")


def test_log_frame_keeps_its_columns_without_kl():
    frame = rl.log_frame([{"step": 1, "reward": 0.5, "loss": 0.1}, {"train_runtime": 1.0}])
    assert list(frame.columns[:len(rl.LOG_COLUMNS)]) == list(rl.LOG_COLUMNS.values())
    assert len(frame) == 1 and math.isnan(frame["kl"].iloc[0]) and frame["mean_reward"].iloc[0] == 0.5


def test_hacking_watch_flags_inflation_and_collapse():
    import pandas as pd

    from steiner_lib.training.rl import hacking_watch

    steps = [1, 2, 3, 4, 5, 6]
    inflating = pd.DataFrame({"step": steps, "mean_reward": [0, 0, 1, 1, 2, 2],
                              "completion_length": [100, 100, 150, 150, 200, 200],
                              "backtracks_per_episode": [1, 1, 1, 1, 3, 3], "solve_rate": [.3] * 6})
    assert "Possible reward hacking" in hacking_watch(inflating)
    honest = inflating.assign(solve_rate=[.1, .1, .3, .3, .6, .6])
    assert "not counted as hacking" in hacking_watch(honest)
    collapsing = inflating.assign(completion_length=[200, 200, 150, 150, 100, 100], backtracks_per_episode=[2] * 6)
    text = hacking_watch(collapsing)
    assert "The opposite happened to completion length" in text and "Possible reward hacking" not in text
    assert "Too few" in hacking_watch(inflating.head(1))
