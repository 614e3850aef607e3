"""Fixtures shared across test files."""

import pytest

from helpers import CORPUS, preset, tiny_qwen2


@pytest.fixture(scope="module")
def tok():
    """A BPE tokenizer with the 14 reasoning tokens, trained on helpers.CORPUS (files may define their own)."""
    from steiner_lib.training import modeling

    return modeling.train_bpe_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tok):
    """helpers.tiny_qwen2 for `tok`: 2 layers, 4 query heads on 2 key-value heads."""
    return tiny_qwen2(tok)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One Papermill run of every notebook on params/smoke.yaml for the whole session (about 2-3
    minutes): (tmp dir, preset path, outcomes). tests/test_notebooks.py checks the run,
    tests/report/test_book_smoke.py renders its book."""
    from steiner_lib.runner import run

    tmp = tmp_path_factory.mktemp("smoke")
    path = preset(tmp)
    outcomes = run(path, progress=False)
    return tmp, path, outcomes
