"""Model checkpoints that stages hand to each other: save, load, LoRA on and off.

A stage saves `model` and `tokenizer` side by side with `save_pretrained` under its run
directory; a later stage loads them through `load_stage_model`, which checks that the stage
finished (its manifest exists) and says which notebook to run when it did not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from steiner_lib.params import Params
from steiner_lib.stages import require
from steiner_lib.training import modeling

log = logging.getLogger("steiner_lib.training.checkpoints")


def load_tokenizer(path) -> object:
    """A tokenizer saved by this project. A tokenizer trained here is a PreTrainedTokenizerFast and
    is loaded as one: AutoTokenizer would map a directory whose config says qwen2 to
    Qwen2Tokenizer and rebuild its pre-tokenizer."""
    path = Path(path)
    config = json.loads((path / "tokenizer_config.json").read_text()) if (path / "tokenizer_config.json").exists() else {}
    if config.get("tokenizer_class") in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        if tok.chat_template is None:
            tok.chat_template = modeling.CHATML_TEMPLATE
        return tok
    return modeling.load_tokenizer(str(path))


def save_checkpoint(model, tokenizer, path) -> None:
    """save_pretrained of the model (LoRA adapters merged first) and its tokenizer into `path`.

    Under `accelerate launch` every process calls it (ZeRO-3 / FSDP shards are gathered, a
    collective) and the main process alone writes.
    """
    from steiner_lib import distributed

    path = Path(path)
    if hasattr(model, "merge_and_unload"):  # a PEFT model: store plain weights, loadable without PEFT
        model = model.merge_and_unload()
    state = distributed.full_state_dict(model)
    if not distributed.is_main_process():
        return
    model.save_pretrained(str(path), **({"state_dict": state} if state is not None else {}))
    tokenizer.save_pretrained(str(path))
    log.info("saved %s", path)


def load_checkpoint(path):
    """(model, tokenizer) from a directory written by save_checkpoint, the weights in the dtype they
    were saved in (transformers' dtype="auto"): model_dtype, chosen in 03, carries through the stages."""
    from transformers import AutoModelForCausalLM

    from steiner_lib import distributed

    distributed.prepare_sharded_loading()
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype="auto")
    return model, load_tokenizer(path)


def load_stage_model(params: Params, stage: str, name: str):
    """(model, tokenizer) saved as `name` by a finished `stage` of this run."""
    d, _ = require(params, stage)
    if not (d / name / "config.json").exists():
        raise FileNotFoundError(f"{d / name} holds no model: notebook {stage} did not save {name!r}")
    return load_checkpoint(d / name)


def maybe_lora(model, model_params):
    """Wrap in LoRA adapters when the params ask for it (new-token rows stay trainable)."""
    if not model_params.lora:
        return model
    log.info("training LoRA adapters of rank %d", model_params.lora_r)
    return modeling.wrap_lora(model, r=model_params.lora_r, alpha=2 * model_params.lora_r)


def model_config(model_params) -> "modeling.ModelConfig":
    """The built model's architecture from the params' model section."""
    p = model_params
    return modeling.ModelConfig(hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
                                num_kv_heads=p.num_kv_heads, intermediate_size=p.intermediate_size,
                                max_position_embeddings=p.max_position_embeddings,
                                tie_word_embeddings=p.tie_word_embeddings, dtype=p.dtype)
