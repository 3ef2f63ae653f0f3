"""Lazy discovery of input images and the output path each one maps to.

Directories are walked one at a time (sorted, so runs are reproducible) and
yielded as they are read: a folder of 100,000 photos starts converting at
once, and memory is bounded by the largest single directory listing.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from animecli.dirs import PHOTO_SUFFIXES
from animecli.errors import UsageError
from animecli.options import OutputFormat

# Issue 25: videos are converted to H.264 MP4 (animecli.run.video); --format applies to images only.
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
SUPPORTED = PHOTO_SUFFIXES | VIDEO_SUFFIXES  # what convert reads
_FORMAT_EXT = {OutputFormat.PNG: ".png", OutputFormat.JPG: ".jpg", OutputFormat.WEBP: ".webp"}
# Inputs whose own format is a poor output: GIF has 256 colours, so ``--format same`` writes PNG.
_SAME_EXT = {".gif": ".png"}
GIF_NOTE = "GIF written as PNG (a GIF output would be reduced to 256 colours; --format chooses another)"


@dataclass(frozen=True)
class Job:
    """One image to convert.

    Attributes:
        src: the input file.
        dst: the output file.
        note: a remark for the report (e.g. a resolved name collision).
    """

    src: Path
    dst: Path
    note: str = ""


@dataclass(frozen=True)
class Ignored:
    """A file that is not a supported image (counted, not converted)."""

    src: Path


@dataclass(frozen=True)
class Problem:
    """A path that could not be read at all (missing input, unreadable folder)."""

    src: Path
    reason: str


Found = Job | Ignored | Problem


def output_name(src: Path, fmt: OutputFormat, suffix: str) -> str:
    """``photo.JPG`` → ``photo{suffix}.jpg`` (or the chosen format's extension; GIF → PNG; a video → .mp4)."""
    if is_video(src):
        return f"{src.stem}{suffix}.mp4"
    ext = _FORMAT_EXT.get(fmt) or _SAME_EXT.get(src.suffix.lower(), src.suffix.lower())
    return f"{src.stem}{suffix}{ext}"


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video input (by its extension)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _has_magic(pattern: str) -> bool:
    return glob.has_magic(pattern)


def _within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _glob_base(pattern: str) -> str:
    """The leading part of a glob pattern without wildcards (``photos/2024`` of ``photos/2024/*.jpg``)."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next((i for i, p in enumerate(parts) if _has_magic(p)), len(parts))]]
    return str(Path(*fixed)) if fixed else "."


def check_inputs(inputs: tuple[str, ...], output: Path) -> None:
    """Refuse inputs that cannot be meant, before anything is loaded.

    Raises:
        UsageError: the output is a file; an input folder is the output folder (its outputs would replace its
            photos or be converted again on every run); or no input exists at all (a typo,
            a glob that matched nothing).
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"OUTPUT {output} is a file; give a folder (it is created if missing)")
    out_real = os.path.realpath(output)
    for item in inputs:
        if os.path.isdir(item) and os.path.realpath(item) == out_real:
            raise UsageError(f"INPUT {item} is also the OUTPUT folder, so outputs would replace or join its "
                             "photos; give a different OUTPUT folder")
    if inputs and not any(os.path.lexists(i) or (_has_magic(i) and glob.glob(i, recursive=True)) for i in inputs):
        shown = ", ".join(inputs[:3]) + (" …" if len(inputs) > 3 else "")
        raise UsageError(f"no such file or folder: {shown}; check the INPUT paths (globs must match something)")


class Discovery:
    """Walks the inputs and plans outputs.

    Args:
        inputs: files, directories or glob patterns.
        output: the output root; excluded from the walk when inside an input.
        recursive: descend into sub-directories.
        fmt: output format (decides the output extension).
        suffix: added to output stems.
        hidden: also take hidden files and folders (names starting with ``.``) found in input
            folders; by default they are passed over, as ``ls`` and shell globs do (macOS
            ``._photo.jpg`` resource forks are not images and failed every run).
    """

    def __init__(
        self, inputs: tuple[str, ...], output: Path, recursive: bool, fmt: OutputFormat, suffix: str,
        hidden: bool = False,
    ) -> None:
        self.inputs = inputs
        self.output = output
        self.recursive = recursive
        self.hidden = hidden
        self.fmt = fmt
        self.suffix = suffix
        self._out_real = os.path.realpath(output)
        # Output paths already given to a job in this run (lower-case: case-insensitive file
        # systems): a later input that maps to one of them is renamed, never written over it.
        self._claimed: set[str] = set()
        self._sources: set[tuple[int, int]] = set()  # inputs already planned (a file given twice)
        self._input_files: set[str] = set()  # real paths of the files named as inputs
        self._real_dirs: dict[Path, str] = {}

    def __iter__(self) -> Iterator[Found]:
        for item in self._plan():
            planned = self._unique(item) if isinstance(item, Job) else item
            if planned is not None:
                yield planned

    def _plan(self) -> Iterator[Found]:
        roots = self._roots()
        # Files named on the command line (or matched by a glob) all go to the output root. They
        # are planned together, after the folders, so that which output name each one gets does
        # not depend on the order they were given in (the resume state stays valid): same-named
        # files get their folders' names, and a file whose name a folder's file already took
        # is the one renamed.
        files = [path for path, _ in roots if not path.is_dir() and (path.is_file() or path.is_symlink())]
        self._input_files = {os.path.realpath(f) for f in files}
        for path, dst_dir in roots:
            if path.is_dir():
                yield from self._walk(path, dst_dir, set())
            elif not (path.is_file() or path.is_symlink()):
                yield Problem(path, "no such file or directory; check the path")
        yield from self._plan_dir(files, self.output)

    def _real_dir(self, folder: Path) -> str:
        """``realpath`` of a folder, once per folder (it costs a system call per path component)."""
        real = self._real_dirs.get(folder)
        if real is None:
            if len(self._real_dirs) > 4096:
                self._real_dirs.clear()
            real = self._real_dirs[folder] = os.path.realpath(folder)
        return real

    def _unique(self, job: Job) -> Job | Problem | None:
        """``job``, renamed if an earlier input of this run already maps to its output path;
        ``None`` if the same file was already planned (given twice, or by two overlapping
        globs); a :class:`Problem` if its output would be the input file itself."""
        try:
            st = os.stat(job.src)
            if (st.st_dev, st.st_ino) in self._sources:
                return None
            self._sources.add((st.st_dev, st.st_ino))
        except OSError:
            pass  # a broken link: the loader reports it
        same_dir = self._real_dir(job.dst.parent) == self._real_dir(job.src.parent)
        if same_dir and (job.dst.name == job.src.name or (job.dst.exists() and os.path.samefile(job.dst, job.src))):
            return Problem(job.src, "its output would replace the input file itself; give a different OUTPUT "
                                    "folder or a --suffix")
        src_real = os.path.realpath(job.src) if self._input_files else ""

        def taken(path: Path) -> bool:
            """An earlier job's output, or a photo named as an input of this run (with
            --overwrite it would be replaced before, or instead of, being read)."""
            if str(path).lower() in self._claimed:
                return True
            if not self._input_files:
                return False
            real = os.path.realpath(path)
            return real in self._input_files and real != src_real

        folder = job.src.parent.name or "root"
        dst, n = job.dst, 1
        while taken(dst):
            tag = folder if n == 1 else f"{folder}_{n}"
            dst = job.dst.with_name(f"{job.dst.stem}_{tag}{job.dst.suffix}")
            n += 1
        self._claimed.add(str(dst).lower())
        if dst == job.dst:
            return job
        note = f"name collision with another input: written as {dst.name}"
        return Job(job.src, dst, f"{job.note}; {note}" if job.note else note)

    def _roots(self) -> list[tuple[Path, Path]]:
        """(input path, output dir) pairs. One input dir maps to the output root;
        several map to sub-folders named after them (made unique)."""
        paths: list[Path] = []
        for item in self.inputs:
            if not os.path.exists(item) and _has_magic(item):
                found = sorted(glob.glob(item, recursive=True))
                # A glob over a folder also matches the output folder inside it (`photos/*` with
                # OUTPUT photos/anime): those files are our outputs, never inputs; unless the glob
                # itself points into the output folder (`out/raw/*` with OUTPUT out).
                deliberate = _within(os.path.realpath(_glob_base(item)), self._out_real)
                matches = [m for m in found if deliberate or not _within(os.path.realpath(m), self._out_real)]
                if not found:
                    paths.append(Path(item))  # reported as missing
                paths.extend(Path(m) for m in matches)
            else:
                paths.append(Path(item))
        # A file or folder given twice (`in in/`, `a.jpg ./a.jpg`, two globs, a link to it) counts
        # once, as first given: a folder given twice went to a sub-folder named after its parent.
        seen: set[str] = set()
        unique: list[Path] = []
        for p in paths:
            real = os.path.realpath(p)
            if os.path.lexists(p) and real in seen:  # a path that does not exist is reported each time
                continue
            seen.add(real)
            unique.append(p)
        paths = unique
        dirs = [p for p in paths if p.is_dir()]
        # The layout must not depend on which folders exist this time (a share not mounted): with
        # `A B out`, A's files go to out/A/ even when B is missing. A missing path counts as a
        # folder unless it names an image file.
        missing = [p for p in paths if not os.path.lexists(p) and not _has_magic(str(p))
                   and p.suffix.lower() not in SUPPORTED]
        several = len(dirs) + len(missing) > 1
        bases = [p.resolve().name or "root" for p in dirs]
        # Same-named folders (d1/x, d2/x) are named after their parents (x_d1, x_d2), whatever
        # their order; numbers only if the parents share names too.
        names = {p: (b if bases.count(b) == 1 else f"{b}_{p.resolve().parent.name or 'root'}")
                 for p, b in zip(dirs, bases, strict=True)}
        used: dict[str, int] = {}
        roots = []
        for p in paths:
            if p.is_dir() and several:
                base = names[p]
                n = used.get(base, 0)
                used[base] = n + 1
                roots.append((p, self.output / (base if n == 0 else f"{base}_{n + 1}")))
            else:
                roots.append((p, self.output))
        return roots

    def _walk(self, folder: Path, dst_dir: Path, seen: set[tuple[int, int]]) -> Iterator[Found]:
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:  # a symlink loop: this folder is already being walked
                return
            seen = seen | {key}
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Problem(folder, f"cannot read folder ({exc.strerror or exc}); check its permissions")
            return
        files: list[Path] = []
        subdirs: list[os.DirEntry[str]] = []
        for e in entries:
            if e.name.startswith(".animecli"):
                continue  # our own temp/state files
            if e.name.startswith(".") and not self.hidden:
                continue  # hidden: thumbnails caches, ._ resource forks, .git… (named files still count)
            try:
                if e.is_dir():
                    subdirs.append(e)
                elif e.is_file() or e.is_symlink():
                    files.append(Path(e.path))  # a broken link is reported by the loader, not dropped
            except OSError:
                files.append(Path(e.path))  # let the loader report it
        yield from self._plan_dir(files, dst_dir)
        if not self.recursive:
            return
        for d in subdirs:
            if os.path.realpath(d.path) == self._out_real:
                continue  # never re-convert our own outputs
            yield from self._walk(Path(d.path), dst_dir / d.name, seen)

    def _plan_dir(self, files: list[Path], dst_dir: Path) -> Iterator[Found]:
        """Plan the outputs of one directory's files, resolving name collisions.

        When several inputs map to the same output name (``a.jpg`` and
        ``a.png`` both to ``a.png``), every one of them gets its source
        extension in the name (``a_jpg.png``, ``a_png.png``), or, when they share
        it (files from different folders), its folder's name (``a_x.png``,
        ``a_y.png``): the result does not depend on which file is seen first,
        and nothing is overwritten.
        """
        images = [f for f in files if f.suffix.lower() in SUPPORTED]
        for f in files:
            if f.suffix.lower() not in SUPPORTED:
                yield Ignored(f)
        names: dict[str, list[Path]] = {}
        for f in images:
            names.setdefault(output_name(f, self.fmt, self.suffix).lower(), []).append(f)
        taken = {n for n, group in names.items() if len(group) == 1}
        for f in images:
            plain = output_name(f, self.fmt, self.suffix)
            group = names[plain.lower()]
            gif = GIF_NOTE if self.fmt is OutputFormat.SAME and f.suffix.lower() in _SAME_EXT else ""
            if len(group) == 1:
                yield Job(f, dst_dir / plain, gif)
                continue
            exts = [g.suffix.lower() for g in group]
            tag = f.suffix.lstrip(".").lower() if len(set(exts)) == len(exts) else (f.parent.name or "root")
            stem = f"{f.stem}_{tag}{self.suffix}"
            name = output_name(f.with_name(stem + f.suffix), self.fmt, "")
            n = 2
            while name.lower() in taken:
                name = output_name(f.with_name(f"{stem}_{n}{f.suffix}"), self.fmt, "")
                n += 1
            taken.add(name.lower())
            others = ", ".join(g.name for g in group if g != f)
            note = f"name collision with {others}: written as {name}"
            if (dst_dir / plain).is_file():
                # Made when only one of them existed; which one is not known, so it is not deleted.
                note += f"; {plain} there is from an earlier run and no longer written: delete it if it is stale"
            yield Job(f, dst_dir / name, f"{note}; {gif}" if gif else note)
