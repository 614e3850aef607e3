"""Fixtures shared by test files (imported as `from helpers import ...`; pyproject puts tests/ on sys.path)."""

import contextlib
import importlib.util
import random
from pathlib import Path

import yaml

from steiner_lib.tasks.choice import CountdownQuestion, make_countdown_question
from steiner_lib.tasks.countdown import generate_problem

ROOT = Path(__file__).resolve().parents[1]

# A tokenizer corpus and user turns for tiny generation tests (tests/generation/test_inference.py, test_lean_decode.py)
CORPUS = [
    "Using some of the numbers 3, 5, 7, 25 exactly one of the following values can be made. Which one?",
    "Combine 25 and 3: 25 × 3 = 75. That leaves 5, 7, 75. Numbers left: 5, 7, 75. Nearest option is 82.",
    "75 + 7 = 82\n\nAnswer: B",
]
USERS = ["Which one? A) 82 B) 80", "Using some of the numbers 3, 5, 7, 25, which value can be made?",
         "Numbers 2, 9.", "Combine 25 and 3 then add 7: which of the options is it? A) 82 B) 81 C) 80 D) 79"]


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def one_thread():
    """A model this small gains nothing from threads, and on a busy 2-core machine OpenMP's
    spinning threads make generate 10-50x slower (measured: 15 s against 0.3 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preset(tmp_path: Path, **overrides) -> Path:
    """params/smoke.yaml with its run root under tmp_path and the given overrides, as a new file."""
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    values.update(run_root=str(tmp_path / "runs"), **overrides)
    path = tmp_path / f"smoke-{abs(hash(tuple(sorted(overrides.items()))))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def make_questions(n: int, seed: int = 0, n_numbers: int = 4, max_number: int = 25, min_steps: int = 2,
                   max_steps: int = 3, prefix: str = "q") -> list[CountdownQuestion]:
    """n random Countdown questions, deterministic for a seed; ids f"{prefix}{seed}-{i:04d}"."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = generate_problem(rng, n_numbers, max_number, min_steps, max_steps)
        q = make_countdown_question(p, rng, f"{prefix}{seed}-{len(out):04d}")
        if q is not None:
            out.append(q)
    return out


# The smallest shape the tests use: 1 layer, hidden 32, 2 query heads on 1 key-value head.
ONE_LAYER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


def tiny_qwen2(tokenizer, seed: int = 0, **config):
    """A randomly initialised Qwen2ForCausalLM for `tokenizer` (eval mode; the global RNG is left alone).
    Defaults: 2 layers, hidden 64, 4 query heads sharing 2 key-value heads; override any Qwen2Config field."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
    shape.update(config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                            pad_token_id=tokenizer.pad_token_id, **shape)).eval()
