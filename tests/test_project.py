"""The project's front door: the README's two commands, CI running the same test command, examples."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_install_convert_and_test_commands() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install torch==2.13.0" in install  # the CPU build on disk, not a multi-GB CUDA download
    assert install.endswith("animecli convert examples/ out/")
    assert tests.endswith("python -m pytest -q")


def test_ci_installs_and_runs_what_the_readme_says() -> None:
    tests = _bash_blocks((ROOT / "README.md").read_text())[1]
    readme_extras = re.search(r"pip install -e '\.\[([a-z,]+)\]'", tests)
    ci = (ROOT / ".ci" / "run").read_text()
    ci_extras = re.search(r"pip install -q -e '\.\[([a-z,]+)\]'", ci)
    assert readme_extras and ci_extras and readme_extras.group(1) == ci_extras.group(1)
    assert "pip install -q torch==2.13.0" in ci
    assert ci.rstrip().endswith("python -m pytest -q")


def test_examples_are_photos_with_a_licence_note() -> None:
    photos = sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert len(photos) >= 3
    note = (ROOT / "examples" / "README.md").read_text()
    assert all(name in note for name in photos)
