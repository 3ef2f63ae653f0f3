"""`animecli models pull` (:func:`animecli.weights.resolve.pull`) keeps only files that load as the model.

A manifest entry without a SHA-256 is trusted on first use: whatever the first pull
receives is recorded. These tests serve what a real server may answer instead of the
checkpoint (an HTML page, a body cut short without a Content-Length, another
architecture) from 127.0.0.1 and check that nothing is saved or recorded, and that a
bad file recorded by an older version is replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from animecli.errors import WeightsError
from animecli.models.spec import Arch, ArchSpec
from animecli.options import ModelChoice
from animecli.weights.checkpoint import checkpoint_problem
from animecli.weights.manifest import Manifest, ModelEntry
from animecli.weights.resolve import load_generator, pull
from tests.conftest import add_upstream_entry, make_weights_dir, tiny_checkpoint, tiny_state_dict
from tests.test_hub import CUT, HTML_PAGE, Site, running_site

NAME = "upstream_tiny"


@pytest.fixture
def checkpoint() -> bytes:
    data = tiny_checkpoint(Arch.V2)
    assert len(data) > CUT  # so the "short" server mode really cuts it
    return data


@pytest.fixture
def site(checkpoint: bytes) -> Iterator[Site]:
    with running_site(checkpoint) as running:
        yield running


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: Site) -> tuple[Manifest, Path]:
    """A manifest with a v2 upstream entry (no SHA-256) served by ``site``; returns it and the cache."""
    folder = make_weights_dir(tmp_path, monkeypatch, (("tiny", Arch.LITE),))
    return add_upstream_entry(folder, NAME, f"{site.base}/model.pt"), tmp_path / "home"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("mode", "reason"), [("html", "an HTML page"), ("short", "truncated or corrupt")])
def test_pull_refuses_a_download_that_is_not_a_checkpoint(
    setup: tuple[Manifest, Path], site: Site, mode: str, reason: str
) -> None:
    manifest, home = setup
    site.state.mode = mode
    with pytest.raises(WeightsError) as err:
        pull(manifest.models[NAME])
    msg = str(err.value)
    assert msg.startswith(f"{site.base}/model.pt did not return a v2 checkpoint ({reason}); nothing was saved")
    assert "try again later" in msg and "\n" not in msg
    assert err.value.exit_code == 2
    assert _files(home) == []  # no .pt, no .part, nothing pinned
    with pytest.raises(WeightsError, match=f"models pull {NAME}"):  # still "not downloaded yet"
        load_generator(ModelChoice(NAME), manifest=manifest)


def test_pull_refuses_another_architecture(setup: tuple[Manifest, Path], site: Site) -> None:
    manifest, home = setup
    site.state.payload = tiny_checkpoint(Arch.LITE)
    with pytest.raises(WeightsError, match=r"did not return a v2 checkpoint \(a lite checkpoint\)"):
        pull(manifest.models[NAME])
    assert _files(home) == []


def test_pull_replaces_a_recorded_file_that_does_not_load(
    setup: tuple[Manifest, Path], site: Site, checkpoint: bytes
) -> None:
    # What an older version left after a captive portal answered: the page, pinned as the model.
    manifest, home = setup
    home.mkdir()
    final = home / f"{NAME}.pt"
    final.write_bytes(HTML_PAGE)
    (home / f"{NAME}.pt.sha256").write_text(f"{hashlib.sha256(HTML_PAGE).hexdigest()}  {NAME}.pt\n")
    notices: list[str] = []

    assert pull(manifest.models[NAME], notice=notices.append) == final
    assert final.read_bytes() == checkpoint
    assert (home / f"{NAME}.pt.sha256").read_text().split()[0] == hashlib.sha256(checkpoint).hexdigest()
    assert len(notices) == 1 and "is not a v2 checkpoint (an HTML page)" in notices[0]
    assert load_generator(ModelChoice(NAME), manifest=manifest).spec.arch is Arch.V2


def test_pull_keeps_a_good_file_without_network(setup: tuple[Manifest, Path], site: Site, checkpoint: bytes) -> None:
    manifest, _ = setup
    path = pull(manifest.models[NAME])
    assert path.read_bytes() == checkpoint and len(site.state.ranges) == 1
    before = path.stat().st_mtime_ns
    notices: list[str] = []

    assert pull(manifest.models[NAME], notice=notices.append) == path
    assert len(site.state.ranges) == 1  # checked on disk, not fetched again
    assert path.stat().st_mtime_ns == before and notices == []
    assert load_generator(ModelChoice(NAME), manifest=manifest).spec.arch is Arch.V2


def test_checkpoint_problem_reasons(tmp_path: Path, checkpoint: bytes) -> None:
    spec = ArchSpec(Arch.V2, width=0.125)
    cases = {
        "good.pt": (checkpoint, None),
        "empty.pt": (b"", "an empty file"),
        "page.pt": (b"\xef\xbb\xbf  \n" + HTML_PAGE.lower(), "an HTML page"),
        "cut.pt": (checkpoint[: len(checkpoint) // 2], "truncated or corrupt"),
        "text.pt": (b'{"error": "rate limited"}\n', "not a PyTorch file"),
        "lite.pt": (tiny_checkpoint(Arch.LITE), "a lite checkpoint"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    wide = tmp_path / "wide.pt"
    torch.save(tiny_state_dict(Arch.V2), wide)
    assert {name: checkpoint_problem(tmp_path / name, spec) for name in cases} == {
        name: want for name, (_, want) in cases.items()
    }
    wrong_width = checkpoint_problem(wide, ArchSpec(Arch.V2, width=0.25))
    assert wrong_width is not None and "do not fit v2 at width 0.25" in wrong_width


def test_pull_rejects_a_shipped_entry() -> None:
    with pytest.raises(ValueError, match="ships with animecli"):
        pull(ModelEntry("tiny", "tiny.pt", Arch.LITE))
