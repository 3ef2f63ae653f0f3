"""The weights layer: manifest, strict loading with explained errors, `animecli models`, pulls."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from animecli.cli.app import app
from animecli.errors import WeightsError
from animecli.models.spec import Arch
from animecli.options import ModelChoice
from animecli.weights.manifest import ModelEntry, load_manifest, parse_manifest, save_manifest
from animecli.weights.resolve import load_generator
from tests.conftest import tiny_state_dict

runner = CliRunner()


def test_manifest_round_trip_and_default_load(tiny_weights_dir: Path) -> None:
    manifest = load_manifest()
    assert manifest.default == "tiny"
    assert manifest.models["tiny_v2"].arch is Arch.V2
    save_manifest(manifest, tiny_weights_dir)
    again = load_manifest(tiny_weights_dir)
    assert again.models["tiny"].to_json() == manifest.models["tiny"].to_json()
    loaded = load_generator(ModelChoice())
    assert loaded.name == "tiny" and loaded.spec.arch is Arch.LITE and loaded.spec.width == 0.125
    expected = tiny_state_dict(Arch.LITE)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, expected[k])


def test_weights_path_detects_arch(tiny_weights_dir: Path) -> None:
    loaded = load_generator(ModelChoice(weights=tiny_weights_dir / "tiny_v2.pt"))
    assert loaded.spec.arch is Arch.V2 and loaded.spec.width == 0.125


def test_wrapped_checkpoint_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_state_dict(Arch.LITE), "step": 3}, path)
    assert load_generator(ModelChoice(weights=path)).spec.arch is Arch.LITE


def test_checksum_mismatch(tiny_weights_dir: Path) -> None:
    path = tiny_weights_dir / "tiny.pt"
    sd = tiny_state_dict(Arch.LITE, seed=5)
    torch.save(sd, path)  # same architecture, different bytes
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_generator(ModelChoice("tiny"))


def test_wrong_arch_lists_keys(tiny_weights_dir: Path) -> None:
    with pytest.raises(WeightsError, match=r"missing.*unexpected") as info:
        load_generator(ModelChoice(weights=tiny_weights_dir / "tiny_v2.pt", arch="lite"))
    assert "--arch" in str(info.value)


def test_truncated_and_missing_and_garbage(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(tiny_state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_generator(ModelChoice(weights=cut))
    with pytest.raises(WeightsError, match="no such weights file"):
        load_generator(ModelChoice(weights=tmp_path / "nope.pt"))
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(WeightsError, match=r"is a folder; give the generator's \.pt file"):
        load_generator(ModelChoice(weights=tmp_path / "folder.pt"))
    for name, data in (("text.pt", b"hello\n"), ("four.pt", b"jjjj"), ("photo.pt", b"\xff\xd8\xff\xe0" + bytes(60))):
        (tmp_path / name).write_bytes(data)  # a text file or a photo given as --weights: exit 2, not a traceback
        with pytest.raises(WeightsError, match="not a readable PyTorch state dict") as info:
            load_generator(ModelChoice(weights=tmp_path / name))
        assert info.value.exit_code == 2
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="--arch"):
        load_generator(ModelChoice(weights=other))


def test_unknown_model_name(tiny_weights_dir: Path) -> None:
    with pytest.raises(WeightsError, match="known models: tiny, tiny_v2"):
        load_generator(ModelChoice("nope"))


def test_models_list_and_info(tiny_weights_dir: Path) -> None:
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    assert "tiny" in res.output and "yes" in res.output and "tiny_v2" in res.output
    res = runner.invoke(app, ["models", "info", "tiny_v2"])
    assert res.exit_code == 0
    info = json.loads(res.output)
    assert info["arch"] == "v2" and info["installed"] is True
    res = runner.invoke(app, ["models", "info", "nope"])
    assert res.exit_code == 2


def test_shipped_manifest_is_consistent() -> None:
    """Every shipped file exists with the recorded size and digest; the default is shipped."""
    folder = Path(__file__).resolve().parents[1] / "weights"
    manifest = load_manifest(folder)
    assert manifest.default in manifest.models
    for name, entry in manifest.models.items():
        assert entry.licence and entry.source, name
        if entry.remote:
            assert entry.url and entry.url.startswith("https://"), name
            continue
        path = folder / entry.file
        assert path.is_file(), name
        assert path.stat().st_size == entry.size, name
        from animecli.weights.manifest import sha256_of

        assert sha256_of(path) == entry.sha256, name


# --- upstream pulls, against a server on 127.0.0.1 -------------------------------------------------


@pytest.fixture
def served_checkpoint(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """Serve a tiny v2 checkpoint at http://127.0.0.1:PORT/w.pt."""
    path = tmp_path / "served.pt"
    torch.save(tiny_state_dict(Arch.V2), path)
    payload = path.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/w.pt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/w.pt", payload
    server.shutdown()
    server.server_close()


def _remote_manifest(folder: Path, url: str) -> None:
    manifest = load_manifest(folder)
    models = dict(manifest.models)
    models["upstream_tiny"] = parse_manifest({"models": {"upstream_tiny": {
        "file": "upstream_tiny.pt", "arch": "v2", "width": 0.125, "align_corners": True,
        "licence": "MIT", "source": "test server", "url": url}}}).models["upstream_tiny"]
    save_manifest(type(manifest)(manifest.default, models), folder)


def test_pull_then_convert_with_pulled_model(
    tiny_weights_dir: Path, served_checkpoint: tuple[str, bytes], tmp_path: Path
) -> None:
    url, payload = served_checkpoint
    _remote_manifest(tiny_weights_dir, url)
    res = runner.invoke(app, ["models", "info", "upstream_tiny"])
    assert json.loads(res.output)["installed"] is False
    with pytest.raises(WeightsError, match="models pull upstream_tiny"):
        load_generator(ModelChoice("upstream_tiny"))
    res = runner.invoke(app, ["models", "pull", "upstream_tiny"])
    assert res.exit_code == 0, res.output
    pulled = tmp_path / "home" / "upstream_tiny.pt"
    assert pulled.read_bytes() == payload
    loaded = load_generator(ModelChoice("upstream_tiny"))
    assert loaded.spec.arch is Arch.V2
    # The digest recorded at the first download is enforced afterwards.
    pulled.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_generator(ModelChoice("upstream_tiny"))


def test_pull_offline_fails_cleanly(tiny_weights_dir: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    _remote_manifest(tiny_weights_dir, f"http://127.0.0.1:{port}/w.pt")
    res = runner.invoke(app, ["models", "pull", "upstream_tiny"])
    assert res.exit_code == 2
    assert "could not reach" in res.output and "--weights PATH" in res.output


def test_entry_paths(tiny_weights_dir: Path, tmp_path: Path) -> None:
    entry = ModelEntry("x", "x.pt", Arch.V2, url="https://example.invalid/x.pt")
    assert entry.path() == tmp_path / "home" / "x.pt"
    assert ModelEntry("y", "y.pt", Arch.LITE).path() == tiny_weights_dir / "y.pt"


def test_lite_file_without_colour_skip_loads_as_zero_skip(tmp_path: Path) -> None:
    """lite files saved before the colour skip existed load, and compute exactly the old network."""
    from animecli.models.registry import build_generator
    from animecli.models.spec import ArchSpec

    torch.manual_seed(3)
    new = build_generator(ArchSpec(Arch.LITE, width=0.125)).eval()
    old_sd = {k: v for k, v in new.state_dict().items() if not k.startswith("skip.")}
    torch.save(old_sd, tmp_path / "old_lite.pt")
    loaded = load_generator(ModelChoice(weights=tmp_path / "old_lite.pt")).model
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        # The old head: tanh of the 1×1 conv of the last features, no skip.
        feats: list[torch.Tensor] = []
        hook = new.up2.register_forward_hook(lambda m, i, o: feats.append(o))
        new(x)
        hook.remove()
        expected = torch.tanh(new.head(feats[0]))
        assert torch.allclose(loaded(x), expected, atol=1e-6)
        assert not torch.allclose(new(x), expected, atol=1e-3)  # the identity skip does change outputs


@pytest.mark.parametrize("damage", ["cut", "changed"])
def test_models_list_and_info_flag_a_damaged_file(tiny_weights_dir: Path, damage: str) -> None:
    """A shipped file cut short or changed in place is not "installed"; the row says what to do."""
    path = tiny_weights_dir / load_manifest(tiny_weights_dir).models["tiny_v2"].file
    data = bytearray(path.read_bytes())
    if damage == "cut":
        del data[len(data) // 2 :]
    else:
        data[-100] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    rows = {line.split("\t")[0]: line.split("\t") for line in res.output.splitlines()}
    assert rows["tiny"][-1] == "yes"
    assert rows["tiny_v2"][-1].startswith("damaged") and "reinstall animecli" in rows["tiny_v2"][-1]
    info = json.loads(runner.invoke(app, ["models", "info", "tiny_v2"]).output)
    assert info["installed"] is False and info["damaged"] is True


def test_models_list_in_a_pipe_is_one_whole_line_per_model(tiny_weights_dir: Path) -> None:
    res = CliRunner().invoke(app, ["models", "list"])  # not a terminal: tab-separated, nothing cut short
    assert res.exit_code == 0
    lines = [line.split("\t") for line in res.output.splitlines()]
    assert lines[0] == ["name", "default", "arch", "params", "size", "style", "licence", "installed"]
    assert [row[:2] for row in lines[1:]] == [["tiny", "yes"], ["tiny_v2", ""]] and all(len(r) == 8 for r in lines)
