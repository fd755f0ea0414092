"""The compile cache (opdsl/cache.py) as the TVM backend uses it: keys, hits, damage, two processes at once;
and what the cache trusts: entries bound to their key, every file checked, a private directory, and a
directory it cannot use (not ours, writable by others, a file, read-only, a full disk) -> a warning and
a compile without it.

(tests/test_determinism.py covers the cache primitives on their own: every kind of damage,
a build that dies, key order.)
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl import backends, cache

needs_tvm = pytest.mark.skipif("tvm" not in backends.available(), reason="TVM is not installed")

SRC = "dim n = 8\ndim k\ninput A : [n, n]\ninput x : [n, k]\nexport y = (A + A.T) @ x\n"


def _entries(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir())


def _check(p):
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    x = np.ones((8, 3), np.float32)
    np.testing.assert_allclose(p.y(A=a, x=x), (a + a.T) @ x, rtol=1e-6)


def test_default_directory_is_the_user_cache_dir(monkeypatch):
    import platformdirs
    monkeypatch.delenv("OPDSL_CACHE_DIR", raising=False)
    assert cache.cache_dir() == Path(platformdirs.user_cache_dir("opdsl"))
    monkeypatch.setenv("OPDSL_CACHE_DIR", "/some/where")
    assert cache.cache_dir() == Path("/some/where")


@needs_tvm
def test_hit_after_miss_and_keys_per_dims_dtype_target(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    first = opdsl.compile(SRC, backend="tvm")
    second = opdsl.compile(SRC, backend="tvm")
    assert (first._backend.cache_hit, second._backend.cache_hit) == (False, True)
    assert first.source == second.source
    _check(second)
    assert len(_entries(tmp_path)) == 1
    opdsl.compile(SRC, backend="tvm", dims={"n": 8, "k": 3})           # dims are part of the key
    opdsl.compile(SRC, backend="tvm", dtype="float64")                 # and the dtype
    opdsl.compile(SRC, backend="tvm", target="cuda")                   # and the target
    assert len(_entries(tmp_path)) == 4
    parts = json.loads((_entries(tmp_path)[0] / cache.CHECKSUMS).read_text())["parts"]
    assert parts["backend"] == "tvm"


@needs_tvm
def test_no_cache_option_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    p = opdsl.compile(SRC, backend="tvm", cache=False)
    _check(p)
    assert not tmp_path.exists() or not _entries(tmp_path)


@needs_tvm
@pytest.mark.parametrize("damage", ["flip a byte", "missing checksums", "missing manifest"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    opdsl.compile(SRC, backend="tvm")
    (entry,) = _entries(tmp_path)
    if damage == "flip a byte":
        src = entry / "source.py"
        text = src.read_text()
        src.write_text(text.replace("def y(", "def Y(", 1))            # same length, other bytes
    elif damage == "missing checksums":
        (entry / cache.CHECKSUMS).unlink()                             # as if killed before the rename
    else:
        (entry / "manifest.json").unlink()
    assert not cache.is_valid(entry)
    p = opdsl.compile(SRC, backend="tvm")
    assert p._backend.cache_hit is False and cache.is_valid(entry)
    _check(p)


CHILD = """
import os, sys, json
os.environ["OPDSL_CACHE_DIR"] = sys.argv[1]
import numpy as np
import opdsl
p = opdsl.compile(open(sys.argv[2]).read(), backend="tvm")
a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
out = p.y(A=a, x=np.ones((8, 3), np.float32))
print(json.dumps({"hit": p._backend.cache_hit, "ok": bool(np.allclose(out, (a + a.T) @ np.ones((8, 3))))}))
"""


@needs_tvm
def test_two_processes_compiling_the_same_program_at_once(tmp_path):
    src = tmp_path / "prog.op"
    src.write_text(SRC)
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for pr in procs:
        out, err = pr.communicate(timeout=300)
        assert pr.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] for r in results)
    assert sorted(r["hit"] for r in results) == [False, True]          # one built, the other reused it
    (entry,) = _entries(root)
    assert cache.is_valid(entry) and not list(root.glob("*.tmp-*"))


@needs_tvm
def test_entry_holds_library_source_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    opdsl.compile(SRC, backend="tvm")
    (entry,) = _entries(tmp_path)
    names = {p.name for p in entry.iterdir()}
    assert {"kernels.so", "source.py", "manifest.json", cache.CHECKSUMS} <= names
    assert os.path.getsize(entry / "kernels.so") > 0


# ---- what the cache trusts (issue 12) ----------------------------------------------------------

def _builder(payload: bytes = b"kernel A " * 50):
    built = []

    def build(tmp: Path):
        built.append(1)
        (tmp / "kernel.so").write_bytes(payload)
        (tmp / "manifest.json").write_text('{"functions": []}')
    return build, built


def test_entry_records_its_key_and_parts(tmp_path):
    parts = {"source": "A", "backend": "test"}
    key = cache.make_key(**parts)
    build, _ = _builder()
    entry, hit = cache.get_or_build(key, build, root=tmp_path, parts=parts)
    meta = json.loads((entry / cache.CHECKSUMS).read_text())
    assert not hit and meta["key"] == key == entry.name
    assert meta["parts"] == {"opdsl": cache.fingerprint(), **parts}
    assert set(meta["files"]) == {"kernel.so", "manifest.json"}
    with pytest.raises(ValueError):                     # parts that did not make the key: a caller's bug
        cache.get_or_build("0" * 40, build, root=tmp_path, parts=parts)


@pytest.mark.parametrize("with_parts", [False, True])
def test_copied_entry_is_not_used_for_another_key(tmp_path, with_parts):
    """`cp -a cache/<keyB> cache/<keyA>` must not make program A load B's kernels."""
    pa, pb = {"source": "A", "backend": "test"}, {"source": "B", "backend": "test"}
    key_a, key_b = cache.make_key(**pa), cache.make_key(**pb)
    build_a, built_a = _builder(b"kernel A " * 50)
    build_b, _ = _builder(b"kernel B " * 50)
    cache.get_or_build(key_a, build_a, root=tmp_path, parts=pa if with_parts else None)
    cache.get_or_build(key_b, build_b, root=tmp_path, parts=pb if with_parts else None)
    shutil.rmtree(tmp_path / key_a)
    subprocess.run(["cp", "-a", str(tmp_path / key_b), str(tmp_path / key_a)], check=True)
    assert cache.is_valid(tmp_path / key_b) and not cache.is_valid(tmp_path / key_a)
    assert not cache.is_valid(tmp_path / key_b, key_a)           # asked for A, the entry says B
    if with_parts:                  # and rewriting the recorded key is caught by the recorded parts
        sums = tmp_path / key_a / cache.CHECKSUMS
        sums.write_text(sums.read_text().replace(key_b, key_a))
        assert not cache.is_valid(tmp_path / key_a)
    entry, hit = cache.get_or_build(key_a, build_a, root=tmp_path, parts=pa if with_parts else None)
    assert not hit and built_a == [1, 1] and (entry / "kernel.so").read_bytes() == b"kernel A " * 50


@pytest.mark.parametrize("damage", ["unlisted file", "unlisted file in a subdirectory", "checksums list some files",
                                    "listed file missing", "symlink", "file writable by others"])
def test_every_file_of_an_entry_is_checked(tmp_path, damage):
    key = cache.make_key(source="every file", backend="test")
    build, built = _builder()
    entry, _ = cache.get_or_build(key, build, root=tmp_path)
    sums = entry / cache.CHECKSUMS
    meta = json.loads(sums.read_text())
    if damage == "unlisted file":
        (entry / "evil.so").write_bytes(b"planted")
    elif damage == "unlisted file in a subdirectory":
        (entry / "sub").mkdir()
        (entry / "sub" / "evil.so").write_bytes(b"planted")
    elif damage == "checksums list some files":       # manifest.json then goes unchecked
        del meta["files"]["manifest.json"]
        sums.write_text(json.dumps(meta))
        (entry / "manifest.json").write_text('{"functions": ["planted"]}')
    elif damage == "listed file missing":
        meta["files"]["extra.so"] = meta["files"]["kernel.so"]
        sums.write_text(json.dumps(meta))
    elif damage == "symlink":
        (entry / "link.so").symlink_to(entry / "kernel.so")
    else:
        os.chmod(entry / "kernel.so", 0o666)
    assert not cache.is_valid(entry)
    entry2, hit = cache.get_or_build(key, build, root=tmp_path)
    assert not hit and built == [1, 1] and cache.is_valid(entry2)
    assert sorted(p.name for p in entry2.iterdir()) == [cache.CHECKSUMS, "kernel.so", "manifest.json"]


def test_cache_is_private_whatever_the_umask(tmp_path):
    """Under umask 000 everything the cache creates is still 0700 (directories) / 0600 (files)."""
    root = tmp_path / "a" / "b" / "cache"
    key = cache.make_key(source="umask", backend="test")

    def build(tmp: Path):
        fd = os.open(tmp / "kernel.so", os.O_WRONLY | os.O_CREAT, 0o777)     # as a careless linker would
        os.write(fd, b"kernel")
        os.close(fd)
        (tmp / "sub").mkdir(mode=0o777)
        (tmp / "sub" / "data.bin").write_bytes(b"data")
    old = os.umask(0)
    try:
        entry, _ = cache.get_or_build(key, build, root=root)
    finally:
        os.umask(old)
    assert json.loads((entry / cache.CHECKSUMS).read_text())["files"].keys() == {"kernel.so", "sub/data.bin"}
    for d in (tmp_path / "a", tmp_path / "a" / "b", root, entry, entry / "sub"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    created = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in created} >= {"kernel.so", "data.bin", cache.CHECKSUMS}
    for f in created:                                   # the entry's files, the lock file
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def _give_away(path: Path, monkeypatch):
    """Make `path` belong to another user: chown when we are root, else pretend to be someone else."""
    if os.geteuid() == 0:
        os.chown(path, 12345, 12345)
    else:
        uid = os.stat(path).st_uid + 1
        monkeypatch.setattr(os, "geteuid", lambda: uid)


def test_cache_directory_of_another_user_is_not_used(tmp_path, monkeypatch):
    key = cache.make_key(source="owner", backend="test")
    build, built = _builder()
    entry, _ = cache.get_or_build(key, build, root=tmp_path / "c")      # a valid entry in it
    _give_away(tmp_path / "c", monkeypatch)
    with pytest.raises(cache.Unavailable, match="belongs to another user"):
        cache.get_or_build(key, build, root=tmp_path / "c")
    assert built == [1]                                 # neither loaded nor rebuilt there


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_cache_directory_writable_by_others_is_not_used(tmp_path, mode):
    key = cache.make_key(source="mode", backend="test")
    build, built = _builder()
    cache.get_or_build(key, build, root=tmp_path / "c")
    os.chmod(tmp_path / "c", mode)
    with pytest.raises(cache.Unavailable, match="writable by group or others"):
        cache.get_or_build(key, build, root=tmp_path / "c")
    assert built == [1]


def test_cache_directory_that_is_a_file(tmp_path):
    build, built = _builder()
    key = cache.make_key(source="file", backend="test")
    (tmp_path / "c").write_text("not a directory")
    with pytest.raises(cache.Unavailable, match="is not a directory"):
        cache.get_or_build(key, build, root=tmp_path / "c")
    with pytest.raises(cache.Unavailable, match="cannot create"):
        cache.get_or_build(key, build, root=tmp_path / "c" / "below")
    assert built == [] and (tmp_path / "c").read_text() == "not a directory"


def _as_nobody(fn):
    """fn() in a forked child running as user nobody (65534): root ignores permission bits.
    Its result (JSON) comes back through a pipe.  The child cannot read the interpreter's
    files under /root: everything it runs is imported before the fork."""
    import select
    import signal
    import warnings
    r, w = os.pipe()
    with warnings.catch_warnings():     # JAX, when loaded, warns that forking threads may deadlock: the
        warnings.simplefilter("ignore", RuntimeWarning)      # child only runs fn (and a hang fails below)
        pid = os.fork()
    if pid == 0:                                        # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = json.dumps(["ok", fn()])
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = json.dumps(["crash", repr(e)])
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    if not select.select([r], [], [], 300)[0]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        pytest.fail("the child running as nobody hung")
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, result = json.loads(data)
    assert status == "ok", result
    return result


def test_read_only_cache_directory(tmp_path):
    """A real read-only directory: as root, the cache runs in a child as user nobody on a directory
    nobody owns with mode 0500; as another user, on our own directory with mode 0500."""
    key = cache.make_key(source="read-only", backend="test")
    build, built = _builder()
    cache.get_or_build(key + "0", build, root=tmp_path / "warm")   # imports everything the child needs
    top = Path(tempfile.mkdtemp(prefix="opdsl-ro-"))     # not under pytest's 0700 directory: nobody must enter
    root = top / "cache"
    root.mkdir()

    def attempt():
        try:
            cache.get_or_build(key, build, root=root)
            return ["used", len(built)]
        except cache.Unavailable as e:
            return ["unavailable", len(built), str(e)]
    try:
        if os.geteuid() == 0:
            os.chmod(top, 0o711)
            os.chown(root, 65534, 65534)
            os.chmod(root, 0o500)
            status, n, *why = _as_nobody(attempt)
        else:
            os.chmod(root, 0o500)
            status, n, *why = attempt()
        assert (status, n) == ("unavailable", 1)        # refused, with no build attempted
        assert "cannot write to the cache directory" in why[0] and "Permission denied" in why[0]
        assert os.listdir(root) == []
    finally:
        os.chmod(root, 0o700)
        shutil.rmtree(top)


def test_read_only_file_system(tmp_path, monkeypatch):
    """EROFS where the build directory is made (simulated: a read-only mount needs privileges)."""
    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(cache, "tempfile", type("T", (), {"mkdtemp": staticmethod(read_only)}))
    build, built = _builder()
    with pytest.raises(cache.Unavailable, match="Read-only file system"):
        cache.get_or_build(cache.make_key(source="erofs", backend="test"), build, root=tmp_path)
    assert built == []


def _full_disk(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["build", "checksums"])
def test_full_disk_while_building(tmp_path, monkeypatch, where):
    key = cache.make_key(source="enospc", backend="test")
    build, built = _builder()

    def full(tmp: Path):
        (tmp / "kernel.so").write_bytes(b"half a ker")
        _full_disk()
    if where == "checksums":
        def half_then_full(path, text):
            path.write_text(text[:10])
            _full_disk()
        monkeypatch.setattr(cache, "_write_private", half_then_full)
    with pytest.raises(cache.Unavailable, match="No space left on device"):
        cache.get_or_build(key, full if where == "build" else build, root=tmp_path)
    assert sorted(os.listdir(tmp_path)) in ([], [f"{key}.lock"])     # no entry, no half-built directory
    monkeypatch.undo()                                                # space again: the cache works
    entry, hit = cache.get_or_build(key, build, root=tmp_path)
    assert not hit and cache.is_valid(entry)


# ---- the TVM backend with a cache it cannot use: a warning, and a working program ---------------

SRC_B = "dim n = 8\ndim k\ninput A : [n, n]\ninput x : [n, k]\nexport y = (A - A.T) @ x\n"


def _check_b(p, k=3):
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    x = np.linspace(-1, 1, 8 * k, dtype=np.float32).reshape(8, k)
    np.testing.assert_allclose(p.y(A=a, x=x), (a - a.T) @ x, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tvm_cached(tmp_path_factory):
    """One cache with SRC compiled into it, shared by the tests below (TVM compiles take time)."""
    root = tmp_path_factory.mktemp("tvm-cache")
    old = os.environ.get("OPDSL_CACHE_DIR")
    os.environ["OPDSL_CACHE_DIR"] = str(root)
    try:
        p = opdsl.compile(SRC, backend="tvm")
    finally:
        os.environ["OPDSL_CACHE_DIR"] = old
    return root, p


@needs_tvm
def test_tvm_copied_entry_does_not_give_another_programs_result(tvm_cached, monkeypatch):
    root, b = tvm_cached
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(root))
    a = opdsl.compile(SRC_B, backend="tvm")
    entry_a, entry_b = Path(a._backend.artifact).parent, Path(b._backend.artifact).parent
    assert entry_a != entry_b
    shutil.rmtree(entry_a)
    subprocess.run(["cp", "-a", str(entry_b), str(entry_a)], check=True)
    again = opdsl.compile(SRC_B, backend="tvm")
    assert again._backend.cache_hit is False          # B's entry under A's key is rebuilt, not loaded
    _check_b(again)
    assert cache.is_valid(entry_a) and cache.is_valid(entry_b)


@needs_tvm
@pytest.mark.parametrize("unusable", ["another user", "writable by others", "a file", "read-only", "full disk"])
def test_tvm_compiles_without_a_cache_it_cannot_use(tmp_path, monkeypatch, unusable):
    from opdsl.backends.tvm.backend import TvmBackend
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    if unusable == "another user":
        _give_away(root, monkeypatch)
    elif unusable == "writable by others":
        os.chmod(root, 0o777)
    elif unusable == "a file":
        root.rmdir()
        root.write_text("x")
    elif unusable == "read-only":
        def read_only(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(cache, "tempfile", type("T", (), {"mkdtemp": staticmethod(read_only)}))
    else:
        monkeypatch.setattr(cache, "_write_private", _full_disk)   # after the kernels were compiled
    compiles = []
    real = TvmBackend._compile
    monkeypatch.setattr(TvmBackend, "_compile", lambda self, *a, **k: compiles.append(1) or real(self, *a, **k))
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(root))
    with pytest.warns(cache.CacheWarning, match="compiling without the cache"):
        p = opdsl.compile(SRC_B, backend="tvm")
    assert compiles == [1]                              # a build that could not be stored is not redone
    assert p._backend.cache_hit is False and p._backend.artifact is None
    _check_b(p)
    if root.is_dir():
        assert [q for q in root.iterdir() if q.is_dir()] == []
    written = p.save(tmp_path / "k.so")                 # -o works from the kernels in memory
    import tvm
    assert "y" in json.loads(Path(written[1]).read_text())["functions"][0]["name"]
    tvm.runtime.load_module(written[0])["y"]


@needs_tvm
def test_tvm_specialized_kernels_without_a_cache_it_cannot_use(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir(mode=0o770)
    os.chmod(root, 0o770)
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(root))
    with pytest.warns(cache.CacheWarning):
        p = opdsl.compile(SRC_B, backend="tvm")
    with pytest.warns(cache.CacheWarning, match="writable by group or others"):
        _check_b(p, k=5000)                             # big enough for a kernel compiled for k = 5000
    assert p._backend.specialized == [("y", {"k": 5000})]
    assert os.listdir(root) == []
