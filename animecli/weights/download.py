# Over 400 lines on purpose: one download protocol (resume, retry, verify, trust on first use).
"""Download public upstream checkpoints into the local cache, safely.

"Safely" means three things here:

* **Atomic.** Bytes go to ``NAME.pt.part`` and only a complete, verified file is
  ``os.replace``-d onto ``NAME.pt``, so a crash or Ctrl-C never leaves a
  half-written checkpoint under the name that loaders look for.
* **Verified.** The size and SHA-256 are checked against what the registry
  expects. Where the registry has no digest, the one computed on the first
  download is recorded in ``NAME.pt.sha256`` (``sha256sum -c`` format) and every
  later use is checked against it (trust on first use). Before such a first
  download is recorded, a caller-supplied ``check`` can confirm that the bytes
  are the kind of file asked for (the weights layer loads them as a checkpoint),
  so an HTML error page or a cut-short body is never pinned as the model.
* **Resumable.** Interrupted transfers continue from the ``.part`` with an HTTP
  ``Range`` request, both within one call (a dropped connection is retried) and
  across runs (the ``.part`` is kept when the retries run out).

This module never prints and never exits: it reports through ``progress`` and
raises :class:`~animecli.errors.DownloadError` (the network) or
:class:`~animecli.errors.WeightsError` (the bytes) whose one-line messages the
CLI shows as they are. It uses only the standard library and does not import
torch, so ``animecli models pull`` stays quick to start.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from animecli.atomic import file_in_the_way
from animecli.errors import DownloadError, WeightsError

__all__ = ["CheckFn", "NoticeFn", "ProgressFn", "RemoteFile", "download", "sha256_file"]

ProgressFn = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, total_or_None)`` while a download runs."""

CheckFn = Callable[[Path], str | None]
"""Called as ``check(path)`` on a file nothing else vouches for; returns ``None`` if it is
the kind of file asked for, else a short reason why not (e.g. ``"an HTML page"``)."""

NoticeFn = Callable[[str], None]
"""Called with a one-line message when :func:`download` does something the user should know."""

# 1 MiB: big enough that hashing and copying are not call-bound, small enough for smooth progress.
_CHUNK = 1 << 20
_USER_AGENT = "animecli (python-urllib)"
# Seconds to wait before retry n is n * this. Short on purpose: the usual cause is a
# dropped connection that a fresh one fixes at once; module-level so tests can zero it.
_RETRY_BACKOFF_S = 0.5
# Server answers that say "try again later" rather than "this will never work".
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_MANUAL = "or download the file by hand and pass --weights PATH"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable checkpoint.

    Attributes:
        name: cache name without extension, e.g. ``"face_paint_512_v2"``; the file
            is saved as ``NAME.pt``.
        url: ``http://`` or ``https://`` address of the file.
        size: expected size in bytes, if known.
        sha256: expected hex digest, if known; ``None`` records it on first download.
        kind: what the file is, for messages, e.g. ``"v2 checkpoint"``.
    """

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    kind: str = "checkpoint"

    def __post_init__(self) -> None:
        """Reject entries that would write outside the cache or can never verify.

        These are programming errors in the model registry, not user errors,
        hence ``ValueError`` rather than an :class:`AnimecliError`.

        Raises:
            ValueError: ``name`` is not a plain file name, ``size`` is negative,
                or ``sha256`` is not 64 hex digits.
        """
        # The name becomes part of a path: a separator or ".." would escape dest_dir.
        if not self.name or self.name in {".", ".."} or any(c in self.name for c in "/\\\0:"):
            raise ValueError(f"RemoteFile name must be a plain file name, got {self.name!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"RemoteFile size must be >= 0, got {self.size}")
        if self.sha256 is not None:
            digest = self.sha256.strip().lower()
            if not _HEX64.fullmatch(digest):
                raise ValueError(f"RemoteFile sha256 must be 64 hex digits, got {self.sha256!r}")
            # Normalise once so every comparison below is a plain string compare.
            object.__setattr__(self, "sha256", digest)


def sha256_file(path: Path) -> str:
    """Return the SHA-256 hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file to hash.

    Returns:
        The lowercase hex digest.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        # Streamed: checkpoints can be hundreds of MB and need not fit in memory twice.
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    remote: RemoteFile,
    dest_dir: Path,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    check: CheckFn | None = None,
    notice: NoticeFn | None = None,
) -> Path:
    """Download ``remote`` to ``dest_dir/NAME.pt``, verified, resuming where possible.

    If ``NAME.pt`` already exists and matches the expected digest (``remote.sha256``
    or the one recorded in ``NAME.pt.sha256``), it is returned without any network
    access. Otherwise the file is fetched into ``NAME.pt.part`` (continuing an
    earlier ``.part`` with a ``Range`` request), checked, and renamed atomically.

    Without ``remote.sha256`` nothing vouches for the bytes but ``check``: it runs on a
    new download before its digest is recorded, and on an existing file before it is
    trusted. A recorded file that fails it (pinned by a version that did not check)
    is deleted with its record and downloaded again, after a ``notice``.

    Args:
        remote: what to fetch and how to check it.
        dest_dir: folder to save into; created if missing.
        progress: called as ``progress(bytes_done, total_or_None)`` as bytes arrive;
            ``bytes_done`` includes bytes resumed from an earlier ``.part``.
        timeout: seconds to wait for the connection and for each read.
        retries: how many times a transfer that drops mid-way (reset, timeout,
            short body, HTTP 5xx) is retried, continuing from the bytes received.
        check: confirms a file is a ``remote.kind`` (see :data:`CheckFn`); used only
            when ``remote.sha256`` is ``None``. A callable, so that what it needs
            (torch, the architectures) is imported by the caller, not by this module.
        notice: told when a recorded file that fails ``check`` is downloaded again.

    Returns:
        The path of the verified ``NAME.pt``.

    Raises:
        DownloadError: the server cannot be reached, answers with an HTTP error,
            keeps dropping the transfer, or the file cannot be written. A kept
            ``.part`` lets the next call resume.
        WeightsError: the existing or downloaded bytes have the wrong size or
            SHA-256, a new download fails ``check`` (it is deleted, nothing is
            recorded), or an unrecorded existing file fails it (it is left alone).
            A bad ``.part`` is deleted first.
    """
    final = dest_dir / f"{remote.name}.pt"
    part = dest_dir / f"{remote.name}.pt.part"
    sidecar = dest_dir / f"{remote.name}.pt.sha256"

    if final.exists() and _verify_existing(remote, final, sidecar, check, notice):
        return final

    _check_url(remote.url)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(dest_dir, exc) from exc

    failures = 0
    while True:
        try:
            server_total = _fetch(remote, part, progress, timeout)
            break
        except _TransientError as exc:
            failures += 1
            if failures > max(retries, 0):
                raise DownloadError(
                    f"downloading {remote.url} failed {failures} times (last: {exc}); "
                    f"check your network and run `animecli models pull {remote.name}` again "
                    f"(it resumes), {_MANUAL}"
                ) from exc
            time.sleep(_RETRY_BACKOFF_S * failures)

    digest = _verify_part(remote, part, server_total)
    if check is not None and remote.sha256 is None:
        # Nothing else vouches for these bytes, and once recorded they are trusted for
        # good: an HTML error page or a body cut short (no Content-Length to notice it
        # by) would become "the model", and a second pull would find it "verified".
        problem = check(part)
        if problem is not None:
            _unlink(part)
            raise WeightsError(
                f"{remote.url} did not return a {remote.kind} ({_one_line(problem)}); nothing was saved; "
                f"check the URL or try again later, {_MANUAL}"
            )
    recorded = read_sidecar(sidecar, final, remote.name) if remote.sha256 is None else None
    if recorded is not None and recorded != digest:
        # The record pins the bytes of the first download (trust on first use): a file
        # deleted and pulled again must be those bytes, not whatever the URL serves now.
        _unlink(part)
        raise WeightsError(
            f"{remote.url} now serves other bytes than the first download of {remote.name} (SHA-256 {digest}, "
            f"recorded {recorded} in {sidecar}); nothing was saved; if the new file is trusted, delete "
            f"{sidecar} and run `animecli models pull {remote.name}` again"
        )
    try:
        if remote.sha256 is None:
            # Recorded before the rename: a crash in between only costs a re-download,
            # whereas a final file without its record would be trusted blindly next time.
            _write_sidecar(sidecar, digest, final.name)
        os.replace(part, final)
    except OSError as exc:
        raise _write_error(final, exc) from exc
    return final


class _TransientError(Exception):
    """A failure that retrying (resuming from the ``.part``) may fix."""


def _fetch(remote: RemoteFile, part: Path, progress: ProgressFn | None, timeout: float) -> int | None:
    """Make one attempt to complete ``part``; return the file size the server announced.

    Raises:
        _TransientError: the transfer broke off; ``part`` holds what arrived.
        DownloadError: a failure that retrying will not fix.
    """
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None:
        if offset > remote.size:
            # Longer than the real file: not a prefix of it, so nothing to resume.
            _unlink(part)
            offset = 0
        elif offset == remote.size and offset > 0:
            # Complete already (e.g. an earlier run died while verifying): let the checks decide.
            return None

    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:  # an HTTPError holds the open response; close it.
            if exc.code == 416 and offset:
                full = _parse_content_range(exc.headers.get("Content-Range"))[2]
                if full == offset:
                    return full  # The .part was already complete.
                # The .part is not a prefix of the current file: start from zero.
                _unlink(part)
                return _fetch(remote, part, progress, timeout)
            reason = f"HTTP {exc.code} {_one_line(exc.reason)}"  # a redirect loop's reason spans lines
            if exc.code in _TRANSIENT_HTTP:
                raise _TransientError(reason) from exc
            raise DownloadError(_unreachable(remote.url, reason)) from exc
    except urllib.error.URLError as exc:
        # A timeout or reset while connecting may pass; a refused connection, a DNS
        # failure or a TLS error will not within seconds, so report it at once.
        if isinstance(exc.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)):
            raise _TransientError(_one_line(exc.reason)) from exc
        raise DownloadError(_unreachable(remote.url, _one_line(exc.reason))) from exc
    except (http.client.HTTPException, OSError) as exc:
        # The request went out but the answer never came (closed, reset, timed out).
        raise _TransientError(_one_line(exc)) from exc

    with response:
        length = _int_or_none(response.headers.get("Content-Length"))
        if response.status == 206:
            start, _end, full = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                # Appending bytes from another offset would silently corrupt the file.
                _unlink(part)
                raise _TransientError(f"server resumed at byte {start} instead of {offset}")
            mode, done = "ab", offset
            server_total = full if full is not None else (offset + length if length is not None else None)
        elif response.status == 200:
            # No Range asked, or the server ignored it: the body is the whole file.
            mode, done = "wb", 0
            server_total = length
        else:
            raise DownloadError(_unreachable(remote.url, f"unexpected HTTP {response.status}"))

        if remote.size is not None and server_total is not None and server_total != remote.size:
            # Fail before fetching hundreds of MB that can never pass the size check.
            _unlink(part)
            raise WeightsError(_mismatch(remote, "size", f"{remote.size} bytes", f"{server_total} bytes"))

        total = server_total if server_total is not None else remote.size
        try:
            with open(part, mode) as fh:
                received = _stream(response, fh, done, total, progress)
                fh.flush()
                # On disk before the rename, so a power cut cannot leave an empty NAME.pt.
                os.fsync(fh.fileno())
        except OSError as exc:
            # Network errors became _TransientError inside _stream; an OSError here is the disk.
            raise _write_error(part, exc) from exc

    # http.client returns b"" rather than raising when a Content-Length body ends early.
    if length is not None and received < length:
        raise _TransientError(f"connection closed after {received} of {length} bytes")
    return server_total


def _stream(
    response: http.client.HTTPResponse,
    fh: IO[bytes],
    done: int,
    total: int | None,
    progress: ProgressFn | None,
) -> int:
    """Copy the response body to ``fh``, reporting progress; return the bytes copied.

    Raises:
        _TransientError: reading from the network failed part-way.
    """
    received = 0
    if progress is not None:
        progress(done, total)
    while True:
        try:
            # read1, not read: it hands over whatever arrived, so when the connection
            # drops every byte received is already on disk for the resume (read() on a
            # chunked body raises IncompleteRead and discards the partial chunk).
            chunk = response.read1(_CHUNK)
        except (http.client.HTTPException, OSError) as exc:
            # IncompleteRead, ConnectionResetError, TimeoutError, ssl.SSLError...
            raise _TransientError(_one_line(exc) or type(exc).__name__) from exc
        if not chunk:
            return received
        fh.write(chunk)
        received += len(chunk)
        if progress is not None:
            progress(done + received, total)


def _verify_part(remote: RemoteFile, part: Path, server_total: int | None) -> str:
    """Check the finished ``.part``'s size and digest; delete it and raise if wrong.

    Returns:
        The SHA-256 hex digest of ``part``.
    """
    size = part.stat().st_size
    for expected in (remote.size, server_total):
        if expected is not None and size != expected:
            _unlink(part)
            raise WeightsError(_mismatch(remote, "size", f"{expected} bytes", f"{size} bytes"))
    digest = sha256_file(part)
    if remote.sha256 is not None and digest != remote.sha256:
        # Deleted so the next pull starts clean instead of "resuming" bad bytes.
        _unlink(part)
        raise WeightsError(_mismatch(remote, "checksum", remote.sha256, digest))
    return digest


def _verify_existing(
    remote: RemoteFile, final: Path, sidecar: Path, check: CheckFn | None, notice: NoticeFn | None
) -> bool:
    """Vet an existing ``final``: True to use it, False if it was deleted to be downloaded again.

    Raises:
        WeightsError: ``final`` does not match the expected or recorded digest, or has
            no record and fails ``check`` (a file placed by hand is never deleted).
    """
    fix = f"delete it and run `animecli models pull {remote.name}` again"
    expected = remote.sha256 if remote.sha256 is not None else read_sidecar(sidecar, final, remote.name)
    try:
        size = final.stat().st_size
        actual = sha256_file(final)
    except OSError as exc:
        raise WeightsError(
            f"cannot read {final} ({_one_line(exc)}); check its permissions, or {fix}"
        ) from exc
    if expected is None:
        # Placed by hand or by a version that kept no record: nothing to check it
        # against, so trust it now and record its digest for every later use.
        if remote.size is not None and size != remote.size:
            raise WeightsError(
                f"{final} is {size} bytes, expected {remote.size}: the file is incomplete "
                f"or not {remote.name}; {fix}"
            )
        problem = check(final) if check is not None else None
        if problem is not None:
            # Not deleted: with no record, animecli cannot tell that it put the file there.
            raise WeightsError(f"{final} is not a {remote.kind} ({_one_line(problem)}); {fix}")
        try:
            _write_sidecar(sidecar, actual, final.name)
        except OSError as exc:
            raise _write_error(sidecar, exc) from exc
        return True
    if actual != expected:
        raise WeightsError(
            f"{final} does not match its SHA-256 (expected {expected}, got {actual}): "
            f"the file is corrupt or was replaced; {fix}"
        )
    if remote.sha256 is None and check is not None:
        # The record only proves these are the bytes a first download received: versions
        # before ``check`` recorded whatever came, an HTML error page included.
        problem = check(final)
        if problem is not None:
            if notice is not None:
                notice(
                    f"{final} was recorded by an earlier pull but is not a {remote.kind} "
                    f"({_one_line(problem)}); deleting it and downloading it again"
                )
            try:
                # The file before its record: a crash in between leaves no file, which is
                # simply downloaded; the other order would leave an unrecorded bad file.
                final.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
            except OSError as exc:
                raise WeightsError(
                    f"{final} is not a {remote.kind} ({_one_line(problem)}) and cannot be deleted "
                    f"({_one_line(exc.strerror or exc)}); delete it and {sidecar.name} by hand, "
                    f"then run `animecli models pull {remote.name}` again"
                ) from exc
            return False
    return True


def read_sidecar(sidecar: Path, final: Path, name: str) -> str | None:
    """Return the digest recorded in ``sidecar`` for ``final``, or None if there is no record.

    Raises:
        WeightsError: the record is there but holds no SHA-256 digest (names the fix).
    """
    try:
        text = sidecar.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        text = f"<unreadable: {exc}>"
    fields = text.split()
    digest = fields[0].lower() if fields else ""
    if not _HEX64.fullmatch(digest):
        raise WeightsError(
            f"{sidecar} does not hold a SHA-256 digest, so {final} cannot be checked; "
            f"delete both and run `animecli models pull {name}` again"
        )
    return digest


def _write_sidecar(sidecar: Path, digest: str, filename: str) -> None:
    """Atomically write ``DIGEST  FILENAME`` (``sha256sum -c`` format) to ``sidecar``."""
    fd, tmp = tempfile.mkstemp(dir=sidecar.parent, prefix=f".{sidecar.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{digest}  {filename}\n")
        # Written then renamed, so a reader never sees a truncated digest.
        os.replace(tmp, sidecar)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _check_url(url: str) -> None:
    """Raise DownloadError unless ``url`` is an absolute http(s) address."""
    parts = urllib.parse.urlsplit(url)
    # urlopen would also follow file:// and ftp://, which have no resume or status codes.
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise DownloadError(
            f"cannot download {url!r}: only http:// and https:// addresses are supported; {_MANUAL}"
        )


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` (or ``bytes */TOTAL``); unknown parts are None."""
    if not value:
        return None, None, None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match:
        total = None if match.group(3) == "*" else int(match.group(3))
        return int(match.group(1)), int(match.group(2)), total
    unsatisfied = re.fullmatch(r"bytes\s+\*/(\d+)", value.strip(), re.IGNORECASE)
    if unsatisfied:
        return None, None, int(unsatisfied.group(1))
    return None, None, None


def _int_or_none(value: str | None) -> int | None:
    """``int(value)`` for a well-formed non-negative header value, else None."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _unlink(path: Path) -> None:
    """Delete ``path`` if present; a failure here must not hide the error being raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _one_line(obj: object) -> str:
    """``str(obj)`` collapsed onto one line, since messages are shown one per line."""
    return " ".join(str(obj).split())


def _unreachable(url: str, reason: str) -> str:
    return f"could not reach {url} ({reason}); check your network, {_MANUAL}"


def _mismatch(remote: RemoteFile, what: str, expected: str, got: str) -> str:
    return (
        f"{what} mismatch for {remote.name} from {remote.url}: expected {expected}, got {got}; "
        f"the download was corrupted or the file changed upstream: run `animecli models pull "
        f"{remote.name}` again, {_MANUAL}"
    )


# errno values by the advice they need; EDQUOT is missing on some platforms (Windows).
_NO_SPACE = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_NOT_A_FOLDER = frozenset({errno.EEXIST, errno.ENOTDIR})
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _write_error(path: Path, exc: OSError) -> DownloadError:
    """The error for failing to write ``path``, with the advice that fits ``exc.errno``."""
    reason = _one_line(exc.strerror or exc)
    where = f"could not write {path} ({reason})"
    if exc.errno in _NO_SPACE:
        return DownloadError(
            f"{where}; free some disk space or set ANIMECLI_HOME to a folder on another disk, then run again"
        )
    if exc.errno in _NOT_A_FOLDER:
        blocker = file_in_the_way(path)
        what = f"{blocker} is a file, not a folder" if blocker is not None else "part of that path is not a folder"
        return DownloadError(
            f"{where}: {what}, and the cache (ANIMECLI_HOME) must be a folder; move that file away "
            f"or set ANIMECLI_HOME to a folder, then run again"
        )
    if exc.errno in _NOT_WRITABLE:
        return DownloadError(
            f"{where}: the folder is not writable; set ANIMECLI_HOME to a folder you can write to, then run again"
        )
    return DownloadError(f"{where}; check that folder or set ANIMECLI_HOME to another one, then run again")


