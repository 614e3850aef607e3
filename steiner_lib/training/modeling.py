"""Tokenizers and models.

At the CPU scale the run trains its own byte-level BPE tokenizer on this run's corpus:
the synthesized reasoning texts plus regular English text (the Python documentation
topics that ship with the standard library, `pydoc_data.topics`, PSF licence). Its
special tokens are Qwen2.5's ChatML tokens and Steiner's 14 reasoning tokens, so every
structural token counts as exactly one token, as it does for the paper's model. At GPU
scale the base model's own tokenizer is loaded by name and the 14 tokens are added.

Models: at CPU scale a small Qwen2-architecture causal LM is built from `ModelConfig`
(`build_model`); at GPU scale a Qwen2.5 checkpoint is loaded by name
(`load_pretrained_model`), the missing tokens are added and their embedding rows start as
the mean of their plain-words description (`init_token_embeddings`). `wrap_lora` adds
PEFT LoRA adapters; `model_flops_per_token` is the FLOP count behind MFU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

from steiner_lib import format as fmt
from steiner_lib.format import SPECIAL_TOKENS
from steiner_lib.params import ModelParams

log = logging.getLogger("steiner_lib.training.modeling")

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


# The split pattern of Qwen2 / Qwen2.5's tokenizer.json (single digits: \\p{N} without a +).
QWEN2_PRETOKENIZE_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# The same pattern with a whole run of digits as one piece: BPE then learns frequent numbers as tokens.
WHOLE_NUMBERS_PATTERN = QWEN2_PRETOKENIZE_PATTERN.replace(r"|\p{N}", r"|\p{N}+")
# And with the space before a number in its piece (GPT-2's rule): " 19" is one token, so a list
# "16, 19, 5" is three number tokens between commas and copying it is the plain induction of one
# token after another (digit by digit every number sits behind the same space token).
SPACED_NUMBERS_PATTERN = QWEN2_PRETOKENIZE_PATTERN.replace(r"|\p{N}", r"| ?\p{N}+")
NUMBER_SPLITS = ("digits", "whole", "spaced")
_NUMBER_PATTERNS = dict(zip(NUMBER_SPLITS, (QWEN2_PRETOKENIZE_PATTERN, WHOLE_NUMBERS_PATTERN, SPACED_NUMBERS_PATTERN)))


def qwen2_pre_tokenizer(numbers: str = "digits"):
    """Qwen2's pre-tokenizer: its split pattern (one digit per piece), then byte-level bytes.
    numbers="whole" keeps a run of digits together, "spaced" with the space before it (see
    train_bpe_tokenizer)."""
    from tokenizers import Regex, pre_tokenizers

    if numbers not in NUMBER_SPLITS:
        raise ValueError(f"numbers={numbers!r}: expected one of {NUMBER_SPLITS}")
    pattern = _NUMBER_PATTERNS[numbers]
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, numbers: str = "digits"):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer.

    numbers="digits" (Qwen2's rule) spells every number digit by digit; numbers="whole" lets BPE
    merge a run of digits, so that the numbers frequent in `texts` (the task's values) are one
    token each: copying a number from the context is then copying one token, where digit by digit
    every number hides behind the same space and comma tokens (chapter 3's knowledge probe
    measures copying in every run)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(CHAT_TOKENS) + list(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    # Qwen2's pre-tokenizer: every digit is its own piece and a space never sticks to a digit, so a
    # number is spelled by the same tokens wherever it appears (in the question, a step name, a
    # backtrack target). With whole-number tokens (" 19" in the question but "19" in a name) a
    # small model has to learn every number twice and cannot copy or add digit by digit.
    tok.pre_tokenizer = qwen2_pre_tokenizer(numbers)
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
        tok.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    return tok


def count_tokens(tokenizer, texts: list[str], batch_size: int = 1000) -> list[int]:
    """Token counts of many texts (special tokens count as one each; no BOS/EOS added).

    Exact and fast for data made of recurring pieces: a tokenizer splits its input at added
    special tokens first and encodes the pieces between them independently, so a text's count
    is the number of special tokens in it plus the counts of its pieces, and each distinct piece
    (a step's thought, say, shared by many sampled paths) is encoded once.
    tests/data/test_dataset.py checks this against encoding whole texts.
    """
    import re

    specials = sorted((t for t in tokenizer.all_special_tokens), key=len, reverse=True)
    splitter = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")") if specials else None
    pieces_of = [splitter.split(t) if splitter else [t] for t in texts]
    special_set = set(specials)
    distinct = sorted({p for pieces in pieces_of for p in pieces if p and p not in special_set})
    counts: dict[str, int] = {}
    for i in range(0, len(distinct), batch_size):
        batch = distinct[i:i + batch_size]
        enc = tokenizer(batch, add_special_tokens=False)["input_ids"]
        counts.update(zip(batch, (len(e) for e in enc)))
    return [sum(1 if p in special_set else counts[p] for p in pieces if p) for pieces in pieces_of]


# ---------------------------------------------------------------------------- models

# What each added token means, in plain words. A new token's embedding starts as the mean
# embedding of its description's sub-tokens (see `init_token_embeddings`).
TOKEN_DESCRIPTIONS: dict[str, str] = {
    ENDOFTEXT: "end of text",
    IM_START: "start of a message",
    IM_END: "end of a message",
    fmt.REASONING_START: "start of reasoning",
    fmt.REASONING_END: "end of reasoning",
    fmt.PROCEED: "proceed to the next step",
    fmt.BACKTRACK: "backtrack to an earlier step",
    fmt.STEP_START: "start of a step",
    fmt.STEP_END: "end of a step",
    fmt.NAME_START: "start of the step name",
    fmt.NAME_END: "end of the step name",
    fmt.THOUGHT_START: "start of a thought",
    fmt.THOUGHT_END: "end of a thought",
    fmt.SUMMARY_START: "start of a summary",
    fmt.SUMMARY_END: "end of a summary",
    fmt.REFLECTION_START: "start of a reflection",
    fmt.REFLECTION_END: "end of a reflection",
}


@dataclass
class ModelConfig:
    """A small Qwen2-architecture causal LM (the CPU stand-in for Qwen2.5)."""

    # The shape's defaults are the params schema's model section (one place); the tests build
    # smaller ones by passing fields.
    hidden_size: int = ModelParams.hidden_size
    num_layers: int = ModelParams.num_layers
    num_heads: int = ModelParams.num_heads
    num_kv_heads: int = ModelParams.num_kv_heads  # grouped-query attention, as in Qwen2.5
    intermediate_size: int = ModelParams.intermediate_size
    max_position_embeddings: int = ModelParams.max_position_embeddings
    tie_word_embeddings: bool = ModelParams.tie_word_embeddings
    dtype: str = ModelParams.dtype  # or "bfloat16"
    attn_implementation: str = "sdpa"  # or "eager"
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r}: use 'float32' or 'bfloat16' ('float16' only on a GPU)")


def hide_log_printer(trainer) -> None:
    """Without a progress bar a transformers Trainer prints every log dict instead: remove that printer."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _torch_dtype(name: str):
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype={name!r}: use 'float32' or 'bfloat16' (params: model_dtype)")
    return dtypes[name]


def build_model(tokenizer, cfg: ModelConfig | None = None, seed: int = 0):
    """A freshly initialised Qwen2ForCausalLM sized by `cfg`, its vocabulary = len(tokenizer).

    pad and eos ids come from the tokenizer, so generation stops at <|im_end|>. The same seed
    gives the same weights.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or ModelConfig()
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: set tokenizer.eos_token (ChatML uses <|im_end|>)")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        use_cache=True,
    )
    config._attn_implementation = cfg.attn_implementation
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's rng
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model = model.to(_torch_dtype(cfg.dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def init_token_embeddings(model, tokenizer, tokens, descriptions: dict[str, str] | None = None) -> dict[str, int]:
    """Set each token's embedding row(s) to the mean of its description's sub-token rows.

    How: for a token such as <|reasoning_step_thought_start|>, tokenize its plain-words
    description ("start of a thought", from TOKEN_DESCRIPTIONS) and average the input-embedding
    rows of those sub-tokens; if the output embedding (lm_head) is not tied to the input one, its
    row is set the same way from the lm_head rows.
    Why: a new row drawn at random (or zero) lies outside the cloud of trained rows; its logit
    can start far too high or too low, so the first steps of training spend their updates
    moving it (and a large random output row can blow up the logits of every position). A mean
    of trained rows sits inside that cloud with a typical norm, and points roughly where the
    meaning is. Returns {token: row id}.
    """
    import torch

    descriptions = TOKEN_DESCRIPTIONS if descriptions is None else descriptions
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ValueError(f"tokens {missing} are not in the tokenizer: add them first "
                         f"(tokenizer.add_special_tokens) or use load_pretrained_model")
    undescribed = [t for t in tokens if t not in descriptions]
    if undescribed:
        raise ValueError(f"no description for {undescribed}: pass descriptions={{token: 'plain words'}}")
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == inp.data_ptr()
    rows: dict[str, int] = {}
    with torch.no_grad():
        for tok in tokens:
            row = vocab[tok]
            sub = tokenizer(descriptions[tok], add_special_tokens=False)["input_ids"]
            if not sub or any(i >= inp.shape[0] for i in sub):
                raise ValueError(f"the description {descriptions[tok]!r} of {tok} does not tokenize into "
                                 f"rows of the embedding matrix; choose another description")
            inp[row] = inp[sub].float().mean(0).to(inp.dtype)
            if not tied:
                out.weight[row] = out.weight[sub].float().mean(0).to(out.weight.dtype)
            rows[tok] = row
    return rows


class LoadedModel(NamedTuple):
    model: object
    tokenizer: object
    added_rows: dict[str, int]  # token -> embedding row, for the tokens this load added


def load_pretrained_model(name_or_path: str, tokenizer=None, dtype: str = "float32") -> LoadedModel:
    """A pretrained causal LM (hub name, or local path: then local_files_only) ready for Steiner.

    Adds what is missing of the ChatML tokens and the 14 reasoning tokens (as special tokens,
    so each is one token), makes <|im_end|> the eos (an assistant turn ends there) and
    <|endoftext|> the pad when there is none, resizes the embeddings only when a new id falls
    outside the matrix (Qwen2.5's matrix has spare rows), and initialises every added row with
    `init_token_embeddings` (mean of its description's sub-tokens). Returns (model, tokenizer,
    added_rows); added_rows is empty when the checkpoint already knew every token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steiner_lib import distributed

    torch_dtype = _torch_dtype(dtype)  # checked before anything is loaded
    local = Path(name_or_path).exists()
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
    distributed.prepare_sharded_loading()  # launched: load on rank 0 only (FSDP) or sharded (ZeRO-3)
    # float32 doubles a bf16 checkpoint (Qwen2.5-32B: 65 GB -> 130 GB per process): the params choose.
    model = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=local, dtype=torch_dtype)

    vocab = tokenizer.get_vocab()
    added = [t for t in (*CHAT_TOKENS, *SPECIAL_TOKENS) if t not in vocab]
    if added:  # transformers 5 calls them extra special tokens (additional_special_tokens before)
        tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = ENDOFTEXT
    if tokenizer.eos_token != IM_END:
        tokenizer.eos_token = IM_END
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE

    n_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_rows:
        # mean_resizing=False: its covariance estimate is slow on a big vocabulary, and every
        # new row is overwritten below anyway.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows = init_token_embeddings(model, tokenizer, added) if added else {}
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id, cfg.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if added:
        log.info("added %d tokens to %s: %s", len(added), name_or_path, ", ".join(added))
    return LoadedModel(model, tokenizer, rows)


def count_parameters(model, trainable_only: bool = False) -> int:
    """Parameters of the model, each shared (tied) tensor counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (Kaplan et al. 2020; PaLM's MFU appendix).

    N counts the parameters that do matrix multiplies per token: everything but the input
    embedding table (a lookup), plus the output projection (lm_head, which is the same matrix
    when tied). 6 = 2 (multiply-add) x 3 (forward, and backward for activations and weights).
    The attention term is 6 x the 2 L T d multiply-adds of QK^T and AV per token (d = heads x
    head dim, T = seq_len), counted over the full T x T matrix as MFU conventions do.
    """
    c = model.config
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    n = count_parameters(model) - emb.numel()
    if head is not None and head.weight.data_ptr() == emb.data_ptr():
        n += head.weight.numel()  # tied: the table is also the output projection
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    d_attn = c.num_attention_heads * head_dim
    return 6.0 * n + 12.0 * c.num_hidden_layers * d_attn * seq_len


def wrap_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05,
              target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj")):
    """LoRA adapters (PEFT) on the attention and MLP projections.

    The input embeddings and lm_head stay fully trainable (modules_to_save): the 14 added
    tokens exist only as embedding rows, which a low-rank adapter on the projections cannot
    learn, and the model must learn to *emit* them, which needs their lm_head rows. With tied
    embeddings PEFT keeps the two saved copies tied (ensure_weight_tying).
    """
    from peft import LoraConfig, get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
        modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM",
        ensure_weight_tying=tied,
    )
    return get_peft_model(model, config)
