"""benchmarks/letter_lookup.py: the next-token probabilities of the four answer letters."""

import pytest
from helpers import load_benchmark


def _module():
    return load_benchmark("letter_lookup")


def test_letter_probabilities_are_the_next_token_distribution_over_the_letters():
    import torch
    from helpers import tiny_qwen2

    from steiner_lib.training import modeling

    mod = _module()
    answers = ["Answer: A. Answer: B. Answer: C. Answer: D."] * 200
    tiny_tokenizer = modeling.train_bpe_tokenizer(modeling.regular_text() + answers, 512)  # " A" .. " D": one token each
    tiny_model = tiny_qwen2(tiny_tokenizer)
    with pytest.raises(SystemExit, match="splits the answer letters"):  # a tokenizer that never saw them
        mod.letter_probabilities(tiny_model, modeling.train_bpe_tokenizer(["x y z"] * 10, 300), ["Answer:"])
    prompts = ["A) 4\nB) 5\nC) 6\nD) 7\n\n2 + 3 = 5\n\nAnswer:", "Answer:"]
    probs = mod.letter_probabilities(tiny_model, tiny_tokenizer, prompts)
    assert len(probs) == 2 and all(len(p) == 4 for p in probs)
    ids = [tiny_tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in "ABCD"]
    with torch.no_grad():
        enc = tiny_tokenizer(prompts[1], return_tensors="pt", add_special_tokens=False)
        full = torch.softmax(tiny_model(**enc).logits[0, -1], -1)
    assert probs[1] == full[ids].tolist()
    assert 0 < sum(probs[0]) <= 1


def test_shortcut_probes_end_where_the_letter_is_the_next_token():
    from helpers import make_questions

    questions = make_questions(6)
    prompts, letters = _module().shortcut_probes(questions, n=6)
    assert len(prompts) == len(letters) == 6
    for q, prompt, letter in zip(questions, prompts, letters):
        assert prompt.endswith(f"= {q.problem.target}\n\nAnswer:")
        options = dict(line.split(") ", 1) for line in prompt.split("<|im_end|>")[0].splitlines()[-4:])
        assert options[letter] == str(q.problem.target)
