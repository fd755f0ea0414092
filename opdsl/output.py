"""Writing the files of `opdsl compile -o` (every backend's `save`): all or nothing, never in place.

- An output that is the input file (the same path, or the same file through another path, a
  symlink or a hard link), a directory, a path whose directory does not exist, or a file that
  cannot be written is an OpdslError naming the path, before anything is written.
- Each file is written to a temporary file in its own directory, flushed to disk, then renamed
  over the old one.  A full disk leaves the old file as it was (never a truncated module), and a
  process that has the old file mapped (a loaded shared library) keeps the old inode: writing in
  place would change its mapped pages under it (SIGSEGV / SIGBUS).
- Several files (a TVM library and its manifest) appear together or not at all: every temporary
  is written before the first rename; if a rename fails, the files already renamed are removed.
- Files get the mode a new file gets (0o666 less the umask), like any compiler's output.

(The compile cache, opdsl/cache.py, makes its entries atomic differently: it builds a whole
private directory and renames the directory.)
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Iterable, Union

from .errors import OpdslError

# what to write: text (UTF-8), bytes, or a function that writes the file at the path it is given
Content = Union[str, bytes, Callable[[Path], None]]


def _error(path, why: str, hint: str | None = None) -> OpdslError:
    return OpdslError(f"cannot write {os.fspath(path)}: {why}", hint=hint)


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):            # one of them does not exist (or "<string>")
        return os.path.abspath(a) == os.path.abspath(os.fspath(b))


def check_targets(paths: Iterable, inputs: Iterable = ()) -> list[Path]:
    """The output paths, checked: each must be a new or regular, writable file in an existing
    directory, none the same file as an input or as another output.  Raises OpdslError."""
    inputs = [i for i in inputs if i]
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        shown = os.fspath(path)
        if shown.endswith(("/", os.sep)) or p.is_dir():
            raise _error(shown, "it names a directory", hint="give a file name, e.g. -o DIR/kernels.py")
        parent = p.parent
        if not parent.is_dir():
            raise _error(shown, f"the directory {os.fspath(parent)} does not exist"
                         if not os.path.lexists(parent) else f"{os.fspath(parent)} is not a directory",
                         hint="create the directory first")
        for i in inputs:
            if _same_file(p, i):
                raise OpdslError(f"cannot write {shown}: it is the input file {os.fspath(i)}",
                                 hint="choose another output path (-o)")
        for q in out:
            if _same_file(p, q):
                raise _error(shown, f"it is also the output {os.fspath(q)}")
        if os.path.exists(p):
            if not p.is_file():
                raise _error(shown, "it exists and is not a regular file")
            if not os.access(p, os.W_OK):
                raise _error(shown, "permission denied (the file is read-only)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise _error(shown, f"permission denied (cannot create files in {os.fspath(parent)})")
        out.append(p)
    return out


def _write_temp(path: Path, content: Content) -> Path:
    """A temporary file beside `path` holding `content`, on disk (fsync), with a new file's mode.
    Its name keeps path's suffix: TVM's export_library picks the format from it."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)    # 0o666 less the umask: what a new file gets
            if callable(content):
                content(tmp)                             # may replace the placeholder (a linker does)
                os.chmod(tmp, mode)
                sync = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(sync)
                finally:
                    os.close(sync)
            else:
                _write_all(fd, content.encode("utf-8") if isinstance(content, str) else content)
                os.fsync(fd)                             # a full disk can show up only here
        finally:
            os.close(fd)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def write_files(outputs: list[tuple[object, Content]], inputs: Iterable = ()) -> list[str]:
    """Write every (path, content) atomically and together; returns the paths written.

    `inputs`: the files the outputs were made from, which are never overwritten.  Raises
    OpdslError (naming the path) for a bad path or a failed write; other errors of a content
    function propagate.  Nothing is left behind on failure: no temporary, no partial set."""
    paths = check_targets([p for p, _ in outputs], inputs)
    temps: list[Path] = []
    current = paths[0] if paths else None
    try:
        for path, (_, content) in zip(paths, outputs):
            current = path
            temps.append(_write_temp(path, content))
        done: list[Path] = []
        for tmp, path in zip(temps, paths):
            current = path
            try:
                _rename(tmp, path)
            except OSError:
                for d in done:                           # all or none: take back what was renamed
                    _unlink(d)
                raise
            done.append(path)
        temps = []
        _sync_dirs({p.parent for p in paths})
    except OSError as e:
        raise _error(current, e.strerror or str(e)) from None
    finally:
        for t in temps:
            _unlink(t)
    return [os.fspath(p) for p, _ in outputs]


def _sync_dirs(dirs) -> None:
    """Make the renames durable (best effort: not every platform can fsync a directory)."""
    for d in dirs:
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
