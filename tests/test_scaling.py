"""Inference scaling (steiner_lib/scaling.py) and its plots: votes, curves, bins, the four causes."""

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import make_questions  # noqa: E402

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib import evaluation, modeling, plots, scaling, stage_eval  # noqa: E402
from steiner_lib.rewards import RewardWeights  # noqa: E402
from steiner_lib.tasks import text  # noqa: E402
from steiner_lib.tasks.countdown import apply, legal_operations, reachable_values  # noqa: E402


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
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from steiner_lib.tasks.choice import ChoiceQuestion

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    questions = [ChoiceQuestion(f"Which value {i}?", "12", ("13", "14", "15"), f"r{i}") for i in range(2)]
    plan = scaling.Plan(min_steps=(0, 1), budgets=(3,), samples=2, ks=(1, 2), draws=4, grace_tokens=1)
    greedy = stage_eval.Decoding(max_new_tokens=8, seed=0, progress=False)
    # room for the budget, its grace and the tokens that close a step and the reasoning
    sampled = stage_eval.Decoding(max_new_tokens=3 + 1 + fmt.MAX_CLOSING_TOKENS, temperature=1.0, seed=0, progress=False)
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


def test_rl_settings_read_notebook_05s_manifest_params():
    from steiner_lib import params as P

    rl_params = P.defaults()
    weights, kwargs = scaling.rl_settings({k: v for k, v in rl_params.items() if k.startswith("rl_")})
    assert weights == RewardWeights(**{f: float(rl_params[f"rl_{f}"]) for f in RewardWeights.__dataclass_fields__})
    assert kwargs["num_generations"] == rl_params["rl_num_generations"] and kwargs["credit"] == "step"


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
    from steiner_lib.constraints import ReasoningTokenIds

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
        evaluation.questions_needed([-1.0, 0.0, 0.0, 1.0])["needed"]
