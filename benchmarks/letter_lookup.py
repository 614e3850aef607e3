"""Does a trained model read the option list? The letter of a value it is handed, stage by stage.

A solve needs the search to reach the target *and* the letter of the option that holds it. This
benchmark takes the second alone: each checkpoint of a finished run (03's base and CPT models,
04's SFT model) is given a prompt, a correct solution that already writes the value, and
"Answer:", and the next-token probabilities of " A" .. " D" are read (teacher forcing, no
sampling). Chance is 25%: a model that reads the list puts its mass on the right letter.

Two kinds of prefix:
- shortcut: a validation question's prompt, the exact solver's forward steps and the visible
  answer up to "Answer:", as the base corpus writes them (`pretraining.letter_probes`; never
  trained on);
- SFT path: a training path of 02 (prompt, Steiner reasoning, visible answer) with the four
  options re-shuffled by a seed SFT never used, so the letter cannot be remembered.

Rows are appended to --out (benchmarks/results/letter_lookup.csv).

    .venv/bin/python benchmarks/letter_lookup.py runs/b15n3k-s0 --label b15n3k --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steiner_lib.data import dataset  # noqa: E402
from steiner_lib.evaluation import scoring  # noqa: E402
from steiner_lib.tasks import choice, knowledge  # noqa: E402
from steiner_lib.training import checkpoints, modeling, pretraining  # noqa: E402

COLUMNS = ("label", "seed", "checkpoint", "prefix", "items", "letter_accuracy", "ci_low", "ci_high",
           "mean_p_correct_letter", "mean_p_any_letter")
UNUSED_SHUFFLE = 987_654  # SFT shuffles with seed * 1000 + path index, the base corpus seed * 1000 + copy


def letter_probabilities(model, tokenizer, prompts: list[str]) -> list[list[float]]:
    """p(" A") .. p(" D") as the next token after each prompt."""
    import torch

    ids = [tokenizer(" " + letter, add_special_tokens=False)["input_ids"] for letter in choice.LETTERS]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"the tokenizer splits the answer letters ({ids}): this probe needs one token each")
    ids = [i[0] for i in ids]
    out = []
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            p = torch.softmax(model(**enc).logits[0, -1], -1)
            out.append(p[ids].tolist())
    return out


def shortcut_probes(questions, n: int) -> tuple[list[str], list[str]]:
    """`pretraining.letter_probes` (cut after the value's line) with "Answer:" added: the prefix after
    which the letter is the next token, in the paper's answer form."""
    prompts, letters = pretraining.letter_probes(questions, seed=UNUSED_SHUFFLE, n=n, answer_format="letter")
    return [p + "Answer:" for p in prompts], letters


def sft_path_probes(run: Path, n: int) -> tuple[list[str], list[str]]:
    """One 02 path per training question, cut after "Answer:", its options re-shuffled (UNUSED_SHUFFLE)."""
    import datasets

    questions = dataset.load_countdown_questions(run / "01_synthesis" / "train.csv")
    prompts, answers, seen = [], [], set()
    for row in datasets.load_from_disk(str(run / "02_dag" / "paths")):
        if row["question_id"] in seen or row["question_id"] not in questions:
            continue
        seen.add(row["question_id"])
        prompt, letter = choice.format_prompt(questions[row["question_id"]], seed=UNUSED_SHUFFLE)
        answer = knowledge.split_after_value(row["answer"])[0] + "Answer:"  # no scan of the old shuffle
        prompts.append(modeling.chat_text(prompt) + row["reasoning"] + "\n" + answer)
        answers.append(letter)
        if len(prompts) >= n:
            break
    return prompts, answers


def rows_for(run: Path, label: str, seed: int, n: int) -> list[dict]:
    validation = list(dataset.load_countdown_questions(run / "01_synthesis" / "validation.csv").values())
    probes = {"shortcut": shortcut_probes(validation, n), "SFT path": sft_path_probes(run, n)}
    rows = []
    for stage, name in (("03_cpt", "base"), ("03_cpt", "cpt"), ("04_sft", "sft")):
        path = run / stage / name
        if not (path / "config.json").exists():
            print(f"{path}: no checkpoint, skipped")
            continue
        model, tokenizer = checkpoints.load_checkpoint(path)
        for prefix, (prompts, letters) in probes.items():
            if prefix == "SFT path" and name != "sft":
                continue  # the base and CPT models never learnt to write Steiner's answer after a trace
            probs = letter_probabilities(model, tokenizer, prompts)
            right = [float(max(range(4), key=p.__getitem__) == choice.LETTERS.index(c)) for p, c in zip(probs, letters)]
            mean, lo, hi = scoring.bootstrap_ci(right, n_boot=2000, seed=0)
            rows.append({"label": label, "seed": seed, "checkpoint": name, "prefix": prefix, "items": len(right),
                         "letter_accuracy": round(mean, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                         "mean_p_correct_letter": round(sum(p[choice.LETTERS.index(c)] for p, c in zip(probs, letters))
                                                        / len(probs), 4),
                         "mean_p_any_letter": round(sum(sum(p) for p in probs) / len(probs), 4)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished run directory (runs/<name>) with 01-04 done")
    ap.add_argument("--label", required=True)
    ap.add_argument("--seed", type=int, required=True, help="the run's seed (recorded)")
    ap.add_argument("--items", type=int, default=150, help="probes per checkpoint and prefix")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "letter_lookup.csv"))
    args = ap.parse_args()
    rows = rows_for(Path(args.run), args.label, args.seed, args.items)
    out = Path(args.out)
    dataset.append_recorded_rows(out, rows, COLUMNS)


if __name__ == "__main__":
    main()
