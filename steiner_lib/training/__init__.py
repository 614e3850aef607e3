"""The three training stages of the paper (notebooks 03, 04 and 05): CPT, SFT and RL with step rewards.

The tokenizer and the model (modeling) and the checkpoints one stage hands to the next
(checkpoints); the base-model stand-in and continual pre-training (pretraining); SFT on the step
template (sft); RL on TRL's GRPO with per-token advantages from step-level rewards, each step
scored by the DAG node it reaches (rewards, rl). Import the modules themselves
(`from steiner_lib.training import sft`): this file imports nothing.
"""
