"""Language-model training: the base-model stand-in and Steiner's continual pre-training (CPT).

The paper starts from Qwen2.5-Instruct, which knows language and forward chain-of-thought
but has never seen a backtracking path nor the 14 reasoning tokens. At CPU scale the
stand-in is trained here from scratch on regular text (the Python documentation topics)
plus *shortcut* reasoning, i.e. forward-only solutions written as plain text
(`shortcut_plain_text`): no reasoning tokens and no backtracking, ever.

CPT then continues training that model on a mix of regular text and reasoning paths
(notebook 02's `paths`, each rendered as full ChatML text with the 14 tokens), at a chosen
token share (`cpt_corpus`), so the new tokens get meaningful embeddings before SFT.
`embedding_report` shows what CPT did to those 14 rows.

Both stages are one call of `train_lm`: packed blocks of tokens, the transformers Trainer
with the causal-LM collator, a held-out loss, and a log-history table.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from steiner_lib import distributed
from steiner_lib.format import SPECIAL_TOKENS
from steiner_lib.tasks import choice
from steiner_lib.tasks import text as task_text
from steiner_lib.tasks.countdown import OP_SYMBOL, Operation, solve
from steiner_lib.training import modeling

# ---------------------------------------------------------------------------- corpora

OPERATION_NAMES = {"+": "addition", "-": "subtraction", "*": "multiplication", "/": "division"}


def shortcut_plain_text(question: str, operations: list[Operation], letter: str, choices=None) -> str:
    """A forward-only solution as plain text: the question, one line per operation, the answer.

    e.g. "<question>\\n\\n50 × 3 = 150.\\n150 + 25 = 175.\\n\\n50 × 3 + 25 = 175\\n\\nAnswer: B".
    No special tokens and no backtracking: what an instruct model's chain-of-thought looks like.
    The closing lines are `tasks.text.answer_text`, the same visible answer the Steiner data ends with
    (with `choices`, the prompt's choice texts in letter order, it scans the options).
    """
    if not operations:
        raise ValueError("shortcut_plain_text needs at least one operation (the solver's solution)")
    target = operations[-1].result
    return question + "\n\n" + shortcut_reasoning(operations) + "\n\n" + task_text.answer_text(
        operations, target, letter, choices)


def shortcut_reasoning(operations: list[Operation]) -> str:
    """The forward steps alone, one "a op b = r." per line."""
    return "\n".join(f"{o.a} {OP_SYMBOL[o.op]} {o.b} = {o.result}." for o in operations)


def base_corpus(regular_texts: list[str], questions, seed: int, copies: int = 1, chat: bool = True,
                max_chars: int = 2000, extra: list[str] = (), answer_format: str = "letter") -> list[str]:
    """The base stand-in's corpus: regular text plus one shortcut solution per question and copy,
    plus `extra` texts (the domain knowledge of tasks.knowledge), all shuffled together.

    `questions` are tasks.choice.CountdownQuestion (the training split). Each copy shuffles the
    four choices anew (choice.format_prompt with a per-copy seed), so the letter is not a habit.
    chat=True wraps each solution as a ChatML exchange (user: the question, assistant: the
    forward steps and the answer, no reasoning tokens): Qwen2.5-Instruct knows that format, so
    the stand-in can be asked the later stages' prompts and gives a forward-CoT baseline.
    Regular texts are cut at paragraphs into pieces of at most `max_chars` characters.
    `answer_format` (tasks.text.ANSWER_FORMATS): whether the visible answers scan the options.
    """
    if answer_format not in task_text.ANSWER_FORMATS:
        raise ValueError(f"answer_format={answer_format!r}: expected one of {task_text.ANSWER_FORMATS}")
    out = split_documents(regular_texts, max_chars) + list(extra)
    for q in questions:
        ops = solve(q.problem)
        if ops is None:
            raise ValueError(f"question {q.question_id} has no solution: build it with choice.make_countdown_question")
        for c in range(copies):
            prompt, letter, shown = choice.format_prompt_and_choices(q, seed=seed * 1000 + c)
            shown = shown if answer_format == "scan" else None
            out.append(shortcut_chat(prompt, ops, letter, shown) if chat else
                       shortcut_plain_text(prompt, ops, letter, shown))
    random.Random(f"{seed}-base-corpus").shuffle(out)
    return out


def shortcut_chat(prompt: str, operations: list[Operation], letter: str, choices=None) -> str:
    """A forward-only solution as a ChatML exchange: user the prompt, assistant the steps and the answer
    (scanning `choices`, when given, as `tasks.text.answer_text` does)."""
    answer = task_text.answer_text(operations, operations[-1].result, letter, choices)
    return modeling.chat_text(prompt, shortcut_reasoning(operations) + "\n\n" + answer)


def letter_probes(questions, seed: int, n: int, answer_format: str = "letter") -> tuple[list[str], list[str]]:
    """(prompts, letters) that ask for the letter of a value already written: a question's prompt
    shuffled with a seed the base corpus never used, its solver's steps and the visible answer cut
    after the value's line (`knowledge.split_after_value`); the model must write the rest (in
    `answer_format`) and its "Answer: X" is read (`knowledge.letter_accuracy`). Chance is 1/4: the
    value is right there, so a wrong letter means the model does not read the option list."""
    from steiner_lib.tasks import knowledge

    out_p, out_l = [], []
    for q in list(questions)[:n]:
        ops = solve(q.problem)
        # The corpus's copies use seed * 1000 + c, c small.
        prompt, letter, shown = choice.format_prompt_and_choices(q, seed=seed * 1000 + 999)
        answer = task_text.answer_text(ops, ops[-1].result, letter, shown if answer_format == "scan" else None)
        head, _ = knowledge.split_after_value(answer)
        out_p.append(modeling.chat_text(prompt) + shortcut_reasoning(ops) + "\n\n" + head)
        out_l.append(letter)
    return out_p, out_l


def knowledge_report(model, tokenizer, known, n_probes: int = 400, seed: int = 0,
                     n_boot: int = 2000, questions=None, answer_format: str = "letter") -> pd.DataFrame:
    """The model's accuracy on what the base corpus taught (greedy, exact answer), with 95% bootstrap
    CIs: arithmetic facts it read, facts held out of its corpus, fresh copy / sort / take drills,
    fresh option drills, and (given `questions`, CountdownQuestions) the letter of a written value on
    those questions' prompts (`letter_probes`).

    `known` is tasks.knowledge.KnowledgeCorpus; at most `n_probes` items per row (seeded sample).
    """
    from steiner_lib.evaluation import scoring
    from steiner_lib.tasks import knowledge

    rng = random.Random(f"{seed}-knowledge-probe")
    sample = lambda xs: rng.sample(list(xs), min(n_probes, len(xs)))  # noqa: E731
    facts_read = sample(known.train_facts)
    rows = {"arithmetic facts read": knowledge.fact_probes(facts_read),
            "arithmetic facts held out": knowledge.fact_probes(sample(known.heldout_facts))}
    for kind in knowledge.DRILL_KINDS:  # fresh lists: another seed than the corpus's drills
        items = knowledge.drills(n_probes, known.max_number, known.max_value, seed=seed + 10_000, kinds=(kind,))
        rows[f"list drill: {kind}"] = ([p for p, _ in items], [a for _, a in items])
    # The letter rows continue a visible answer after its value (`answer_format`) and read "Answer: X".
    items = knowledge.option_drills(n_probes, known.max_value, seed=seed + 10_000, answer_format=answer_format)
    letter_rows = {"option drill: letter of a value": ([p for p, _, _ in items], [c for _, _, c in items])}
    if questions is not None:
        letter_rows["question prompt: letter of a written value"] = letter_probes(questions, seed, n_probes,
                                                                                  answer_format)
    out, by_item = {}, {}

    def add_row(label, correct):
        mean, lo, hi = scoring.bootstrap_ci([float(c) for c in correct], n_boot=n_boot, seed=seed)
        out[label] = {"items": len(correct), "accuracy": mean, "ci_low": lo, "ci_high": hi}

    for label, (prompts, answers) in rows.items():
        if prompts:
            by_item[label] = knowledge.probe_accuracy(model, tokenizer, prompts, answers)
            add_row(label, by_item[label])
    for label, (prompts, letters) in letter_rows.items():
        if prompts:
            add_row(label, knowledge.letter_accuracy(model, tokenizer, prompts, letters))
    # The facts read, split by operation (the same probes, no new generation): which arithmetic the
    # model lacks, since a wrong step result in 04 is most often a wrong + or - fact.
    for op, name in OPERATION_NAMES.items():
        correct = [c for fact, c in zip(facts_read, by_item.get("arithmetic facts read", [])) if fact.op == op]
        if correct:
            add_row(f"arithmetic facts read: {name}", correct)
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "probe (greedy, exact answer)"
    return table


def knowledge_comparison(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """knowledge_report tables of several models on the same probes, side by side: per model
    "<name> accuracy" and its 95% CI bounds, in the first table's row order (a row a later
    model lacks is NaN)."""
    if not tables:
        raise ValueError("knowledge_comparison needs at least one knowledge_report table")
    first = next(iter(tables.values()))
    out = pd.DataFrame({"items": first["items"]}, index=first.index)
    for name, table in tables.items():
        for col in ("accuracy", "ci_low", "ci_high"):
            out[f"{name} {col}"] = table[col].reindex(first.index)
    return out


def knowledge_metrics(table: pd.DataFrame, prefix: str) -> dict[str, float]:
    """A knowledge_report table as manifest metrics: "arithmetic facts read: addition" with prefix
    "base" -> base_accuracy_arithmetic_facts_read_addition."""
    return {f"{prefix}_accuracy_{k.replace(' ', '_').replace(':', '')}": float(v)
            for k, v in table["accuracy"].items()}


def paths_as_text(paths, kept_only: bool = True) -> list[str]:
    """Notebook 02's reasoning paths as full ChatML texts: prompt, reasoning, answer, <|im_end|>."""
    rows = paths.to_pandas() if hasattr(paths, "to_pandas") else pd.DataFrame(paths)
    if kept_only and "kept" in rows:
        rows = rows[rows["kept"]]
    return [modeling.chat_text(p, r + "\n" + a) for p, r, a in zip(rows["prompt"], rows["reasoning"], rows["answer"])]


def split_documents(texts: list[str], max_chars: int) -> list[str]:
    """Cut long texts at paragraph breaks into pieces of at most ~max_chars characters.

    Finer pieces let a corpus mix hit its token shares closely. A single paragraph longer
    than max_chars is kept whole.
    """
    out: list[str] = []
    for t in texts:
        piece = ""
        for para in t.split("\n\n"):
            if piece and len(piece) + 2 + len(para) > max_chars:
                out.append(piece)
                piece = para
            else:
                piece = para if not piece else piece + "\n\n" + para
        if piece.strip():
            out.append(piece)
    return out


def split_heldout(texts: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) texts: a seeded random `share` held out (at least one when share > 0)."""
    if not 0 <= share < 1:
        raise ValueError(f"share={share}: the held-out share must be in [0, 1)")
    order = list(range(len(texts)))
    random.Random(f"{seed}-heldout").shuffle(order)
    n = 0 if share == 0 else max(1, round(share * len(texts)))
    held = set(order[:n])
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]


@dataclass
class CPTCorpus:
    """A mix of texts with their source ("regular" or "reasoning") and token count."""

    texts: list[str]
    sources: list[str]
    tokens: list[int]

    @property
    def n_tokens(self) -> int:
        return int(sum(self.tokens))

    @property
    def reasoning_share(self) -> float:
        """Share of the corpus tokens that come from reasoning paths."""
        r = sum(n for n, s in zip(self.tokens, self.sources) if s == "reasoning")
        return r / max(self.n_tokens, 1)

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame({"source": self.sources, "tokens": self.tokens, "text": self.texts})
        g = df.groupby("source").agg(texts=("tokens", "size"), distinct_texts=("text", "nunique"),
                                     tokens=("tokens", "sum"))
        g["token_share"] = (g["tokens"] / g["tokens"].sum()).round(4)
        return g


def cpt_corpus(regular_texts: list[str], reasoning_texts: list[str], reasoning_share: float,
               n_tokens_hint: int, seed: int, *, tokenizer, max_chars: int = 2000) -> CPTCorpus:
    """CPT's mix: about `n_tokens_hint` tokens, `reasoning_share` of them from reasoning texts.

    Each source is drawn from a seeded shuffle of its pool, passing over the pool again
    (reshuffled) when its budget is larger than the pool, until the budget is met; the last
    text is taken only if that lands closer to the budget. Regular texts are first cut into
    pieces of at most `max_chars` characters (`split_documents`), so the share is hit to within
    about one piece. Token counts use `tokenizer` (special tokens count one each).
    """
    if not 0 <= reasoning_share <= 1:
        raise ValueError(f"reasoning_share={reasoning_share}: must be in [0, 1]")
    if n_tokens_hint <= 0:
        raise ValueError(f"n_tokens_hint={n_tokens_hint}: must be positive")
    rng = random.Random(f"{seed}-cpt-corpus")
    pools = {"regular": split_documents(regular_texts, max_chars), "reasoning": list(reasoning_texts)}
    budgets = {"regular": (1 - reasoning_share) * n_tokens_hint, "reasoning": reasoning_share * n_tokens_hint}
    picked: list[tuple[str, str, int]] = []
    for source, pool in pools.items():
        if budgets[source] <= 0:
            continue
        if not pool:
            raise ValueError(f"no {source} texts, but the {source} budget is {budgets[source]:.0f} tokens: "
                             f"pass {source} texts or set reasoning_share to {0 if source == 'reasoning' else 1}")
        lengths = modeling.count_tokens(tokenizer, pool)
        total, order = 0, []
        while True:
            if not order:
                order = list(range(len(pool)))
                rng.shuffle(order)
            i = order.pop()
            if total + lengths[i] / 2 > budgets[source]:  # taking it would land farther away
                break
            picked.append((pool[i], source, lengths[i]))
            total += lengths[i]
    rng.shuffle(picked)
    return CPTCorpus([p[0] for p in picked], [p[1] for p in picked], [p[2] for p in picked])


# ---------------------------------------------------------------------------- packing, training


def pack_texts(tokenizer, texts: list[str], seq_len: int):
    """Concatenate the texts' tokens, each text closed by eos, and cut into blocks of seq_len.

    Returns a datasets.Dataset with one `input_ids` column; the tail shorter than a block is
    dropped. A text that already ends with eos (a ChatML exchange ends with <|im_end|>) gets
    no second one.
    """
    import datasets

    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: a block needs at least 2 tokens")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token to separate texts: set tokenizer.eos_token")
    stream: list[int] = []
    for i in range(0, len(texts), 1000):
        for ids in tokenizer(list(texts[i:i + 1000]), add_special_tokens=False)["input_ids"]:
            stream += ids
            if not ids or ids[-1] != eos:
                stream.append(eos)
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise ValueError(f"{len(texts)} texts give {len(stream)} tokens, fewer than one block of "
                         f"seq_len={seq_len}: pass more text or a smaller seq_len")
    blocks = np.asarray(stream[:n_blocks * seq_len], dtype=np.int64).reshape(n_blocks, seq_len)
    return datasets.Dataset.from_dict({"input_ids": blocks.tolist()})


@dataclass
class LMTrainConfig:
    """Budget and optimiser of one language-model training run (base stand-in or CPT)."""

    max_steps: int = 200
    batch_size: int = 16  # blocks per micro-batch and process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    seq_len: int = 512
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.1
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    eval_every: int = 50  # steps between held-out evaluations (and one before the first step)
    eval_batches: int = 4  # held-out blocks evaluated = eval_batches * batch_size (at most)
    seed: int = 0
    logging_steps: int = 10
    bf16: bool = False  # bfloat16 autocast (mixed precision) on the CPU
    torch_compile: bool = False
    num_threads: int | None = None  # torch threads during the run (None: as they are), restored after

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "seq_len", "eval_every", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"LMTrainConfig.{name}={getattr(self, name)}: must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"LMTrainConfig.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        if self.eval_batches < 0:
            raise ValueError(f"LMTrainConfig.eval_batches={self.eval_batches}: must be >= 0 (0: no evaluation)")


@dataclass
class LMTrainResult:
    model: object
    history: pd.DataFrame  # step, train_loss, eval_loss (or eval_loss_<name>), tokens_seen, learning_rate
    tokens_per_second: float  # training tokens / training time (evaluation time excluded)
    wall_time_s: float  # the whole call: packing, training and evaluation
    train_time_s: float
    tokens_seen: int
    n_train_blocks: int
    n_eval_blocks: dict[str, int] = field(default_factory=dict)  # by held-out name ("" for a plain list)

    def summary(self) -> dict:
        h = self.history
        out = {"steps": int(h["step"].max()) if len(h) else 0, "tokens_seen": self.tokens_seen,
               "tokens_per_second": round(self.tokens_per_second, 1), "wall_time_s": round(self.wall_time_s, 2),
               "train_time_s": round(self.train_time_s, 2), "train_blocks": self.n_train_blocks}
        for col in h.columns:
            if "loss" in col:
                vals = h[col].dropna()
                if len(vals):
                    out[f"first_{col}"], out[f"last_{col}"] = float(vals.iloc[0]), float(vals.iloc[-1])
        return out


def _history(log_history: list[dict], tokens_per_step: int) -> pd.DataFrame:
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        row = rows.setdefault(step, {"step": step})
        for key, value in entry.items():
            if key == "loss":
                row["train_loss"] = value
            elif key == "learning_rate":
                row["learning_rate"] = value
            elif key == "eval_loss":
                row["eval_loss"] = value
            elif key.startswith("eval_") and key.endswith("_loss"):  # a named held-out set
                row["eval_loss_" + key[len("eval_"):-len("_loss")]] = value
    df = pd.DataFrame(sorted(rows.values(), key=lambda r: r["step"]))
    df["tokens_seen"] = df["step"] * tokens_per_step
    evals = sorted(c for c in df.columns if c.startswith("eval_loss")) or ["eval_loss"]
    cols = ["step", "train_loss", *evals, "tokens_seen", "learning_rate"]
    for c in cols:
        if c not in df:
            df[c] = np.nan
    return df[cols]


def train_lm(model, tokenizer, train_texts: list[str], heldout_texts, cfg: LMTrainConfig,
             progress: bool = True, callbacks: list | None = None) -> LMTrainResult:
    """Train a causal LM on packed blocks of `train_texts` with the transformers Trainer.

    `heldout_texts`: a list of texts (logged as eval_loss), a dict {name: texts} (logged as
    eval_loss_<name>, e.g. regular and reasoning text apart), or None/empty for no evaluation.
    Evaluation runs once before the first step and every `eval_every` steps on at most
    eval_batches * batch_size held-out blocks. The model is trained in place and returned.
    `callbacks`: extra transformers TrainerCallbacks (e.g. a step timer).
    """
    import torch

    start = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train_lm(model, tokenizer, train_texts, heldout_texts, cfg, progress, callbacks, start)
    finally:
        torch.set_num_threads(threads)


def _train_lm(model, tokenizer, train_texts, heldout_texts, cfg: LMTrainConfig, progress: bool, callbacks,
              start: float) -> LMTrainResult:
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and cfg.seq_len > max_pos:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's max_position_embeddings={max_pos}")
    train_ds = pack_texts(tokenizer, train_texts, cfg.seq_len)
    if len(train_ds) < cfg.batch_size:
        raise ValueError(f"the training texts fill {len(train_ds)} blocks of {cfg.seq_len} tokens, fewer than one "
                         f"batch of {cfg.batch_size}: pass more text, or lower batch_size or seq_len")
    packed: dict[str, object] = {}  # held-out blocks by name ("" for a plain list of texts)
    if heldout_texts and cfg.eval_batches:
        named = heldout_texts if isinstance(heldout_texts, dict) else {"": heldout_texts}
        for name, texts in named.items():
            ds = pack_texts(tokenizer, texts, cfg.seq_len)
            packed[name] = ds.select(range(min(cfg.eval_batches * cfg.batch_size, len(ds))))
    eval_ds = None if not packed else packed[""] if "" in packed else packed

    with tempfile.TemporaryDirectory(prefix="steiner-lm-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            warmup_steps=float(cfg.warmup_ratio), lr_scheduler_type=cfg.lr_scheduler,
            weight_decay=cfg.weight_decay, adam_beta2=0.95, max_grad_norm=cfg.max_grad_norm,
            logging_steps=cfg.logging_steps, eval_strategy="steps" if eval_ds is not None else "no",
            eval_steps=cfg.eval_every, eval_on_start=eval_ds is not None, save_strategy="no",
            report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=not torch.cuda.is_available(), bf16=cfg.bf16,
            torch_compile=cfg.torch_compile, dataloader_drop_last=True, disable_tqdm=not progress,
            log_level="warning",
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=callbacks,
        )
        if not progress:
            modeling.hide_log_printer(trainer)
        output = trainer.train()
        log_history = list(trainer.state.log_history)
    model.eval()

    tokens_per_step = cfg.batch_size * cfg.gradient_accumulation_steps * cfg.seq_len * distributed.world_size()
    eval_time = sum(v for e in log_history for key, v in e.items()
                    if key.startswith("eval_") and key.endswith("_runtime"))
    train_time = max(float(output.metrics["train_runtime"]) - eval_time, 1e-9)
    tokens = int(output.global_step) * tokens_per_step
    return LMTrainResult(
        model=model, history=_history(log_history, tokens_per_step), tokens_per_second=tokens / train_time,
        wall_time_s=time.perf_counter() - start, train_time_s=train_time, tokens_seen=tokens,
        n_train_blocks=len(train_ds), n_eval_blocks={name: len(ds) for name, ds in packed.items()},
    )


# ---------------------------------------------------------------------------- embeddings


def _readable(tokenizer, i: int) -> str:
    return repr(tokenizer.decode([int(i)]))


def input_embeddings(model):
    """A CPU copy of the model's input-embedding matrix (gathered when the weights are sharded), in
    its own dtype: all `embedding_report` needs of the model before training. A deep copy of the
    whole model would cost a second model's memory (Qwen2.5-32B in bf16: 65 GB); this costs the
    matrix (152,064 x 5,120 x 2 B = 1.6 GB)."""
    return distributed.full_tensor(model.get_input_embeddings().weight)


def embedding_report(before, after, tokenizer, k: int = 5,
                     tokens: tuple[str, ...] = SPECIAL_TOKENS, special_neighbours: bool = False) -> pd.DataFrame:
    """What training did to the input embeddings of `tokens` (default: the 14 reasoning tokens).

    `before` and `after`: input-embedding matrices (`input_embeddings(model)`, taken before and
    after training) or the models themselves.

    Per token: the row's norm before and after, the cosine between its before and after
    vectors, and its k nearest vocabulary rows by cosine (itself excluded) before and after,
    written as decoded token strings with their cosine. Neighbours are ordinary tokens only
    (what the row is close to in words); special_neighbours=True lets the special tokens in too
    (the 14 rows, started from similar descriptions, are often each other's nearest).
    """
    import torch

    e0, e1 = (m.detach().float() if isinstance(m, torch.Tensor) else input_embeddings(m).float()
              for m in (before, after))
    if e0.shape != e1.shape:
        raise ValueError(f"the two models' embeddings differ in shape ({tuple(e0.shape)} vs {tuple(e1.shape)}): "
                         f"compare a model with a copy of itself taken before training")
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ValueError(f"tokens {missing} are not in the tokenizer")
    excluded = torch.zeros(e0.shape[0], dtype=torch.bool)
    if not special_neighbours:
        special_ids = set(tokenizer.all_special_ids) | {vocab[t] for t in tokens}
        excluded[[i for i in special_ids if i < len(excluded)]] = True
    n0 = torch.nn.functional.normalize(e0, dim=1)
    n1 = torch.nn.functional.normalize(e1, dim=1)
    rows = []
    for tok in tokens:
        i = vocab[tok]
        cells = {"token": tok, "norm_before": float(e0[i].norm()), "norm_after": float(e1[i].norm()),
                 "cosine_before_after": float(n0[i] @ n1[i])}
        for when, n in (("before", n0), ("after", n1)):
            sims = n @ n[i]
            sims[i] = -math.inf
            sims[excluded] = -math.inf
            top = torch.topk(sims, k)
            cells[f"neighbours_{when}"] = ", ".join(
                f"{_readable(tokenizer, j)} {s:.2f}" for s, j in zip(top.values.tolist(), top.indices.tolist()))
        rows.append(cells)
    return pd.DataFrame(rows).set_index("token")


__all__ = [
    "shortcut_plain_text", "shortcut_reasoning", "base_corpus", "paths_as_text", "split_documents",
    "split_heldout", "CPTCorpus", "cpt_corpus", "pack_texts", "LMTrainConfig", "LMTrainResult",
    "train_lm", "input_embeddings", "embedding_report",
]


def cpt_pools(paths, regular_texts: list[str], heldout_share: float, seed: int) -> dict[str, list[str]]:
    """CPT's text pools, held out BEFORE the mix is drawn: whole questions' reasoning paths and
    whole regular documents, so no copy of a held-out text is trained on (cpt_corpus passes over a
    small pool more than once). Returns reasoning_train, reasoning_heldout, regular_train,
    regular_heldout (the last cut into pieces like the training text)."""
    texts = paths_as_text(paths, kept_only=False)
    kept = paths["kept"] if "kept" in paths.column_names else [True] * len(texts)
    qids = list(paths["question_id"])
    _, held_q = split_heldout(sorted(set(qids)), heldout_share, seed)
    held_q = set(held_q)
    regular_train, regular_held = split_heldout(list(regular_texts), heldout_share, seed)
    return {
        "reasoning_train": [t for q, t, k in zip(qids, texts, kept) if k and q not in held_q],
        "reasoning_heldout": [t for q, t, k in zip(qids, texts, kept) if k and q in held_q],
        "regular_train": regular_train,
        "regular_heldout": split_documents(regular_held, 2000),
    }
