"""One config per training stage, built once from its params section: the schema (steiner_lib/params.py)
holds every default, and notebook 05's path and 07's variant paths give the same config for the same params."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from helpers import ROOT

from steiner_lib import params as P
from steiner_lib import stages
from steiner_lib.evaluation import scaling
from steiner_lib.training import rl, sft
from steiner_lib.training.rewards import RewardWeights


# stage -> (config class, stage_config, params section, config field -> schema key, fields set from run_seed)
STAGES = {
    "sft": (sft.SFTStageConfig, sft.stage_config, "sft", sft.FROM_PARAMS, ("seed",)),
    "rl": (rl.RLStageConfig, rl.stage_config, "rl", {name: name for name in rl.FROM_PARAMS}, ("seed", "prompt_seed")),
}


def schema_default(section: str, key: str):
    return P.defaults()[P.flat_key(section, key)]


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_config_of_the_schema_defaults_has_the_schemas_values(stage):
    cls, stage_config, section, from_params, seeds = STAGES[stage]
    cfg = stage_config(P.SECTIONS[section](), seed=P.RunParams().seed)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, key in from_params.items():
        # A default here would be a second copy of the schema's, free to drift from it.
        assert fields[name].default is dataclasses.MISSING and fields[name].default_factory is dataclasses.MISSING, (
            f"{cls.__name__}.{name} has a default: its default is the schema's {section}_{key}")
        assert getattr(cfg, name) == schema_default(section, key), f"{cls.__name__}.{name} vs {section}_{key}"
    for name in seeds:
        assert fields[name].default is dataclasses.MISSING and getattr(cfg, name) == schema_default("run", "seed")
    # Every field without a default is one stage_config fills: nothing comes from anywhere else.
    required = {n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert required == set(from_params) | set(seeds)


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_config_takes_every_value_of_a_preset(stage):
    """paper-32b changes most training keys (and sets vllm, checkpointing): each reaches the config."""
    cls, stage_config, section, from_params, seeds = STAGES[stage]
    p = P.load_preset(ROOT / "params" / "paper-32b.yaml")
    cfg = stage_config(p.section(section), seed=5)
    assert {name: getattr(cfg, name) for name in from_params} == {
        name: p.values[P.flat_key(section, key)] for name, key in from_params.items()}
    assert {getattr(cfg, name) for name in seeds} == {5}
    assert stage_config(p.section(section), seed=5, logging_steps=1) == dataclasses.replace(cfg, logging_steps=1)


def test_reward_weights_defaults_are_the_schemas():
    for f in dataclasses.fields(RewardWeights):
        assert f.default == schema_default("rl", f.name), f"RewardWeights.{f.name} vs rl_{f.name}"
    p = P.load_preset(ROOT / "params" / "smoke.yaml")
    changed = P.validate({**p.values, "rl_w_in_degree": 0.7, "rl_format_penalty": 0.2}, source="test")
    assert RewardWeights.from_params(changed.rl) == RewardWeights(w_in_degree=0.7, format_penalty=0.2)


def test_search_teacher_defaults_are_the_schemas():
    from steiner_lib.data import teachers

    for f in dataclasses.fields(teachers.SearchTeacher):
        assert f.default == schema_default("teacher", f.name), f"SearchTeacher.{f.name} vs teacher_{f.name}"
    p = P.validate({**P.defaults(), "teacher_error_rate": 0.5, "teacher_self_backtracks": 7}, source="test")
    assert teachers.search_teacher(p.teacher) == teachers.SearchTeacher(error_rate=0.5, self_backtracks=7)


def test_the_built_models_shape_defaults_are_the_schemas():
    from steiner_lib.training import checkpoints, modeling

    schema_fields = {f.name for f in dataclasses.fields(P.ModelParams)}
    shared = [f for f in dataclasses.fields(modeling.ModelConfig) if f.name in schema_fields]
    assert len(shared) == 8  # the shape, the tie and the dtype; attention kernel and rope are not params
    for f in shared:
        assert f.default == schema_default("model", f.name), f"ModelConfig.{f.name} vs model_{f.name}"
    assert checkpoints.model_config(P.ModelParams()) == modeling.ModelConfig()


def test_notebooks_build_their_stage_configs_with_stage_config():
    sources = {p.stem: p.read_text() for p in (ROOT / "notebooks").glob("*.py")}
    for source in sources.values():
        assert "SFTStageConfig(" not in source and "RLStageConfig(" not in source and "RewardWeights(" not in source
    assert "sft.stage_config(cfg.sft, seed=cfg.run.seed)" in sources["04_sft"]
    assert "rl.stage_config(r, seed=cfg.run.seed)" in sources["05_rl"] and "r = cfg.rl" in sources["05_rl"]


@pytest.fixture
def finished_04_and_05(tmp_path):
    """A preset with non-default sft and rl values, and the manifests notebooks 04 and 05 would leave."""
    p = P.load_preset(ROOT / "params" / "paper-32b.yaml")
    p = P.validate({**p.values, "run_root": str(tmp_path), "run_seed": 3}, source="test")
    for stage in ("04_sft", "05_rl"):
        stages.StageWriter(p, stage).finish()
    reader = stages.StageWriter(p, "07_inference_scaling", inputs=("04_sft", "05_rl"))  # as notebook 07 opens
    return p, reader


def test_the_reward_variants_train_with_notebook_05s_config(finished_04_and_05, monkeypatch):
    p, reader = finished_04_and_05
    in_05 = rl.stage_config(p.rl, seed=p.run.seed)  # notebook 05's call
    got = {}

    def capture(model, tokenizer, questions, graphs, weights, cfg):
        got.update(weights=weights, cfg=cfg)
        return SimpleNamespace(model=model)

    monkeypatch.setattr(rl, "train_rl", capture)
    rl_params = reader.input_params("05_rl").rl  # notebook 07's path: 05's manifest
    variant = RewardWeights(w_in_degree=0.0)
    scaling.train_reward_variant("model", "tok", {}, {}, variant, rl_params, steps=7, seed=p.run.seed)
    assert got["weights"] == variant
    # The only differences are the variant's explicit overrides.
    assert got["cfg"] == dataclasses.replace(in_05, steps=7, progress=False, logging_steps=5)
    assert RewardWeights.from_params(rl_params) == RewardWeights.from_params(p.rl)


def test_the_long_path_variant_trains_with_notebook_04s_config(finished_04_and_05, monkeypatch):
    p, reader = finished_04_and_05
    in_04 = sft.stage_config(p.sft, seed=p.run.seed)  # notebook 04's call
    got = {}

    def capture(model, tokenizer, train_ds, eval_ds, cfg, callbacks=None):
        got.update(eval_ds=eval_ds, cfg=cfg)
        return SimpleNamespace(steps=cfg.max_steps, final_train_loss=0.0)

    monkeypatch.setattr(scaling, "long_paths", lambda paths, share: (paths, 100))
    monkeypatch.setattr(sft, "sft_dataset", lambda ds: ds)
    monkeypatch.setattr(sft, "train_sft", capture)
    sft_params = reader.input_params("04_sft").sft  # notebook 07's path: 04's manifest
    scaling.train_long_path_variant("model", "tok", ["a path"], 0.5, steps=20, sft_params=sft_params, seed=p.run.seed)
    assert got["eval_ds"] is None
    assert got["cfg"] == dataclasses.replace(in_04, max_steps=20, eval_share=0.0, progress=False, logging_steps=10)
