"""Launching a stage across processes: the accelerate configs, who writes, and two real launches on CPU.

A stage runs under `accelerate launch` (or torchrun) as N copies of the runner; each copy runs
the notebook in its own kernel, which inherits the launcher's environment, so the notebook's
Trainers join one process group. Here: `accelerate launch` with configs/accelerate/cpu.yaml (one
process) runs 04 (TRL's SFTTrainer), and torchrun with 2 processes runs 05 (the GRPO trainer)
as real DDP over gloo. The sharded engines (DeepSpeed ZeRO-3, FSDP) need GPUs: their configs
are checked against accelerate's schema only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steiner_lib import params as P
from steiner_lib.runner import RunnerError, run

ROOT = P.project_root()
CONFIGS = ROOT / "configs" / "accelerate"
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- the config files


def load_accelerate_config(path):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(path))


def test_every_accelerate_config_loads_with_accelerates_schema():
    found = {p.stem: load_accelerate_config(p) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert set(found) >= {"cpu", "ddp", "zero3", "zero3-offload", "fsdp"}
    kinds = {name: c.distributed_type.value for name, c in found.items()}
    assert kinds["cpu"] == "NO" and kinds["ddp"] == "MULTI_GPU" and kinds["fsdp"] == "FSDP"
    assert kinds["zero3"] == kinds["zero3-offload"] == "DEEPSPEED"
    assert found["zero3"].deepspeed_config["zero_stage"] == 3
    assert found["zero3"].deepspeed_config["zero3_save_16bit_model"]  # whole weights at save time
    assert found["zero3-offload"].deepspeed_config["offload_optimizer_device"] == "cpu"
    fsdp = found["fsdp"].fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    import transformers.models.qwen2.modeling_qwen2 as qwen2

    assert hasattr(qwen2, fsdp["fsdp_transformer_layer_cls_to_wrap"])  # the layer class FSDP wraps
    for name, c in found.items():
        if name != "cpu":
            assert c.mixed_precision == "bf16", name


def test_each_config_names_its_launch_command_with_real_files():
    for path in CONFIGS.glob("*.yaml"):
        text = path.read_text()
        assert f"--config_file configs/accelerate/{path.name}" in text, path.name
        for preset in {w for w in text.split() if w.startswith("params/")}:
            assert (ROOT / preset).exists(), (path.name, preset)


# --------------------------------------------------------------------------- who writes


@pytest.fixture
def rank1(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")


def test_a_non_main_process_computes_but_publishes_nothing(tmp_path, rank1):
    from steiner_lib import stages
    from steiner_lib.training import checkpoints, modeling

    params = P.validate({"run_root": str(tmp_path / "runs"), "run_name": "x"}, "test")
    writer = stages.StageWriter(params, "01_synthesis")
    writer.write_json("a.json", {"a": 1})
    manifest = writer.finish()
    assert manifest["stage"] == "01_synthesis"
    assert not stages.stage_dir(params, "01_synthesis").exists()
    assert not list((tmp_path / "runs" / "x").iterdir())  # the temporary directory is gone too
    assert ROOT not in stages.figures_dir(params).parents

    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:5], 280)
    model = modeling.build_model(tok, modeling.ModelConfig(hidden_size=16, num_layers=1, num_heads=2,
                                                           num_kv_heads=1, intermediate_size=16))
    checkpoints.save_checkpoint(model, tok, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_a_launch_runs_one_stage_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"run_root": str(tmp_path / "runs"), "run_name": "x"}))
    with pytest.raises(RunnerError, match="one stage at a time.*--only"):
        run(preset, only="03,04", progress=False)


# --------------------------------------------------------------------------- real launches on CPU


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A smoke run with 01-03 finished, ready for training stages to be launched."""
    tmp = tmp_path_factory.mktemp("launch")
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    values.update(run_root=str(tmp / "runs"), run_name="launch", task_n_train=8, dag_paths_per_dag=2, base_steps=2,
                  cpt_steps=2, sft_steps=2, sft_eval_questions=2, rl_steps=1, rl_eval_questions=2)
    preset = tmp / "launch.yaml"
    preset.write_text(yaml.safe_dump(values))
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the kernels inherit it: tiny models run faster on one thread
    try:
        run(preset, only="01,02,03", progress=False)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before
    return preset


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.notebooks
def test_accelerate_launch_runs_the_sft_stage(prepared):
    r = launch([str(BIN / "accelerate"), "launch", "--config_file", str(CONFIGS / "cpu.yaml"), "-m", "steiner_lib",
                "run", "--params", str(prepared), "--only", "04", "--force", "--no-progress"])
    assert "04_sft: ran" in r.stdout
    params = P.load_preset(prepared)
    manifest = json.loads((P.run_dir(params) / "04_sft" / "manifest.json").read_text())
    assert manifest["processes"] == 1 and manifest["metrics"]["sft_steps"] == params.values["sft_steps"]


@pytest.mark.notebooks
def test_two_processes_train_the_rl_stage_together(prepared):
    from steiner_lib.training.checkpoints import load_stage_model

    launch([str(BIN / "accelerate"), "launch", "--config_file", str(CONFIGS / "cpu.yaml"), "-m", "steiner_lib",
            "run", "--params", str(prepared), "--only", "04", "--no-progress"])  # 05 needs 04 (skipped when done)
    r = launch([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "steiner_lib", "run",
                "--params", str(prepared), "--only", "05", "--no-progress"])
    assert r.stdout.count("05_rl: ran") == 2  # both processes ran the notebook
    params = P.load_preset(prepared)
    run_dir = P.run_dir(params)
    manifest = json.loads((run_dir / "05_rl" / "manifest.json").read_text())
    assert manifest["processes"] == 2  # one torch.distributed group: the GRPO trainer ran as DDP
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]  # rank 1 left nothing behind
    model, tok = load_stage_model(params, "05_rl", "rl")  # rank 0's checkpoint is whole
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
