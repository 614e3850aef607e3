"""Sampling from a model, which the later stages of the paper share: the LLM teacher, RL, 06 and 07.

Batched generation with a KV cache (inference) through a backend (backends: the lean decode loop
of lean_decode, transformers, or vLLM on GPUs, imported only there), and Steiner's logits
processor with its soft and budget-forcing variants (constraints). Import the modules themselves
(`from steiner_lib.generation import inference`): this file imports nothing.
"""
