"""The evaluation set loader: our GPQA-schema CSV, the real gpqa_diamond.csv, or the gated hub dataset.

`source` is either a CSV path (the diamond split notebook 01 writes, or the real file) or
"hub:<owner>/<name>/<config>[/<split>]", e.g. "hub:Idavidrein/gpqa/gpqa_diamond" (split "train",
the only one GPQA has). GPQA is gated on the Hugging Face Hub (its authors ask that it not be
posted unprotected, to keep it out of training data), so a missing file, no network, offline
mode, a gate not yet accepted or no login all end in ONE error, GPQAUnavailableError, that says
how to get the data.
"""

from __future__ import annotations

import io
from pathlib import Path

from steiner_lib.tasks.choice import GPQA_COLUMNS, ChoiceQuestion, read_gpqa_csv

HUB_PREFIX = "hub:"
GPQA_HUB_SOURCE = "hub:Idavidrein/gpqa/gpqa_diamond"

HOW_TO_GET_GPQA = (
    "To get GPQA-Diamond: (1) accept the dataset's terms at https://huggingface.co/datasets/Idavidrein/gpqa "
    "while logged in; (2) authenticate this machine with `huggingface-cli login` (or set HF_TOKEN) and make "
    "sure HF_HUB_OFFLINE is not set; then use source \"hub:Idavidrein/gpqa/gpqa_diamond\". Or download "
    "gpqa_diamond.csv (from the hub page, or the release zip linked from https://github.com/idavidrein/gpqa) "
    "and point the evaluation params at that file. The CPU preset needs none of this: it evaluates on the "
    "diamond.csv that notebook 01 writes."
)


class GPQAUnavailableError(ValueError):
    """The GPQA data cannot be read here; the message says how to get it."""


def load_choice_questions(source: str) -> list[ChoiceQuestion]:
    """Four-choice questions from a GPQA-schema CSV path or from "hub:owner/name/config[/split]"."""
    source = str(source)
    if source.startswith(HUB_PREFIX):
        return _load_from_hub(source)
    path = Path(source).expanduser()
    if not path.is_file():
        what = "is a directory, not a CSV file" if path.is_dir() else "does not exist"
        raise GPQAUnavailableError(f"{source} {what}. For our Countdown benchmark, run notebook 01 (it writes "
                                   f"diamond.csv into its stage directory). {HOW_TO_GET_GPQA}")
    return read_gpqa_csv(path)


def parse_hub_source(source: str) -> tuple[str, str, str]:
    """"hub:owner/name/config[/split]" -> (repo id, config, split)."""
    parts = source[len(HUB_PREFIX):].strip("/").split("/")
    if len(parts) not in (3, 4) or not all(parts):
        raise ValueError(f"source {source!r}: write hub:<owner>/<name>/<config>[/<split>], "
                         f"e.g. {GPQA_HUB_SOURCE!r}")
    split = parts[3] if len(parts) == 4 else "train"
    return f"{parts[0]}/{parts[1]}", parts[2], split


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "not reachable or not allowed", not "a bug or a wrong name"."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, LocalTokenNotFoundError, OfflineModeIsEnabled,
    )

    # ConnectionError: datasets' "Couldn't reach ... on the Hub" (offline mode or no network).
    # DatasetNotFoundError: datasets' "... is a gated dataset on the Hub. You must be authenticated".
    return (ConnectionError, TimeoutError, DatasetNotFoundError, GatedRepoError, HfHubHTTPError,
            LocalEntryNotFoundError, LocalTokenNotFoundError, OfflineModeIsEnabled)


def _load_from_hub(source: str) -> list[ChoiceQuestion]:
    repo, config, split = parse_hub_source(source)
    import datasets

    try:
        data = datasets.load_dataset(repo, config, split=split)
    except _unavailable_errors() as e:
        raise GPQAUnavailableError(f"could not load {repo} ({config}, split {split}) from the Hugging Face Hub: "
                                   f"{type(e).__name__}: {e}. {HOW_TO_GET_GPQA}") from e
    frame = data.to_pandas()
    missing = [c for c in GPQA_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} is not in the GPQA schema: missing column(s) {missing}")
    # Through CSV text, so hub rows are read by exactly the code that reads the real file.
    return read_gpqa_csv(io.StringIO(frame.to_csv(index=False)))
