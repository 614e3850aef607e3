"""The stage table's pieces on crafted score frames: grids, the letter rule, paired deltas, the choice, the prose."""

import numpy as np
import pandas as pd
import pytest
from helpers import ONE_LAYER, tiny_qwen2

from steiner_lib import format as fmt
from steiner_lib.evaluation import stage_table as se


def frame(correct, ids=None, format_ok=True, tokens=10):
    """A score frame as score_outputs makes it: one output per question."""
    n = len(correct)
    ids = ids or [f"q{i:03d}" for i in range(n)]
    return pd.DataFrame({"question_id": ids, "sample": 0, "correct": [bool(c) for c in correct],
                         "format_ok": format_ok, "reasoning_tokens": tokens})


# --------------------------------------------------------------------------- settings


def test_parse_int_grid_sorts_and_dedups():
    assert se.parse_int_grid("4, 2,2,10") == [2, 4, 10]


@pytest.mark.parametrize("text, words", [("", "empty"), ("1,x", "whole numbers"), ("-1,2", "negative")])
def test_parse_int_grid_names_the_problem(text, words):
    with pytest.raises(ValueError, match=words):
        se.parse_int_grid(text, "eval_lp_min_steps_grid")


def test_lp_settings_keep_only_min_at_most_max():
    assert se.lp_settings("0,3,5", "2,4") == [(0, 2), (0, 4), (3, 4)]
    with pytest.raises(ValueError, match="widen"):
        se.lp_settings("5", "2")


# --------------------------------------------------------------------------- scoring


def test_base_letter_is_read_anywhere_but_others_only_after_reasoning_end():
    no_tokens = "I think the sum works. Answer: B"
    scores = se.score_completions([no_tokens, no_tokens], ["B", "B"], ["a", "b"])
    assert not scores["correct"].any()  # no <|reasoning_end|>: the standard rule reads no letter
    base = se.score_completions([no_tokens, "Answer: A then Answer: (C)."], ["B", "C"], ["a", "b"],
                                letter_anywhere=True)
    assert base["letter"].tolist() == ["B", "C"] and base["correct"].all()
    assert not base["format_ok"].any()  # the format is still scored as for every model
    steiner = fmt.REASONING_START + fmt.REASONING_END + "\nAnswer: D"
    assert se.score_completions([steiner], ["D"], ["c"])["correct"].all()


# --------------------------------------------------------------------------- choice on validation


def test_choose_setting_prefers_accuracy_then_least_forcing():
    grid = pd.DataFrame({"min_steps": [0, 1, 2, 0], "max_steps": [4, 8, 8, 8], "accuracy": [40.0, 50.0, 50.0, 30.0]})
    assert se.choose_setting(grid) == (1, 8)
    tie = pd.DataFrame({"min_steps": [1, 0, 0], "max_steps": [8, 4, 8], "accuracy": [50.0, 50.0, 50.0]})
    assert se.choose_setting(tie) == (0, 8)
    with pytest.raises(ValueError, match="empty"):
        se.choose_setting(tie.iloc[:0])


# --------------------------------------------------------------------------- paired deltas and the table


def test_paired_delta_pairs_by_question_not_by_row_order():
    rng = np.random.default_rng(0)
    prev = frame(rng.random(80) < 0.3)
    better = prev.assign(correct=True)  # every question right
    shuffled = better.sample(frac=1, random_state=1)  # same questions, other row order
    d = se.paired_delta(shuffled, prev, n_boot=500)
    assert d["delta"] == pytest.approx(100 * (1 - prev["correct"].mean()))
    assert d["delta_ci_low"] > 0 and d["p_value"] < 0.01


def test_paired_delta_rejects_different_questions():
    with pytest.raises(ValueError, match="different questions"):
        se.paired_delta(frame([1, 0], ids=["a", "b"]), frame([1, 0], ids=["a", "c"]))


def test_stage_table_columns_and_values():
    rng = np.random.default_rng(1)
    base = frame(rng.random(60) < 0.25, format_ok=False, tokens=100)
    same = base.copy()
    scores = {"base": base, "CPT": same, "SFT": base.assign(correct=True)}
    t = se.stage_table(scores, n_boot=300)
    assert list(t.index) == ["base", "CPT", "SFT"]
    assert np.isnan(t.loc["base", "delta"])
    assert t.loc["CPT", "delta"] == 0 and t.loc["CPT", "p_value"] == 1  # a system against itself
    assert t.loc["SFT", "accuracy"] == 100 and t.loc["SFT", "delta_ci_low"] > 0
    assert t.loc["base", "acc_ci_low"] <= t.loc["base", "accuracy"] <= t.loc["base", "acc_ci_high"]
    assert t.loc["base", "format_error_rate"] == 100 and t.loc["base", "reasoning_tokens"] == 100
    assert pd.isna(t.loc["SFT", "paper_delta"])
    # against the first row (base) too: SFT's change to base is its change to CPT here (CPT = base)
    assert np.isnan(t.loc["base", "base_delta"]) and t.loc["SFT", "base_delta"] == t.loc["SFT", "delta"]
    assert t.loc["CPT", "base_p_value"] == 1
    assert "paper_delta" not in se.stage_table(scores, paper_deltas=None, n_boot=50).columns


def test_paper_deltas_go_beside_rl_rows():
    f = frame([1, 0, 1, 0])
    t = se.stage_table({row: f for row in se.ROWS}, n_boot=50)
    assert t.loc["RL", "paper_delta"] == 3.53 and t.loc["RL + logits processor", "paper_delta"] == 5.56


# --------------------------------------------------------------------------- the paragraph


def test_paragraph_compares_each_stage_with_chance_the_base_and_the_row_above():
    low = frame([1] * 5 + [0] * 95)
    scores = {"base": low, "SFT": low, "RL": low.assign(correct=True), "RL + logits processor": low.assign(correct=True)}
    t = se.stage_table(scores, n_boot=300)
    text = se.reproduction_paragraph(t, "the diamond split")
    assert text.startswith("On the diamond split (100 questions, greedy decoding; chance is 25%).")
    assert "Above chance (25%, the 95% interval's lower bound above it): RL, RL + logits processor (2 of 4 rows)" in text
    assert "- **base**: 5.0% (95% CI" in text and "below chance" in text.split("**SFT**")[0]
    rl = text.split("**RL**: ")[1].split("\n")[0]
    assert "above chance; against base +" in rl and "against SFT (the row above) +" in rl
    assert "The paper reports +3.53: **reproduced**" in rl
    lp = text.split("**RL + logits processor**: ")[1]
    assert "against RL (the row above) +0.0 points" in lp
    assert "The paper reports +5.56: **contradicted** (the 95% interval excludes the paper's effect)" in lp
    assert "Of the 2 changes the paper reports a figure for, reproduced: RL; contradicted: RL + logits processor." in text
    # the second row's only comparison is with the row above, which is the base
    assert "against base (the row above)" in text.split("**SFT**: ")[1].split("\n")[0]


def test_paragraph_says_plainly_when_no_stage_beats_chance():
    rng = np.random.default_rng(3)
    chance = frame(rng.random(40) < 0.25)
    t = se.stage_table({"base": chance, "SFT": chance.sample(frac=1, random_state=0).assign(
        question_id=chance["question_id"].to_numpy())}, n_boot=200)
    assert (t["acc_ci_low"] <= 25).all()
    text = se.reproduction_paragraph(t)
    assert "**No stage is above chance**" in text and "not distinguishable from chance" in text
    assert se.against_chance(25.0, 30.0) == "at" and se.against_chance(25.1, 30) == "above" \
        and se.against_chance(10, 24.9) == "below"


def test_paragraph_reports_a_loss_against_a_claimed_gain_as_contradicted():
    good = frame([1] * 50)
    t = se.stage_table({"SFT": good, "RL": good.assign(correct=False)}, n_boot=200)
    text = se.reproduction_paragraph(t)
    assert "against SFT (the row above) -100.0 points" in text and "**contradicted**" in text


def test_paragraph_of_a_single_row():
    text = se.reproduction_paragraph(se.stage_table({"base": frame([1, 0])}, n_boot=20))
    assert "single row" in text and "chance" in text


def test_readable_table_gives_the_verdict_where_the_paper_reports_a_figure():
    good = frame([1] * 20)
    t = se.readable_table(se.stage_table({"base": good, "SFT": good, "RL": good}, n_boot=50))
    assert t.loc["RL", "verdict"] == "contradicted" and t.loc["SFT", "verdict"] == "" and t.loc["base", "verdict"] == ""
    assert t.loc["RL", "delta to base [95% CI]"] == "+0.0 [+0.0, +0.0]"


def test_plot_has_one_bar_per_stage_and_split():
    t = se.stage_table({"base": frame([1, 0, 0, 0]), "SFT": frame([1, 1, 0, 0])}, n_boot=50)
    fig = se.plot_stage_tables({"diamond": t, "control": t})
    bars = fig.axes[0].patches
    assert len(bars) == 4 and sorted(b.get_height() for b in bars) == [25, 25, 50, 50]


# --------------------------------------------------------------------------- all rows, on a tiny random model


def test_evaluate_stages_loads_each_checkpoint_once_and_forces_the_lp_row():
    from steiner_lib.tasks.choice import ChoiceQuestion
    from steiner_lib.training import modeling

    tok = modeling.train_bpe_tokenizer(["Which value can be made? A) 12 B) 13 C) 14 D) 15 Answer: B"] * 3, 300)
    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    loads = []

    def load(stage, name):
        loads.append((stage, name))
        return model, tok

    questions = [ChoiceQuestion(f"Which value {i}?", "12", ("13", "14", "15"), f"r{i}") for i in range(3)]
    decoding = se.Decoding(max_new_tokens=6, seed=0, progress=False)
    scores = se.evaluate_stages(load, {"diamond": questions, "control": questions[:2]}, (1, 2), decoding)
    assert loads == [("03_cpt", "base"), ("03_cpt", "cpt"), ("04_sft", "sft"), ("05_rl", "rl")]
    assert list(scores["diamond"]) == list(se.ROWS) and len(scores["control"]["RL"]) == 2
    lp = scores["diamond"]["RL + logits processor"]["completion"]
    assert all(c.startswith(fmt.REASONING_START) for c in lp)  # the processor forced the first token
    assert (scores["diamond"]["base"]["letter_rule"] == "anywhere").all()
    assert (scores["diamond"]["SFT"]["letter_rule"] == "after reasoning_end").all()
    table = se.stage_table(scores["diamond"], n_boot=50)
    assert list(table.index) == list(se.ROWS)
    readable = se.readable_table(table)
    assert list(readable.index) == list(se.ROWS) and readable.loc["base", "delta to row above [95% CI]"] == ""
    rl = table.loc["RL"]
    assert readable.loc["RL", "accuracy % [95% CI]"] == f"{rl.accuracy:.1f} [{rl.acc_ci_low:.1f}, {rl.acc_ci_high:.1f}]"
    assert readable.loc["RL", "delta to row above [95% CI]"].startswith(f"{rl.delta:+.1f} [")
    assert readable.loc["RL", "paper's delta"] == "+3.53" and readable.loc["SFT", "paper's delta"] == ""
    assert len(se.all_scores(scores)) == 5 * 3 + 5 * 2

    # Several sampled outputs per question: each row holds them all, and a question scores their mean.
    sampled = se.Decoding(max_new_tokens=6, temperature=1.0, seed=0, progress=False, samples=3)
    many = se.sample_and_score(model, tok, questions, sampled)
    assert len(many) == 9 and many.groupby("question_id")["sample"].apply(sorted).tolist() == [[0, 1, 2]] * 3
    assert "3 sampled outputs per question at temperature 1" in sampled.describe()
    assert se.reproduction_paragraph(table, "x", sampled.describe()).startswith("On x (3 questions, 3 sampled")


def test_the_stage_table_and_the_heldout_checks_sample_and_score_alike():
    """sample_and_score is scoring.generate_and_score without the step replay: for a seed it draws
    and scores the very outputs heldout_report does."""
    from helpers import make_questions

    from steiner_lib.evaluation import scoring
    from steiner_lib.training import modeling

    questions = make_questions(3, seed=1)
    tok = modeling.train_bpe_tokenizer([scoring.heldout_prompts(questions, 0)[0][0]] * 3, 300)
    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    staged = se.sample_and_score(model, tok, questions, se.Decoding(max_new_tokens=8, temperature=1.0, seed=4,
                                                                   progress=False, samples=2, batch_size=4))
    report = scoring.heldout_report(model, tok, questions, seed=4, n_samples=2, max_new_tokens=8,
                                       temperature=1.0, batch_size=4, n_boot=10, progress=False)
    assert staged["completion"].nunique() > 1  # sampled outputs, not one repeated text
    shared = [c for c in staged.columns if c != "letter_rule"]
    pd.testing.assert_frame_equal(staged[shared], report.scores[shared])
    assert set(report.scores.columns) - set(shared) == {"steps_valid", "n_valid_steps", "n_hallucinated_steps",
                                                        "n_not_held_steps", "n_unreadable_steps", "n_lost_steps", "reached_target",
                                                        "letter_holds_value"}


def test_decoding_refuses_identical_greedy_samples():
    with pytest.raises(ValueError, match="identical"):
        se.Decoding(max_new_tokens=8, temperature=0.0, samples=2)
    with pytest.raises(ValueError, match="at least 1"):
        se.Decoding(max_new_tokens=8, temperature=0.7, samples=0)
    assert se.Decoding(max_new_tokens=8).describe() == "greedy decoding"


# --------------------------------------------------------------------------- references


def test_references_score_the_same_questions_with_the_guess_rule():
    from steiner_lib.data.teachers import SearchTeacher
    from steiner_lib.tasks.choice import make_splits

    splits = make_splits(0, n_train=0, n_validation=0, n_diamond=6, n_hard=0, n_control=6, n_numbers=4,
                         max_number=25, min_steps=2, max_steps=3, diamond_max_backtracks=5,
                         hard_min_backtracks=100, max_result=100)
    teacher = SearchTeacher()
    for split, greedy in (("diamond", 25.0), ("control", 100.0)):
        scores = se.reference_scores(splits[split], teacher, max_steps=7, seed=0)
        assert set(scores["reference"]) == set(se.REFERENCES) and len(scores) == 4 * 6
        table = se.reference_table(scores, n_boot=50)
        assert list(table.index) == list(se.REFERENCES)
        assert table.loc["chance", "accuracy"] == 25.0 and table.loc["exact solver", "accuracy"] == 100.0
        assert table.loc["greedy shortcut", "accuracy"] == greedy  # diamond: greedy fails by the rule
        t = scores[scores["reference"] == "search teacher, no answer"]
        assert ((t["correct"] == 1.0) == t["solved"]).all() and set(t["correct"]) <= {1.0, 0.25}
    from steiner_lib.params import TeacherParams

    paths = pd.DataFrame({"n_steps": [7], "reasoning_tokens": [700], "kept": [True]})  # 100 tokens per step
    via_params = se.references_for(splits["control"], TeacherParams(), paths, 700, seed=0)
    assert via_params.attrs["step_budget"] == 7
    pd.testing.assert_frame_equal(via_params, se.reference_table(
        se.reference_scores(splits["control"], SearchTeacher(), max_steps=7, seed=0)), check_exact=True)
    # A budget of zero steps solves nothing; the readable table lists the references under the stages.
    none = se.reference_table(se.reference_scores(splits["diamond"], teacher, max_steps=0), n_boot=20)
    assert none.loc["search teacher, no answer", "solved"] == 0.0
    stages = se.stage_table({"SFT": frame([1, 0, 1, 0, 1, 0], ids=[q.question_id for q in splits["diamond"]])},
                            n_boot=20)
    readable = se.readable_table(stages, none)
    assert list(readable.index) == ["SFT"] + [f"reference: {r}" for r in se.REFERENCES]
    assert readable.loc["reference: exact solver", "accuracy % [95% CI]"] == "100.0 [100.0, 100.0]"
    fig = se.plot_tiers({"diamond": stages, "control": stages}, {"diamond": none, "control": none})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(labels) == sorted(["SFT", "search teacher, no answer", "greedy shortcut", "chance (4 choices)"])


def test_step_budget_is_tokens_over_tokens_per_step():
    paths = pd.DataFrame({"n_steps": [2, 4, 10], "reasoning_tokens": [200, 400, 5000], "kept": [True, True, False]})
    assert se.step_budget(paths, 640) == 6  # 600 tokens / 6 steps = 100 per step; the dropped path is ignored
    assert se.step_budget(paths, 50) == 1
    with pytest.raises(ValueError, match="no step"):
        se.step_budget(paths.assign(n_steps=0), 640)


def test_sample_sizes_cover_every_headline_comparison_of_06():
    rows = {name: frame(c) for name, c in (("base", [0, 1, 0, 0]), ("CPT", [0, 1, 1, 0]), ("SFT", [1, 1, 0, 0]),
                                           ("RL", [1, 1, 1, 0]), ("RL + logits processor", [1, 1, 1, 1]))}
    table = se.sample_sizes({"diamond": rows, "control": {n: frame([1, 0, 1, 0]) for n in ("SFT", "RL")}})
    names = list(table.index)
    assert names[:5] == [f"diamond: {n} accuracy (against chance)" for n in rows]
    assert "diamond: CPT - base (base)" in names and "diamond: CPT - base (row above)" not in names  # no duplicate
    assert "diamond: RL - SFT (row above)" in names and "diamond: RL + logits processor - RL (logits processor)" in names
    assert names[-1] == "control: RL - SFT (row above)" and len(names) == 5 + 4 + 3 + 1
    assert (table["questions"] == 4).all()
    assert table.loc["control: RL - SFT (row above)", "note"].startswith("no spread")


def test_stage_metrics_name_every_row_delta_and_reference_of_each_split():
    diamond = {"base": frame([0, 1, 0, 0]), "RL": frame([1, 1, 1, 0]), "RL + logits processor": frame([1, 1, 1, 1])}
    scores = {"diamond": diamond, "control": {"base": frame([1, 1, 0, 0]), "RL": frame([1, 1, 0, 0])}}
    tables = se.split_tables(scores, seed=0)
    assert list(tables) == ["diamond", "control"]
    assert tables["diamond"].loc["RL", "paper_delta"] == 3.53 and "paper_delta" not in tables["control"]
    references = {"diamond": pd.DataFrame({"accuracy": [25.0, 75.0]}, index=["chance", "search teacher, no answer"])}
    sizes = se.sample_sizes(scores)
    metrics = se.stage_metrics(tables, references, (2, 6), sizes)
    assert metrics == pytest.approx({
        "lp_min_steps": 2, "lp_max_steps": 6, "power_questions_needed_max": sizes["questions needed"].max(),
        "power_target_met": 0, "power_comparisons": len(sizes),
        "diamond_base_accuracy": 25.0, "diamond_rl_accuracy": 75.0, "diamond_rl_delta": 50.0,
        "diamond_rl_p": tables["diamond"].loc["RL", "p_value"], "diamond_rl_logits_processor_accuracy": 100.0,
        "diamond_rl_logits_processor_delta": 25.0,
        "diamond_rl_logits_processor_p": tables["diamond"].loc["RL + logits processor", "p_value"],
        "diamond_reference_chance_accuracy": 25.0, "diamond_reference_search_teacher_no_answer_accuracy": 75.0,
        "control_base_accuracy": 50.0, "control_rl_accuracy": 50.0, "control_rl_delta": 0.0, "control_rl_p": 1.0})
    assert 0 < metrics["diamond_rl_p"] < 1 and 0 < metrics["diamond_rl_logits_processor_p"] < 1  # bootstrap p-values
