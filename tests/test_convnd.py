"""N-d convolutions conv(h, n1, ..., nd, mode=, stride=) (issue 17, opdsl/kinds/convnd.py): every mode,
stride and channel case against scipy.signal / scipy.ndimage (and torch's conv2d), by both lowerings
(the sliding window and the FFTs), the dot test ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for each, and the errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import opdsl
from opdsl.kinds import REGISTRY
from opdsl.kinds.convnd import conv_np, out_size
from tests.harness import assert_error_at, reference

CASES = [  # (kernel shape, image sizes, channels)
    ((3,), (11,), False), ((4, 3), (7, 6), False), ((2, 3, 2), (4, 5, 3), False),
    ((2, 3, 3, 3), (6, 7), True), ((2, 2, 4), (9,), True),
]


def _program(hshape, sizes, mode, stride, transpose, backend="numpy"):
    rows = np.prod(sizes) * (hshape[1] if len(hshape) > len(sizes) else 1)
    op = f"conv(h, {', '.join(map(str, sizes))}, mode={mode}, stride={stride})"
    src = f"input h : {list(hshape)}\ninput x : [{rows}, 2]\nexport y = {op} @ x\n"
    if transpose:
        src += f"export t = {op}.T @ ({op} @ x)\n"
    return opdsl.compile(src, backend=backend, dtype="float64")


@pytest.mark.parametrize("path", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["same", "full", "valid", "circular"])
@pytest.mark.parametrize("hshape,sizes,channels", CASES)
def test_every_mode_stride_and_channel_case_against_scipy(hshape, sizes, channels, mode, path, monkeypatch):
    monkeypatch.setattr(type(REGISTRY["convnd"]), "_direct", lambda self, g, v, k, transposed=None: path == "direct")
    rng = np.random.default_rng(0)
    h = rng.standard_normal(hshape)
    ci = hshape[1] if channels else 1
    for stride in (1, 2, 3):
        prog = _program(hshape, sizes, mode, stride, transpose=True)
        x = rng.standard_normal((ci * int(np.prod(sizes)), 2))
        want = np.stack([conv_np(h, x[:, j].reshape(((ci,) if channels else ()) + sizes), mode, stride, channels)
                         .reshape(-1) for j in range(2)], axis=1)
        np.testing.assert_allclose(prog["y"](h=h, x=x), want, rtol=1e-10, atol=1e-10, err_msg=f"stride {stride}")
        # the transpose (by the same lowering) against the dense matrix's transpose
        np.testing.assert_allclose(prog["t"](h=h, x=x), reference(prog, "t", {"h": h, "x": x}), rtol=1e-9,
                                   atol=1e-9, err_msg=f"transpose, stride {stride}")
        assert ("sliding window" if path == "direct" else "N-d FFTs") in prog.explain()


def test_the_reference_is_scipy_and_torch():
    """conv_np is scipy.signal.convolve / scipy.ndimage.convolve(mode='wrap'), strided; with channels it
    is torch's conv2d of the flipped kernel (a correlation) summed over input channels."""
    import torch
    rng = np.random.default_rng(1)
    h, x = rng.standard_normal((3, 2, 3, 5)), rng.standard_normal((2, 8, 9))
    for mode, pad in (("same", (1, 2)), ("valid", (0, 0)), ("full", (2, 4))):
        want = torch.nn.functional.conv2d(torch.tensor(x)[None], torch.tensor(h).flip(-1, -2), padding=pad,
                                          stride=2)[0].numpy()
        np.testing.assert_allclose(conv_np(h, x, mode, 2, True), want, rtol=1e-12, atol=1e-12)
    k, img = rng.standard_normal((4, 3)), rng.standard_normal((7, 6))        # an even kernel: centre k // 2
    np.testing.assert_allclose(conv_np(k, img, "circular", 1, False), scipy.ndimage.convolve(img, k, mode="wrap"))
    assert out_size(10, 3, "valid") == 8 and out_size(10, 3, "full") == 12


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("mode,stride", list(itertools.product(["same", "full", "valid", "circular"], [1, 2])))
def test_dot_test(backend, mode, stride):
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ (PyLops' dot test) for 2-d channels, every mode and stride."""
    from opdsl.cli import to_backend
    hshape, sizes = (2, 3, 3, 2), (6, 5)
    rng = np.random.default_rng(2)
    op = f"conv(h, 6, 5, mode={mode}, stride={stride})"
    prog = opdsl.compile(f"input h : {list(hshape)}\ninput x : [90, 1]\ninput y : [m, 1]\n"
                         f"export ax = {op} @ x\nexport aty = {op}.T @ y".replace("[m, 1]", "[{m}, 1]").format(
                             m=2 * int(np.prod([-(-out_size(n, k, mode) // stride) for n, k in zip(sizes, (3, 2))]))),
                         backend=backend, dtype="float64")
    h, x = rng.standard_normal(hshape), rng.standard_normal((90, 1))
    m = prog.graph.type(prog.graph.exports["ax"]).shape[0]
    y = rng.standard_normal((int(m), 1))
    a = to_backend(backend, {"h": h, "x": x, "y": y})
    lhs = float(np.sum(np.asarray(prog["ax"](h=a["h"], x=a["x"])) * y))
    rhs = float(np.sum(x * np.asarray(prog["aty"](h=a["h"], y=a["y"]))))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("src,message,at", [
    ("input h : [5, 5]\ninput x : [16, 1]\nexport y = conv(h, 4, 4, mode=valid) @ x",
     "needs a kernel no longer than the image: k = 5 > n = 4", "conv"),
    ("input h : [3, 3]\ninput x : [16, 1]\nexport y = conv(h, 4, 4, mode=wrap) @ x", "unknown conv mode 'wrap'", "wrap"),
    ("input h : [3, 3]\ninput x : [16, 1]\nexport y = conv(h, 4, 4, stride=0) @ x",
     "conv's stride must be a positive integer", "0"),
    ("input h : [3, 3, 3]\ninput x : [16, 1]\nexport y = conv(h, 4, 4) @ x",
     "convolves 2-d images: h must be [k1, ..., k2] or [c_out, c_in, k1, ..., k2]", "h, 4"),
    ("input h : [3, 3]\ninput x : [16, 1]\nexport y = conv(h, 4, 4, causal=true) @ x",
     "has no option 'causal'", "true"),
])
def test_errors_are_located(src, message, at):
    assert_error_at(src, message, at)
