"""Fixtures shared across test files."""

import pytest

from helpers import preset


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One Papermill run of every notebook on params/smoke.yaml for the whole session (about 2-3
    minutes): (tmp dir, preset path, outcomes). tests/test_notebooks.py checks the run,
    tests/test_report_book.py renders its book."""
    from steiner_lib.runner import run

    tmp = tmp_path_factory.mktemp("smoke")
    path = preset(tmp)
    outcomes = run(path, progress=False)
    return tmp, path, outcomes
