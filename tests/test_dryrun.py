"""Dry runs of the GPU presets: notebooks 01-06 on CPU, hub names replaced by a tiny local Qwen2.

Each preset's dry run takes about a minute here (2 shared cores). The unit tests check that
only hub names, vLLM backends, the hub GPQA source and sizes change; the runs check that every
notebook finishes and that the preset's mode switches (hub tokenizer, 14 added tokens, LoRA,
LLM teacher, embedding clusterer, GPQA-schema benchmark) really ran.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from steiner_lib import dryrun, params as P
from steiner_lib.format import SPECIAL_TOKENS

ROOT = P.project_root()
GPU_PRESETS = ["gpu-small", "paper-32b"]


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_only_hub_names_backends_gpqa_and_sizes_change(name, tmp_path):
    preset = ROOT / "params" / f"{name}.yaml"
    original = P.load_preset(preset).values
    values, subs = dryrun.dry_run_values(preset, tmp_path)
    changed = {s.key for s in subs}
    allowed = (set(dryrun.HUB_NAME_KEYS) | set(dryrun.BACKEND_KEYS) | set(dryrun.SHRINK) | set(dryrun.SHRINK_GRIDS)
               | {"eval_benchmark", "run_name", "run_root"})
    assert changed <= allowed, changed - allowed
    assert {k for k in original if values[k] != original[k]} == changed
    assert set(dryrun.HUB_NAME_KEYS) <= changed and "eval_benchmark" in changed
    assert all(values[k] == ("transformers" if k == "teacher_backend" else "lean") for k in dryrun.BACKEND_KEYS)
    for key in ("model_lora", "model_lora_r", "teacher_kind", "dag_clusterer", "dag_max_reasoning_tokens",
                "sft_max_length", "rl_credit", "rl_beta", "eval_lp_min_steps_grid", "eval_lp_max_steps_grid",
                "eval_tensor_parallel", "teacher_tensor_parallel"):
        assert values[key] == original[key], key
    P.validate(values, "dry run")  # the dry run's params are themselves valid


def test_the_standin_is_a_qwen2_without_the_reasoning_tokens(tmp_path):
    from transformers import AutoConfig

    from steiner_lib.training import modeling

    path = dryrun.build_hub_standin(tmp_path / "m")
    assert AutoConfig.from_pretrained(path).model_type == "qwen2"
    model, tok, added = modeling.load_pretrained_model(str(path))
    assert list(added) == list(SPECIAL_TOKENS)  # the hub-name path adds all 14, as for Qwen2.5
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_the_gpqa_standin_reads_like_the_real_file(tmp_path):
    from steiner_lib.tasks import gpqa

    qs = gpqa.load_choice_questions(str(dryrun.write_gpqa_standin(tmp_path / "g.csv")))
    assert len(qs) == len(dryrun.STANDIN_QUESTIONS) and qs[0].correct == "Nitrogen"


@pytest.fixture(scope="module", params=GPU_PRESETS)
def dry(request, tmp_path_factory):
    before = dict(os.environ)
    result = dryrun.dry_run(ROOT / "params" / f"{request.param}.yaml", tmp_path_factory.mktemp(request.param))
    assert dict(os.environ) == before  # the offline switches are restored
    return request.param, result


@pytest.mark.notebooks
def test_every_notebook_runs_in_the_dry_run(dry):
    name, result = dry
    assert [o.stage for o in result.outcomes] == list(P.STAGES)
    assert all(o.status == "ran" for o in result.outcomes)
    values = yaml.safe_load(result.params_path.read_text())
    run = P.run_dir(P.validate(values, "dry run"))
    executed = {s: (run / "executed" / f"{s}.ipynb").read_text() for s in P.STAGES}
    for stage, text in executed.items():
        assert '"output_type": "error"' not in text, stage
    # the preset's mode switches ran
    assert "added 14 tokens to" in executed["03_cpt"]  # the hub-name path, new token rows
    assert ("training LoRA adapters" in executed["03_cpt"]) == values["model_lora"]
    assert "Loading SentenceTransformer" in executed["02_dag"]  # the embedding clusterer
    trajectories = (run / "01_synthesis" / "trajectories.jsonl").read_text().splitlines()
    assert any('"fallback_recovery": true' in t for t in trajectories)  # the LLM teacher wrote (and failed)
    assert "gpqa_standin.csv" in executed["06_evaluation"]
    rl = json.loads((run / "05_rl" / "rl" / "tokenizer_config.json").read_text())
    assert all(t in json.dumps(rl) for t in SPECIAL_TOKENS)
    table = (run / "06_evaluation" / "stage_table.csv").read_text()
    assert "RL + logits processor" in table
