"""The TVM backend: numpy and torch through DLPack, symbolic dims, checks, FFT, solves, CUDA, tuning."""
from __future__ import annotations

import os

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import opdsl  # noqa: E402
from opdsl.errors import BackendError, CallError  # noqa: E402
from opdsl.reference import dense_eval, random_inputs  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tvm-cache"))


KRON = """dim a = 3
dim b = 4
dim k
input A : [a, a]
input B : [b, b]
input x : [a * b, k]
export y = kron(A, B) @ x
"""

LOWRANK = """dim n = 16
input d : [n]
input U : [n, 2]
input V : [n, 2]
input x : [n, 32]
export y = (diag(d) + lowrank(U, V)) @ x
"""


def _ref(p, name, inp):
    return dense_eval(p.graph, p.graph.exports[name], inp)


def test_numpy_in_numpy_out_with_a_free_dim_compiled_once():
    p = opdsl.compile(KRON, backend="tvm")
    for k in (1, 5, 64):                                    # one kernel, any k (te.var)
        inp = random_inputs(p.graph, "y", free={"k": k})
        out = p.y(**inp)
        assert isinstance(out, np.ndarray) and out.shape == (12, k) and out.dtype == np.float32
        np.testing.assert_allclose(out, _ref(p, "y", inp), rtol=1e-5, atol=1e-5)


def test_torch_in_torch_out_float64():
    torch = pytest.importorskip("torch")
    p = opdsl.compile(LOWRANK, backend="tvm", dtype="float64")
    inp = random_inputs(p.graph, "y")
    out = p.y(**{k: torch.from_numpy(v) for k, v in inp.items()})
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), _ref(p, "y", inp), rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_unaligned_arguments():
    torch = pytest.importorskip("torch")
    p = opdsl.compile(LOWRANK, backend="tvm")
    inp = random_inputs(p.graph, "y")
    ref = _ref(p, "y", inp)
    # a transposed torch view and a numpy array whose data is not 64-byte aligned
    xt = torch.from_numpy(np.ascontiguousarray(inp["x"].T)).T
    assert not xt.is_contiguous()
    np.testing.assert_allclose(p.y(**dict({k: torch.from_numpy(v) for k, v in inp.items()}, x=xt)).numpy(),
                               ref, rtol=1e-5, atol=1e-5)
    buf = np.empty(inp["x"].size + 1, np.float32)[1:]
    x = buf.reshape(inp["x"].shape)
    x[...] = inp["x"]
    assert x.ctypes.data % 64 != 0
    np.testing.assert_allclose(p.y(**dict(inp, x=x)), ref, rtol=1e-5, atol=1e-5)


def test_argument_errors_match_the_python_backends():
    p = opdsl.compile(KRON, backend="tvm")
    q = opdsl.compile(KRON, backend="numpy")
    inp = random_inputs(p.graph, "y")
    for bad in (dict(inp, x=inp["x"].astype(np.float64)), dict(inp, A=inp["A"][:2]), dict(inp, x=inp["x"][:5])):
        with pytest.raises(CallError) as mine:
            p.y(**bad)
        with pytest.raises(CallError) as theirs:
            q.y(**bad)
        assert str(mine.value) == str(theirs.value)
    with pytest.raises(CallError, match="missing x"):
        p.y(A=inp["A"], B=inp["B"])


@pytest.mark.parametrize("n", [8, 6])                      # radix-2, and Bluestein on radix-2 stages
def test_fft_convolution(n):
    src = f"input c : [{n}]\ninput x : [{n}, 3]\nexport y = circulant(c) @ x\nexport z = circulant(c).T @ x"
    p = opdsl.compile(src, backend="tvm", dtype="float64")
    assert "rfft" in {p.primitive[v].kind for v in p.primitive.live()}
    for name in ("y", "z"):
        inp = random_inputs(p.graph, name)
        np.testing.assert_allclose(p[name](**inp), _ref(p, name, inp), rtol=1e-10, atol=1e-10)


def test_solve_and_singular_matrix():
    from opdsl.api import SingularError
    src = "dim n = 5\ninput W : [n, n]\ninput x : [n, 2]\nexport y = inv(3 * eye(n) + W) @ x"
    p = opdsl.compile(src, backend="tvm", dtype="float64")
    inp = random_inputs(p.graph, "y")
    np.testing.assert_allclose(p.y(**inp), _ref(p, "y", inp), rtol=1e-9, atol=1e-9)
    with pytest.raises(SingularError):
        p.y(W=-3 * np.eye(5), x=inp["x"])


def test_conjugate_gradients_are_refused_by_name():
    src = "dim n = 4\ninput W : [n, n]\ninput x : [n, 2]\nexport y = inv(W, method=cg) @ x"
    with pytest.raises(BackendError, match="primitive 'cg'"):
        opdsl.compile(src, backend="tvm")


def test_source_is_readable_and_names_the_op_lines():
    p = opdsl.compile(LOWRANK, backend="tvm")
    src = p.source
    assert "def y(*, d, U, V, x):" in src
    assert "# ---- y: TE stages" in src and "export y = (diag(d) + lowrank(U, V)) @ x" in src
    assert "@T.prim_func" in src                            # the TVMScript of the kernel
    assert "tiled" in src and "parallel" in src             # what the CPU schedule did


def test_trailing_reshape_is_written_in_place():
    p = opdsl.compile("input W : [4, 8, 8]\ninput x : [32, 16]\nexport y = blockdiag(W) @ x", backend="tvm")
    assert "out.reshape((4, 8, 16))" in p.source
    inp = random_inputs(p.graph, "y")
    np.testing.assert_allclose(p.y(**inp), _ref(p, "y", inp), rtol=1e-5, atol=1e-5)


def test_cuda_kernels_build_without_a_gpu():
    p = opdsl.compile(LOWRANK, backend="tvm", target="cuda", cache=False)
    assert "__global__" in p.source and "blockIdx" in p.source
    assert p._backend.manifest["device"] == "cuda"


def test_unknown_target_and_bad_options():
    with pytest.raises(BackendError, match="TVM target"):
        opdsl.compile(LOWRANK, backend="tvm", target="no-such-target")
    with pytest.raises(BackendError, match="tune"):
        opdsl.compile(LOWRANK, backend="tvm", tune=-1)
    with pytest.raises(BackendError, match="options"):
        opdsl.compile(LOWRANK, backend="tvm", colour="red")


@pytest.mark.skipif(os.environ.get("OPDSL_SLOW") != "1", reason="tuning takes a minute: OPDSL_SLOW=1")
def test_tuning_keeps_a_correct_schedule(recwarn):
    src = "input W : [16, 32, 32]\ninput x : [512, 64]\nexport y = blockdiag(W) @ x"
    p = opdsl.compile(src, backend="tvm", tune=3, cache=False)
    head = p.source[p.source.index("# ---- y: TE stages"):].splitlines()[0]
    assert "MetaSchedule" in head or "template search" in head or "fastest after tuning" in head
    inp = random_inputs(p.graph, "y")
    np.testing.assert_allclose(p.y(**inp), _ref(p, "y", inp), rtol=1e-5, atol=1e-5)


FREE_DIM_EXAMPLES = sorted(p for p in __import__("glob").glob("examples/*.op")      # TVM refuses cg and
                           if "dim k" in open(p).read() and "cg" not in p          # sparse arguments
                           and " sparse" not in open(p).read())


@pytest.mark.parametrize("path", FREE_DIM_EXAMPLES)
def test_kernels_specialized_to_the_sizes_of_a_call(path, monkeypatch):
    """A call with free dims runs a kernel compiled for its sizes (tiled and vectorized, which a
    symbolic size prevents); it agrees with the dense reference like the symbolic kernel does."""
    from opdsl.backends.tvm import backend
    monkeypatch.setattr(backend, "SPECIALIZE_MIN_ELEMENTS", 0)
    p = opdsl.compile_file(path, backend="tvm")
    for name in p.functions:
        inp = random_inputs(p.graph, name, free={"k": 40})
        out = p[name](**inp)
        np.testing.assert_allclose(out, _ref(p, name, inp), rtol=2e-4, atol=2e-4 * max(1, np.abs(out).max()))
    with_free = sorted(n for n in p.functions if p._backend._free_dims(p.primitive, n))
    assert with_free and sorted(n for n, _ in p._backend.specialized) == with_free


def test_small_calls_run_the_symbolic_kernel_and_sizes_are_capped(monkeypatch):
    from opdsl.backends.tvm import backend
    p = opdsl.compile(KRON, backend="tvm")
    p.y(**random_inputs(p.graph, "y", free={"k": 3}))              # 36 elements: not worth a compile
    assert ("y", ("k", 3)) in p.module._KERNELS and not p._backend.specialized
    monkeypatch.setattr(backend, "SPECIALIZE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(backend, "SPECIALIZE_MAX", 2)
    for k in (4, 5, 6):
        inp = random_inputs(p.graph, "y", free={"k": k})
        np.testing.assert_allclose(p.y(**inp), _ref(p, "y", inp), rtol=1e-4, atol=1e-5)
    assert p._backend.specialized == [("y", {"k": 4}), ("y", {"k": 5})]   # the third size: symbolic
    q = opdsl.compile(KRON, backend="tvm", specialize=False)
    q.y(**random_inputs(q.graph, "y", free={"k": 4}))
    assert ("y", ("k", 4)) in q.module._KERNELS and not q._backend.specialized


def test_epilogue_is_not_moved_before_a_later_fft():
    """Found by the random compositions: `kron(attention + circulant, attention) @ x` adds an FFT
    result to a matmul; fused into the matmul's tile loop, the add ran before the FFT (an extern
    block, which declares no reads or writes to TVM) and read uninitialized memory."""
    src = ("input Q0 : [2, 2]\ninput K0 : [2, 2]\ninput c1 : [2]\ninput Q2 : [4, 2]\ninput K2 : [4, 2]\n"
           "input x : [8, 3]\nexport y = kron((attention(Q0, K0, normalize=false) + circulant(c1)), "
           "attention(Q2, K2, normalize=false)) @ x\n")
    p = opdsl.compile(src, backend="tvm")
    inp = random_inputs(p.graph, "y", seed=1)
    np.testing.assert_allclose(p.y(**inp), _ref(p, "y", inp), rtol=1e-4, atol=1e-5)


# ---- issue 12: memory safety of the kernels, zero-size dims, read-only arrays ----------------------

# conv(h, 64) runs FFTs of length 72 and circulant(c) of length 6: both Bluestein (a chirp
# convolution through power-of-two FFTs), whose inputs and the irfft spectrum are read under a
# condition.  The free dim k leaves the column count symbolic, as in the program of the report.
FFT_BLUESTEIN = """dim n = 64
dim m = 6
dim k
input img : [n, k]
input ha : [5]
input c : [m]
input x : [m, k]
export y = conv(ha, n) @ img
export r = circulant(c) @ x
"""


@pytest.fixture(scope="module")
def bounds_checked_fft():
    from opdsl.backends.tvm.bounds import CHECKED, bounds_checked
    before = CHECKED[0]
    with bounds_checked():
        p = opdsl.compile(FFT_BLUESTEIN, backend="tvm", cache=False, specialize=False)
    assert CHECKED[0] > before                              # the checks are in the kernels
    return p


@pytest.mark.parametrize("name", ["y", "r"])
def test_bluestein_fft_reads_stay_in_bounds(bounds_checked_fft, name):
    """Issue 12: `inv(A) @ img` then `conv(ha, n) @ img` (n = 2048) segfaulted.  The irfft read its
    half spectrum at an index mirrored into range by a Select that TVM simplified under the
    enclosing Select's condition (a Select evaluates both arms), so for the padding of the
    Bluestein convolution it read up to M - n elements before the buffer (and the rfft read its
    input past its end): harmless until the page before the buffer was unmapped.  Every access
    of these kernels is now checked at run time (backends/tvm/bounds.py)."""
    from opdsl.backends.tvm.bounds import OUT_OF_BOUNDS
    p = bounds_checked_fft
    before = len(OUT_OF_BOUNDS)
    runs = []
    for k in (1, 3):
        inp = random_inputs(p.graph, name, free={"k": k})
        runs.append((p[name](**inp), _ref(p, name, inp)))
    assert OUT_OF_BOUNDS[before:] == []          # first: a bad access also spoils the results
    for out, ref in runs:
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_bounds_checks_catch_a_bad_index():
    """The instrumentation the test above relies on reports an access past the end of a buffer
    (and redirects it, so the run goes on)."""
    from tvm import te

    from opdsl.backends.tvm.bounds import OUT_OF_BOUNDS, bounds_checked
    a, s = te.placeholder((16,), name="a"), te.var("s")
    b = te.compute((16,), lambda j: a[j + s], name="b")
    shifted = te.create_prim_func([a, b, s]).with_attr("global_symbol", "shifted")
    with bounds_checked():
        lib = tvm.compile(tvm.IRModule({"shifted": shifted}), target="llvm")
    a, b = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    before = len(OUT_OF_BOUNDS)
    lib["shifted"](a, b, 0)
    assert OUT_OF_BOUNDS[before:] == [] and (b == a).all()
    lib["shifted"](a, b, 2)
    # (the index itself is reported only where no other check shares the statement: here the
    # store's check does, see backends/tvm/bounds.py, _trap)
    assert [(f, buf) for f, buf, *_ in OUT_OF_BOUNDS[before:]] == [("shifted", "a")] * 2
    assert (b[:14] == a[2:]).all()


def test_bluestein_fft_longer_than_65536():
    """The chirp exp(i pi m^2 / n) squared m in int32: m * m overflowed from m = 46341 on, and from
    65536 on (a transform longer than 65,536 that is not a power of two) the result was silently
    wrong (relative error 0.66 here)."""
    n = 70000
    src = f"dim n = {n}\ninput h : [5]\ninput x : [n, 1]\nexport y = conv(h, n) @ x\n"
    p = opdsl.compile(src, backend="tvm", dtype="float64")
    q = opdsl.compile(src, backend="numpy", dtype="float64")
    inp = random_inputs(p.graph, "y")
    np.testing.assert_allclose(p.y(**inp), q.y(**inp), rtol=1e-9, atol=1e-9)


ZERO = """dim n = 4
dim k
input B : [n, n]
input X : [n, k]
input Y : [k, 3]
export z = dense(X) @ Y
export e = dense(B) @ X
"""


@pytest.fixture(scope="module")
def zero_program():
    return opdsl.compile(ZERO, backend="tvm", cache=False), opdsl.compile(ZERO, backend="numpy")


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_zero_size_free_dim_gives_what_numpy_and_torch_give(zero_program, framework):
    """k = 0 was a raw ValueError (TVM refuses the strides numpy and torch give zero-size arrays).
    Now `z` (a sum over k) is zeros of shape [4, 3], as numpy and torch compute it (TVM's
    reduction would never initialize it), and `e` is an empty [4, 0]; in the caller's framework."""
    p, q = zero_program
    for k in (0, 2):
        inp = {"B": np.eye(4, dtype=np.float32) + 1, "X": np.ones((4, k), np.float32), "Y": np.ones((k, 3), np.float32)}
        if framework == "torch":
            torch = pytest.importorskip("torch")
            args = {a: torch.from_numpy(v) for a, v in inp.items()}
        else:
            args = inp
        for name, shape in (("z", (4, 3)), ("e", (4, k))):
            out = p[name](**{a: args[a] for a in p[name].params})
            assert type(out) is type(args["X"]) and tuple(out.shape) == shape and str(out.dtype).endswith("float32")
            want = q[name](**{a: inp[a] for a in q[name].params})
            np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)
            if k == 0 and name == "z":
                assert (np.asarray(out) == 0).all()


def test_read_only_numpy_arguments():
    """A read-only array (np.asarray of a JAX array, a read-only memmap) was a raw BufferError from
    DLPack; it is passed without a copy, and stays as it was (kernels write only their result)."""
    p = opdsl.compile(LOWRANK, backend="tvm")
    inp = random_inputs(p.graph, "y")
    ref = _ref(p, "y", inp)
    ro = {}
    for a, v in inp.items():
        w = p.module._aligned_empty(v.shape, v.dtype)     # aligned: no copy made for alignment
        w[...] = v
        w.setflags(write=False)
        ro[a] = w
    np.testing.assert_allclose(p.y(**ro), ref, rtol=1e-5, atol=1e-5)
    assert all((ro[a] == inp[a]).all() and not ro[a].flags.writeable for a in inp)
    alias = p.module._arg(ro["x"])
    assert alias.ctypes.data == ro["x"].ctypes.data          # the same memory, not a copy
    np.testing.assert_allclose(p.y(**dict(inp, x=np.broadcast_to(inp["x"][:1], inp["x"].shape))),
                               _ref(p, "y", dict(inp, x=np.broadcast_to(inp["x"][:1], inp["x"].shape))),
                               rtol=1e-5, atol=1e-5)      # read-only and strided: copied contiguous


# ---- 64-bit indices (builder.WIDE_ELEMENTS) -----------------------------------------------------

def test_exact_attention_at_l_16384_compiles_with_64_bit_indices():
    """8 heads x 16384² scores = 2³¹ elements: int32 offsets would wrap (TVM refused the literal
    2147483648 before); the export is built with int64 shapes and loops."""
    src = ("dim L = 16384\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\n"
           "input x : [64, 4]\ninput W : [64, 64]\n"
           "export y = softmax_attention(Q, K, causal=true) @ V\nexport z = W @ x\n")
    p = opdsl.compile(src, backend="tvm", cache=False)
    y_kernel = p.source.split("def y(")[-1].split("def z(")[0]
    assert "T.int64(16384)" in y_kernel
    # the other export keeps int32 indexing, and runs
    x, W = np.ones((64, 4), np.float32), np.eye(64, dtype=np.float32)
    np.testing.assert_allclose(p.z(W=W, x=x), x)


@pytest.mark.parametrize("kind", ["kron", "softmax_attention", "attention", "convnd", "fftdiag", "kernel"])
def test_64_bit_index_paths_agree_with_the_dense_reference(kind, monkeypatch):
    """Every export built as if it were that large (WIDE_ELEMENTS = 1): the int64 extents, loops and
    reductions of contractions, attention's chunks, FFTs and the kernel reduction give the same values."""
    from opdsl.backends.tvm import builder
    from opdsl.kinds import REGISTRY

    from .harness import run_against_dense
    monkeypatch.setattr(builder, "WIDE_ELEMENTS", 1)
    p = run_against_dense(REGISTRY[kind].examples[0], "tvm", "float32", cache=False)
    assert "T.int64(" in p.source


# ---- the memory plan (memory.plan) ---------------------------------------------------------------

def _rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS reset is Linux's")
@pytest.mark.parametrize("src", [
    "dim a = 64\ndim k = 2048\ninput A : [a, a]\ninput B : [a, a]\ninput C : [a, a]\ninput x : [a * a, k]\n"
    "export y = kron(A, B) @ (kron(B, C) @ (kron(C, A) @ x))\n",
    "dim L = 2048\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\n"
    "export y = softmax_attention(Q, K, causal=true) @ V\n",
], ids=["kron-chain", "softmax-attention"])
def test_a_kernel_holds_what_its_memory_plan_says(src):
    """A dead intermediate's buffer serves a later one: the measured peak of a call is the plan's
    (within 8 MB of runtime noise), well under the sum of the intermediates a kernel holding all of
    them would need."""
    torch = pytest.importorskip("torch")
    p = opdsl.compile(src, backend="tvm", cache=False)
    plan = p._backend.memory["y"]
    assert plan["peak"] is not None and plan["peak"] <= plan["total"] / 2, plan
    assert json_functions(p)["y"]["intermediate_bytes"] == plan["peak"]
    inputs = {k: torch.from_numpy(v.astype(np.float32)).clone() for k, v in random_inputs(p.graph, "y", seed=0).items()}
    warm = opdsl.compile("input x : [64, 64]\nexport y = x @ x\n", backend="tvm", cache=False)
    warm.y(x=torch.ones(64, 64))          # the runtime's first call (thread pool, workspace) outside the measurement
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                       # reset the peak RSS
    base = _rss("VmRSS")
    out = p.y(**inputs)
    used = _rss("VmHWM") - base - out.numel() * 4
    assert used <= plan["peak"] + 8 * 2 ** 20, (used / 2 ** 20, plan["peak"] / 2 ** 20)


def json_functions(p):
    return {f["name"]: f for f in p._backend.manifest["functions"]}
