"""The evaluation set loader: GPQA-schema CSVs, the gated hub dataset, and one clear error when neither is there.

No test touches the network: the hub path runs in offline mode or against a stand-in load_dataset.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers import ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
from datasets.exceptions import DatasetNotFoundError  # noqa: E402
from huggingface_hub.errors import GatedRepoError  # noqa: E402

from steiner_lib.tasks import gpqa  # noqa: E402
from steiner_lib.tasks.choice import ChoiceQuestion, format_prompt  # noqa: E402

# A subset of the real gpqa_diamond.csv's columns, in its order (the real file has about 40).
REAL_COLUMNS = ["Pre-Revision Question", "Pre-Revision Correct Answer", "Pre-Revision Incorrect Answer 1",
                "Pre-Revision Incorrect Answer 2", "Pre-Revision Incorrect Answer 3", "Pre-Revision Explanation",
                "Self-reported question-writing time (minutes)", "Question", "Correct Answer",
                "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Explanation",
                "Revision Comments (from Question Writer)", "Subdomain", "Writer's Difficulty Estimate",
                "Record ID", "High-level domain"]

ROWS = [
    {"Pre-Revision Question": "old, draft", "Question": 'A particle of mass "m", charge q\nmoves in a field B.\n'
     'What is its period?', "Correct Answer": " 2πm/(qB) ", "Incorrect Answer 1": "πm/(qB)",
     "Incorrect Answer 2": "4πm/(qB), roughly", "Incorrect Answer 3": "m/(qB)",
     "Explanation": 'Cyclotron motion, "classic":\nT = 2πm/(qB).', "Subdomain": "Electromagnetism",
     "Writer's Difficulty Estimate": "Hard graduate level (could be a question on a hard graduate exam)",
     "Record ID": "recA1b2C3d4E5f6G7", "High-level domain": "Physics",
     "Self-reported question-writing time (minutes)": "45.0"},
    {"Question": "Which of these compounds is aromatic?", "Correct Answer": "Benzene",
     "Incorrect Answer 1": "Cyclohexane", "Incorrect Answer 2": "Cyclohexene", "Incorrect Answer 3": "NA",
     "Record ID": "recZ9", "High-level domain": "Chemistry", "Subdomain": "Organic Chemistry"},
]

EXPECTED = [
    ChoiceQuestion('A particle of mass "m", charge q\nmoves in a field B.\nWhat is its period?', "2πm/(qB)",
                   ("πm/(qB)", "4πm/(qB), roughly", "m/(qB)"), "recA1b2C3d4E5f6G7"),
    ChoiceQuestion("Which of these compounds is aromatic?", "Benzene", ("Cyclohexane", "Cyclohexene", "NA"), "recZ9"),
]


def write_real_schema_csv(path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=REAL_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(ROWS)


def test_a_csv_in_the_real_gpqa_schema_loads(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    write_real_schema_csv(path)
    assert '"A particle of mass ""m"", charge q\nmoves' in path.read_text(encoding="utf-8")  # quoted, multi-line
    questions = gpqa.load_choice_questions(str(path))
    assert questions == EXPECTED  # "NA" stays a string, fields are stripped, extra columns ignored
    prompt, letter = format_prompt(questions[0], seed=0)
    assert f"{letter}) 2πm/(qB)" in prompt


def test_a_missing_file_says_how_to_get_gpqa(tmp_path):
    missing = tmp_path / "gpqa_diamond.csv"
    with pytest.raises(gpqa.GPQAUnavailableError) as info:
        gpqa.load_choice_questions(str(missing))
    message = str(info.value)
    assert f"{missing} does not exist" in message
    for fix in ("https://huggingface.co/datasets/Idavidrein/gpqa", "huggingface-cli login", "HF_TOKEN",
                "gpqa_diamond.csv", "notebook 01"):
        assert fix in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(gpqa.GPQAUnavailableError, match="is a directory"):
        gpqa.load_choice_questions(str(tmp_path))


def test_the_gated_hub_dataset_without_login_says_how_to_get_it(monkeypatch):
    calls = []

    def gated(*args, **kwargs):
        calls.append((args, kwargs))
        raise DatasetNotFoundError("Dataset 'Idavidrein/gpqa' is a gated dataset on the Hub. "
                                   "You must be authenticated to access it.")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(gpqa.GPQAUnavailableError) as info:
        gpqa.load_choice_questions(gpqa.GPQA_HUB_SOURCE)
    assert calls == [(("Idavidrein/gpqa", "gpqa_diamond"), {"split": "train"})]
    message = str(info.value)
    assert "is a gated dataset" in message  # the hub's own reason is kept
    for fix in ("accept the dataset's terms", "https://huggingface.co/datasets/Idavidrein/gpqa",
                "huggingface-cli login", "HF_TOKEN", "gpqa_diamond.csv"):
        assert fix in message


def test_a_gated_repo_error_from_the_hub_client_is_caught_too(monkeypatch):
    # The hub client's errors carry the HTTP response; it reads only its headers and request.
    response = SimpleNamespace(status_code=401, headers={}, request=None)

    def gated(*args, **kwargs):
        raise GatedRepoError("Access to dataset Idavidrein/gpqa is restricted. You must have access to it "
                             "and be authenticated to access it. Please log in.", response=response)

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(gpqa.GPQAUnavailableError, match="GatedRepoError.*huggingface-cli login"):
        gpqa.load_choice_questions("hub:Idavidrein/gpqa/gpqa_diamond/train")


def test_bugs_are_not_disguised_as_unavailability(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("a bug, not a gate")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(KeyError):
        gpqa.load_choice_questions(gpqa.GPQA_HUB_SOURCE)


def test_offline_mode_is_reported_as_unavailable_without_a_network_call(tmp_path):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh interpreter with an empty cache.
    code = textwrap.dedent("""
        from steiner_lib.tasks import gpqa
        try:
            gpqa.load_choice_questions("hub:Idavidrein/gpqa/gpqa_diamond")
        except gpqa.GPQAUnavailableError as e:
            print("UNAVAILABLE", e)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.stdout.startswith("UNAVAILABLE"), out.stdout + out.stderr
    assert "ConnectionError" in out.stdout and "huggingface-cli login" in out.stdout


def test_the_hub_dataset_loads_through_the_same_reader(monkeypatch):
    frame = pd.DataFrame(ROWS, columns=REAL_COLUMNS)
    frame.loc[1, "Explanation"] = None  # the hub has nulls where the CSV has empty fields
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_pandas(frame))
    assert gpqa.load_choice_questions(gpqa.GPQA_HUB_SOURCE) == EXPECTED


@pytest.mark.parametrize("source", ["hub:Idavidrein/gpqa", "hub:gpqa_diamond", "hub:a/b/c/d/e", "hub:a//c"])
def test_a_malformed_hub_source_names_the_form(source):
    with pytest.raises(ValueError, match=r"hub:<owner>/<name>/<config>\[/<split>\]"):
        gpqa.load_choice_questions(source)


def test_hub_sources_parse():
    assert gpqa.parse_hub_source(gpqa.GPQA_HUB_SOURCE) == ("Idavidrein/gpqa", "gpqa_diamond", "train")
    assert gpqa.parse_hub_source("hub:Idavidrein/gpqa/gpqa_main/train") == ("Idavidrein/gpqa", "gpqa_main", "train")
