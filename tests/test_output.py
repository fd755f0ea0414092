"""`opdsl compile -o` and Program.save (opdsl/output.py): never over the input, never in place,
all or nothing, bad paths as messages.  Issue 12."""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl import backends, output
from opdsl.cli import main

SRC = "dim n = 8\ndim k\ninput A : [n, n]\ninput x : [n, k]\nexport y = (A + A.T) @ x\n"
needs_tvm = pytest.mark.skipif("tvm" not in backends.available(), reason="TVM is not installed")


@pytest.fixture
def op_file(tmp_path):
    f = tmp_path / "prog.op"
    f.write_text(SRC)
    return f


@pytest.fixture(scope="module")
def tvm_prog(tmp_path_factory):
    """One TVM program, compiled from a file named prog.json (so that its manifest could clash
    with the input), shared by the tests below."""
    d = tmp_path_factory.mktemp("tvm-out")
    (d / "prog.json").write_text(SRC)
    return opdsl.compile_file(d / "prog.json", backend="tvm", cache=False)


def _cli(capsys, *argv):
    rc = main(["compile", *map(str, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return rc, err


def _leftovers(d: Path):
    return [p.name for p in d.iterdir() if ".tmp" in p.name]


# ---- never over the input ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same path", "another path", "symlink", "hard link"])
def test_output_naming_the_input_is_refused(op_file, capsys, how):
    d = op_file.parent
    if how == "same path":
        out = op_file
    elif how == "another path":
        (d / "sub").mkdir()
        out = d / "sub" / ".." / "prog.op"
    elif how == "symlink":
        out = d / "link.op"
        out.symlink_to(op_file)
    else:
        out = d / "hard.op"
        os.link(op_file, out)
    prog = opdsl.compile_file(op_file, backend="numpy")
    with pytest.raises(opdsl.OpdslError, match="it is the input file"):
        prog.save(out)
    rc, err = _cli(capsys, op_file, "--backend", "numpy", "-o", out)
    assert rc == 1 and f"cannot write {out}: it is the input file" in err
    assert op_file.read_text() == SRC and not _leftovers(d)


@needs_tvm
def test_tvm_outputs_never_overwrite_the_input(tvm_prog):
    src = Path(tvm_prog.filename)                       # prog.json
    with pytest.raises(opdsl.OpdslError, match="it is the input file"):
        tvm_prog.save(src.with_suffix(".so"))          # its manifest would be prog.json
    with pytest.raises(opdsl.OpdslError, match="shared library"):
        tvm_prog.save(src.with_name("kernels.json"))   # library and manifest on one path
    assert src.read_text() == SRC and not src.with_suffix(".so").exists() and not _leftovers(src.parent)


# ---- bad paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["a directory", "a trailing slash", "a missing directory", "a file as directory"])
def test_bad_output_paths_are_errors_naming_the_path(op_file, capsys, bad):
    d = op_file.parent
    missing = d / "no" / "such"
    out, why = {"a directory": (d, "it names a directory"),
                "a trailing slash": (f"{d}/new/", "it names a directory"),
                "a missing directory": (missing / "k.py", f"the directory {missing} does not exist"),
                "a file as directory": (op_file / "k.py", f"{op_file} is not a directory")}[bad]
    prog = opdsl.compile_file(op_file, backend="numpy")
    with pytest.raises(opdsl.OpdslError, match="cannot write"):
        prog.save(out)
    rc, err = _cli(capsys, op_file, "--backend", "numpy", "-o", out)
    assert rc == 1 and f"error: cannot write {out}: {why}" in err, err
    assert not (d / "no").exists() and not (d / "new").exists()


def test_unwritable_directory_is_an_error(capsys):
    """A directory we may not write: for real, as a user other than root (root ignores permission
    bits): as root, the command runs in a forked child as user nobody."""
    top = Path(tempfile.mkdtemp(prefix="opdsl-out-"))   # outside pytest's 0700 directory: nobody must enter
    try:
        (top / "prog.op").write_text(SRC)
        os.chmod(top, 0o755 if os.geteuid() == 0 else 0o555)
        out = top / "k.py"
        if os.geteuid() == 0:
            from tests.test_cache import _as_nobody
            opdsl.compile_file(top / "prog.op", backend="numpy")   # warm: the child cannot import from /root

            def attempt():
                import contextlib
                import io
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    rc = main(["compile", str(top / "prog.op"), "--backend", "numpy", "-o", str(out)])
                return [rc, err.getvalue()]
            rc, err = _as_nobody(attempt)
        else:
            rc, err = _cli(capsys, top / "prog.op", "--backend", "numpy", "-o", out)
        assert rc == 1 and f"error: cannot write {out}: permission denied" in err.lower(), err
        assert "Traceback" not in err and not out.exists()
    finally:
        os.chmod(top, 0o700)
        for p in top.iterdir():
            p.unlink()
        top.rmdir()


# ---- atomic: a full disk, a loaded library, the pair -----------------------------------------

def _half_then_full(fd, data):
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_leaves_the_old_module(op_file, capsys, monkeypatch):
    out = op_file.with_name("k.py")
    out.write_text("# the old module\n")
    monkeypatch.setattr(output, "_write_all", _half_then_full)
    prog = opdsl.compile_file(op_file, backend="numpy")
    with pytest.raises(opdsl.OpdslError, match=f"cannot write {out}: No space left on device"):
        prog.save(out)
    rc, err = _cli(capsys, op_file, "--backend", "numpy", "-o", out)
    assert rc == 1 and "No space left on device" in err
    assert out.read_text() == "# the old module\n" and not _leftovers(out.parent)


def test_rewriting_an_output_gives_a_new_inode(op_file):
    """A reader holding the old file (a process that loaded it) keeps seeing the old bytes."""
    out = op_file.with_name("k.py")
    opdsl.compile_file(op_file, backend="numpy").save(out)
    old = out.read_bytes()
    with open(out, "rb") as held:
        ino = os.fstat(held.fileno()).st_ino
        opdsl.compile(SRC.replace("A + A.T", "A - A.T"), backend="numpy", filename=str(op_file)).save(out)
        assert os.stat(out).st_ino != ino
        assert held.read() == old                       # written in place, this would be the new text
    assert out.read_bytes() != old and "A - A.T" in out.read_text()


@needs_tvm
def test_rewriting_a_loaded_library_keeps_it_working(tvm_prog, tmp_path):
    """Saving over a .so this process has loaded: the loaded copy keeps working (written in place,
    its mapped pages would change under it: SIGSEGV/SIGBUS)."""
    import tvm
    so = tmp_path / "k.so"
    tvm_prog.save(so)
    lib = tvm.runtime.load_module(str(so))
    ino = os.stat(so).st_ino
    tvm_prog.save(so)
    assert os.stat(so).st_ino != ino
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    x = np.ones((8, 3), np.float32)
    buf = np.empty(8 * 3 * 4 + 64, np.uint8)            # the kernels take 64-byte aligned arrays
    off = (-buf.ctypes.data) % 64
    out = buf[off:off + 96].view(np.float32).reshape(8, 3)
    args = [tvm_prog.module._arg(a), tvm_prog.module._arg(x)]
    lib["y"](*args, out)
    np.testing.assert_allclose(out, (a + a.T) @ x, rtol=1e-5)


@needs_tvm
@pytest.mark.parametrize("fails", ["second rename", "manifest write"])
def test_library_and_manifest_appear_together_or_not_at_all(tvm_prog, tmp_path, monkeypatch, fails):
    so = tmp_path / "k.so"
    if fails == "second rename":
        real, calls = output._rename, []

        def rename(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(src, dst)
        monkeypatch.setattr(output, "_rename", rename)
    else:
        monkeypatch.setattr(output, "_write_all", _half_then_full)
    with pytest.raises(opdsl.OpdslError, match="cannot write .*k.json"):
        tvm_prog.save(so)
    assert sorted(os.listdir(tmp_path)) == []           # no library without its manifest, no temporaries
    monkeypatch.undo()
    assert tvm_prog.save(so) == [str(so), str(tmp_path / "k.json")]
    assert json.loads((tmp_path / "k.json").read_text())["library"] == "k.so"


# ---- permissions -------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_a_new_files_mode(op_file, umask):
    old = os.umask(umask)
    try:
        out = op_file.with_name("k.py")
        opdsl.compile_file(op_file, backend="numpy").save(out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)


@needs_tvm
def test_tvm_outputs_get_a_new_files_mode(tvm_prog, tmp_path):
    old = os.umask(0o022)
    try:
        written = tvm_prog.save(tmp_path / "k.so")
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in written] == [0o644, 0o644]
