"""`animecli models pull` end to end: a download that is not the model is refused, and says how to fix it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from animecli.cli.app import app
from animecli.errors import WeightsError
from animecli.models.spec import Arch
from animecli.options import ModelChoice
from animecli.weights.resolve import load_generator
from tests.conftest import add_upstream_entry, make_photo, make_weights_dir, tiny_checkpoint
from tests.test_hub import HTML_PAGE, Site, running_site

NAME = "upstream_tiny"
runner = CliRunner()


@pytest.fixture
def checkpoint() -> bytes:
    return tiny_checkpoint(Arch.V2)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: bytes) -> Iterator[tuple[Site, Path]]:
    """A v2 upstream entry without a SHA-256, served from 127.0.0.1; yields the server and the cache."""
    with running_site(checkpoint) as site:
        folder = make_weights_dir(tmp_path, monkeypatch, (("tiny", Arch.LITE),))
        add_upstream_entry(folder, NAME, f"{site.base}/model.pt")
        yield site, tmp_path / "home"


def _installed() -> bool:
    res = runner.invoke(app, ["models", "info", NAME])
    assert res.exit_code == 0, res.output
    return bool(json.loads(res.output)["installed"])


@pytest.mark.parametrize(("mode", "reason"), [("html", "HTML page"), ("short", "truncated")])
def test_pull_of_a_page_or_short_body_fails_and_saves_nothing(
    home: tuple[Site, Path], checkpoint: bytes, mode: str, reason: str
) -> None:
    site, cache = home
    site.state.mode = mode
    res = runner.invoke(app, ["models", "pull", NAME])
    assert res.exit_code == 2, res.output
    assert "did not return a v2 checkpoint" in res.output and reason in res.output
    assert "nothing was saved" in res.output
    assert not (cache / f"{NAME}.pt").exists() and not (cache / f"{NAME}.pt.sha256").exists()
    assert not _installed()

    site.state.mode = "ok"  # a second pull, once the server answers, gets the model
    res = runner.invoke(app, ["models", "pull", NAME])
    assert res.exit_code == 0, res.output
    assert (cache / f"{NAME}.pt").read_bytes() == checkpoint and _installed()


def test_pull_replaces_a_pinned_page(home: tuple[Site, Path], checkpoint: bytes, tmp_path: Path) -> None:
    _, cache = home
    cache.mkdir()
    (cache / f"{NAME}.pt").write_bytes(HTML_PAGE)
    (cache / f"{NAME}.pt.sha256").write_text(f"{hashlib.sha256(HTML_PAGE).hexdigest()}  {NAME}.pt\n")
    res = runner.invoke(app, ["models", "pull", NAME])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "not a v2 checkpoint (an HTML page)" in res.output
    assert (cache / f"{NAME}.pt").read_bytes() == checkpoint
    photo = make_photo(tmp_path / "in" / "a.png")
    res = runner.invoke(app, ["convert", str(photo.parent), str(tmp_path / "out"), "--model", NAME, "--device", "cpu"])
    assert res.exit_code == 0, res.output


def test_pull_into_a_home_that_is_a_file(home: tuple[Site, Path]) -> None:
    _, cache = home
    cache.write_text("not a folder")
    res = runner.invoke(app, ["models", "pull", NAME])
    assert res.exit_code == 2, res.output
    assert f"{cache} is a file, not a folder" in res.output and "disk space" not in res.output


def test_models_list_flags_a_pulled_file_changed_after_its_digest_was_recorded(home: tuple[Site, Path]) -> None:
    _, cache = home
    assert runner.invoke(app, ["models", "pull", NAME]).exit_code == 0
    assert _installed()
    pulled = cache / f"{NAME}.pt"
    pulled.write_bytes(pulled.read_bytes()[:-10])  # cut after the pull: the recorded SHA-256 no longer fits
    res = runner.invoke(app, ["models", "list"])
    row = next(line.split("\t") for line in res.output.splitlines() if line.startswith(NAME))
    assert row[-1] == f"damaged: delete {pulled} and run animecli models pull {NAME}"
    assert not _installed()


def test_a_garbled_digest_record_is_not_trusted(home: tuple[Site, Path]) -> None:
    _, cache = home
    assert runner.invoke(app, ["models", "pull", NAME]).exit_code == 0
    (cache / f"{NAME}.pt.sha256").write_text("")  # emptied: the file can no longer be checked
    res = runner.invoke(app, ["models", "list"])
    row = next(line.split("\t") for line in res.output.splitlines() if line.startswith(NAME))
    assert row[-1].startswith("damaged")
    with pytest.raises(WeightsError, match="does not hold a SHA-256 digest"):
        load_generator(ModelChoice(NAME))
