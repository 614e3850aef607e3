"""Notebook 02's pipeline over many questions: DAGs, sampled examples, token counts, filters."""

import re

import networkx as nx
import pytest

from steiner_lib import params as P
from steiner_lib.data import dataset, synthesis, teachers
from steiner_lib.format import parse
from steiner_lib.tasks import choice
from steiner_lib.training import modeling


@pytest.fixture(scope="module")
def pipeline():
    cfg = P.validate({"task_n_train": 16}, "test")
    splits = choice.make_splits(rng_seed=3, n_train=16, n_validation=1, n_diamond=1, n_hard=0, n_control=1, n_numbers=4,
                                max_number=25, min_steps=2, max_steps=3, diamond_max_backtracks=20, hard_min_backtracks=100)
    train = splits["train"]
    letters = [choice.format_prompt(q.to_choice(), seed=0)[1] for q in train]
    trajs = synthesis.synthesize(train, letters, teachers.make_teacher(cfg.teacher), augmentations_per_question=3,
                                 seed=0, workers=1, progress=False)
    by_q = dataset.group_by_question(trajs)
    questions = {q.question_id: q for q in train}
    graphs = dataset.build_dags(by_q, questions, progress=False)
    examples, sampled = dataset.sample_examples(graphs, by_q, questions, n_paths=4, max_backtracks=2,
                                                explore_prob=0.3, seed=0, progress=False, answer_format="scan")
    tokenizer = dataset.run_tokenizer(cfg.tokenizer, trajs)
    return dict(train=train, trajs=trajs, by_q=by_q, questions=questions, graphs=graphs, examples=examples,
                sampled=sampled, tokenizer=tokenizer, splits=splits)


def test_every_example_parses_and_its_letter_names_the_reachable_option(pipeline):
    ex = pipeline["examples"]
    assert len(ex) > 0
    for row in ex:
        result = parse(row["reasoning"] + "\n" + row["answer"])
        assert result.ok, result.errors
        assert result.trace.n_backtracks == row["n_backtracks"]
        # The answer's letter points at the correct value in this example's own shuffled prompt.
        letter = re.search(r"Answer: ([ABCD])", row["answer"]).group(1)
        option = re.search(rf"^{letter}\) (\d+)$", row["prompt"], re.M).group(1)
        assert int(option) == pipeline["questions"][row["question_id"]].problem.target
        # The scan answer goes through the prompt's options from A to that letter, "yes" only at it.
        shown = re.findall(r"^([ABCD])\) (\d+)$", row["prompt"], re.M)
        k = "ABCD".index(letter)
        assert re.findall(r"^([ABCD])\) (\d+) (no|yes)$", row["answer"], re.M) == [
            (c, v, "yes" if i == k else "no") for i, (c, v) in enumerate(shown[:k + 1])]


def test_the_letter_answer_format_writes_no_scan(pipeline):
    letter_only, _ = dataset.sample_examples(pipeline["graphs"], pipeline["by_q"], pipeline["questions"], n_paths=2,
                                             max_backtracks=2, explore_prob=0.3, seed=0, progress=False)  # the default
    assert all(re.fullmatch(r"[^\n]* = \d+\n\nAnswer: [ABCD]", a) for a in letter_only["answer"])
    with pytest.raises(ValueError, match="answer_format='bold'"):
        dataset.sample_examples(pipeline["graphs"], pipeline["by_q"], pipeline["questions"], n_paths=2,
                                max_backtracks=2, explore_prob=0.3, seed=0, progress=False, answer_format="bold")


def test_paths_reach_the_answer_node_of_their_dag(pipeline):
    for (qid, _), path in pipeline["sampled"].items():
        g = pipeline["graphs"][qid]
        assert g.nodes[path.nodes[-1]]["is_answer"]


def test_token_counts_are_exact(pipeline):
    tok, ex = pipeline["tokenizer"], pipeline["examples"]
    texts = list(ex["reasoning"][:40]) + ["plain text with no special tokens", "", "<|im_end|><|im_end|>"]
    direct = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    assert modeling.count_tokens(tok, texts) == direct


def test_length_filters(pipeline):
    ex = pipeline["examples"]
    tok = pipeline["tokenizer"]
    measured = dataset.measure_and_filter(ex, tok, max_reasoning_tokens=10**6, max_total_tokens=10**6)
    assert all(measured["kept"])
    assert all(t > r for r, t in zip(measured["reasoning_tokens"], measured["total_tokens"]))
    cap = sorted(measured["reasoning_tokens"])[len(ex) // 2]
    half = dataset.measure_and_filter(ex, tok, max_reasoning_tokens=cap, max_total_tokens=10**6)
    assert all(k == (r <= cap) for k, r in zip(half["kept"], half["reasoning_tokens"]))
    table = dataset.compare_with_paper(pipeline["graphs"], half, "test tokenizer")
    assert table.loc["DAGs"].iloc[1] == f"{len(pipeline['graphs']):,}"
    assert 0 < float(table.loc["share filtered out"].iloc[1]) < 1


def test_questions_round_trip_through_the_gpqa_csv(pipeline, tmp_path):
    path = tmp_path / "train.csv"
    choice.write_gpqa_csv([q.to_choice() for q in pipeline["train"]], path)
    back = dataset.load_countdown_questions(path)
    for q in pipeline["train"]:
        assert back[q.question_id].problem == q.problem
        assert sorted(back[q.question_id].options) == sorted(q.options)


def test_dags_round_trip_on_disk(pipeline, tmp_path):
    dataset.save_dags(pipeline["graphs"], tmp_path / "dags.jsonl")
    back = dataset.load_dags(tmp_path / "dags.jsonl")
    for qid, g in pipeline["graphs"].items():
        assert nx.is_isomorphic(g, back[qid])
        assert back[qid].nodes[0]["kind"] == "question"


def test_sampling_is_deterministic_for_a_seed(pipeline):
    again, _ = dataset.sample_examples(pipeline["graphs"], pipeline["by_q"], pipeline["questions"], n_paths=4,
                                       max_backtracks=2, explore_prob=0.3, seed=0, progress=False,
                                       answer_format="scan")
    assert again["reasoning"] == pipeline["examples"]["reasoning"]
    assert dataset.stable_seed(1, "a") == dataset.stable_seed(1, "a") != dataset.stable_seed(2, "a")


def test_training_questions_never_share_a_start_state_with_evaluation(pipeline):
    train_states = {q.problem.numbers for q in pipeline["splits"]["train"]}
    for name in ("validation", "diamond", "control"):
        assert not train_states & {q.problem.numbers for q in pipeline["splits"][name]}


def test_append_recorded_rows_adds_new_columns_to_an_older_file(tmp_path):
    path = tmp_path / "rows.csv"
    dataset.append_recorded_rows(path, [{"a": 1, "b": 2}], ("a", "b"))
    dataset.append_recorded_rows(path, [{"a": 3, "c": 4, "b": 5}], ("a", "c", "b"))
    assert path.read_text().splitlines() == ["a,c,b", "1,,2", "3,4,5"]
    with pytest.raises(SystemExit, match=r"\['b'\]"):
        dataset.append_recorded_rows(path, [{"a": 6}], ("a", "c"))
