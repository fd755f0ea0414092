"""Spectral convolutions (FNO), the FFT-diagonal algebra and the neural-operator examples (issue 17):
the FNO layer against the FNO reference code's torch layer, the dot test, shifted circulant inverses
that never densify, examples/deblur.op, examples/multigrid.op against a plain-torch V-cycle, and
examples/train_fno.py learning."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch

import opdsl

ROOT = Path(__file__).resolve().parent.parent


def _reference_fno(w, x, sizes):
    """neuraloperator's SpectralConv1d / 2d forward (weights1 / weights2 as complex tensors), torch."""
    wc = torch.complex(w[..., 0], w[..., 1])
    if len(sizes) == 1:
        m = wc.shape[-1]
        xf = torch.fft.rfft(x)
        out = torch.zeros(x.shape[0], wc.shape[0], sizes[0] // 2 + 1, dtype=xf.dtype)
        out[:, :, :m] = torch.einsum("bix,oix->box", xf[:, :, :m], wc)
        return torch.fft.irfft(out, n=sizes[0])
    m1, m2 = wc.shape[2] // 2, wc.shape[3]
    w1, w2 = wc[:, :, :m1], wc[:, :, m1:]
    xf = torch.fft.rfft2(x)
    out = torch.zeros(x.shape[0], wc.shape[0], sizes[0], sizes[1] // 2 + 1, dtype=xf.dtype)
    out[:, :, :m1, :m2] = torch.einsum("bixy,oixy->boxy", xf[:, :, :m1, :m2], w1)
    out[:, :, -m1:, :m2] = torch.einsum("bixy,oixy->boxy", xf[:, :, -m1:, :m2], w2)
    return torch.fft.irfft2(out, s=sizes)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("wshape,sizes", [((3, 2, 5, 2), (16,)), ((2, 3, 6, 4, 2), (10, 7))])
def test_fno_layer_against_the_reference_code_and_the_dot_test(backend, wshape, sizes):
    from opdsl.cli import to_backend
    rng = np.random.default_rng(0)
    co, ci = wshape[:2]
    npts = int(np.prod(sizes))
    grid = ", ".join(map(str, sizes))
    prog = opdsl.compile(f"input W : {list(wshape)}\ninput x : [{ci * npts}, 3]\ninput y : [{co * npts}, 1]\n"
                         f"export f = spectral_conv(W, {grid}) @ x\nexport t = spectral_conv(W, {grid}).T @ y",
                         backend=backend, dtype="float64")
    w, x, y = rng.standard_normal(wshape), rng.standard_normal((ci * npts, 3)), rng.standard_normal((co * npts, 1))
    a = to_backend(backend, {"W": w, "x": x, "y": y})
    out = np.asarray(prog["f"](W=a["W"], x=a["x"]))
    ref = _reference_fno(torch.tensor(w), torch.tensor(x.T.reshape((3, ci) + sizes)), sizes)
    np.testing.assert_allclose(out, ref.reshape(3, -1).T.numpy(), rtol=1e-10, atol=1e-10)
    lhs = float(np.sum(out[:, :1] * y))
    rhs = float(np.sum(x[:, :1] * np.asarray(prog["t"](W=a["W"], y=a["y"]))))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


SHIFTED = """dim h = {h}
dim w = {w}
input k : [3, 3]
input a : [{h}]
input b : [{w}]
input x : [h * w, 1]
let H = conv(k, h, w, mode=circular)
let C = kron(circulant(a), circulant(b))
export tik = inv(H.T @ H + 0.1 * eye(h * w)) @ x
export shifted = inv(C + 8 * eye(h * w)) @ x
export ld = logdet(H.T @ H + 0.1 * eye(h * w))
export ldc = logdet(C.T @ C + eye(h * w))
"""


def test_shifted_circulant_inverses_never_densify_at_128_by_128():
    """At 128 x 128 (N = 16,384: a dense matrix would be 2 GB, its LU 2.9 TFLOPs) every value the
    program holds is O(N), and the answers equal the FFT formulas."""
    h = w = 128
    prog = opdsl.compile(SHIFTED.format(h=h, w=w), backend="numpy", dtype="float64")
    g = prog.primitive
    assert max(int(np.prod([g.dims.value(s) for s in g.type(v).shape])) for v in g.live()) <= 4 * h * w
    assert {"inv-fft-diagonal", "logdet-fft-diagonal"} <= {k for r in prog.records for k in r.fired}
    rng = np.random.default_rng(0)
    k, a, b, x = rng.standard_normal((3, 3)), rng.standard_normal(h), rng.standard_normal(w), rng.standard_normal((h * w, 1))
    kpad = np.zeros((h, w))
    kpad[:3, :3] = k
    lam = np.fft.fft2(np.roll(kpad, (-1, -1), axis=(0, 1)))                # the blur's spectrum
    img = x.reshape(h, w)
    want = np.real(np.fft.ifft2(np.fft.fft2(img) / (np.abs(lam) ** 2 + 0.1)))
    np.testing.assert_allclose(prog["tik"](k=k, x=x).reshape(h, w), want, rtol=1e-8, atol=1e-10)
    lc = np.fft.fft2(np.multiply.outer(a, b))
    np.testing.assert_allclose(prog["shifted"](a=a, b=b, x=x).reshape(h, w),
                               np.real(np.fft.ifft2(np.fft.fft2(img) / (lc + 8))), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(prog["ld"](k=k), np.sum(np.log(np.abs(lam) ** 2 + 0.1)), rtol=1e-10)
    np.testing.assert_allclose(prog["ldc"](a=a, b=b), np.sum(np.log(np.abs(lc) ** 2 + 1)), rtol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_deblur_example_recovers_the_image(backend):
    """examples/deblur.op on a 64 x 64 image blurred by a 5 x 5 Gaussian (periodic) plus noise: the
    Tikhonov solution equals the FFT formula and is closer to the image than the blurred one."""
    from opdsl.cli import to_backend
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    img = ((np.hypot(yy - 24, xx - 30) < 12) + 0.5 * ((yy > 40) & (xx > 8) & (xx < 28))).astype(float)
    t = np.arange(5) - 2
    k = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / 2.0)
    k /= k.sum()
    blurred = scipy.ndimage.convolve(img, k, mode="wrap") + 0.01 * rng.standard_normal(img.shape)
    prog = opdsl.compile_file(ROOT / "examples" / "deblur.op", backend=backend, dtype="float64",
                              dims={"h": 64, "w": 64})
    a = to_backend(backend, {"k": k, "y": blurred.reshape(-1, 1)})
    x = np.asarray(prog["x"](k=a["k"], y=a["y"])).reshape(64, 64)
    kpad = np.zeros((64, 64))
    kpad[:5, :5] = k
    lam = np.fft.fft2(np.roll(kpad, (-2, -2), axis=(0, 1)))
    want = np.real(np.fft.ifft2(np.conj(lam) * np.fft.fft2(blurred) / (np.abs(lam) ** 2 + 0.01)))
    np.testing.assert_allclose(x, want, rtol=1e-8, atol=1e-10)
    assert np.linalg.norm(x - img) < 0.8 * np.linalg.norm(blurred - img)


def _vcycle_torch(f, A, B, R, Bc, n):
    """The V-cycle of examples/multigrid.op in plain torch: conv2d of the flipped kernels (a
    convolution), padding 1; the restriction with stride 2; its transpose by conv_transpose2d."""
    def conv(w, x, stride=1):
        return torch.nn.functional.conv2d(x, w.flip(-1, -2), padding=1, stride=stride)

    def conv_t(w, y):
        return torch.nn.functional.conv_transpose2d(y, w.flip(-1, -2), padding=1, stride=2, output_padding=1)
    u1 = conv(B, f)
    u2 = u1 + conv_t(R, conv(Bc, conv(R, f - conv(A, u1), 2)))
    return u2 + conv(B, f - conv(A, u2))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_multigrid_example_is_the_plain_torch_vcycle(backend):
    from opdsl.cli import to_backend
    rng = np.random.default_rng(2)
    c, n = 4, 32
    ws = {name: rng.standard_normal((c, c, 3, 3)) / 6 for name in ("A", "B", "R", "Bc")}
    f = rng.standard_normal((1, c, n, n))
    prog = opdsl.compile_file(ROOT / "examples" / "multigrid.op", backend=backend, dtype="float64",
                              dims={"n": n, "m": n // 2})
    args = to_backend(backend, {"f": f.reshape(-1, 1), **ws})
    out = np.asarray(prog["u"](**args)).reshape(c, n, n)
    want = _vcycle_torch(torch.tensor(f), *(torch.tensor(ws[k]) for k in ("A", "B", "R", "Bc")), n)[0].numpy()
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
    assert "stride 2: only the kept outputs" in prog.explain()


def test_train_fno_quick_learns(tmp_path):
    """examples/train_fno.py --quick: the relative test error falls below half its start and 0.2."""
    out = tmp_path / "fno.json"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_fno.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["error_after"] < 0.5 * res["error_before"] and res["error_after"] < 0.2


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])     # TVM: the catalogue's N-d circulants
def test_nd_circulant_is_the_kronecker_product_of_circulants(backend):
    """circulant(outer(a, b), ndim=2) = kron(circulant(a), circulant(b)); a 3-d one is the periodic
    convolution scipy.ndimage computes with the kernel's origin at index 0."""
    from opdsl.cli import to_backend
    rng = np.random.default_rng(3)
    a, b, x = rng.standard_normal(4), rng.standard_normal(5), rng.standard_normal((20, 2))
    c3, x3 = rng.standard_normal((3, 4, 2)), rng.standard_normal((24, 1))
    prog = opdsl.compile("input a : [4]\ninput b : [5]\ninput c : [4, 5]\ninput c3 : [3, 4, 2]\ninput x : [20, 2]\n"
                         "input x3 : [24, 1]\nexport k = kron(circulant(a), circulant(b)) @ x\n"
                         "export n = circulant(c, ndim=2) @ x\nexport t = circulant(c3, ndim=3) @ x3",
                         backend=backend, dtype="float64")
    args = to_backend(backend, {"a": a, "b": b, "c": np.multiply.outer(a, b), "c3": c3, "x": x, "x3": x3})
    k = np.asarray(prog["k"](a=args["a"], b=args["b"], x=args["x"]))
    np.testing.assert_allclose(np.asarray(prog["n"](c=args["c"], x=args["x"])), k, rtol=1e-10, atol=1e-12)
    want = np.real(np.fft.ifftn(np.fft.fftn(c3) * np.fft.fftn(x3.reshape(3, 4, 2))))
    np.testing.assert_allclose(np.asarray(prog["t"](c3=args["c3"], x3=args["x3"])).reshape(3, 4, 2), want,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("src,message,at", [
    ("input c : [4, 5]\ninput x : [20, 1]\nexport y = circulant(c, ndim=3) @ x",
     "circulant's ndim must be an integer from 1 to the rank of c (2), got 3", "3"),
    ("input W : [2, 2, 8, 2]\ninput x : [24, 1]\nexport y = spectral_conv(W, 12) @ x",
     "spectral_conv: axis 1 keeps 8 modes of a grid of 12", "spectral_conv"),
])
def test_errors_are_located(src, message, at):
    from tests.harness import assert_error_at
    assert_error_at(src, message, at)
