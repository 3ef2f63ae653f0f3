"""Tests for :mod:`animecli.weights.download` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import random
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from animecli.dirs import cache_dir
from animecli.errors import DownloadError, WeightsError
from animecli.weights import download as hub
from animecli.weights.download import RemoteFile, download, sha256_file

PAYLOAD = random.Random(1234).randbytes(48 * 1024)  # seeded: same bytes every run
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CUT = 10_000  # where a "dropping" server cuts the body off
# What a captive portal or a moved page answers with, HTTP 200 and all.
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n"


@dataclass
class ServerState:
    """What the test server does, and what it saw. Shared with the handler threads."""

    payload: bytes = PAYLOAD
    # ok | corrupt | no_range | eof | chunked | stall | 404 | 503 |
    # html (HTTP 200 with HTML_PAGE) | short (HTTP 200, no Content-Length, body cut at CUT)
    mode: str = "ok"
    drops_left: int = 1  # how many responses a dropping mode still cuts off
    ranges: list[str | None] = field(default_factory=list)  # Range header of each request
    bytes_sent: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked transfer encoding
    server: Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        st = self.server.state
        rng = self.headers.get("Range")
        with st.lock:
            st.ranges.append(rng)
            cut = st.mode in {"eof", "chunked", "stall"} and st.drops_left > 0
            if cut:
                st.drops_left -= 1
        if st.mode == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/model.pt" or st.mode == "404":
            self.send_error(404)
            return
        if st.mode == "503":
            self.send_error(503)
            return
        if st.mode in {"html", "short"}:
            # Range ignored and the connection closed after the body, as such servers do;
            # without a Content-Length the client cannot tell a short body from a whole one.
            page = HTML_PAGE if st.mode == "html" else st.payload[:CUT]
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if st.mode == "html" else "application/octet-stream")
            if st.mode == "html":
                self.send_header("Content-Length", str(len(page)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(page)
            self.close_connection = True
            with st.lock:
                st.bytes_sent += len(page)
            return
        body = st.payload
        if st.mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]

        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and st.mode != "no_range":
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        chunked = st.mode == "chunked"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()

        out = data[:CUT] if cut else data
        if chunked:
            # One chunk announcing the full length; cut short it makes http.client raise IncompleteRead.
            self.wfile.write(f"{len(data):x}\r\n".encode() + out + (b"" if cut else b"\r\n0\r\n\r\n"))
        else:
            self.wfile.write(out)
        self.wfile.flush()
        with st.lock:
            st.bytes_sent += len(out)
        if cut:
            self.close_connection = True
            if st.mode == "stall":
                st.release.wait(5)  # hold the socket open, silent, until the client times out


class Server(http.server.ThreadingHTTPServer):
    state: ServerState


@dataclass
class Site:
    state: ServerState
    base: str

    def remote(
        self, size: int | None = None, sha256: str | None = None, path: str = "/model.pt"
    ) -> RemoteFile:
        return RemoteFile(name="tiny", url=self.base + path, size=size, sha256=sha256)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "_RETRY_BACKOFF_S", 0.0)


@contextmanager
def running_site(payload: bytes = PAYLOAD) -> Iterator[Site]:
    """A test server on 127.0.0.1 serving ``payload`` at /model.pt until the block ends."""
    state = ServerState(payload=payload)
    server = Server(("127.0.0.1", 0), Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Site(state, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def site() -> Iterator[Site]:
    with running_site() as running:
        yield running


def test_download_records_sha_and_second_call_is_offline(site: Site, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    path = download(site.remote(), tmp_path, progress=lambda d, t: calls.append((d, t)))

    assert path == tmp_path / "tiny.pt"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "tiny.pt.part").exists()
    assert (tmp_path / "tiny.pt.sha256").read_text().split() == [PAYLOAD_SHA, "tiny.pt"]
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert site.state.ranges == [None]

    assert download(site.remote(), tmp_path) == path
    assert len(site.state.ranges) == 1  # verified against the sidecar, no request


def test_expected_sha_match(site: Site, tmp_path: Path) -> None:
    path = download(site.remote(size=len(PAYLOAD), sha256=PAYLOAD_SHA.upper()), tmp_path)
    assert sha256_file(path) == PAYLOAD_SHA
    assert not (tmp_path / "tiny.pt.sha256").exists()  # nothing to record: the digest was given
    # An existing file matching the given digest is returned without a request.
    assert download(site.remote(sha256=PAYLOAD_SHA), tmp_path) == path
    assert len(site.state.ranges) == 1


def test_corrupted_download_raises_and_leaves_nothing(site: Site, tmp_path: Path) -> None:
    site.state.mode = "corrupt"
    with pytest.raises(WeightsError) as err:
        download(site.remote(sha256=PAYLOAD_SHA), tmp_path)
    msg = str(err.value)
    assert "checksum mismatch" in msg and PAYLOAD_SHA in msg and "--weights" in msg
    assert "animecli models pull tiny" in msg
    assert "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_size_mismatch_raises_before_download(site: Site, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"size mismatch.*expected 123 bytes"):
        download(site.remote(size=123), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["eof", "chunked", "stall"])
def test_dropped_connection_is_resumed(site: Site, tmp_path: Path, mode: str) -> None:
    site.state.mode = mode
    calls: list[int] = []
    path = download(
        site.remote(sha256=PAYLOAD_SHA), tmp_path, progress=lambda d, t: calls.append(d), timeout=0.5
    )

    assert path.read_bytes() == PAYLOAD
    assert site.state.ranges == [None, f"bytes={CUT}-"]
    assert site.state.bytes_sent == len(PAYLOAD)  # nothing fetched twice
    assert calls[-1] == len(PAYLOAD)


def test_resume_from_existing_part_uses_range(site: Site, tmp_path: Path) -> None:
    (tmp_path / "tiny.pt.part").write_bytes(PAYLOAD[:1000])
    calls: list[tuple[int, int | None]] = []
    path = download(site.remote(), tmp_path, progress=lambda d, t: calls.append((d, t)))

    assert site.state.ranges == ["bytes=1000-"]
    assert site.state.bytes_sent == len(PAYLOAD) - 1000
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (1000, len(PAYLOAD))


def test_server_ignoring_range_starts_over(site: Site, tmp_path: Path) -> None:
    site.state.mode = "no_range"
    (tmp_path / "tiny.pt.part").write_bytes(b"\0" * 5000)  # garbage that must not survive
    path = download(site.remote(sha256=PAYLOAD_SHA), tmp_path)
    assert site.state.ranges == ["bytes=5000-"]
    assert path.read_bytes() == PAYLOAD


def test_complete_part_gets_416_and_is_used(site: Site, tmp_path: Path) -> None:
    (tmp_path / "tiny.pt.part").write_bytes(PAYLOAD)
    path = download(site.remote(sha256=PAYLOAD_SHA), tmp_path)
    assert site.state.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert site.state.bytes_sent == 0
    assert path.read_bytes() == PAYLOAD


def test_retries_exhausted_keeps_part_for_next_run(site: Site, tmp_path: Path) -> None:
    site.state.mode = "eof"
    site.state.drops_left = 99
    with pytest.raises(DownloadError) as err:
        download(site.remote(), tmp_path, retries=2)
    assert "failed 3 times" in str(err.value) and "--weights" in str(err.value)
    assert len(site.state.ranges) == 3
    part = tmp_path / "tiny.pt.part"
    assert part.read_bytes() == PAYLOAD[: 3 * CUT]
    assert not (tmp_path / "tiny.pt").exists()

    site.state.drops_left = 0  # the network recovers: the next run picks up where it stopped
    assert download(site.remote(), tmp_path).read_bytes() == PAYLOAD
    assert site.state.ranges[-1] == f"bytes={3 * CUT}-"


def test_http_5xx_is_retried_then_reported(site: Site, tmp_path: Path) -> None:
    site.state.mode = "503"
    with pytest.raises(DownloadError, match=r"HTTP 503.*--weights"):
        download(site.remote(), tmp_path, retries=1)
    assert len(site.state.ranges) == 2


def test_404_raises_download_error(site: Site, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        download(site.remote(path="/missing.pt"), tmp_path)
    msg = str(err.value)
    assert "could not reach" in msg and "404" in msg and "--weights" in msg and "\n" not in msg
    assert len(site.state.ranges) == 1  # a 404 is final: not retried
    assert not (tmp_path / "tiny.pt").exists()


def test_unreachable_port_raises_download_error(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    url = f"http://127.0.0.1:{port}/model.pt"
    with pytest.raises(DownloadError) as err:
        download(RemoteFile("tiny", url, None, None), tmp_path, timeout=2)
    msg = str(err.value)
    assert f"could not reach {url}" in msg and "--weights" in msg
    assert not (tmp_path / "tiny.pt").exists()


def test_existing_file_with_wrong_recorded_sha(site: Site, tmp_path: Path) -> None:
    final = tmp_path / "tiny.pt"
    final.write_bytes(PAYLOAD)
    (tmp_path / "tiny.pt.sha256").write_text("0" * 64 + "  tiny.pt\n")
    with pytest.raises(WeightsError) as err:
        download(site.remote(), tmp_path)
    msg = str(err.value)
    assert str(final) in msg and "delete it" in msg and "animecli models pull tiny" in msg
    assert PAYLOAD_SHA in msg
    assert site.state.ranges == []  # never went to the network
    assert final.read_bytes() == PAYLOAD  # and did not touch the user's file


def test_existing_file_wrong_expected_sha(tmp_path: Path) -> None:
    (tmp_path / "tiny.pt").write_bytes(b"not the model")
    with pytest.raises(WeightsError, match="does not match its SHA-256"):
        download(RemoteFile("tiny", "http://127.0.0.1:9/x", None, PAYLOAD_SHA), tmp_path)


def test_existing_file_without_record_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "tiny.pt").write_bytes(PAYLOAD)
    # Port 9 would refuse: returning at all shows no request was made.
    assert download(RemoteFile("tiny", "http://127.0.0.1:9/x"), tmp_path) == tmp_path / "tiny.pt"
    assert (tmp_path / "tiny.pt.sha256").read_text().split()[0] == PAYLOAD_SHA


def test_bad_url_and_bad_name_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download(RemoteFile("tiny", "file:///etc/passwd"), tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile("../evil", "http://127.0.0.1/x")
    with pytest.raises(ValueError, match="64 hex"):
        RemoteFile("tiny", "http://127.0.0.1/x", sha256="abc")


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    data = PAYLOAD * 30  # > 1 MiB, so several chunks
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANIMECLI_HOME", str(tmp_path))
    assert cache_dir() == tmp_path

    monkeypatch.delenv("ANIMECLI_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "animecli"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "animecli"

    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == tmp_path / "home" / "Library" / "Caches" / "animecli"

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache_dir() == tmp_path / "local" / "animecli"


# --- check: what nothing else vouches for must prove it is the file asked for ----------------------


def _is_payload(path: Path) -> str | None:
    """A stand-in for the weights layer's check: the real file, or a reason it is not."""
    data = path.read_bytes()
    if data.startswith(b"<!DOCTYPE"):
        return "an HTML page"
    return None if data == PAYLOAD else "truncated or corrupt"


def _refused_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: any request would fail
    return f"http://127.0.0.1:{port}/model.pt"


@pytest.mark.parametrize(("mode", "reason"), [("html", "an HTML page"), ("short", "truncated or corrupt")])
def test_first_download_failing_check_is_not_saved(site: Site, tmp_path: Path, mode: str, reason: str) -> None:
    site.state.mode = mode
    with pytest.raises(WeightsError) as err:
        download(site.remote(), tmp_path, check=_is_payload)
    msg = str(err.value)
    assert msg.startswith(f"{site.base}/model.pt did not return a checkpoint ({reason}); nothing was saved")
    assert "try again later" in msg and "--weights" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # no .pt, no .part, no pinned digest

    site.state.mode = "ok"  # the server recovers: the next pull gets and records the real file
    path = download(site.remote(), tmp_path, check=_is_payload)
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "tiny.pt.sha256").read_text().split() == [PAYLOAD_SHA, "tiny.pt"]


def test_check_names_the_kind_of_file(site: Site, tmp_path: Path) -> None:
    site.state.mode = "html"
    remote = RemoteFile("tiny", site.base + "/model.pt", kind="v2 checkpoint")
    with pytest.raises(WeightsError, match=r"did not return a v2 checkpoint \(an HTML page\)"):
        download(remote, tmp_path, check=_is_payload)


def test_check_is_skipped_when_the_digest_is_known(site: Site, tmp_path: Path) -> None:
    calls: list[Path] = []

    def check(path: Path) -> str | None:
        calls.append(path)
        return "never asked"

    path = download(site.remote(sha256=PAYLOAD_SHA), tmp_path, check=check)
    assert download(site.remote(sha256=PAYLOAD_SHA), tmp_path, check=check) == path
    assert calls == []  # the manifest's digest already proves the bytes


def test_recorded_file_failing_check_is_downloaded_again(site: Site, tmp_path: Path) -> None:
    # What an older version left: an HTML page saved as the model, its digest recorded.
    final = tmp_path / "tiny.pt"
    final.write_bytes(HTML_PAGE)
    (tmp_path / "tiny.pt.sha256").write_text(f"{hashlib.sha256(HTML_PAGE).hexdigest()}  tiny.pt\n")
    notices: list[str] = []

    assert download(site.remote(), tmp_path, check=_is_payload, notice=notices.append) == final
    assert final.read_bytes() == PAYLOAD
    assert (tmp_path / "tiny.pt.sha256").read_text().split() == [PAYLOAD_SHA, "tiny.pt"]
    assert site.state.ranges == [None]
    assert len(notices) == 1
    assert str(final) in notices[0] and "is not a checkpoint (an HTML page)" in notices[0]
    assert "downloading it again" in notices[0] and "\n" not in notices[0]


def test_recorded_file_failing_check_then_bad_download_leaves_nothing(site: Site, tmp_path: Path) -> None:
    (tmp_path / "tiny.pt").write_bytes(HTML_PAGE)
    (tmp_path / "tiny.pt.sha256").write_text(f"{hashlib.sha256(HTML_PAGE).hexdigest()}  tiny.pt\n")
    site.state.mode = "html"  # the server still answers with the page
    with pytest.raises(WeightsError, match="nothing was saved"):
        download(site.remote(), tmp_path, check=_is_payload)
    # Not pinned again: the next pull downloads instead of finding the page "verified".
    assert list(tmp_path.iterdir()) == []


def test_recorded_file_passing_check_is_kept_offline(tmp_path: Path) -> None:
    final = tmp_path / "tiny.pt"
    final.write_bytes(PAYLOAD)
    (tmp_path / "tiny.pt.sha256").write_text(f"{PAYLOAD_SHA}  tiny.pt\n")
    before = final.stat().st_mtime_ns
    notices: list[str] = []
    # Returning at all shows no request was made: nothing listens at that port.
    remote = RemoteFile("tiny", _refused_url())
    assert download(remote, tmp_path, check=_is_payload, notice=notices.append) == final
    assert final.read_bytes() == PAYLOAD and final.stat().st_mtime_ns == before
    assert notices == []


def test_unrecorded_file_failing_check_is_left_alone(tmp_path: Path) -> None:
    # No record: the user may have put it there, so it is reported, not deleted or pinned.
    final = tmp_path / "tiny.pt"
    final.write_bytes(HTML_PAGE)
    with pytest.raises(WeightsError) as err:
        download(RemoteFile("tiny", _refused_url()), tmp_path, check=_is_payload)
    msg = str(err.value)
    assert f"{final} is not a checkpoint (an HTML page)" in msg and "delete it" in msg
    assert "animecli models pull tiny" in msg and "\n" not in msg
    assert final.read_bytes() == HTML_PAGE
    assert not (tmp_path / "tiny.pt.sha256").exists()


# --- could not write: the advice depends on why --------------------------------------------------


def test_cache_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    for dest in (home, home / "sub"):  # EEXIST, then ENOTDIR (a parent is the file)
        with pytest.raises(DownloadError) as err:
            download(RemoteFile("tiny", _refused_url()), dest)
        msg = str(err.value)
        assert f"{home} is a file, not a folder" in msg and "must be a folder" in msg
        assert "ANIMECLI_HOME" in msg and "disk space" not in msg and "\n" not in msg
    assert home.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("code", "wanted"),
    [
        (errno.ENOSPC, "free some disk space"),
        (errno.EDQUOT, "free some disk space"),
        (errno.EACCES, "not writable; set ANIMECLI_HOME to a folder you can write to"),
        (errno.EPERM, "not writable; set ANIMECLI_HOME to a folder you can write to"),
        (errno.EROFS, "not writable; set ANIMECLI_HOME to a folder you can write to"),
        (errno.EEXIST, "must be a folder"),
        (errno.ENOTDIR, "must be a folder"),
        (errno.EIO, "check that folder or set ANIMECLI_HOME to another one"),
    ],
)
def test_write_error_advice_depends_on_errno(tmp_path: Path, code: int, wanted: str) -> None:
    target = tmp_path / "cache" / "tiny.pt.part"
    msg = str(hub._write_error(target, OSError(code, os.strerror(code))))
    assert msg.startswith(f"could not write {target} ({os.strerror(code)})")
    assert wanted in msg and "\n" not in msg
    if code not in {errno.ENOSPC, errno.EDQUOT}:
        assert "disk space" not in msg


def test_a_deleted_file_pulled_again_must_match_the_first_download(site: Site, tmp_path: Path) -> None:
    """The record pins the first download; a re-pull silently recorded whatever the URL served now."""
    path = download(site.remote(), tmp_path)
    record = (tmp_path / "tiny.pt.sha256").read_text()
    path.unlink()
    site.state.payload = random.Random(99).randbytes(48 * 1024)  # upstream changed the file
    with pytest.raises(WeightsError, match="now serves other bytes") as err:
        download(site.remote(), tmp_path)
    assert "delete" in str(err.value) and "tiny.pt.sha256" in str(err.value)
    assert not path.exists() and not (tmp_path / "tiny.pt.part").exists()
    assert (tmp_path / "tiny.pt.sha256").read_text() == record
    site.state.payload = PAYLOAD  # the same bytes again: accepted
    assert download(site.remote(), tmp_path).read_bytes() == PAYLOAD
    path.unlink()
    (tmp_path / "tiny.pt.sha256").unlink()  # the user trusts the new file
    site.state.payload = random.Random(99).randbytes(48 * 1024)
    assert download(site.remote(), tmp_path).read_bytes() == site.state.payload


def test_a_redirect_loop_is_a_one_line_error(site: Site, tmp_path: Path) -> None:
    site.state.mode = "loop"
    with pytest.raises(DownloadError) as err:
        download(site.remote(), tmp_path)
    assert "\n" not in str(err.value) and "redirect" in str(err.value), str(err.value)
