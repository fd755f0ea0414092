"""A compile cache for slow backends (TVM): compiled artifacts on disk, keyed by what made them.

Layout::

    $OPDSL_CACHE_DIR/            (default: platformdirs.user_cache_dir("opdsl"))
      <key>/                     one entry: whatever the backend wrote, plus
        CHECKSUMS.json           {"files": {name: sha256}, "parts": {...}}, written last
      <key>.lock                 a filelock held while the entry is checked or built

The key is the SHA-256 of the parts a backend passes (source text, dims,
dtype, backend, target, options) together with the opdsl version and a
fingerprint of opdsl's own code, so editing a lowering or a backend never
reuses a stale kernel.

Integrity: an entry is used only when CHECKSUMS.json parses and every file it
lists exists with the recorded hash; anything else (a partial write, a
truncated or edited file) is deleted and rebuilt.  Concurrency: the entry is
checked and built under the key's lock, in a temporary directory that is
renamed into place atomically, so two processes compiling the same program at
once both succeed: one builds, the other waits and then reuses the entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

CHECKSUMS = "CHECKSUMS.json"
_FINGERPRINT: str | None = None


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
        import opdsl
        from opdsl import backends, grammar, kinds, passes
        h = hashlib.sha256(opdsl.__version__.encode())
        dirs = [Path(p) for pkg in (opdsl, kinds, passes, backends, grammar) for p in pkg.__path__]
        for d in dirs:
            for f in sorted(d.glob("*")):
                if f.suffix in (".py", ".lark") and f.is_file():
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
        _FINGERPRINT = f"{opdsl.__version__}+{h.hexdigest()[:16]}"
    return _FINGERPRINT


def make_key(**parts) -> str:
    """A cache key from JSON-able parts plus the opdsl fingerprint."""
    blob = json.dumps({"opdsl": fingerprint(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_valid(entry: Path) -> bool:
    """Whether an entry is complete: its checksum file parses and every listed file matches."""
    try:
        meta = json.loads((entry / CHECKSUMS).read_text())
        files = meta["files"]
        if not files:
            return False
        return all(_sha256(entry / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def get_or_build(key: str, build: Callable[[Path], None], root: Path | None = None,
                 parts: dict | None = None) -> tuple[Path, bool]:
    """The directory of a valid entry for `key`, building it with build(tmpdir) if needed.

    Returns (entry directory, hit).  `build` writes its files into the directory it
    is given; the cache records their hashes and renames the directory into place.
    """
    from filelock import FileLock
    root = Path(root) if root is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    with FileLock(str(root / f"{key}.lock")):
        if is_valid(entry):
            return entry, True
        for stale in root.glob(f"{key}.tmp-*"):     # left by a process that died while building
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root))
        try:
            build(tmp)
            files = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file() and f.name != CHECKSUMS}
            _atomic_write(tmp / CHECKSUMS, json.dumps({"files": files, "parts": parts or {}}, indent=1,
                                                      sort_keys=True, default=str))
            if entry.exists():                      # corrupt or partial: replace it
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry, False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


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
