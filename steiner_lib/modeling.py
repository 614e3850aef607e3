"""Tokenizers (and, from the training notebooks on, models).

At the CPU scale the run trains its own byte-level BPE tokenizer on this run's corpus:
the synthesized reasoning texts plus regular English text (the Python documentation
topics that ship with the standard library, `pydoc_data.topics`, PSF licence). Its
special tokens are Qwen2.5's ChatML tokens and Steiner's 14 reasoning tokens, so every
structural token counts as exactly one token, as it does for the paper's model. At GPU
scale the base model's own tokenizer is loaded by name and the 14 tokens are added.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from steiner_lib.format import SPECIAL_TOKENS

log = logging.getLogger("steiner_lib.modeling")

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Qwen2.5's ChatML layout, without a default system prompt (the paper used none for evaluation).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def regular_text() -> list[str]:
    """Offline English text: the Python documentation topics of the standard library (PSF licence)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def chat_text(user: str, assistant: str | None = None) -> str:
    """ChatML text of one exchange; with assistant=None, the prompt that asks for the reply."""
    text = f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    return text if assistant is None else text + assistant + IM_END


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(CHAT_TOKENS) + list(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT, bos_token=None, unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    fast.chat_template = CHATML_TEMPLATE
    log.info("trained a byte-level BPE tokenizer: %d tokens", len(fast))
    return fast


def load_tokenizer(name_or_path: str):
    """A pretrained tokenizer (hub name or local path) with Steiner's 14 tokens added if missing."""
    from transformers import AutoTokenizer

    local = Path(name_or_path).exists()
    tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
    missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_additional_special_tokens=False)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    return tok


def count_tokens(tokenizer, texts: list[str], batch_size: int = 1000) -> list[int]:
    """Token counts of many texts (special tokens count as one each; no BOS/EOS added)."""
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False)["input_ids"]
        out += [len(e) for e in enc]
    return out
