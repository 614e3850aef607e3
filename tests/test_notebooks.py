"""Papermill smoke runs of every notebook on params/smoke.yaml, through the runner.

One session-scoped run is shared (the smoke_run fixture, tests/conftest.py): the first test that
asks for it runs the whole pipeline into a temporary run root; later tests check reuse, partial
reruns, failures and the artifacts, and tests/report/test_book_smoke.py renders its book.
"""

import json
import subprocess
import sys

import nbformat
import pytest
from helpers import preset
from steiner_lib import params as P
from steiner_lib.runner import RunnerError, notebook_sources, parse_only, run
from steiner_lib.stages import read_manifest, require

pytestmark = pytest.mark.notebooks
ROOT = P.project_root()


def test_every_notebook_runs_on_the_smoke_preset(smoke_run):
    tmp, path, outcomes = smoke_run
    assert [o.stage for o in outcomes] == list(notebook_sources())
    assert all(o.status == "ran" for o in outcomes)
    params = P.load_preset(path)
    for stage in notebook_sources():
        d, manifest = require(params, stage)
        assert manifest["params_hash"] == params.stage_hash(stage)
        executed = nbformat.read(tmp / "runs" / "smoke" / "executed" / f"{stage}.ipynb", as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors


def test_artifacts_of_the_data_half(smoke_run):
    tmp, path, _ = smoke_run
    params = P.load_preset(path)
    d01, m01 = require(params, "01_synthesis")
    for name in ("train.csv", "validation.csv", "diamond.csv", "control.csv", "trajectories.jsonl"):
        assert (d01 / name).exists(), name
    # The written splits: no evaluation start state appears in the training questions.
    from steiner_lib.data.dataset import load_countdown_questions

    states = {n: {q.problem.numbers for q in load_countdown_questions(d01 / f"{n}.csv").values()}
              for n in ("train", "validation", "diamond", "control")}
    for n in ("validation", "diamond", "control"):
        assert not states["train"] & states[n], n
    d02, m02 = require(params, "02_dag")
    assert m02["inputs"]["01_synthesis"]
    import datasets

    paths = datasets.load_from_disk(str(d02 / "paths"))
    assert len(paths) > 0 and all(paths["kept"])
    assert m02["metrics"]["n_dags"] == params.values["task_n_train"]


def test_cpt_replays_the_base_corpus_and_reports_what_it_kept(smoke_run):
    _, path, _ = smoke_run
    params = P.load_preset(path)
    assert params.values["cpt_replay_base_corpus"]  # the smoke preset takes the replay path
    _, m03 = require(params, "03_cpt")
    metrics = m03["metrics"]
    assert metrics["cpt_replays_base_corpus"] is True
    for key in ("arithmetic_facts_read", "list_drill_copy", "option_drill_letter_of_a_value"):
        assert 0 <= metrics[f"cpt_accuracy_{key}"] <= 1 and f"base_accuracy_{key}" in metrics


def test_sft_records_greedy_beside_sampled_decoding(smoke_run):
    _, path, _ = smoke_run
    params = P.load_preset(path)
    _, m04 = require(params, "04_sft")
    metrics = m04["metrics"]
    # The valid-step share is recorded only when some output writes a step (the smoke model may not).
    keys = ["solve_rate", "format_valid_share"] + (["valid_step_share"] if "heldout_greedy_valid_step_share" in metrics
                                                   else [])
    for key in keys:
        lo, value, hi = (metrics[f"heldout_greedy_{key}{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert 0 <= lo <= value <= hi <= 1 and f"heldout_{key}" in metrics


def test_the_lean_loop_writes_what_transformers_writes_on_the_smoke_sft_checkpoint(smoke_run):
    """Greedy, with Steiner's processor, on the trained smoke checkpoint (tests/generation/test_lean_decode.py covers
    random models): the default backend changes no output of 04-07."""
    from steiner_lib.evaluation import scoring
    from steiner_lib.generation import backends, inference
    from steiner_lib.tasks import gpqa
    from steiner_lib.training import checkpoints

    _, path, _ = smoke_run
    params = P.load_preset(path)
    model, tokenizer = checkpoints.load_stage_model(params, "04_sft", "sft")
    d01, _ = require(params, "01_synthesis")
    prompts, _ = scoring.heldout_prompts(gpqa.load_choice_questions(str(d01 / "diamond.csv"))[:8], 0)
    texts = {b: inference.generate(model, tokenizer, prompts, max_new_tokens=96, temperature=0.0, batch_size=8,
                                   progress=False, backend=b, logits_processor=backends.StepConstraints(tokenizer, 1, 3))
             for b in ("lean", "transformers")}
    assert texts["lean"] == texts["transformers"]


def test_rerun_with_same_params_skips_every_stage(smoke_run):
    _, path, _ = smoke_run
    outcomes = run(path, progress=False)
    assert [o.status for o in outcomes] == ["skipped"] * len(outcomes)


def test_changed_param_reruns_that_stage_and_later_only(smoke_run):
    tmp, _, _ = smoke_run
    path = preset(tmp, dag_paths_per_dag=2)
    outcomes = {o.stage: o for o in run(path, progress=False)}
    assert outcomes["01_synthesis"].status == "skipped"
    assert outcomes["02_dag"].status == "ran" and outcomes["02_dag"].reason == "params changed"


def test_unfinished_temp_dirs_are_never_read_as_finished(tmp_path):
    params = P.load_preset(preset(tmp_path))
    run_dir = P.run_dir(params)
    fake = run_dir / ".tmp-01_synthesis-deadbeef"
    fake.mkdir(parents=True)
    (fake / "manifest.json").write_text(json.dumps({"params_hash": params.stage_hash("01_synthesis")}))
    with pytest.raises(Exception, match="has not finished"):
        require(params, "01_synthesis")


def test_a_failing_notebook_stops_the_run_with_the_cell_error(tmp_path):
    # 02 alone on a fresh run root: its setup cell cannot find 01's artifacts.
    with pytest.raises(RunnerError) as e:
        run(preset(tmp_path), only="02", progress=False)
    msg = str(e.value)
    assert "notebook 02_dag failed" in msg and "StageMissingError" in msg and "--only 01" in msg
    assert (tmp_path / "runs" / "smoke" / "executed" / "02_dag.failed.ipynb").exists()


def test_only_names_must_exist():
    assert parse_only("01", ["01_synthesis", "02_dag"]) == ["01_synthesis"]
    assert parse_only("2,1", ["01_synthesis", "02_dag"]) == ["01_synthesis", "02_dag"]
    with pytest.raises(RunnerError, match="names no notebook"):
        parse_only("09", ["01_synthesis", "02_dag"])


def test_cli_rejects_bad_params_before_any_compute(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\ntask_n_numbers: many\n")
    r = subprocess.run([sys.executable, "-m", "steiner_lib", "run", "--params", str(bad)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "task_n_numbers" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "runs").exists()


def test_artifacts_of_the_scaling_stage(smoke_run):
    # The smoke preset runs every code path of 07: all methods, the soft bias and both retrained variants.
    import pandas as pd

    tmp, path, _ = smoke_run
    d, manifest = require(P.load_preset(path), "07_inference_scaling")
    for name in ("scaling_curves.csv", "outputs.parquet", "backtrack_events.parquet", "context_rates.csv",
                 "length_bins.csv"):
        assert (d / name).exists(), name
    curves = pd.read_csv(d / "scaling_curves.csv")
    assert {"min_steps", "budget", "vote", "soft_bias"} <= set(curves["method"])
    assert {"SFT", "RL", "SFT (long paths)", "RL depth-heavy", "RL breadth-heavy"} <= set(curves["model"])
    assert "soft_minus_hard_delta" in manifest["metrics"]
    # every cause has its tests, each with a verdict of the cause rule; the sample sizes are recorded
    from steiner_lib.evaluation import scaling

    causes = pd.read_csv(d / "cause_tests.csv", index_col=0)
    assert sorted({c[0] for c in causes["cause"]}) == ["1", "2", "3", "4"]
    assert set(causes["verdict"]) <= set(scaling.CAUSE_VERDICTS)
    variants = causes.loc[["long_path_variant", "reward_depth_heavy", "reward_breadth_heavy"], "measurement"]
    assert not variants.str.startswith("not run").any()  # the smoke preset retrains the variants
    assert {f"cause_{k}_verdict" for k in causes.index} <= set(manifest["metrics"])
    assert (d / "sample_sizes.csv").exists() and "power_questions_needed_max" in manifest["metrics"]


def test_the_evaluation_stage_records_its_sample_sizes(smoke_run):
    import pandas as pd

    _, path, _ = smoke_run
    d, manifest = require(P.load_preset(path), "06_evaluation")
    sizes = pd.read_csv(d / "sample_sizes.csv", index_col=0)
    assert "diamond: RL + logits processor - RL (logits processor)" in sizes.index
    assert {"questions", "half-width now (points)", "questions needed", "target met"} <= set(sizes.columns)
    assert manifest["metrics"]["power_questions_needed_max"] == pd.to_numeric(sizes["questions needed"]).max()


def test_the_soft_bias_raises_proceed_at_a_step_end_of_the_smoke_rl_checkpoint(smoke_run):
    """On the trained smoke RL checkpoint, at a step end with fewer than min_steps done, SoftReasoningBias
    raises P(<|reasoning_proceed|>) right after the step_end and after the newline the format writes there
    (where a trained model takes its decision): the log-odds of proceed move by exactly the bias, nothing
    else intervening, so P(proceed) goes from p to p e^b / (1 - p + p e^b)."""
    import math

    from steiner_lib import format as fmt
    from steiner_lib.evaluation import scoring, scaling
    from steiner_lib.tasks import gpqa
    from steiner_lib.training import checkpoints

    _, path, _ = smoke_run
    params = P.load_preset(path)
    model, tokenizer = checkpoints.load_stage_model(params, "05_rl", "rl")
    d01, _ = require(params, "01_synthesis")
    prompt = scoring.heldout_prompts(gpqa.load_choice_questions(str(d01 / "diamond.csv"))[:1], 0)[0][0]
    step = fmt.render_step(fmt.Step("Step 1: 3 + 5", "3 + 5 = 8", "8", "fine"))
    bias = params.scaling.soft_bias
    nudges = scaling.step_end_nudges(model, tokenizer, prompt, fmt.REASONING_START + "\n" + step + "\n", min_steps=3,
                                     bias=bias, temperature=1.0)
    assert nudges["after"].tolist() == ["step_end", "whitespace"] and (nudges["steps_done"] == 1).all()
    for r in nudges.itertuples():
        moved = r.p_free * math.exp(bias) / (1 - r.p_free + r.p_free * math.exp(bias))
        assert r.p_soft > r.p_free and r.p_soft == pytest.approx(moved, rel=1e-6), r
        assert r.log_odds_shift == pytest.approx(bias, abs=1e-6), r
    # with min_steps reached there is no nudge: the bias acts only where the rule favours proceed
    assert scaling.step_end_nudges(model, tokenizer, prompt, fmt.REASONING_START + "\n" + step + "\n", min_steps=1,
                                   bias=bias).empty


def test_budget_forced_outputs_of_the_smoke_run_end_only_on_a_complete_step(smoke_run):
    """Every budget-forcing output of 07 that ends its reasoning ends it right after a step_end: the forcing
    leaves no error of its own (scoring.error_causes: none "ended mid-step"); 07 counts what remains."""
    import re

    import pandas as pd

    from steiner_lib import format as fmt
    from steiner_lib.evaluation import scoring

    _, path, _ = smoke_run
    d, _ = require(P.load_preset(path), "07_inference_scaling")
    outputs = pd.read_parquet(d / "outputs.parquet")
    budget = outputs[outputs["method"] == "budget"]
    assert len(budget)
    ends = re.compile(re.escape(fmt.STEP_END) + r"\s*" + re.escape(fmt.REASONING_END))
    for text in budget["completion"]:
        assert "ended mid-step" not in scoring.error_causes(text), text
        if fmt.REASONING_END in text:
            assert ends.search(text) and ends.search(text).end() == text.index(fmt.REASONING_END) + len(fmt.REASONING_END)
    table = pd.read_csv(d / "budget_errors.csv")
    # the table covers the sequential-scaling models (07 adds the reward variants' outputs after it)
    assert (table["ended mid-step"] == 0).all()
    assert table["outputs"].sum() == len(budget[budget["model"].isin(set(table["model"]))])
    decisions = pd.read_csv(d / "soft_decisions.csv")
    assert decisions["min_steps"].tolist() == sorted(set(outputs.loc[outputs["method"] == "soft_bias", "value"]))
