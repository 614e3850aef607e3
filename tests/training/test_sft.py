"""SFT with TRL: the prompt-completion data, the loss mask (proved token by token) and a tiny run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from helpers import tiny_qwen2  # noqa: E402
from steiner_lib.data import dataset, synthesis  # noqa: E402
from steiner_lib.data.teachers import SearchTeacher  # noqa: E402
from steiner_lib.evaluation import scoring  # noqa: E402
from steiner_lib.generation import inference  # noqa: E402
from steiner_lib.params import SftParams  # noqa: E402
from steiner_lib.tasks import choice  # noqa: E402
from steiner_lib.training import modeling, sft  # noqa: E402


def sft_config(seed=0, **overrides) -> sft.SFTStageConfig:
    """The stage config of the schema's sft defaults (params.SftParams) with a test's overrides."""
    return sft.stage_config(SftParams(), seed, **overrides)


def tiny_model(tok, hidden=128, layers=1, seed=0):
    return tiny_qwen2(tok, seed, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      max_position_embeddings=2048, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def run():
    """Notebooks 01-02 in miniature: 12 questions -> traces -> DAGs -> paths, a tokenizer, length filter."""
    splits = choice.make_splits(0, n_train=12, n_validation=0, n_diamond=0, n_hard=0, n_control=0, n_numbers=4,
                                max_number=25, min_steps=2, max_steps=3, diamond_max_backtracks=20, hard_min_backtracks=100)
    qs = splits["train"]
    letters = [choice.format_prompt(q, seed=0)[1] for q in qs]
    trajectories = synthesis.synthesize(qs, letters, SearchTeacher(max_explore_steps=3), 2, seed=0, progress=False)
    by_question = dataset.group_by_question(trajectories)
    questions = {q.question_id: q for q in qs}
    graphs = dataset.build_dags(by_question, questions, progress=False)
    examples, _ = dataset.sample_examples(graphs, by_question, questions, n_paths=2, max_backtracks=2,
                                          explore_prob=0.3, seed=0, progress=False)
    corpus = [r + "\n" + a for r, a in zip(examples["reasoning"], examples["answer"])] + list(examples["prompt"])
    tok = modeling.train_bpe_tokenizer(corpus, vocab_size=600)
    totals = modeling.count_tokens(tok, [modeling.chat_text(p, r + "\n" + a) for p, r, a in
                                         zip(examples["prompt"], examples["reasoning"], examples["answer"])])
    # A total cap below the longest example, so that notebook 02's filter drops something.
    paths = dataset.measure_and_filter(examples, tok, max_reasoning_tokens=10_000,
                                       max_total_tokens=int(np.percentile(totals, 80)))
    return {"paths": paths, "tok": tok, "questions": questions}


# --------------------------------------------------------------------------- data


def test_sft_dataset_is_prompt_completion_over_kept_paths(run):
    paths = run["paths"]
    ds = sft.sft_dataset(paths)
    kept = [r for r in paths if r["kept"]]
    assert 0 < len(ds) == len(kept) < len(paths)
    assert ds.column_names == ["question_id", "prompt", "completion"]
    for row, src in zip(ds, kept):
        assert row["prompt"] == modeling.chat_text(src["prompt"])
        assert row["prompt"].startswith("<|im_start|>user\n") and row["prompt"].endswith("<|im_start|>assistant\n")
        assert row["completion"] == src["reasoning"] + "\n" + src["answer"] + "<|im_end|>"
        # The whole training text is the ChatML exchange of notebook 02's token counts.
        assert row["prompt"] + row["completion"] == modeling.chat_text(src["prompt"], src["reasoning"] + "\n"
                                                                        + src["answer"])
    assert len(sft.sft_dataset(paths, only_kept=False)) == len(paths)
    with pytest.raises(ValueError, match="reasoning"):
        sft.sft_dataset(paths.remove_columns("reasoning"))


def test_loss_mask_covers_exactly_the_assistant_turn(run, tmp_path):
    """The collated batch TRL trains on: -100 on every prompt token and on padding, the real ids
    on every completion token, <|im_end|> included (once)."""
    tok = run["tok"]
    ds = sft.sft_dataset(run["paths"])
    cfg = sft_config(max_steps=1, batch_size=4, progress=False)
    trainer = sft.make_trainer(tiny_model(tok, hidden=32, layers=1), tok, ds, None, cfg, str(tmp_path))
    rows = [trainer.train_dataset[i] for i in range(6)]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # different lengths: padding is exercised
    batch = trainer.data_collator(rows)
    im_end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    for i in range(len(rows)):
        p = tok(ds[i]["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(ds[i]["completion"], add_special_tokens=False)["input_ids"]
        # Tokenizing prompt and completion apart gives the tokens of the whole text: no merge at the seam.
        assert p + c == tok(ds[i]["prompt"] + ds[i]["completion"], add_special_tokens=False)["input_ids"]
        n = len(p) + len(c)
        ids, labels, mask = batch["input_ids"][i].tolist(), batch["labels"][i].tolist(), batch["attention_mask"][i]
        assert ids[:n] == p + c
        assert labels[:len(p)] == [-100] * len(p)  # the prompt: no loss
        assert labels[len(p):n] == c  # the assistant turn: every token
        assert c[-1] == im_end and c.count(im_end) == 1  # trained to stop, once
        assert labels[n:] == [-100] * (len(ids) - n) and ids[n:] == [pad] * (len(ids) - n)  # padding
        assert mask[:n].all() and not mask[n:].any()
        trained = tok.decode([t for t in labels if t != -100], skip_special_tokens=False)
        assert trained == ds[i]["completion"]


def test_split_by_question_keeps_questions_apart(run):
    ds = sft.sft_dataset(run["paths"])
    train, ev = sft.split_by_question(ds, 0.25, seed=0)
    assert len(train) + len(ev) == len(ds) and len(ev) > 0
    assert not set(train["question_id"]) & set(ev["question_id"])
    again_train, again_eval = sft.split_by_question(ds, 0.25, seed=0)
    assert list(again_eval["question_id"]) == list(ev["question_id"])
    assert sft.split_by_question(ds, 0.0, seed=0) == (ds, None)
    via_cfg = sft.sft_splits(run["paths"], sft_config(eval_share=0.25, seed=0))
    assert [list(d["question_id"]) for d in via_cfg] == [list(train["question_id"]), list(ev["question_id"])]
    with pytest.raises(ValueError, match="at least 2 questions"):
        sft.split_by_question(ds.filter(lambda q: q == ds[0]["question_id"], input_columns="question_id"), 0.5, 0)


def test_drop_too_long(run):
    tok, ds = run["tok"], sft.sft_dataset(run["paths"], only_kept=False)
    lengths = modeling.count_tokens(tok, [p + c for p, c in zip(ds["prompt"], ds["completion"])])
    cap = sorted(lengths)[len(lengths) // 2]
    short, dropped = sft.drop_too_long(ds, tok, cap)
    assert dropped == sum(n > cap for n in lengths) > 0 and len(short) == len(ds) - dropped


def test_config_names_bad_values():
    with pytest.raises(ValueError, match="warmup_ratio"):
        sft_config(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        sft_config(max_steps=0)
    assert sft_config(max_steps=0, epochs=2).epochs == 2
    with pytest.raises(ValueError, match="eval_share"):
        sft_config(eval_share=1.0)


def test_train_sft_refuses_rows_without_completions(run):
    tok = run["tok"]
    with pytest.raises(ValueError, match="sft_dataset"):
        sft.train_sft(tiny_model(tok, 32, 1), tok, run["paths"], None, sft_config(max_steps=1))
    ds = sft.sft_dataset(run["paths"])
    with pytest.raises(ValueError, match="max_length"):
        sft.train_sft(tiny_model(tok, 32, 1), tok, ds, None, sft_config(max_steps=1, max_length=5))


# --------------------------------------------------------------------------- training


def test_sft_is_deterministic_for_a_seed(run):
    tok, ds = run["tok"], sft.sft_dataset(run["paths"])
    cfg = sft_config(max_steps=3, batch_size=2, logging_steps=1, progress=False, seed=7)
    a = sft.train_sft(tiny_model(tok, 32, 1), tok, ds, None, cfg)
    b = sft.train_sft(tiny_model(tok, 32, 1), tok, ds, None, cfg)
    assert a.history["loss"].tolist() == b.history["loss"].tolist() and len(a.history) == 3


def test_tiny_sft_memorizes_a_trace_and_greedy_decoding_reproduces_it(run):
    tok, questions = run["tok"], run["questions"]
    ds = sft.sft_dataset(run["paths"])
    df = ds.to_pandas().assign(n=[len(c) for c in ds["completion"]])
    # The shortest path that backtracks: the run must learn the backtracking structure too.
    with_backtrack = df[df["completion"].str.contains("<|reasoning_backtrack|>", regex=False)]
    row = (with_backtrack if len(with_backtrack) else df).sort_values("n").iloc[0]
    other = df[df["question_id"] != row["question_id"]].iloc[0]
    train = ds.select([int(row.name)] * 8)
    ev = ds.select([int(other.name)] * 2)
    model = tiny_model(tok)
    # Digit-level tokens make the trace ~1.5x longer than whole-number tokens did: 30 steps left the loss near
    # 1.6 and 60 steps did not reproduce the trace exactly; 100 steps do (a 10x larger learning rate stalls).
    cfg = sft_config(max_steps=100, batch_size=4, learning_rate=5e-3, warmup_ratio=0.0,
                     lr_scheduler_type="constant", logging_steps=5, eval_steps=25, progress=False)
    result = sft.train_sft(model, tok, train, ev, cfg)

    h = result.history
    assert result.steps == 100 and h["step"].iloc[-1] == 100
    assert h["loss"].iloc[0] > 10 * h["loss"].dropna().iloc[-1] and result.final_train_loss < 0.5
    assert h["eval_loss"].notna().sum() >= 3 and result.final_eval_loss is not None
    n_tokens = len(tok(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"])
    assert result.train_tokens == 100 * 4 * n_tokens  # identical rows: no padding, every token counted
    assert result.tokens_per_s > 0 and result.n_train == 8 and result.n_eval == 2
    assert not model.training

    completion = row["completion"]
    out = inference.generate(model, tok, [row["prompt"]], max_new_tokens=n_tokens + 20, temperature=0.0,
                             progress=False)[0][0]
    assert out == completion[:-len("<|im_end|>")]  # stopped at <|im_end|>, which is not returned
    letter = scoring.extract_answer_letter(completion)
    score = scoring.score_output(out, letter, questions[row["question_id"]], tok)
    assert score["format_ok"] and score["correct"] and score["n_backtracks"] >= (len(with_backtrack) > 0)


def test_stage_config_maps_the_presets_sft_section():
    from steiner_lib.params import load_preset

    p = load_preset("params/cpu.yaml")
    cfg = sft.stage_config(p.sft, seed=7)
    assert (cfg.max_steps, cfg.batch_size, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing) == (
        p.sft.steps, p.sft.batch_size, p.sft.gradient_accumulation, p.sft.gradient_checkpointing)
    assert (cfg.learning_rate, cfg.max_length, cfg.eval_share, cfg.seed) == (
        p.sft.learning_rate, p.sft.max_length, p.sft.eval_share, 7)
