"""The params contract: presets validate, errors are clear, notebooks and presets agree with the schema."""

import ast
import dataclasses
from pathlib import Path

import papermill as pm
import pytest
import yaml

from steiner_lib import params as P
from steiner_lib.runner import notebook_sources, to_ipynb

ROOT = P.project_root()
PRESETS = sorted((ROOT / "params").glob("*.yaml"))


def test_the_four_presets_exist():
    assert {p.stem for p in PRESETS} >= {"smoke", "cpu", "gpu-small", "paper-32b"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_validates(preset):
    params = P.load_preset(preset)
    assert params.values["run_name"] == preset.stem


def test_cpu_preset_states_every_key_with_the_schema_default():
    cpu = yaml.safe_load((ROOT / "params" / "cpu.yaml").read_text())
    assert cpu == P.defaults()


def test_paper_preset_has_the_papers_numbers():
    v = P.load_preset(ROOT / "params" / "paper-32b.yaml").values
    assert v["task_n_train"] == 10_000
    assert v["task_n_train"] * v["dag_paths_per_dag"] == 50_000
    assert v["dag_max_reasoning_tokens"] == 4096 and v["dag_max_total_tokens"] == 8192
    assert "Qwen2.5-32B" in v["tokenizer_name_or_path"]


def write(tmp_path, text):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    return f


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    f = write(tmp_path, "teacher_eror_rate: 0.2\n")
    with pytest.raises(P.ParamsError) as e:
        P.load_preset(f)
    msg = str(e.value)
    assert str(f) in msg and "teacher_eror_rate" in msg and "teacher_error_rate" in msg


@pytest.mark.parametrize("text, key, words", [
    ("task_n_numbers: four\n", "task_n_numbers", "integer"),
    ("task_n_numbers: 4.5\n", "task_n_numbers", "integer"),
    ("run_seed: true\n", "run_seed", "integer"),
    ("teacher_error_rate: 1.5\n", "teacher_error_rate", "out of range"),
    ("task_n_train: 0\n", "task_n_train", "out of range"),
    ("dag_clusterer: kmeans\n", "dag_clusterer", "one of"),
    ("tokenizer_name_or_path: 3\n", "tokenizer_name_or_path", "string or null"),
    ("task_min_steps: 3\ntask_max_steps: 2\n", "task_min_steps", "exceeds"),
    ("teacher_kind: llm\n", "teacher_model", "null"),
    ("sft_temperature: 0\n", "sft_eval_samples", "greedy"),
    ("eval_temperature: 0\n", "eval_samples", "greedy"),
    ("dag_backtrack_by: number\n", "dag_backtrack_by", "one of"),
    ("task_max_number: 25\ntask_max_result: 20\n", "task_max_result", "must be above task_max_number"),
    ("task_max_result: lots\n", "task_max_result", "integer"),
    ("task_diamond_max_backtracks: 100\n", "task_diamond_max_backtracks", "must be below"),
    ("tokenizer_numbers: roman\n", "tokenizer_numbers", "one of"),
    ("base_fact_copies: -1\n", "base_fact_copies", "out of range"),
    ("sft_curve_points: -2\n", "sft_curve_points", "out of range"),
    ("scaling_budgets: 128,600\n", "scaling_max_new_tokens", "raise it to at least 676"),
])
def test_bad_values_are_named(tmp_path, text, key, words):
    with pytest.raises(P.ParamsError) as e:
        P.load_preset(write(tmp_path, text))
    assert key in str(e.value) and words in str(e.value)


def test_all_problems_in_one_error(tmp_path):
    with pytest.raises(P.ParamsError) as e:
        P.load_preset(write(tmp_path, "a_key: 1\ntask_n_numbers: x\n"))
    assert "2 problem(s)" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(P.ParamsError, match="no such params file"):
        P.load_preset(tmp_path / "nope.yaml")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load_preset(write(tmp_path, "a: [1,\n"))
    with pytest.raises(P.ParamsError, match="mapping"):
        P.load_preset(write(tmp_path, "- 1\n- 2\n"))


def test_ints_accepted_for_floats_and_hash_is_stable():
    a = P.validate({"teacher_error_rate": 0}, "x")
    b = P.validate({"teacher_error_rate": 0.0}, "x")
    assert a.stage_hash("01_synthesis") == b.stage_hash("01_synthesis")
    base = P.validate({}, "x")
    c = P.validate({"dag_explore_prob": 0.5}, "x")
    assert c.stage_hash("01_synthesis") == base.stage_hash("01_synthesis")  # not a 01 knob
    assert c.stage_hash("02_dag") != base.stage_hash("02_dag")


def test_from_notebook_rejects_ill_typed_globals():
    with pytest.raises(P.ParamsError, match="notebook 02_dag"):
        P.from_notebook("02_dag", {"dag_paths_per_dag": "five", "run_name": "x"})
    p = P.from_notebook("02_dag", {"dag_paths_per_dag": 7, "task_n_train": "ignored: not a 02 key"})
    assert p.dag.paths_per_dag == 7


def test_every_section_belongs_to_a_stage():
    used = {s for sections in P.STAGE_SECTIONS.values() for s in sections}
    assert used == set(P.SECTIONS)


@pytest.fixture(scope="module")
def notebook_parameters(tmp_path_factory):
    out = {}
    d = tmp_path_factory.mktemp("nb")
    for stage, src in notebook_sources().items():
        nb = to_ipynb(src, d / f"{stage}.ipynb")
        out[stage] = pm.inspect_notebook(str(nb))
    return out


def test_every_stage_has_a_notebook(notebook_parameters):
    assert set(notebook_parameters) == set(P.STAGES)


def test_notebook_parameters_cells_match_the_schema(notebook_parameters):
    defaults = P.defaults()
    for stage, found in notebook_parameters.items():
        assert set(found) == set(P.stage_keys(stage)), f"{stage}: parameters cell != its schema sections"
        for key, info in found.items():
            value = ast.literal_eval(info["default"])
            assert value == defaults[key] and type(value) is type(defaults[key]), f"{stage}: {key} default {info['default']} != schema {defaults[key]!r}"


def test_every_preset_key_is_read_by_some_notebook(notebook_parameters):
    read = set().union(*(set(v) for v in notebook_parameters.values()))
    for preset in PRESETS:
        keys = set(yaml.safe_load(preset.read_text()))
        assert keys <= read, f"{preset.name}: keys no notebook reads: {sorted(keys - read)}"
