"""Inference scaling (steiner_lib/evaluation/scaling.py) and its plots: votes, curves, bins, the four causes."""

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import ONE_LAYER, make_questions, tiny_qwen2  # noqa: E402

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.evaluation import scoring, scaling, stage_table  # noqa: E402
from steiner_lib.report import plots  # noqa: E402
from steiner_lib.tasks import text  # noqa: E402
from steiner_lib.tasks.countdown import apply, legal_operations, reachable_values  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402
from steiner_lib.training.rewards import RewardWeights  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return modeling.train_bpe_tokenizer(["Which value can be made? A) 12 B) 13 Answer: B", "Combine 3 and 5."], 300)


def pool_frame(letters_by_q, correct="A", tokens=10):
    rows = []
    for qid, letters in letters_by_q.items():
        for j, letter in enumerate(letters):
            rows.append({"question_id": qid, "sample": j, "letter": letter, "correct_letter": correct,
                         "correct": letter == correct, "reasoning_tokens": tokens, "format_ok": True})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- votes


def test_vote_takes_the_majority_and_breaks_ties_among_the_tied_only():
    rng = np.random.default_rng(0)
    assert scaling.vote(["A", "B", "A", None], rng) == "A"
    assert scaling.vote([None, None], rng) is None
    draws = {scaling.vote(["A", "B", "C", "C", "D", "D"], rng) for _ in range(200)}
    assert draws == {"C", "D"}


def test_majority_vote_k1_is_the_sample_accuracy_and_k_n_the_full_vote():
    pool = pool_frame({"q1": ["A", "A", "B", "C"], "q2": ["B", "B", "A", "D"], "q3": [None, None, None, "A"]})
    k1 = scaling.majority_vote(pool, 1, draws=100).set_index("question_id")
    assert k1.loc["q1", "correct"] == 0.5 and k1.loc["q2", "correct"] == 0.25 and k1.loc["q3", "correct"] == 0.25
    k4 = scaling.majority_vote(pool, 4).set_index("question_id")
    assert k4["correct"].tolist() == [1.0, 0.0, 1.0]  # q3: the one answer wins over three blanks
    assert (k4["tokens"] == 40).all() and (k1["tokens"] == 10).all()  # a vote spends all k samples
    with pytest.raises(ValueError, match="only 4 samples"):
        scaling.majority_vote(pool, 5)


def test_subsets_enumerate_all_when_few_and_sample_distinct_indices_when_many():
    rng = np.random.default_rng(0)
    assert len(scaling._subsets(4, 2, 32, rng)) == math.comb(4, 2)
    many = scaling._subsets(8, 4, 10, rng)
    assert len(many) == 10 and all(len(set(s)) == 4 for s in many)


# --------------------------------------------------------------------------- curves


def test_curve_point_averages_samples_per_question_first():
    per_q = pd.DataFrame({"question_id": ["a", "a", "a", "a", "b"], "correct": [1, 1, 1, 1, 0],
                          "tokens": [10, 10, 10, 10, 30]})
    point = scaling.curve_point(per_q, n_boot=200)
    assert point["accuracy"] == 50.0 and point["tokens"] == 20.0 and point["questions"] == 2


def test_slope_is_points_per_doubling():
    curve = pd.DataFrame({"tokens": [100, 200, 400], "accuracy": [20.0, 25.0, 30.0]})
    assert scaling.scaling_slope(curve) == pytest.approx(5.0)
    assert math.isnan(scaling.scaling_slope(curve.iloc[:1]))
    assert math.isnan(scaling.scaling_slope(pd.DataFrame({"tokens": [720, 750], "accuracy": [6.0, 0.0]})))


def test_scaling_paragraph_separates_gains_from_noise():
    rows = [{"model": "RL", "method": "vote", "tokens": t, "accuracy": a, "ci_low": a - 5, "ci_high": a + 5}
            for t, a in ((100, 20.0), (800, 60.0))]
    rows += [{"model": "RL", "method": "min_steps", "tokens": t, "accuracy": a, "ci_low": a - 20, "ci_high": a + 20}
             for t, a in ((100, 20.0), (800, 25.0))]
    text_ = scaling.scaling_paragraph(pd.DataFrame(rows))
    assert text_.startswith("Of 2 scaling curves, 1 show a gain")
    assert "20.0% -> 60.0%" in text_ and "a gain" in text_ and "no measurable change" in text_


def test_plan_checks_votes_fit_the_pool_and_lists_settings():
    with pytest.raises(ValueError, match="exceed the pool"):
        scaling.Plan(samples=4, ks=(1, 8))
    plan = scaling.Plan(min_steps=(0, 2), budgets=(64,), samples=2, ks=(1, 2))
    assert plan.sequential() == [("min_steps", 0), ("min_steps", 2), ("budget", 64)]
    assert plan.sequential(soft=True)[-1] == ("soft_bias", 2)


def test_parse_names_names_the_bad_entry():
    assert scaling.parse_names("RL, SFT,RL", ("SFT", "RL"), "x") == ["RL", "SFT"]
    with pytest.raises(ValueError, match="unknown 'GPT'.*choose from SFT, RL"):
        scaling.parse_names("GPT", ("SFT", "RL"), "scaling_stages")


# --------------------------------------------------------------------------- sampling on a tiny model


def test_measure_runs_every_setting_and_the_pool_on_a_tiny_model(tok):
    from steiner_lib.tasks.choice import ChoiceQuestion

    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    questions = [ChoiceQuestion(f"Which value {i}?", "12", ("13", "14", "15"), f"r{i}") for i in range(2)]
    plan = scaling.Plan(min_steps=(0, 1), budgets=(3,), samples=2, ks=(1, 2), draws=4, grace_tokens=1)
    greedy = stage_table.Decoding(max_new_tokens=8, seed=0, progress=False)
    # room for the budget, its grace and the tokens that close a step and the reasoning
    sampled = stage_table.Decoding(max_new_tokens=3 + 1 + fmt.MAX_CLOSING_TOKENS, temperature=1.0, seed=0, progress=False)
    outputs, curve = scaling.measure(model, tok, "tiny", questions, plan, sampled, pool=True, soft=True, n_boot=50)
    counts = outputs.groupby("method").size().to_dict()
    assert counts == {"min_steps": 4, "budget": 2, "soft_bias": 2, "pool": 4}
    no_pool, _ = scaling.measure(model, tok, "tiny", questions, plan, greedy, n_boot=50)
    assert "pool" not in set(no_pool["method"]) and len(no_pool) == 6
    hard = outputs["method"].isin(["min_steps", "budget"])  # forced; the soft bias only nudges a sample
    assert all(c.startswith(fmt.REASONING_START) for c in outputs.loc[hard, "completion"])
    # budget 3 + grace 1: the step is closed and reasoning_end forced within MAX_CLOSING_TOKENS more tokens
    assert all(fmt.REASONING_END in c for c in outputs.loc[outputs["method"] == "budget", "completion"])
    assert set(curve["method"]) == {"min_steps", "budget", "soft_bias", "vote"} and (curve["model"] == "tiny").all()
    with pytest.raises(ValueError, match="identical"):
        scaling.sample_pool(model, tok, questions, greedy, 2)


def test_plan_from_params_parses_the_grids_of_the_scaling_section():
    from dataclasses import replace

    from steiner_lib.params import ScalingParams

    assert scaling.plan_from_params(ScalingParams()) == scaling.Plan(
        min_steps=(0, 2, 6), budgets=(128, 384), samples=4, ks=(1, 2, 4), draws=32, grace_tokens=64, soft_bias=4.0)
    with pytest.raises(ValueError, match="scaling_budgets='128,x'"):
        scaling.plan_from_params(replace(ScalingParams(), budgets="128,x"))


# notebook 07's orchestration on a tiny model: two checkpoints, two questions, the smallest grid
TINY_PLAN = scaling.Plan(min_steps=(0, 1), budgets=(3,), samples=2, ks=(1, 2), draws=4, grace_tokens=1)


@pytest.fixture(scope="module")
def measured(tok):
    """(outputs, curves, checkpoints loaded, log lines, questions, decoding) of measure_models on SFT and RL,
    both the same tiny model."""
    from steiner_lib.tasks.choice import ChoiceQuestion

    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    questions = [ChoiceQuestion(f"Which value {i}?", "12", ("13", "14", "15"), f"r{i}") for i in range(2)]
    decoding = stage_table.Decoding(max_new_tokens=3 + 1 + fmt.MAX_CLOSING_TOKENS, temperature=1.0, seed=0,
                                   progress=False)
    loads, lines = [], []

    def load(stage, name):
        loads.append((stage, name))
        return model, tok

    outputs, curves = scaling.measure_models(load, ["SFT", "RL"], questions, TINY_PLAN, decoding, log=lines.append)
    return outputs, curves, loads, lines, questions, decoding


def test_measure_models_loads_each_checkpoint_and_runs_the_soft_bias_on_the_last(measured):
    outputs, curves, loads, lines, _, _ = measured
    assert loads == [("04_sft", "sft"), ("05_rl", "rl")]
    counts = outputs.groupby(["model", "method"], sort=False).size().to_dict()
    assert counts == {("SFT", "min_steps"): 4, ("SFT", "budget"): 2, ("SFT", "pool"): 4,
                      ("RL", "min_steps"): 4, ("RL", "budget"): 2, ("RL", "soft_bias"): 2, ("RL", "pool"): 4}
    assert set(curves.loc[curves["model"] == "SFT", "method"]) == {"min_steps", "budget", "vote"}
    assert set(curves.loc[curves["model"] == "RL", "method"]) == {"min_steps", "budget", "soft_bias", "vote"}
    assert [line.split(",")[0] for line in lines] == ["SFT: 10 outputs", "RL: 12 outputs"]
    assert list(outputs.index) == list(range(len(outputs)))  # stacked: one index over all models


def test_pool_length_bins_bin_the_pool_of_each_model_that_has_one(measured):
    outputs, _, _, _, _, _ = measured
    bins = scaling.pool_length_bins(outputs, ["SFT", "RL", "CPT"], n_bins=2)
    assert list(bins) == ["SFT", "RL"]  # CPT has no pool
    assert all(b["outputs"].sum() == 4 for b in bins.values())  # 2 questions x 2 samples


def test_backtrack_events_by_model_keep_each_models_events_in_order(tok):
    q = make_questions(1, seed=3)[0]
    row = {"question_id": q.question_id, "completion": backtrack_completion(q), "letter": "B", "correct_letter": "A"}
    outputs = pd.DataFrame([{**row, "model": "SFT"}, {**row, "model": "RL"},
                            {**row, "model": "SFT", "completion": "no reasoning here", "letter": None}])
    events = scaling.backtrack_events_by_model(outputs, {q.question_id: q}, tok)
    assert events["model"].tolist() == ["SFT"] * 3 + ["RL"] * 3  # two backtracks and an end each
    assert events["bad"].tolist() == [False, True, True] * 2


def test_soft_against_hard_pairs_the_last_models_soft_and_hard_outputs(measured):
    outputs, _, _, _, _, _ = measured
    comparison = scaling.soft_against_hard(outputs, "RL", seed=0)
    soft = outputs[(outputs["model"] == "RL") & (outputs["method"] == "soft_bias")]
    hard = outputs[(outputs["model"] == "RL") & (outputs["method"] == "min_steps") & (outputs["value"] == 1)]
    assert comparison == scaling.paired_by_setting(soft, hard, seed=0)
    assert (comparison["questions"], comparison["settings"]) == (2, 1)
    assert scaling.soft_against_hard(outputs, "SFT") is None  # SFT ran no soft bias


def test_measure_reward_variants_trains_each_from_a_fresh_sft_checkpoint(measured, tok, monkeypatch):
    _, _, _, _, questions, decoding = measured
    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    loads, trained = [], []
    monkeypatch.setattr(scaling, "train_reward_variant",
                        lambda m, t, q, g, weights, rl_params, steps, seed: trained.append((weights, steps)) or m)
    variants = scaling.reward_variants(RewardWeights(), ["depth-heavy", "breadth-heavy"])
    named = {f"RL {n}": w for n, w in variants.items()}
    outputs, curves = scaling.measure_reward_variants(lambda *key: loads.append(key) or (model, tok), named, [], {},
                                                      None, 2, questions, TINY_PLAN, decoding)
    assert loads == [("04_sft", "sft")] * 2 and trained == [(w, 2) for w in named.values()]
    assert outputs.groupby(["model", "method"], sort=False).size().to_dict() == {
        ("RL depth-heavy", "min_steps"): 4, ("RL depth-heavy", "budget"): 2,
        ("RL breadth-heavy", "min_steps"): 4, ("RL breadth-heavy", "budget"): 2}
    assert set(curves["model"]) == set(named)


def test_stage_metrics_name_every_curve_event_kind_soft_setting_and_cause():
    curves = pd.DataFrame({"model": ["RL"] * 3 + ["SFT"] * 2, "method": ["min_steps"] * 2 + ["vote"] + ["budget"] * 2,
                           "tokens": [100.0, 200.0, 150.0, 100.0, 110.0], "accuracy": [40.0, 50.0, 30.0, 20.0, 25.0]})
    events = pd.DataFrame({"kind": ["backtrack", "backtrack", "backtrack", "end", "end"],
                           "bad": [True, False, None, True, None]})
    decisions = pd.DataFrame({"min_steps": [1, 2], "changed (expected)": [0.5, 1.25]})
    sizes = pd.DataFrame({"questions needed": [30.0, 80.0], "target met": [True, False]}, index=["a", "b"])
    causes = pd.DataFrame({"verdict": ["supported"], "estimate": [5.0], "ci_low": [1.0], "ci_high": [9.0],
                           "questions needed": [120.0], "target met": [False]}, index=["soft_minus_hard"])
    comparison = {"delta": 3.0, "ci_low": -1.0, "ci_high": 7.0, "p_value": 0.2, "questions": 2, "settings": 1}
    metrics = scaling.stage_metrics(curves, events, comparison, decisions, sizes, causes)
    nan = metrics.pop("slope_RL_vote")  # one point and SFT's 1.1x token range: no slope
    assert math.isnan(nan) and math.isnan(metrics.pop("slope_SFT_budget"))
    assert metrics == {
        "slope_RL_min_steps": pytest.approx(10.0),  # 10 points for one doubling of tokens
        "best_accuracy_RL_min_steps": 50.0, "best_accuracy_RL_vote": 30.0, "best_accuracy_SFT_budget": 25.0,
        "bad_share_backtrack": 50.0, "bad_share_end": 100.0,  # unknown outcomes left out
        "soft_minus_hard_delta": 3.0, "soft_minus_hard_ci_low": -1.0, "soft_minus_hard_ci_high": 7.0,
        "soft_minus_hard_p_value": 0.2, "soft_minus_hard_questions": 2, "soft_minus_hard_settings": 1,
        "soft_changed_choices_min_steps_1": 0.5, "soft_changed_choices_min_steps_2": 1.25,
        "cause_soft_minus_hard_verdict": "supported", "cause_soft_minus_hard_estimate": 5.0,
        "cause_soft_minus_hard_ci_low": 1.0, "cause_soft_minus_hard_ci_high": 9.0,
        "power_questions_needed_max": 120.0, "power_target_met": 1, "power_comparisons": 3}
    assert not any(k.startswith("soft_minus_hard") for k in scaling.stage_metrics(curves, events, None, decisions,
                                                                                  sizes, causes))


def test_budget_errors_count_the_outputs_of_each_cause_per_model_and_budget():
    step = fmt.render_step(fmt.Step("n", "t", "s", "r"))
    good = fmt.REASONING_START + step + fmt.REASONING_END + "\nAnswer: B"
    mid = fmt.REASONING_START + step + fmt.PROCEED + fmt.STEP_START + fmt.NAME_START + "x" + fmt.REASONING_END + "A"
    cut = fmt.REASONING_START + step + fmt.PROCEED
    outputs = pd.DataFrame({"model": "RL", "method": ["budget"] * 4 + ["min_steps"], "value": [8, 8, 16, 16, 0],
                            "completion": [good, mid, good, cut, mid]})
    table = scaling.budget_errors(outputs)
    assert table[["budget", "outputs", "with a format error %", "ended mid-step", "no reasoning_end"]].values.tolist() \
        == [[8, 2, 50.0, 1, 0], [16, 2, 50.0, 0, 1]]
    text_ = scaling.budget_errors_paragraph(table)
    assert "Of 4 budget-forcing outputs, 2 keep a format error (outputs per cause: ended mid-step in 1; " \
           "no reasoning_end in 1)" in text_ and "1 end their reasoning mid-step" in text_
    clean = scaling.budget_errors_paragraph(scaling.budget_errors(outputs.iloc[[0, 2, 3]]))
    assert "None ends its reasoning mid-step" in clean


# --------------------------------------------------------------------------- cause 1


def test_length_bins_put_every_output_in_one_bin_and_show_the_trend():
    scores = pd.DataFrame({"question_id": [f"q{i % 5}" for i in range(40)],
                           "reasoning_tokens": list(range(10, 410, 10)),
                           "correct": [i < 20 for i in range(40)]})
    bins = scaling.length_bins(scores, 2, n_boot=100)
    assert bins["outputs"].sum() == 40 and len(bins) == 2
    assert bins["accuracy"].tolist() == [100.0, 0.0]
    fixed = scaling.length_bins(scores, edges=[0, 100, 1000], n_boot=50)
    assert fixed["outputs"].tolist() == [9, 31]


def test_long_paths_keep_the_longest_share_of_kept_paths():
    import datasets

    ds = datasets.Dataset.from_dict({"reasoning_tokens": [10, 20, 30, 40, 50, 60], "kept": [True] * 5 + [False]})
    long_ds, cut = scaling.long_paths(ds, 0.4)
    assert sorted(long_ds["reasoning_tokens"]) == [40, 50] and cut == pytest.approx(34.0)
    with pytest.raises(ValueError, match="share"):
        scaling.long_paths(ds, 0)


def test_length_paragraph_compares_the_variant_slope():
    bins = {"SFT": pd.DataFrame({"bin_low": [0, 100], "bin_high": [100, 900], "tokens": [50, 500], "outputs": [5, 5],
                                 "accuracy": [40.0, 10.0], "ci_low": [20.0, 0.0], "ci_high": [60.0, 30.0]})}
    curves = pd.DataFrame({"model": ["SFT", "SFT", "long", "long"], "method": ["min_steps"] * 4,
                           "tokens": [100, 200, 100, 200], "accuracy": [30.0, 20.0, 30.0, 40.0]})
    text_ = scaling.length_paragraph(bins, [50, 60, 70, 80], curves, variant="long")
    assert "at most 80 reasoning tokens" in text_ and "+10.0 points per doubling" in text_
    assert "supports this cause" in text_


# --------------------------------------------------------------------------- cause 2


def test_reward_variants_move_weight_between_breadth_and_depth():
    w = RewardWeights()
    v = scaling.reward_variants(w, ["depth-heavy", "breadth-heavy"], factor=2.0)
    assert v["depth-heavy"].w_in_degree == 0 and v["depth-heavy"].w_dist_answer == 2 * w.w_dist_answer
    assert v["breadth-heavy"].w_out_degree == 2 * w.w_out_degree
    assert v["breadth-heavy"].w_dist_question == w.w_dist_question / 2
    assert v["breadth-heavy"].outcome == w.outcome  # the outcome and penalties stay
    with pytest.raises(ValueError, match="depth-heavy or breadth-heavy"):
        scaling.reward_variants(w, ["wide"])


# --------------------------------------------------------------------------- cause 3


def backtrack_completion(question):
    """A trace: a dead-end step, back to the question; a solvable step, back to the question (a wrong
    backtrack); the solvable step again, then the answer with letter B."""
    p = question.problem
    start = p.numbers
    ops = legal_operations(start)
    dead = next(o for o in ops if p.target not in reachable_values(apply(start, o)))
    alive = next(o for o in ops if p.target in reachable_values(apply(start, o)) and o != dead)
    steps = tuple(text.step_texts(start, o, o.result, question.options) for o in (dead, alive, alive))
    back = fmt.Backtrack(fmt.QUESTION)
    trace = fmt.Trace(steps, (back, back), "Answer: B")
    return fmt.render(trace)


def test_backtrack_events_flag_abandoned_solvable_branches_and_wrong_ends(tok):
    q = make_questions(1, seed=3)[0]
    completion = backtrack_completion(q)
    scores = pd.DataFrame([{"question_id": q.question_id, "completion": completion, "letter": "B",
                            "correct_letter": "A"},
                           {"question_id": q.question_id, "completion": "no reasoning here", "letter": None,
                            "correct_letter": "A"}])
    events = scaling.backtrack_events(scores, {q.question_id: q}, tok)
    assert events["kind"].tolist() == ["backtrack", "backtrack", "end"]
    assert events["bad"].tolist() == [False, True, True]
    assert events["position"].is_monotonic_increasing and events["position"].iloc[0] > 0
    rates = scaling.event_rates(events, [0, 10_000], n_boot=50)
    assert rates.set_index("kind")["bad_share"].to_dict() == {"backtrack": 50.0, "end": 100.0}
    text_ = scaling.context_paragraph(events, rates)
    assert "50.0% of 2 backtracks abandon" in text_ and "100.0% of 1 ends confirm" in text_


def test_an_end_without_a_letter_confirms_nothing(tok):
    q = make_questions(1, seed=4)[0]
    scores = pd.DataFrame([{"question_id": q.question_id, "letter": None, "correct_letter": "A",
                            "completion": fmt.REASONING_START + fmt.REASONING_END + "no letter"}])
    events = scaling.backtrack_events(scores, {q.question_id: q}, tok)
    assert events["kind"].tolist() == ["end"] and events["bad"].isna().all()
    assert scaling.event_rates(events, [0, 10], n_boot=10).empty


# --------------------------------------------------------------------------- cause 4


def test_paired_by_setting_pairs_question_and_setting():
    a = pd.DataFrame({"question_id": ["q1", "q2", "q1", "q2"], "value": [2, 2, 4, 4], "correct": [1, 1, 1, 0]})
    b = pd.DataFrame({"question_id": ["q2", "q1", "q2", "q1"], "value": [2, 2, 4, 4], "correct": [0, 0, 0, 1]})
    c = scaling.paired_by_setting(a, b, n_boot=200)
    assert c["delta"] == pytest.approx(50.0) and c["settings"] == 2 and c["questions"] == 2
    text_ = scaling.soft_paragraph(pd.DataFrame({"model": ["RL", "RL"], "method": ["min_steps", "soft_bias"],
                                                 "tokens": [300.0, 200.0]}), c, "RL", 4.0)
    assert "+50.0 points" in text_ and "200 tokens" in text_ and "300" in text_
    with pytest.raises(ValueError, match="share no"):
        scaling.paired_by_setting(a, b.assign(value=9))


def test_step_end_nudges_raise_proceed_by_the_bias_at_each_step_end_below_min_steps(tok, model):
    from steiner_lib.generation.constraints import ReasoningTokenIds

    ids = ReasoningTokenIds.from_tokenizer(tok)
    step = fmt.render_step(fmt.Step("n", "t", "s", "r"))
    completion = fmt.REASONING_START + "\n" + step + "\n" + fmt.PROCEED + "\n" + step + "\n" + fmt.PROCEED + "\n" + step
    nudges = scaling.step_end_nudges(model, tok, modeling.chat_text("Which one?"), completion, 2, bias=3.0,
                                     temperature=0.5)
    # the first step end (1 step done < min_steps 2), nudged right after its step_end and after its newline
    assert nudges["steps_done"].tolist() == [1, 1]  # the second step end has 2 steps done: no nudge
    assert nudges["after"].tolist() == ["step_end", "whitespace"]
    assert nudges["log_odds_shift"].to_numpy() == pytest.approx(3.0 / 0.5)  # nothing but the bias changed
    assert (nudges["p_soft"] > nudges["p_free"]).all()
    assert nudges["written"].tolist() == [tok("\n", add_special_tokens=False)["input_ids"][0], ids.proceed]
    with pytest.raises(ValueError, match="temperature=0"):
        scaling.step_end_nudges(model, tok, "x", completion, 2, 3.0, temperature=0)


def test_soft_decisions_count_the_step_ends_and_the_changed_choices(tok, model):
    from steiner_lib.tasks.choice import ChoiceQuestion

    questions = [ChoiceQuestion(f"Which value {i}?", "12", ("13", "14", "15"), f"r{i}") for i in range(2)]
    step = fmt.render_step(fmt.Step("n", "t", "s", "r"))
    two = fmt.REASONING_START + "\n" + step + "\n" + fmt.PROCEED + "\n" + step + "\n" + fmt.REASONING_END + "A"
    one = fmt.REASONING_START + "\n" + step + "\n" + fmt.REASONING_END + "A"

    def rows(method, value, texts, steps):
        return pd.DataFrame({"model": "RL", "method": method, "value": value, "question_id": ["r0", "r1"],
                             "completion": texts, "n_steps": steps})
    outputs = pd.concat([rows("min_steps", 0, [one, one], [1, 1]), rows("min_steps", 3, [two, two], [3, 3]),
                         rows("soft_bias", 3, [two, one], [2, 1])], ignore_index=True)
    table = scaling.soft_decisions(model, tok, outputs, questions, 0, "RL", bias=4.0, temperature=1.0)
    row = table.iloc[0]
    assert row["min_steps"] == 3 and row["outputs"] == 2 and row["step ends"] == 3  # 2 + 1 step ends below 3
    assert row["proceed written"] == 1 and 0 < row["p_free"] < row["p_soft"] < 1
    assert row["changed (expected)"] > 0 and (row["steps_free"], row["steps_soft"], row["steps_hard"]) == (1, 1.5, 3)
    c = {"delta": 0.0, "ci_low": -5.0, "ci_high": 5.0, "p_value": 1.0, "questions": 2, "settings": 1}
    curves = pd.DataFrame({"model": ["RL", "RL"], "method": ["min_steps", "soft_bias"], "tokens": [300.0, 200.0]})
    text_ = scaling.soft_paragraph(curves, c, "RL", 4.0, table)
    assert "min_steps 3: 3 step ends with fewer steps done" in text_ and "replayed through the model" in text_
    quiet = scaling.soft_paragraph(curves, c, "RL", 4.0, table.assign(**{"changed (expected)": 0.1}))
    assert "changed almost no choice" in quiet
    with pytest.raises(ValueError, match="not in `questions`"):
        scaling.soft_decisions(model, tok, outputs, questions[:1], 0, "RL", 4.0, 1.0)


# --------------------------------------------------------------------------- plots


def test_scaling_plots_draw_one_line_per_model_and_method():
    rows = [{"model": m, "method": k, "value": v, "tokens": 100 * (v + 1), "accuracy": 30.0 + v, "ci_low": 20.0 + v,
             "ci_high": 40.0 + v} for m in ("SFT", "RL") for k in ("min_steps", "vote") for v in (0, 1, 2)]
    fig = plots.scaling_curves(pd.DataFrame(rows), labels=scaling.METHOD_LABELS)
    assert len(fig.axes[0].get_legend().get_texts()) == 4
    plt.close(fig)
    bins = pd.DataFrame({"tokens": [50, 150], "accuracy": [40.0, 20.0], "ci_low": [30.0, 10.0],
                         "ci_high": [50.0, 30.0], "outputs": [4, 6]})
    fig = plots.accuracy_by_length({"RL": bins}, train_tokens=[40, 60, 80])
    assert len(fig.axes) == 2 and "10 outputs" in fig.axes[0].get_legend().get_texts()[0].get_text()
    plt.close(fig)
    rates = pd.DataFrame({"kind": ["backtrack", "end"], "position": [10.0, 20.0], "bad_share": [50.0, 20.0],
                          "ci_low": [30.0, 5.0], "ci_high": [70.0, 40.0], "events": [4, 5]})
    fig = plots.context_rates(rates, {"end": "ends"})
    assert [ax.get_title() for ax in fig.axes] == ["backtrack", "ends"]
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        plots.scaling_curves(pd.DataFrame(columns=["model", "method"]))


# --------------------------------------------------------------------------- sample sizes


def test_sample_sizes_take_each_curves_end_points_and_their_paired_change():
    def rows(method, value, correct, letters=None):
        n = len(correct)
        return pd.DataFrame({"model": "RL", "method": method, "value": value, "question_id": [f"q{i}" for i in range(n)],
                             "correct": correct, "letter": letters or ["A"] * n, "correct_letter": "A",
                             "reasoning_tokens": 10, "format_ok": True})
    pool = pd.concat([rows("pool", 2, [1, 0, 1, 0], ["A", "B", "A", "B"]),
                      rows("pool", 2, [1, 1, 0, 0], ["A", "A", "C", "C"])], ignore_index=True)
    outputs = pd.concat([rows("min_steps", 0, [1, 0, 1, 0]), rows("min_steps", 2, [1, 1, 1, 0]),
                         rows("min_steps", 6, [0, 0, 1, 1]), rows("budget", 8, [1, 1, 0, 0]), pool], ignore_index=True)
    comparisons = scaling.curve_end_comparisons(outputs, ks=(1, 2), draws=4)
    assert list(comparisons) == ["RL, min_steps 0: accuracy", "RL, min_steps 6: accuracy", "RL, min_steps 6 - 0",
                                 "RL, budget 8: accuracy", "RL, vote 1: accuracy", "RL, vote 2: accuracy",
                                 "RL, vote 2 - 1"]
    assert comparisons["RL, min_steps 6: accuracy"].tolist() == [0, 0, 1, 1]
    assert comparisons["RL, vote 1: accuracy"].tolist() == [1.0, 0.5, 0.5, 0.0]
    table = scaling.sample_sizes(outputs, ks=(1, 2), draws=4)
    assert table.loc["RL, min_steps 6 - 0", "kind"] == "paired difference"
    assert table.loc["RL, min_steps 6 - 0", "questions needed"] == \
        scoring.questions_needed([-1.0, 0.0, 0.0, 1.0])["needed"]


# --------------------------------------------------------------------------- the four causes, as tests


@pytest.mark.parametrize("est, lo, hi, direction, expected", [
    (8.0, 2.0, 14.0, 1, scaling.SUPPORTED),  # detected, and an effect that matters is inside
    (-8.0, -14.0, -2.0, -1, scaling.SUPPORTED),  # the same, predicted negative
    (1.0, 0.5, 2.0, 1, scaling.NOT_SUPPORTED),  # detected but too small to matter
    (-6.0, -9.0, -3.0, 1, scaling.NOT_SUPPORTED),  # the other sign
    (6.0, 3.0, 9.0, -1, scaling.NOT_SUPPORTED),
    (0.0, -2.0, 2.0, 1, scaling.NOT_SUPPORTED),  # narrow around 0: no effect that matters
    (2.0, -5.0, 9.0, 1, "inconclusive"),  # holds 0 and the margin: too wide
    (-2.0, -9.0, 5.0, -1, "inconclusive"),
    (float("nan"), float("nan"), float("nan"), 1, "not run"),
])
def test_cause_verdict_can_come_out_every_way(est, lo, hi, direction, expected):
    assert scaling.cause_verdict(est, lo, hi, direction) == expected


def test_cause_verdict_at_the_bounds():
    m = 3.53
    assert scaling.cause_verdict(2.0, 0.0, 4.0, 1, m) == "inconclusive"  # lo = 0 settles no sign
    assert scaling.cause_verdict(2.0, 0.1, m, 1, m) == scaling.SUPPORTED  # hi exactly at the margin holds it
    assert scaling.cause_verdict(2.0, 0.1, m - 1e-6, 1, m) == scaling.NOT_SUPPORTED
    assert scaling.cause_verdict(0.0, -m, 0.0, -1, m) == "inconclusive"  # turned: [0, m]
    with pytest.raises(ValueError, match="direction=0"):
        scaling.cause_verdict(1, 0, 2, 0)
    with pytest.raises(ValueError, match="margin=0"):
        scaling.cause_verdict(1, 0, 2, 1, margin=0)


def cause_rows(model, method, value, correct, **columns):
    n = len(correct)
    frame = pd.DataFrame({"model": model, "method": method, "value": value, "question_id": [f"q{i}" for i in range(n)],
                          "correct": [bool(c) for c in correct], "reasoning_tokens": 10, "n_backtracks": 0,
                          "completion": ""})
    return frame.assign(**columns)


def test_length_test_compares_long_and_short_outputs_within_a_question():
    outputs = pd.concat([cause_rows("RL", "pool", 4, [1, 1, 0], reasoning_tokens=[50, 50, 50]),
                         cause_rows("RL", "min_steps", 6, [0, 1, 0], reasoning_tokens=[500, 500, 50]),
                         cause_rows("SFT", "pool", 4, [0, 0, 0], reasoning_tokens=500)], ignore_index=True)
    t = scaling.length_test(outputs, "RL", train_tokens=list(range(101)))
    assert t.per_question.to_dict() == {"q0": -1.0, "q1": 0.0}  # q2 has no long output
    assert t.direction == -1 and "above 95 reasoning tokens" in t.measurement and "2 long of 6" in t.measurement


def test_forcing_difference_is_a_difference_in_differences_and_not_run_without_the_model():
    outputs = pd.concat([cause_rows("RL", "min_steps", 0, [1, 0, 0]), cause_rows("RL", "min_steps", 6, [1, 1, 0]),
                         cause_rows("SFT", "min_steps", 0, [1, 0, 1]), cause_rows("SFT", "min_steps", 6, [0, 0, 1])],
                        ignore_index=True)
    t = scaling.forcing_difference_test(outputs, 2, "RL", "SFT", "p", -1, "k")
    assert t.per_question.tolist() == [1.0, 1.0, 0.0]  # RL gains (0, 1, 0), SFT (-1, 0, 0)
    missing = scaling.forcing_difference_test(outputs, 1, "SFT (long paths)", "SFT", "p", 1, "k", "not run: x")
    assert missing.per_question.empty and missing.measurement == "not run: x"


def test_backtrack_accuracy_reads_free_outputs_only():
    outputs = pd.concat([cause_rows("RL", "pool", 4, [1, 0], n_backtracks=[0, 2]),
                         cause_rows("RL", "min_steps", 0, [0, 1], n_backtracks=[3, 0]),
                         cause_rows("RL", "min_steps", 2, [0, 0], n_backtracks=[0, 0])], ignore_index=True)
    t = scaling.backtrack_accuracy_test(outputs, "RL")
    assert t.per_question.to_dict() == {"q0": -1.0, "q1": -1.0} and "2 of 4 outputs backtracked" in t.measurement


def reaching_completion(question, abandon: bool):
    """A trace that reaches the target by the exact solver's steps, then (abandon) backtracks to the
    question and takes a dead-end step, or ends there."""
    from steiner_lib.tasks.countdown import solve

    p = question.problem
    state, steps = p.numbers, []
    for op in solve(p):
        steps.append(text.step_texts(state, op, op.result, question.options))
        state = apply(state, op)
    moves = ["proceed"] * (len(steps) - 1)
    if abandon:
        dead = next(o for o in legal_operations(p.numbers) if p.target not in reachable_values(apply(p.numbers, o)))
        steps.append(text.step_texts(p.numbers, dead, dead.result, question.options))
        moves.append(fmt.Backtrack(fmt.QUESTION))
    return fmt.render(fmt.Trace(tuple(steps), tuple(moves), "Answer: A"))


def test_abandoned_answers_flag_a_reached_target_left_by_a_backtrack():
    q = make_questions(1, seed=3)[0]
    assert scaling.abandoned_answers(reaching_completion(q, abandon=False), q.problem) == (True, False)
    assert scaling.abandoned_answers(reaching_completion(q, abandon=True), q.problem) == (True, True)
    assert scaling.abandoned_answers(backtrack_completion(q), q.problem)[1] is False  # never held the target there
    assert scaling.abandoned_answers("no reasoning", q.problem) == (False, False)
    qs = make_questions(2, seed=5)
    outputs = pd.DataFrame({"model": "RL", "method": "pool", "value": 4,
                            "question_id": [qs[0].question_id] * 2 + [qs[1].question_id] * 2,
                            "completion": [reaching_completion(qs[0], True), reaching_completion(qs[0], False),
                                           reaching_completion(qs[1], True), "nothing"],
                            "correct": [False, True, True, False]})
    t = scaling.abandoned_answer_test(outputs, "RL", {q.question_id: q for q in qs})
    assert t.per_question.tolist() == [0.5, 1.0] and t.direction == 1
    assert "2 of 3 outputs, 1 of them answering wrong" in t.measurement


def test_cause_table_gives_every_test_its_interval_verdict_and_sample_size():
    outputs = pd.concat([cause_rows("RL", "min_steps", 0, [1, 0, 1, 0] * 5), cause_rows("RL", "min_steps", 2, [1] * 20),
                         cause_rows("RL", "soft_bias", 2, [0] * 20)], ignore_index=True)
    tests = [scaling.soft_test(outputs, "RL"), scaling.soft_test(outputs, "SFT"),
             scaling.CauseTest("3", "one", "one question", 1, pd.Series({"q0": 1.0}), "one")]
    table = scaling.cause_table(tests, n_boot=200)
    assert list(table.columns) == scaling.CAUSE_COLUMNS and list(table.index) == ["soft_minus_hard"] * 2 + ["one"]
    soft = table.iloc[0]  # every question -1: no spread, so the rule of three's +-3/20 (not a zero-width interval)
    assert soft["estimate"] == -100.0 and (soft["ci_low"], soft["ci_high"]) == (-100.0, pytest.approx(-85.0))
    assert soft["verdict"] == scaling.NOT_SUPPORTED and soft["questions"] == 20
    assert soft["questions needed"] == 50 and not soft["target met"]
    few = scaling.cause_table([scaling.CauseTest("4", "p", "m", 1, pd.Series([0.0] * 3), "k")]).iloc[0]
    assert (few["ci_low"], few["ci_high"], few["verdict"]) == (-100.0, 100.0, "inconclusive")  # 3 alike decide nothing
    assert table.iloc[1]["verdict"] == "not run" and "not run" in table.iloc[1]["measurement"]
    assert table.iloc[2]["verdict"] == "not run" and table.iloc[2]["estimate"] == 100.0  # one question: no interval
    text_ = scaling.cause_paragraph(table)
    assert text_.startswith("Of 3 tests, 0 supported, 1 not supported, 0 inconclusive, 2 not run")
    assert "**4. forcing logits is too blunt**" in text_ and "-100.0 points" in text_


def test_cause_tests_cover_the_four_causes_in_order():
    q = make_questions(1, seed=3)[0]
    outputs = pd.concat([cause_rows("RL", "min_steps", 0, [1]), cause_rows("SFT", "min_steps", 0, [1])])
    outputs = outputs.assign(question_id=q.question_id)
    tests = scaling.cause_tests(outputs, {q.question_id: q}, [10, 20], reward_variants_=["RL depth-heavy"])
    assert [t.key for t in tests] == ["long_outputs", "long_path_variant", "rl_against_sft", "reward_depth_heavy",
                                      "backtracked_accuracy", "abandoned_answers", "soft_minus_hard"]
    assert [t.cause[0] for t in tests] == ["1", "1", "2", "2", "3", "3", "4"]
    assert all(t.measurement.startswith("not run") for t in tests if t.key in ("long_path_variant", "reward_depth_heavy"))
