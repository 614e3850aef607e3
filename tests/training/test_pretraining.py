"""Tests for steiner_lib.training.pretraining: corpora, packing, train_lm, the CPT mix, the embedding report.

Data are tiny versions of what notebooks 01 and 02 leave on disk, made with the library
(12 questions); models are tiny Qwen2s built here. No hub access.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from steiner_lib.data import dataset, synthesis  # noqa: E402
from steiner_lib.data.teachers import SearchTeacher  # noqa: E402
from steiner_lib.format import SPECIAL_TOKENS, parse  # noqa: E402
from steiner_lib.tasks import choice  # noqa: E402
from steiner_lib.tasks.countdown import solve, verify_expression  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402
from steiner_lib.training import pretraining as P  # noqa: E402

TINY = modeling.ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                            max_position_embeddings=256)


@pytest.fixture(scope="module")
def questions():
    splits = choice.make_splits(0, n_train=12, n_validation=1, n_diamond=1, n_hard=0, n_control=1, n_numbers=4,
                                max_number=25, min_steps=2, max_steps=3, diamond_max_backtracks=20, hard_min_backtracks=100)
    return splits["train"]


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.train_bpe_tokenizer(modeling.regular_text(), 512)


@pytest.fixture(scope="module")
def paths(questions, tokenizer):
    """Notebooks 01 and 02 in miniature: the reasoning paths of 12 training questions."""
    letters = [choice.format_prompt(q, 0)[1] for q in questions]
    teacher = SearchTeacher(error_rate=0.5, arithmetic_error_rate=0.1, branching=3, max_explore_steps=4)
    trajectories = synthesis.synthesize(questions, letters, teacher, augmentations_per_question=3, seed=0,
                                        progress=False)
    by_question = dataset.group_by_question(trajectories)
    by_id = {q.question_id: q for q in questions}
    graphs = dataset.build_dags(by_question, by_id, progress=False)
    examples, _ = dataset.sample_examples(graphs, by_question, by_id, n_paths=3, max_backtracks=2,
                                       explore_prob=0.3, seed=0, progress=False)
    return dataset.measure_and_filter(examples, tokenizer, max_reasoning_tokens=1024, max_total_tokens=2048)


def fast_cfg(**kw) -> P.LMTrainConfig:
    base = dict(max_steps=30, batch_size=8, seq_len=64, learning_rate=3e-3, warmup_ratio=0.1, eval_every=10,
                eval_batches=1, logging_steps=5, seed=0, num_threads=1)
    return P.LMTrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------- corpora


def test_shortcut_plain_text_is_forward_only_and_verifiable(questions):
    for q in questions:
        ops = solve(q.problem)
        prompt, letter = choice.format_prompt(q, seed=3)
        text = P.shortcut_plain_text(prompt, ops, letter)
        assert text.startswith(prompt)
        assert not any(t in text for t in SPECIAL_TOKENS)
        assert text.endswith(f"Answer: {letter}")
        lines = text.split("\n\n")
        assert len(lines[-3].splitlines()) == len(ops)  # one line per operation
        assert verify_expression(q.problem, lines[-2].split(" = ")[0])
    with pytest.raises(ValueError, match="at least one operation"):
        P.shortcut_plain_text("q", [], "A")


def test_base_corpus_has_no_reasoning_token_and_chat_texts_read_back(questions):
    regular = modeling.regular_text()[:5]
    texts = P.base_corpus(regular, questions, seed=0, copies=2)
    shortcuts = [t for t in texts if t.startswith(modeling.IM_START)]
    assert len(shortcuts) == 2 * len(questions)
    assert not any(tok in t for t in texts for tok in SPECIAL_TOKENS)  # never a reasoning token
    assert all(t.endswith(modeling.IM_END) and "Answer: " in t for t in shortcuts)
    letters = {t.rsplit("Answer: ", 1)[1][0] for t in shortcuts}
    assert len(letters) > 1  # the shuffled choices move the correct letter around
    assert sorted(t for t in texts if not t.startswith(modeling.IM_START)) == sorted(
        P.split_documents(regular, 2000))
    assert P.base_corpus(regular, questions, seed=0, copies=2) == texts  # deterministic
    plain = P.base_corpus([], questions, seed=0, chat=False)
    assert not any(modeling.IM_START in t for t in plain)


def test_split_documents_keeps_the_text_and_bounds_the_pieces():
    text = "\n\n".join(f"paragraph {i} " + "x" * (i * 37 % 300) for i in range(60))
    pieces = P.split_documents([text], max_chars=500)
    assert "\n\n".join(pieces) == text
    assert all(len(p) <= 500 for p in pieces) and len(pieces) > 5
    assert P.split_documents(["y" * 900], max_chars=100) == ["y" * 900]  # one long paragraph stays whole


def test_split_heldout_is_disjoint_and_seeded():
    texts = [f"text {i}" for i in range(50)]
    train, held = P.split_heldout(texts, 0.1, seed=0)
    assert len(held) == 5 and sorted(train + held) == sorted(texts) and not set(train) & set(held)
    assert P.split_heldout(texts, 0.1, seed=0) == (train, held)
    assert P.split_heldout(texts, 0.1, seed=1) != (train, held)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        P.split_heldout(texts, 1.0, seed=0)


def test_paths_as_text_are_chatml_with_a_parsable_reasoning(paths):
    texts = P.paths_as_text(paths)
    assert len(texts) == sum(paths["kept"])
    for t in texts[:10]:
        assert t.startswith(modeling.IM_START + "user\n") and t.endswith(modeling.IM_END)
        assistant = t.split(modeling.IM_START + "assistant\n", 1)[1].removesuffix(modeling.IM_END)
        assert parse(assistant).ok


@pytest.mark.parametrize("share", [0.0, 0.3, 0.7, 1.0])
def test_cpt_mix_hits_its_token_share(tokenizer, paths, share):
    tok = tokenizer
    corpus = P.cpt_corpus(modeling.regular_text(), P.paths_as_text(paths), share, 60_000, seed=0,
                          tokenizer=tok)
    assert abs(corpus.reasoning_share - share) < 0.02
    assert abs(corpus.n_tokens - 60_000) / 60_000 < 0.03
    assert corpus.tokens == modeling.count_tokens(tok, corpus.texts)
    table = corpus.table()
    assert table["tokens"].sum() == corpus.n_tokens
    if 0 < share < 1:
        assert set(corpus.sources) == {"regular", "reasoning"}
        pool = sum(modeling.count_tokens(tok, P.paths_as_text(paths)))
        # a budget larger than the pool passes over it again; a smaller one never repeats a text
        repeated = table.loc["reasoning", "texts"] > table.loc["reasoning", "distinct_texts"]
        assert repeated == (share * 60_000 > pool)
    again = P.cpt_corpus(modeling.regular_text(), P.paths_as_text(paths), share, 60_000, seed=0,
                         tokenizer=tok)
    assert again.texts == corpus.texts


def test_cpt_mix_names_what_is_missing(tokenizer):
    with pytest.raises(ValueError, match="no reasoning texts"):
        P.cpt_corpus(["some text"], [], 0.5, 1000, seed=0, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"reasoning_share=1.5"):
        P.cpt_corpus(["some text"], ["x"], 1.5, 1000, seed=0, tokenizer=tokenizer)


# ---------------------------------------------------------------------------- packing


def test_pack_texts_concatenates_with_eos_and_cuts_blocks(tokenizer):
    tok = tokenizer
    eos = tok.eos_token_id
    texts = ["alpha beta gamma", modeling.chat_text("hi", "hello"), "delta epsilon"]
    stream = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        stream += ids + ([] if ids[-1] == eos else [eos])
    packed = P.pack_texts(tok, texts * 20, seq_len=16)
    flat = [i for row in packed["input_ids"] for i in row]
    assert all(len(row) == 16 for row in packed["input_ids"])
    assert len(packed) == len(stream) * 20 // 16
    assert flat == (stream * 20)[:len(flat)]
    assert [eos, eos] not in [flat[i:i + 2] for i in range(len(flat) - 1)]  # ChatML's <|im_end|> is not doubled
    with pytest.raises(ValueError, match="fewer than one block"):
        P.pack_texts(tok, ["short"], seq_len=512)


# ---------------------------------------------------------------------------- train_lm


def test_train_lm_drives_the_loss_down_and_logs_heldout_loss(tokenizer):
    tok = tokenizer
    model = modeling.build_model(tok, TINY, seed=0)
    repetitive = ["The quick brown fox jumps over the lazy dog. " * 8] * 40
    held = {"same": ["The quick brown fox jumps over the lazy dog. " * 8] * 3,
            "other": modeling.regular_text()[:2]}
    result = P.train_lm(model, tok, repetitive, held, fast_cfg(learning_rate=1e-2), progress=False)
    h = result.history
    assert list(h.columns) == ["step", "train_loss", "eval_loss_other", "eval_loss_same", "tokens_seen",
                               "learning_rate"]
    train = h["train_loss"].dropna()
    assert len(train) == 6 and train.iloc[-1] < 0.5 * train.iloc[0]
    same = h.dropna(subset=["eval_loss_same"])
    assert list(same["step"]) == [0, 10, 20, 30]  # once before training, then every eval_every steps
    assert same["eval_loss_same"].iloc[-1] < 0.5 * same["eval_loss_same"].iloc[0]
    assert h["tokens_seen"].iloc[-1] == result.tokens_seen == 30 * 8 * 64
    assert result.tokens_per_second > 0 and result.wall_time_s >= result.train_time_s > 0
    assert result.n_eval_blocks["same"] >= 1 and result.n_train_blocks > 8
    lr = h["learning_rate"].dropna()
    assert lr.max() <= 1e-2 and lr.iloc[-1] < lr.max()  # cosine decay after warmup
    s = result.summary()
    assert s["steps"] == 30 and s["last_train_loss"] < s["first_train_loss"]


def test_train_lm_is_deterministic_for_a_seed(tokenizer):
    tok = tokenizer
    texts = modeling.regular_text()[:6]
    cfg = fast_cfg(max_steps=4, logging_steps=1, eval_batches=0)
    a = P.train_lm(modeling.build_model(tok, TINY, seed=0), tok, texts, None, cfg, progress=False)
    b = P.train_lm(modeling.build_model(tok, TINY, seed=0), tok, texts, None, cfg, progress=False)
    assert a.history["train_loss"].tolist() == b.history["train_loss"].tolist()
    assert "eval_loss" in a.history and a.history["eval_loss"].isna().all()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        P.train_lm(a.model, tok, texts, None, fast_cfg(seq_len=512), progress=False)


def test_gradient_accumulation_trains_as_the_larger_batch_would(tokenizer):
    # 2 micro-batches of 4 blocks = one batch of 8 (same blocks, same order, same per-token mean):
    # the GPU presets use this to keep the paper's batch when a process can hold only a few blocks.
    tok = tokenizer
    texts = modeling.regular_text()[:6]
    runs = {}
    for batch, accumulation in ((8, 1), (4, 2)):
        cfg = fast_cfg(max_steps=3, logging_steps=1, eval_batches=0, batch_size=batch,
                       gradient_accumulation_steps=accumulation)
        runs[batch] = P.train_lm(modeling.build_model(tok, TINY, seed=0), tok, texts, None, cfg, progress=False)
    assert runs[4].tokens_seen == runs[8].tokens_seen == 3 * 8 * 64
    assert runs[4].summary()["steps"] == 3
    for a, b in zip(runs[8].history["train_loss"].dropna(), runs[4].history["train_loss"].dropna()):
        assert a == pytest.approx(b, rel=1e-3)
    w8, w4 = (r.model.get_input_embeddings().weight for r in (runs[8], runs[4]))
    torch.testing.assert_close(w8, w4, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        P.LMTrainConfig(gradient_accumulation_steps=0)


def test_config_rejects_bad_budgets():
    with pytest.raises(ValueError, match="max_steps"):
        P.LMTrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        P.LMTrainConfig(warmup_ratio=1.0)


# ---------------------------------------------------------------------------- embeddings


def test_embedding_report_shows_cpt_moving_the_reasoning_tokens(tokenizer, paths):
    tok = tokenizer
    model = modeling.build_model(tok, TINY, seed=0)
    modeling.init_token_embeddings(model, tok, SPECIAL_TOKENS)  # as if added to a pretrained base
    before = copy.deepcopy(model)

    untouched = P.embedding_report(before, copy.deepcopy(model), tok, k=3)
    assert list(untouched.index) == list(SPECIAL_TOKENS)
    assert (untouched["cosine_before_after"] > 1 - 1e-6).all()
    assert (untouched["norm_before"] == untouched["norm_after"]).all()
    assert (untouched["neighbours_before"] == untouched["neighbours_after"]).all()

    corpus = P.cpt_corpus(modeling.regular_text(), P.paths_as_text(paths), 0.5, 20_000, seed=0,
                          tokenizer=tok)
    P.train_lm(model, tok, corpus.texts, None, fast_cfg(max_steps=8, eval_batches=0), progress=False)
    report = P.embedding_report(before, model, tok, k=3)
    assert (report["cosine_before_after"] < 1 - 1e-4).all()  # every one of the 14 rows moved
    assert ((report["norm_after"] - report["norm_before"]).abs() > 1e-5).all()
    assert report["neighbours_before"].str.count(",").eq(2).all()  # k=3 neighbours each
    assert not report["neighbours_after"].str.contains("<|", regex=False).any()  # ordinary tokens only
    with_special = P.embedding_report(before, model, tok, k=3, special_neighbours=True)
    for token, row in with_special.iterrows():  # a token is never its own neighbour
        assert repr(token) not in row["neighbours_before"] and repr(token) not in row["neighbours_after"]
    assert with_special["neighbours_before"].str.contains("<|reasoning", regex=False).any()
    assert not torch.equal(before.get_input_embeddings().weight, model.get_input_embeddings().weight)

    # A snapshot of the embedding matrix alone gives the same report as a copy of the whole model.
    snapshot = P.input_embeddings(before)
    assert snapshot.data_ptr() != before.get_input_embeddings().weight.data_ptr()
    pd.testing.assert_frame_equal(P.embedding_report(snapshot, P.input_embeddings(model), tok, k=3), report)

    small = modeling.build_model(modeling.train_bpe_tokenizer(["a b c"] * 5, 300), TINY)
    with pytest.raises(ValueError, match="differ in shape"):
        P.embedding_report(before, small, tok)


def test_cpt_pools_hold_out_whole_questions_and_documents():
    import datasets

    from steiner_lib.training import pretraining

    paths = datasets.Dataset.from_dict({
        "question_id": [f"q{i // 3}" for i in range(30)], "prompt": [f"question {i // 3}" for i in range(30)],
        "reasoning": [f"<|reasoning_start|>path {i}<|reasoning_end|>" for i in range(30)],
        "answer": ["Answer: A"] * 30, "kept": [i % 7 != 0 for i in range(30)]})
    regular = [f"document {i}\n\nsecond paragraph {i}" for i in range(20)]
    pools = pretraining.cpt_pools(paths, regular, heldout_share=0.2, seed=0)
    assert pools["reasoning_heldout"] and pools["regular_heldout"]
    assert not set(pools["reasoning_train"]) & set(pools["reasoning_heldout"])
    train_q = {t.split("question ")[1].split("<")[0] for t in pools["reasoning_train"]}
    held_q = {t.split("question ")[1].split("<")[0] for t in pools["reasoning_heldout"]}
    assert not train_q & held_q  # whole questions on one side
    held_docs = {t.split("\n")[0] for t in pools["regular_heldout"]}
    assert not held_docs & {t.split("\n")[0] for t in pools["regular_train"]}
    assert all("path 0<" not in t and "path 7<" not in t for t in pools["reasoning_train"])  # kept only


def test_knowledge_report_probes_every_kind_of_knowledge(tokenizer, questions):
    from steiner_lib.tasks import knowledge

    known = knowledge.knowledge_corpus(max_number=4, max_value=6, fact_copies=60, n_drills=0, seed=0,
                                       heldout_share=0.2)
    model = modeling.build_model(tokenizer, TINY, seed=0)
    before = P.knowledge_report(model, tokenizer, known, n_probes=20, n_boot=50, questions=questions)
    ops = sorted({f.op for f in known.train_facts})
    assert list(before.index) == ["arithmetic facts read", "arithmetic facts held out", "list drill: copy",
                                  "list drill: sort", "list drill: take", "option drill: letter of a value",
                                  "question prompt: letter of a written value"] + [
        f"arithmetic facts read: {P.OPERATION_NAMES[op]}" for op in P.OPERATION_NAMES if op in ops]
    by_op = before.loc[[i for i in before.index if i.startswith("arithmetic facts read: ")]]
    assert by_op["items"].sum() == before.loc["arithmetic facts read", "items"]  # the same probes, split
    weighted = (by_op["items"] * by_op["accuracy"]).sum() / by_op["items"].sum()
    assert abs(weighted - before.loc["arithmetic facts read", "accuracy"]) < 1e-9
    assert before.loc["arithmetic facts read", "items"] == 20 and len(known.train_facts) > 20  # a sample of n_probes
    assert before.loc["arithmetic facts read", "accuracy"] < 0.2  # an untrained model knows nothing
    assert (before["ci_low"] <= before["accuracy"]).all() and (before["accuracy"] <= before["ci_high"]).all()
    metrics = P.knowledge_metrics(before, "cpt")
    assert metrics["cpt_accuracy_arithmetic_facts_read"] == before.loc["arithmetic facts read", "accuracy"]
    assert metrics["cpt_accuracy_list_drill_copy"] == before.loc["list drill: copy", "accuracy"]
    assert len(metrics) == len(before)


def test_knowledge_comparison_sets_models_side_by_side():
    import pandas as pd

    index = ["arithmetic facts read", "list drill: copy"]
    base = pd.DataFrame({"items": [10, 5], "accuracy": [0.7, 0.9], "ci_low": [0.4, 0.6], "ci_high": [0.9, 1.0]},
                        index=index)
    cpt = base.iloc[:1].assign(accuracy=[0.1], ci_low=[0.0], ci_high=[0.3])  # a row missing
    both = P.knowledge_comparison({"base": base, "after CPT": cpt})
    assert list(both.index) == index and list(both["items"]) == [10, 5]
    assert list(both.columns) == ["items", "base accuracy", "base ci_low", "base ci_high",
                                  "after CPT accuracy", "after CPT ci_low", "after CPT ci_high"]
    assert both.loc["arithmetic facts read", "after CPT accuracy"] == 0.1
    assert both["after CPT accuracy"].isna().tolist() == [False, True]
    with pytest.raises(ValueError, match="at least one"):
        P.knowledge_comparison({})


@pytest.mark.parametrize("answer_format", ["scan", "letter"])
def test_letter_probes_ask_the_letter_of_the_solved_value(questions, answer_format):
    prompts, letters = P.letter_probes(questions, seed=0, n=8, answer_format=answer_format)
    assert len(prompts) == len(letters) == 8
    for q, prompt, letter in zip(questions, prompts, letters):
        assert prompt.startswith(modeling.IM_START) and prompt.endswith(f"= {q.problem.target}\n\n")
        options = dict(line.split(") ", 1) for line in prompt.split(modeling.IM_END)[0].splitlines()[-4:])
        assert options[letter] == str(q.problem.target)  # the letter names the written value's option
        assert "Answer:" not in prompt and " no\n" not in prompt  # the model writes the rest


def test_base_corpus_answers_scan_the_options_of_their_own_prompt(questions):
    texts = [t for t in P.base_corpus([], questions, seed=0, copies=2, answer_format="scan")
             if t.startswith(modeling.IM_START)]
    for t in texts:
        user, reply = t.split(modeling.IM_END)[0], t.split("assistant\n", 1)[1]
        options = [line.split(") ", 1)[1] for line in user.splitlines()[-4:]]
        letter = reply.rsplit("Answer: ", 1)[1][0]
        scan = reply.split("\n\n")[-2].splitlines()
        k = "ABCD".index(letter)
        assert scan == [f"{c}) {options[i]} {'yes' if i == k else 'no'}" for i, c in enumerate("ABCD"[:k + 1])]
    letter_only = P.base_corpus([], questions, seed=0, copies=2)  # the default
    assert not any(" yes\n" in t for t in letter_only)
    with pytest.raises(ValueError, match="answer_format='bold'"):
        P.base_corpus([], questions, seed=0, answer_format="bold")
