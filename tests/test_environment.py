"""The pip and conda environments pin the same packages, and torch is pinned exactly."""

import re

import yaml

from steiner_lib.params import project_root

ROOT = project_root()


def pip_pins():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {l.split("==")[0].lower(): l.split("==")[1] for l in lines if l.strip() and not l.startswith("#")}


def conda_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    return {p.split("==")[0].lower(): p.split("==")[1] for p in pip_section}


def test_requirements_and_environment_agree():
    assert pip_pins() == conda_pins()


def test_every_requirement_is_pinned_exactly():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.\-]*", line.strip()), line


def test_torch_is_the_cpu_wheel_on_disk():
    assert pip_pins()["torch"] == "2.13.0"


def test_vllm_is_only_an_optional_extra():
    assert "vllm" not in pip_pins()
    assert "vllm" in (ROOT / "pyproject.toml").read_text()
