"""Generation backends: the choice (and its fallback), the transformers path, the vLLM plumbing.

vLLM is not installed here: its generation tests skip (pytest.importorskip), and everything up
to the engine start (backend choice, lazy handles, TRL's config, the params) is tested here.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access, ever

import pytest  # noqa: E402

from steiner_lib import params as P  # noqa: E402
from steiner_lib.format import REASONING_START, SPECIAL_TOKENS  # noqa: E402
from steiner_lib.generation import backends  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402

TINY = modeling.ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            max_position_embeddings=256)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Qwen2 with the 17 special tokens, saved as a checkpoint directory."""
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 300)
    model = modeling.build_model(tok, TINY, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    from steiner_lib.training.checkpoints import save_checkpoint

    save_checkpoint(model, tok, path)
    return path, model, tok


PROMPTS = [modeling.chat_text("Which is larger, 3 or 7?"), modeling.chat_text("Name a prime.")]


# --------------------------------------------------------------------------- choosing the backend


def test_lean_and_transformers_are_always_themselves(monkeypatch):
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    assert backends.resolve_backend("transformers") == "transformers"
    assert backends.resolve_backend("lean") == "lean"


def test_auto_falls_back_to_the_lean_loop_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="steiner_lib.generation.backends"):
        assert backends.resolve_backend("auto", "evaluation") == "lean"
    assert "evaluation: backend auto -> lean" in caplog.text and "pip install .[gpu]" in caplog.text
    caplog.clear()
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="steiner_lib.generation.backends"):
        assert backends.resolve_backend("auto") == "lean"
    assert "no CUDA GPU" in caplog.text
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert backends.resolve_backend("auto") == "vllm"


def test_asking_for_vllm_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install \.\[gpu\].*'auto'"):
        backends.resolve_backend("vllm", "RL rollouts")
    with pytest.raises(ValueError, match="not one of"):
        backends.resolve_backend("tgi")


def test_vllm_available_matches_the_import():
    try:
        import vllm  # noqa: F401
        present = True
    except ImportError:
        present = False
    assert backends.vllm_available() == present


# --------------------------------------------------------------------------- the transformers path


def test_generate_on_transformers_equals_inference_generate(tiny):
    from steiner_lib.generation import inference

    _, model, tok = tiny
    ours = backends.generate(model, tok, PROMPTS, max_new_tokens=6, temperature=0.0, progress=False)
    ref = inference.generate(model, tok, PROMPTS, max_new_tokens=6, temperature=0.0, progress=False)
    assert ours == ref and len(ours) == 2 and all(len(o) == 1 for o in ours)
    with pytest.raises(TypeError, match="list of prompt texts"):
        backends.generate(model, tok, PROMPTS[0], max_new_tokens=6, temperature=0.0)


def test_a_prompt_with_its_own_seed_draws_the_same_in_any_batch(tiny):
    _, model, tok = tiny
    draw = dict(max_new_tokens=6, temperature=1.0, n_samples=2, progress=False, backend="transformers")
    together = backends.generate(model, tok, PROMPTS, seed=[5, 9], **draw)
    swapped = backends.generate(model, tok, PROMPTS[::-1], seed=[9, 5], **draw)
    assert together == swapped[::-1]
    assert together[1] == backends.generate(model, tok, PROMPTS[1:], seed=[9], **draw)[0]
    assert together[0] != backends.generate(model, tok, PROMPTS[:1], seed=[6], **draw)[0]  # the seed matters
    with pytest.raises(ValueError, match="one seed per prompt"):
        backends.generate(model, tok, PROMPTS, seed=[5], **draw)


def test_extra_stop_tokens_end_the_completion_early(tiny):
    _, model, tok = tiny
    greedy = dict(temperature=0.0, progress=False)
    first = backends.generate(model, tok, PROMPTS[:1], max_new_tokens=1, **greedy)[0][0]
    [stop] = tok(first, add_special_tokens=False)["input_ids"]  # the first token the model writes
    assert backends.generate(model, tok, PROMPTS[:1], max_new_tokens=8, **greedy)[0][0].startswith(first)
    assert backends.generate(model, tok, PROMPTS[:1], max_new_tokens=8, stop_token_ids=[stop], **greedy) == [[""]]


def test_a_foreign_model_keeps_its_own_tokenizer(tiny, tmp_path):
    """foreign=True (the LLM teacher's model): the tokenizer as saved, without the chat template
    checkpoints.load_tokenizer would set, and generation without the 14-token check."""
    path, model, tok = tiny
    plain = tmp_path / "plain"
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token,
                                   pad_token=tok.pad_token)
    model.save_pretrained(plain)
    bare.save_pretrained(plain)
    own_model, own_tok = backends.load_model(plain, "transformers", foreign=True)
    assert own_tok.chat_template is None
    assert backends.load_model(plain, "transformers")[1].chat_template is not None
    greedy = dict(max_new_tokens=4, temperature=0.0, progress=False, backend="transformers")
    assert backends.generate(own_model, own_tok, PROMPTS, reasoning_tokens=False, **greedy) == \
        backends.generate(model, tok, PROMPTS, **greedy)


def test_step_constraints_drive_the_transformers_processor(tiny):
    """An untrained model writes no reasoning tokens; with the constraints, it must start with one."""
    _, model, tok = tiny
    free = backends.generate(model, tok, PROMPTS, max_new_tokens=4, temperature=0.0, progress=False)
    assert not any(o[0].startswith(REASONING_START) for o in free)
    forced = backends.generate(model, tok, PROMPTS, max_new_tokens=4, temperature=0.0, progress=False,
                               logits_processor=backends.StepConstraints(tok, 0, 1))
    assert all(o[0].startswith(REASONING_START) for o in forced)


def test_stage_eval_constraints_are_step_constraints(tiny):
    from steiner_lib.evaluation import stage_table

    _, _, tok = tiny
    c = stage_table.constraints_factory(tok, 2, 6)
    assert isinstance(c, backends.StepConstraints) and (c.min_steps, c.max_steps) == (2, 6)
    processors = c(17)
    assert len(processors) == 1 and processors[0].prompt_length == 17


def test_load_model_with_transformers_round_trips_the_checkpoint(tiny):
    path, model, tok = tiny
    loaded, tok2 = backends.load_model(path, "transformers")
    assert not isinstance(loaded, backends.VLLMModel)
    assert tok2.get_vocab() == tok.get_vocab()
    a = backends.generate(loaded, tok2, PROMPTS, max_new_tokens=5, temperature=0.0, progress=False)
    b = backends.generate(model, tok, PROMPTS, max_new_tokens=5, temperature=0.0, progress=False)
    assert a == b


# --------------------------------------------------------------------------- the vLLM plumbing (no engine)


def test_load_model_with_vllm_gives_a_lazy_handle(tiny, monkeypatch):
    path, _, tok = tiny
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    handle, tok2 = backends.load_model(path, "vllm", tensor_parallel_size=4, seed=3)
    assert handle == backends.VLLMModel(str(path), 4, 0.9, 3)
    assert backends._ACTIVE_ENGINE == {}  # nothing started yet
    assert all(t in tok2.get_vocab() for t in SPECIAL_TOKENS)


def test_the_vllm_path_refuses_transformers_processors(tiny):
    from steiner_lib.generation.constraints import ReasoningConstraints

    path, _, tok = tiny
    handle = backends.VLLMModel(str(path))
    with pytest.raises(TypeError, match="StepConstraints"):
        backends.generate(handle, tok, PROMPTS, max_new_tokens=4, temperature=0.0,
                          logits_processor=[ReasoningConstraints(tok)])


def test_stage_loader_checks_the_stage(tmp_path):
    from steiner_lib.stages import StageMissingError

    params = P.validate({"run_root": str(tmp_path), "run_name": "x"}, "test")
    load = backends.stage_loader(params, "transformers")
    with pytest.raises(StageMissingError):
        load("05_rl", "rl")


def test_rl_config_switches_trl_to_colocated_vllm(monkeypatch, tmp_path):
    from steiner_lib.training import rl

    def rl_config(**overrides):  # the schema's rl defaults with the test's overrides
        return rl.stage_config(P.RlParams(), seed=0, **overrides)

    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    cfg = rl_config(backend="vllm", vllm_gpu_memory=0.4, vllm_tensor_parallel=2)
    args = rl.grpo_config(cfg, str(tmp_path))
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_gpu_memory_utilization == 0.4 and args.vllm_tensor_parallel_size == 2
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    assert not rl.grpo_config(rl_config(backend="auto"), str(tmp_path)).use_vllm
    assert not rl.grpo_config(rl_config(), str(tmp_path)).use_vllm
    with pytest.raises(ValueError, match="backend"):
        rl_config(backend="sglang")


def test_teacher_tensor_parallel_reaches_the_llm_teacher():
    import dataclasses as dc

    from steiner_lib.data.teachers import make_teacher

    teacher = make_teacher(dc.replace(P.TeacherParams(), kind="llm", model="m", backend="vllm", tensor_parallel=4))
    assert teacher.tensor_parallel_size == 4


# --------------------------------------------------------------------------- params


def test_cpu_defaults_generate_with_the_lean_loop_and_gpu_presets_with_vllm():
    cpu = P.load_preset(P.project_root() / "params" / "cpu.yaml").values
    assert (cpu["eval_backend"], cpu["rl_backend"], cpu["sft_eval_backend"], cpu["scaling_backend"]) == ("lean",) * 4
    assert cpu["teacher_backend"] == "transformers"  # the LLM teacher (GPU presets) generates one prompt at a time
    assert P.defaults()["eval_backend"] == backends.CPU_DEFAULT == "lean"
    for name in ("gpu-small", "paper-32b"):
        v = P.load_preset(P.project_root() / "params" / f"{name}.yaml").values
        assert (v["eval_backend"], v["rl_backend"], v["teacher_backend"]) == ("vllm",) * 3, name
        assert v["eval_benchmark"] == "hub:Idavidrein/gpqa/gpqa_diamond", name
    paper = P.load_preset(P.project_root() / "params" / "paper-32b.yaml").values
    assert paper["teacher_tensor_parallel"] > 1 and paper["eval_tensor_parallel"] > 1


def test_bad_backend_values_are_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("eval_backend: tgi\nrl_vllm_gpu_memory: 1.5\neval_tensor_parallel: 0\nscaling_backend: vllm\n")
    with pytest.raises(P.ParamsError) as e:
        P.load_preset(f)
    assert all(k in str(e.value) for k in ("eval_backend", "rl_vllm_gpu_memory", "eval_tensor_parallel",
                                           "scaling_backend", "'lean'"))


# --------------------------------------------------------------------------- with vLLM (GPU machines)


def test_vllm_generates_with_the_constraints(tiny):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM generation needs a CUDA GPU")
    path, _, tok = tiny
    handle, tok2 = backends.load_model(path, "vllm")
    out = backends.generate(handle, tok2, PROMPTS, max_new_tokens=4, temperature=0.0,
                            logits_processor=backends.StepConstraints(tok2, 0, 1), progress=False)
    assert all(o[0].startswith(REASONING_START) for o in out)
    handle.close()
