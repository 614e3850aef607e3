"""The run summary of notebook 08: claims from a run's manifests and tables, "not run" rows for
missing stages, the reproducibility tables, and tables that show in HTML and in Markdown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from steiner_lib.report import summary
from steiner_lib.report.summary import NOT_RUN, claims_table, load_run

VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6"}


def manifest(run, stage, metrics=None, params=None, wall=10.0, versions=VERSIONS, seconds=12.5):
    d = run / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({
        "stage": stage, "metrics": metrics or {}, "params": params or {}, "seed": 0, "params_hash": "abc",
        "git_commit": "0123456789abcdef", "started_at": "2026-11-25T04:56:06.5+00:00", "wall_time_s": wall,
        "versions": versions}))
    (run / "executed").mkdir(exist_ok=True)
    (run / "executed" / f"{stage}.json").write_text(json.dumps({"seconds": seconds, "params_source": "params/x.yaml"}))
    return d


def stage_table(rows):
    cols = ["stage", "questions", "accuracy", "acc_ci_low", "acc_ci_high", "delta", "delta_ci_low",
            "delta_ci_high", "p_value"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "runs" / "cpu"
    manifest(run, "01_synthesis")
    manifest(run, "02_dag", metrics={"n_dags": 600, "n_paths_kept": 2860, "mean_reasoning_tokens": 246.2,
                                     "share_filtered_out": 0.0, "mean_backtracks_per_path": 1.18},
             params={"dag_max_reasoning_tokens": 1024, "dag_max_total_tokens": 2048, "tokenizer_name_or_path": None})
    d = manifest(run, "06_evaluation")
    stage_table([["base", 64, 30, 20, 40, np.nan, np.nan, np.nan, np.nan],
                 ["RL", 64, 40, 30, 50, 10.0, 2.0, 18.0, 0.01],
                 ["RL + logits processor", 64, 38, 28, 48, -2.0, -9.0, 5.0, 0.6]]).to_csv(d / "stage_table.csv", index=False)
    stage_table([["base", 48, 30, 20, 40, np.nan, np.nan, np.nan, np.nan],
                 ["RL", 48, 31, 20, 41, 1.0, -6.0, 8.0, 0.8]]).to_csv(d / "control_table.csv", index=False)
    return run


def test_paragraph_names_each_verdict_and_says_when_no_stage_beats_chance():
    claims = pd.DataFrame({"verdict": ["reproduced", "inconclusive", "contradicted", NOT_RUN, summary.SCALED]},
                          index=["RL improves GPQA-Diamond", "RL leaves a no-search control unchanged (MMLU)",
                                 "the logits processor adds more", "CPT might be redundant (small models)", "data"])
    table = stage_table([["base", 64, 24, 15, 33, np.nan, np.nan, np.nan, np.nan],
                         ["RL", 64, 30, 19, 41, 6.0, -2.0, 14.0, 0.2]])
    text = summary.claims_paragraph(claims, table)
    assert text.startswith("Of 3 claims this run tests, **1 reproduces** (RL improves GPQA-Diamond).")
    assert "Contradicted: the logits processor adds more." in text
    assert "Inconclusive: RL leaves a no-search control unchanged (MMLU)." in text and "too wide" in text
    assert "Not run here: CPT might be redundant (small models)." in text
    assert "On the diamond split (notebook 06): **No stage is above chance**" in text
    above = summary.claims_paragraph(claims, table.assign(acc_ci_low=[15, 26]))
    assert "Above chance (25%, the 95% interval's lower bound above it): RL (1 of 2 rows)" in above
    assert "chance" not in summary.claims_paragraph(claims)  # without the stage table, nothing said


def test_claims_come_from_the_run_and_missing_stages_say_not_run(run):
    claims = claims_table(load_run(run))
    v = claims["verdict"]
    assert v["RL improves GPQA-Diamond"] == "reproduced"
    assert "+10.00 points (95% CI +2.00 to +18.00, p = 0.010; 64 questions)" == claims.loc["RL improves GPQA-Diamond", "this run"]
    assert v["the logits processor adds more"] == "contradicted"  # [-9, +5]: short of the paper's +5.56
    assert v["RL leaves a no-search control unchanged (MMLU)"] == "inconclusive"  # [-6, +8] leaves the +-3.53 margin
    assert v["no inference-time scaling (forcing more steps)"] == NOT_RUN  # 07 never ran
    assert "07_inference_scaling" in claims.loc["no inference-time scaling (forcing more steps)", "this run"]
    assert v["CPT might be redundant (small models)"] == NOT_RUN and "cpt_enabled: false" in \
        claims.loc["CPT might be redundant (small models)", "this run"]
    assert claims.loc["data set: DAGs (one per question)", "this run"] == "600 (6.0% of the paper's)"
    paragraph = summary.claims_paragraph(claims)
    assert "Of 3 claims this run tests, **1 reproduces**" in paragraph and "Not run here" in paragraph


def test_an_empty_run_gives_only_not_run_rows(tmp_path):
    claims = claims_table(load_run(tmp_path / "nothing"))
    assert set(claims["verdict"]) == {NOT_RUN}
    times = summary.notebook_times(load_run(tmp_path / "nothing"))
    assert set(times.loc[times.index != "total", "status"]) == {NOT_RUN}


def scaling_outputs(correct_by_value: dict[int, list[bool]], model="RL") -> pd.DataFrame:
    rows = [{"model": model, "method": "min_steps", "value": v, "question_id": f"q{i}", "correct": c,
             "reasoning_tokens": 100 * (v + 1)} for v, cs in correct_by_value.items() for i, c in enumerate(cs)]
    return pd.DataFrame(rows)


def test_scaling_claim_pairs_the_most_and_least_forcing_on_the_questions(run):
    d = manifest(run, "07_inference_scaling")
    same = [True] * 10 + [False] * 30
    scaling_outputs({0: same, 2: same, 6: same}).to_parquet(d / "outputs.parquet")
    claim = claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)"]
    assert claim["verdict"] == "reproduced" and claim["this run"].startswith("RL, min_steps 0 -> 6 (100 -> 700")
    assert "+0.00 points (95% CI +0.00 to +0.00" in claim["this run"] and "40 questions" in claim["this run"]
    scaling_outputs({0: same, 6: [True] * 30 + [False] * 10}).to_parquet(d / "outputs.parquet")
    assert claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)", "verdict"] == "contradicted"
    # a noisy, wide interval around 0 is not evidence of no scaling
    rng = np.random.default_rng(0)
    scaling_outputs({0: list(rng.random(12) < 0.5), 6: list(rng.random(12) < 0.5)}).to_parquet(d / "outputs.parquet")
    assert claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)", "verdict"] == "inconclusive"
    scaling_outputs({0: same}).to_parquet(d / "outputs.parquet")
    assert claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)", "verdict"] == NOT_RUN


def test_cpt_claim_compares_two_runs_question_by_question(run, tmp_path):
    other = tmp_path / "runs" / "cpu_no_cpt"
    manifest(other, "06_evaluation")
    qs = [f"q{i}" for i in range(40)]
    scores = lambda correct: pd.DataFrame({"question_id": qs, "split": "diamond", "stage": "RL", "correct": correct})
    scores([True] * 20 + [False] * 20).to_parquet(run / "06_evaluation" / "scores.parquet")
    scores([True] * 19 + [False] * 21).to_parquet(other / "06_evaluation" / "scores.parquet")
    row = claims_table(load_run(run), no_cpt_run=load_run(other)).loc["CPT might be redundant (small models)"]
    # one question lost of 40: -2.5 points, its interval reaching below the -3.53 margin
    assert row["verdict"] == "inconclusive" and "-2.50 points" in row["this run"] and "40 questions" in row["this run"]
    scores([True] * 20 + [False] * 20).to_parquet(other / "06_evaluation" / "scores.parquet")
    row = claims_table(load_run(run), no_cpt_run=load_run(other)).loc["CPT might be redundant (small models)"]
    assert row["verdict"] == "reproduced"  # the same answers: no loss at all
    scores([False] * 40).to_parquet(other / "06_evaluation" / "scores.parquet")
    row = claims_table(load_run(run), no_cpt_run=load_run(other)).loc["CPT might be redundant (small models)"]
    assert row["verdict"] == "contradicted"


def test_reproducibility_tables(run):
    r = load_run(run)
    times = summary.notebook_times(r)
    assert times.loc["02_dag", "notebook wall time (s)"] == 12.5 and times.loc["02_dag", "git commit"] == "0123456789"
    assert times.loc["total", "notebook wall time (s)"] == 37.5 and times.loc["total", "status"] == "3 finished"
    assert times.loc["04_sft", "status"] == NOT_RUN
    manifest(run, "03_cpt", versions={**VERSIONS, "torch": "2.14.0"})
    versions = summary.versions_table(load_run(run))
    assert versions.loc["numpy", "same in every stage"] and versions.loc["numpy", "version"] == "2.4.6"
    assert not versions.loc["torch", "same in every stage"] and "03_cpt: 2.14.0" in versions.loc["torch", "version"]
    hw = summary.hardware()
    assert set(hw) == {"OS", "Python", "CPU", "logical cores", "RAM (GB)", "GPUs"} and hw["logical cores"] >= 1


def test_tables_show_as_html_and_markdown():
    frame = pd.DataFrame({"claim": ["a | b", "c"], "value": [1.23456, float("nan")]}).set_index("claim")
    t = summary.show_table(frame)
    html = t._repr_html_()
    assert "<table" in html and "<th>claim</th>" in html and "1.23" in html and "nan" not in html.lower()
    md = t._repr_markdown_().splitlines()
    assert md[0] == "| claim | value |" and md[1] == "|---|---|" and md[2] == "| a \\| b | 1.23 |" and md[3] == "| c |  |"


def test_finished_stages_lists_only_earlier_finished_ones(run):
    assert summary.finished_stages(run) == ("01_synthesis", "02_dag", "06_evaluation")
    assert summary.finished_stages(run, before="02_dag") == ("01_synthesis",)
