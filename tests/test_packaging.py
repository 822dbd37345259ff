"""The install story: pyproject, environment.yml, README commands and CI agree."""

import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements):
    out = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==?\s*([^\s;]+)", req.strip())
        assert m, f"not an exact pin: {req!r}"
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += [d for d in dep["pip"] if not d.startswith("-e")]
        elif dep != "pip" and not dep.startswith("python="):
            conda.append(dep)
    have = _pins(conda + pip)
    assert have == wanted


def test_torch_family_pinned_together():
    deps = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert deps["torch"].startswith("2.11") and deps["torchaudio"].startswith("2.11")
    assert deps["torchvision"].startswith("0.26")
    assert int(deps["opencv-python-headless"].split(".")[0]) < 5  # OpenCV 5 dropped CascadeClassifier


def test_console_script_and_layout():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["emolab"] == "emolab.cli.main:main"
    for d in ("notebooks", "emolab", "tests", "emolab/data", "emolab/models", "emolab/train", "emolab/viz"):
        assert (ROOT / d).is_dir(), d


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)


@pytest.mark.parametrize("module", ["emolab", "emolab.data", "emolab.models", "emolab.train", "emolab.viz"])
def test_modules_import(module):
    __import__(module)
