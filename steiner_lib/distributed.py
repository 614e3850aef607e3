"""What a stage needs to know when `accelerate launch` runs it as several processes (one per GPU).

The distribution itself is accelerate's (DDP, DeepSpeed ZeRO-3 or FSDP, from the config file in
configs/accelerate/, which the Trainers inside the notebooks pick up from the environment).
Every process runs the whole notebook, so the collective operations (training steps, generation
with sharded weights) happen on all of them in step; this module only decides who writes:
the main process publishes the stage (artifacts, checkpoints, figures, the executed notebook),
the others compute the same and throw their copies away.
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank (0 when not launched as several processes)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


_ZERO3_CONFIG = []  # keeps transformers' weak reference to the DeepSpeed config alive


def prepare_sharded_loading() -> None:
    """Call before loading a model in a launched process (no-op in a single process).

    The Trainers join the process group only when they are built, after the model is loaded, so
    without this every process reads the whole checkpoint into host RAM (Qwen2.5-32B in bf16:
    65 GB each, 520 GB for 8). This joins the group first (accelerate's PartialState, from the
    launcher's environment), which lets transformers load on rank 0 only under FSDP with
    `fsdp_cpu_ram_efficient_loading`; under DeepSpeed ZeRO-3 it also registers the launcher's
    DeepSpeed config as TrainingArguments would, so from_pretrained builds the model already
    sharded (zero.Init).
    """
    import os

    if world_size() <= 1:
        return
    from accelerate import PartialState

    PartialState()  # joins (or reuses) the process group described by the launcher's environment
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not _ZERO3_CONFIG:
        from accelerate.utils import DeepSpeedPlugin

        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision(os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))
        plugin.set_deepspeed_weakref()
        _ZERO3_CONFIG.append(plugin)


def full_state_dict(model) -> dict | None:
    """The model's whole weights on the main process, gathered from ZeRO-3 or FSDP shards.

    None when the weights are not sharded (save the model as it is), and on every process but the
    main one. Must be called by every process (it is a collective). ZeRO-3 is gathered one module
    at a time, so no GPU ever holds more than one layer beyond its shard.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if world_size() > 1 and is_deepspeed_zero3_enabled():
        import deepspeed

        state = {}
        for prefix, module in model.named_modules():
            params = list(module.named_parameters(recurse=False))
            if not params:
                continue
            with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None):
                if is_main_process():
                    for name, p in params:
                        state[f"{prefix}.{name}" if prefix else name] = p.detach().cpu().clone()
        return state if is_main_process() else None
    if world_size() > 1 and any(type(p).__name__ == "DTensor" for p in model.parameters()):  # FSDP2 shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if is_main_process() else None
    return None


def full_tensor(param):
    """A whole CPU copy of one parameter on every process, gathered when it is a ZeRO-3 shard
    (DeepSpeed marks those with `ds_id`) or an FSDP2 DTensor; a plain tensor is just copied.
    Must be called by every process when the weights are sharded (it is a collective)."""
    if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3: the local tensor is an empty placeholder
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            return param.detach().cpu().clone()
    if type(param).__name__ == "DTensor":  # FSDP2
        return param.full_tensor().detach().cpu()
    return param.detach().cpu().clone()


__all__ = ["rank", "world_size", "is_main_process", "prepare_sharded_loading", "full_state_dict", "full_tensor"]
