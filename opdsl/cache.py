"""A compile cache for slow backends (TVM): compiled artifacts on disk, keyed by what made them.

Layout::

    $OPDSL_CACHE_DIR/            (default: platformdirs.user_cache_dir("opdsl")); 0700, ours
      <key>/                     one entry (0700): whatever the backend wrote (files 0600), plus
        CHECKSUMS.json           {"key": key, "parts": {...}, "files": {path: sha256}}, written last
      <key>.lock                 a filelock (0600) held while the entry is checked or built

The key is the SHA-256 of the parts a backend passes (source text, dims,
dtype, backend, target, options) together with the opdsl version and a
fingerprint of opdsl's own code, so editing a lowering or a backend never
reuses a stale kernel.

Integrity: an entry is used only when CHECKSUMS.json parses, names the key
that was asked for (which is also the entry's directory name, and the hash of
the parts it records), and lists exactly the regular files of the entry, each
with the recorded hash; anything else (a partial write, a truncated, edited,
added or deleted file, an entry copied under another key's name) is deleted
and rebuilt.  Concurrency: the entry is checked and built under the key's
lock, in a temporary directory that is renamed into place atomically (that
rename is what makes a build all-or-nothing), so two processes compiling the
same program at once both succeed: one builds, the other waits and then
reuses the entry.

Trust: the directory must be ours and writable by nobody else; one that
belongs to another user or is writable by group or others is not used.  Such
a directory, one that cannot be created or written (a file, read-only, a full
disk) makes get_or_build raise `Unavailable`; the caller warns (`warn_uncached`)
and compiles without the cache.  Everything the cache creates is private
(directories 0700, files 0600) whatever the umask.

This module imports nothing from opdsl at import time: tests load it alone, by path.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Callable

CHECKSUMS = "CHECKSUMS.json"
_FINGERPRINT: str | None = None


class Unavailable(Exception):
    """The cache cannot be used here; the message says why.  The caller compiles without it."""


class CacheWarning(UserWarning):
    """The compile cache was not used (see the message); the program still compiles."""


def warn_uncached(reason, stacklevel: int = 3) -> None:
    """Warn that a compile goes without the cache, and why."""
    warnings.warn(f"opdsl: compiling without the cache: {reason}", CacheWarning, stacklevel=stacklevel)


def cache_dir() -> Path:
    """$OPDSL_CACHE_DIR, or the user cache directory of opdsl (platformdirs)."""
    env = os.environ.get("OPDSL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("opdsl"))


def fingerprint() -> str:
    """opdsl's version and a hash of its code (the core, passes, backends and grammar)."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        import importlib.util

        from opdsl.version import __version__
        h = hashlib.sha256(__version__.encode())
        # the packages' directories, found without importing them (the backends import this module),
        # each with its subpackages (backends/tvm/, ...)
        dirs = [Path(p) for name in ("opdsl", "opdsl.passes", "opdsl.backends", "opdsl.grammar")
                for p in importlib.util.find_spec(name).submodule_search_locations]
        for d in dirs:
            for f in sorted(d.rglob("*")):
                if f.suffix in (".py", ".lark") and f.is_file():
                    h.update(f.relative_to(d).as_posix().encode())
                    h.update(f.read_bytes())
        _FINGERPRINT = f"{__version__}+{h.hexdigest()[:16]}"
    return _FINGERPRINT


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def key_parts(**parts) -> dict:
    """What a key is the hash of: the parts plus the opdsl fingerprint (recorded in each entry)."""
    return {"opdsl": fingerprint(), **parts}


def make_key(**parts) -> str:
    """A cache key from JSON-able parts plus the opdsl fingerprint."""
    return _digest(key_parts(**parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mine(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else (always true where there are no uids)."""
    if not hasattr(os, "geteuid"):
        return True
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _walk(entry: Path) -> dict[str, Path] | None:
    """Every file of an entry by its relative path ('/'-separated), or None when the entry holds
    something that is neither a private directory nor a private regular file (a symlink, a fifo,
    a file another user could have written)."""
    files = {}
    stack = [entry]
    while stack:
        d = stack.pop()
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or not _mine(st):
            return None
        with os.scandir(d) as children:
            for child in children:
                p = Path(child.path)
                st = child.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(p)
                elif stat.S_ISREG(st.st_mode) and _mine(st):
                    files[p.relative_to(entry).as_posix()] = p
                else:
                    return None
    return files


def is_valid(entry: Path, key: str | None = None) -> bool:
    """Whether an entry is complete and belongs to `key` (default: its directory name): its
    checksum file parses, names that key, and lists exactly the entry's files with their hashes."""
    entry = Path(entry)
    key = entry.name if key is None else key
    try:
        meta = json.loads((entry / CHECKSUMS).read_text())
        files, parts = meta["files"], meta.get("parts") or {}
        if meta["key"] != key or entry.name != key or not files or not isinstance(files, dict):
            return False
        if parts and _digest(parts) != key:          # the parts recorded are not what made this key
            return False
        present = _walk(entry)
        if present is None:
            return False
        present.pop(CHECKSUMS, None)
        if set(present) != set(files):               # a file present but not listed, or listed but missing
            return False
        return all(_sha256(present[name]) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _private_dirs(root: Path) -> None:
    """Create `root` and its missing parents as 0700 directories (whatever the umask)."""
    missing = []
    p = root
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:                      # another process made it meanwhile
            continue
        os.chmod(d, 0o700)


def check_root(root: Path) -> None:
    """Create the cache directory, or check an existing one: raise Unavailable unless it is a
    directory of ours that nobody else can write."""
    try:
        _private_dirs(root)
        st = os.stat(root)
    except OSError as e:
        raise Unavailable(f"cannot create the cache directory {root}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Unavailable(f"the cache directory {root} is not a directory")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise Unavailable(f"the cache directory {root} belongs to another user (uid {st.st_uid}); "
                          f"set OPDSL_CACHE_DIR to a directory of your own")
    if hasattr(os, "geteuid") and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unavailable(f"the cache directory {root} is writable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}): others could plant compiled code there; "
                          f"make it private (chmod 700) or set OPDSL_CACHE_DIR")


def _write_private(path: Path, text: str) -> None:
    """A new file of mode 0600 (written into a private build directory: no rename needed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)                         # a umask like 0o277 would leave it unreadable
        f.write(text)


def _make_private(tmp: Path) -> dict[str, str]:
    """Directories 0700 and files 0600 (a backend may have written them under any umask);
    returns the hash of every file."""
    files = {}
    for d, dirs, names in os.walk(tmp):
        os.chmod(d, 0o700)
        for n in names:
            p = Path(d) / n
            if p.is_symlink() or not p.is_file():
                raise ValueError(f"a cache build left {p}, which is not a regular file")
            os.chmod(p, 0o600)
            files[p.relative_to(tmp).as_posix()] = _sha256(p)
    return files


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        p.unlink()


def get_or_build(key: str, build: Callable[[Path], None], root: Path | None = None,
                 parts: dict | None = None) -> tuple[Path, bool]:
    """The directory of a valid entry for `key`, building it with build(tmpdir) if needed.

    Returns (entry directory, hit).  `build` writes its files into the directory it
    is given; the cache records their hashes and renames the directory into place.
    `parts`, when given, are what the key was made of (make_key(**parts) == key); the entry
    records them.  Raises Unavailable when the directory cannot be used (not ours, writable
    by others, not a directory, read-only, full): compile without the cache then.
    """
    if parts is not None and make_key(**parts) != key:
        raise ValueError("cache.get_or_build: the key is not make_key(**parts)")
    from filelock import FileLock
    root = Path(root) if root is not None else cache_dir()
    check_root(root)
    entry = root / key
    tmp = None
    try:
        with FileLock(str(root / f"{key}.lock"), mode=0o600):
            if is_valid(entry, key):
                return entry, True
            for stale in root.glob(f"{key}.tmp-*"):     # left by a process that died while building
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root))
            build(tmp)
            files = _make_private(tmp)
            files.pop(CHECKSUMS, None)
            meta = {"key": key, "parts": key_parts(**parts) if parts is not None else {}, "files": files}
            _write_private(tmp / CHECKSUMS, json.dumps(meta, indent=1, sort_keys=True, default=str))
            if os.path.lexists(entry):                  # corrupt, partial or someone else's: replace it
                _remove(entry)
            os.replace(tmp, entry)
            tmp = None
    except OSError as e:                                # read-only, a full disk, ...: no cache this time
        raise Unavailable(f"cannot write to the cache directory {root}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry, False


def clear(root: Path | None = None) -> int:
    """Delete every entry; returns how many were removed."""
    root = Path(root) if root is not None else cache_dir()
    n = 0
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
            elif p.suffix == ".lock":
                p.unlink(missing_ok=True)
    return n
