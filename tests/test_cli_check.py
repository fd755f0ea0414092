"""`opdsl check`: inputs with their declared properties, well-conditioned solves, one FAIL row per
failing file or export (the others still checked), and a memory limit enforced before allocating."""
import numpy as np
import pytest

import opdsl
from opdsl import cli, reference
from opdsl.cli import check_program, main
from opdsl.reference import MemoryLimitError, check_bytes, check_fits, random_inputs

PROPS_SRC = """dim n = 7
input S : [2, n, n] psd
input Y : [n, n] symmetric
input Q : [n, n] orthogonal
input Lo : [n, n] lower
input Up : [n, n] upper
input D : [n, n] diagonal
input PL : [n, n] psd lower
input OS : [n, n] orthogonal symmetric
input OL : [n, n] orthogonal upper
input PO : [n, n] psd orthogonal
input T : [n, 3] orthogonal
input W : [3, n] orthogonal
input I : [n, n] invertible
input x : [n, 2]
export s = inv(S) @ x
export y = inv(Y) @ x + inv(Q) @ x + inv(Lo) @ x + inv(Up) @ x + inv(D) @ x + inv(PL) @ x + inv(OS) @ x + inv(OL) @ x + inv(PO) @ x + inv(I) @ x
export t = T.T @ x
export w = W @ x
"""


def _inputs(src, export, seed=0):
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    return random_inputs(prog.graph, export, seed=seed)


def _cond(a):
    return float(np.max(np.linalg.cond(a)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inputs_have_their_declared_properties(seed):
    x = {k: v for e in ("s", "y", "t", "w") for k, v in _inputs(PROPS_SRC, e, seed).items()}
    n = 7
    eye = np.eye(n)
    S = x["S"]
    assert S.shape == (2, n, n) and np.allclose(S, np.swapaxes(S, -1, -2))
    assert np.linalg.eigvalsh(S).min() >= 0.99 and _cond(S) < 10          # psd, well conditioned
    assert np.allclose(x["Y"], x["Y"].T) and _cond(x["Y"]) < 10
    assert np.allclose(x["Q"].T @ x["Q"], eye)
    for name, tri in (("Lo", np.triu), ("Up", np.tril)):
        a = x[name]
        assert np.all(tri(a, 1 if tri is np.triu else -1) == 0), name
        assert np.abs(np.diag(a)).min() >= 1 and _cond(a) < 10, name
    assert np.all(x["D"] == np.diag(np.diag(x["D"]))) and np.abs(np.diag(x["D"])).min() >= 1
    assert np.all(x["PL"] == np.diag(np.diag(x["PL"]))) and np.diag(x["PL"]).min() >= 1     # psd and lower
    assert np.allclose(x["OS"], x["OS"].T) and np.allclose(x["OS"] @ x["OS"].T, eye)
    assert np.allclose(np.abs(x["OL"]), eye)                                                   # ±1 diagonal
    assert np.allclose(x["PO"], eye)                                                           # psd orthogonal
    assert np.allclose(x["T"].T @ x["T"], np.eye(3)) and np.allclose(x["W"] @ x["W"].T, np.eye(3))
    assert _cond(x["I"]) < 10
    assert all(a.dtype == np.float64 for a in x.values())


def test_properties_keep_the_declared_dtype():
    x = _inputs("input S : [4, 4] float32 psd\ninput b : [4]\nexport y = inv(S) @ b", "y")
    assert x["S"].dtype == np.float32 and np.linalg.eigvalsh(x["S"].astype(np.float64)).min() > 0.99


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_every_property_checks(backend):
    rows = check_program(opdsl.compile(PROPS_SRC, backend=backend))
    assert len(rows) == 4 and all(ok for *_, ok in rows), rows


KFAC = """# K-FAC: the Fisher block of a layer is A ⊗ G, both PSD
dim a = 12
dim g = 8
input A : [a, a] psd
input G : [g, g] psd
input grad : [a * g, 1]
export step = inv(kron(A, G)) @ grad
export logdet_F = logdet(kron(A, G))
"""
GP = """dim n = 64
input K : [n, n] psd
input y : [n, 2]
export alpha = inv(K) @ y
export ld = logdet(K)
"""
SHAMPOO = """dim m = 10
dim n = 6
input L : [m, m] psd
input R : [n, n] psd
input Gr : [m, n]
export P = dense(inv(L) @ Gr @ inv(R))
"""


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_programs_with_psd_inputs_pass_check(tmp_path, capsys, backend):
    """Gaussian inputs made every Cholesky leaf fail with "not positive definite"."""
    files = []
    for name, src in (("kfac", KFAC), ("gp", GP), ("shampoo", SHAMPOO)):
        files.append(tmp_path / f"{name}.op")
        files[-1].write_text(src)
    assert main(["check", *map(str, files), "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 5 and "FAIL" not in out and "3 of 3 files passed" in out


def test_square_matrices_under_an_inverse_are_well_conditioned():
    src = "dim n = 400\ninput W : [n, n]\ninput M : [n, n]\ninput x : [n, 3]\nexport y = inv(W) @ x + M @ x"
    prog = opdsl.compile(src, backend="torch")           # float32
    x = random_inputs(prog.graph, "y")
    assert _cond(x["W"].astype(np.float64)) < 5
    # W is shifted by 3 I; M, which nothing inverts, keeps the plain Gaussian draw (entries N(0, 1/n))
    assert abs(np.mean(np.diag(x["W"])) - 3) < 0.1 and abs(np.mean(np.diag(x["M"]))) < 0.1
    assert abs(np.std(x["M"]) * 20 - 1) < 0.05
    # a Gaussian W (cond ~ 1e3) gave a relative error of ~1e-4 in float32, at the tolerance
    (_, _, _, rel, ok), = check_program(prog)
    assert ok and rel < 2e-5


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_check_goes_on_after_a_file_that_fails(tmp_path, capsys):
    good = _write(tmp_path, "good.op", "dim n = 4\ninput x : [n]\nexport y = 2 * x\n")
    bad = _write(tmp_path, "bad.op", "dim n = 4\ninput x : [n]\nexport y = x $ x\n")
    also = _write(tmp_path, "also.op", "input W : [3, 3]\ninput x : [3, 2]\nexport z = W @ x\n")
    assert main(["check", good, bad, also, "--backend", "numpy"]) == 1
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert f"{bad}:3:14: error: unexpected character '$'" in next(r for r in rows if "FAIL" in r)
    assert sum("PASS" in r for r in rows) == 2 and any(r.strip().startswith("z ") for r in rows)
    assert "2 of 3 files passed" in out
    assert err.startswith(f"{bad}:3:14: error: unexpected character '$'") and "^" in err and "Traceback" not in err


def test_an_internal_error_in_one_file_is_a_row(tmp_path, capsys, monkeypatch):
    good = _write(tmp_path, "good.op", "dim n = 4\ninput x : [n]\nexport y = 2 * x\n")
    real = cli.check_export
    calls = []

    def flaky(prog, name, *a, **k):
        calls.append(name)
        if len(calls) == 1:
            raise KeyError("simulated bug")
        return real(prog, name, *a, **k)

    monkeypatch.setattr(cli, "check_export", flaky)
    monkeypatch.delenv("OPDSL_TRACEBACK", raising=False)
    assert main(["check", good, good, "--backend", "numpy"]) == 1
    out, err = capsys.readouterr()
    assert "FAIL  opdsl: internal error: KeyError" in out and out.count("PASS") == 1
    assert err.startswith("opdsl: internal error: KeyError") and "1 of 2 files passed" in out
    monkeypatch.setenv("OPDSL_TRACEBACK", "1")
    calls.clear()
    with pytest.raises(KeyError):
        main(["check", good, "--backend", "numpy"])


def test_check_refuses_huge_sizes_before_allocating(tmp_path, capsys, monkeypatch):
    """`--dim n=100000` used to allocate the 74.5 GiB input W before anything failed."""
    path = _write(tmp_path, "big.op", "dim n = 100000\ninput W : [n, n]\ninput x : [n, 3]\n"
                                      "input s : [3]\nexport small = 2 * s\nexport y = inv(W) @ x\n")
    allocated = []
    monkeypatch.setattr(reference, "random_inputs", lambda g, export, *a, **k: allocated.append(export) or
                        {"s": np.ones(3, np.float32)})
    monkeypatch.delenv("OPDSL_CHECK_MEMORY", raising=False)
    assert main(["check", path, "--backend", "numpy"]) == 1
    out, err = capsys.readouterr()
    assert allocated == ["small"]                    # the small export is checked, the huge one refused
    assert "small" in out and "PASS" in out and "y                FAIL" in out
    assert f"{path}:2:7: error: checking export 'y' would allocate about" in err
    assert "input W is [n, n] with n = 100000, 74.5 GiB alone" in err and "--dim n=64" in err


def test_the_limit_counts_the_dense_reference_and_can_be_changed(monkeypatch):
    # kron(A, B) of 64 x 64 factors is a 4096 x 4096 dense matrix (128 MiB) in the reference,
    # though the inputs are small
    prog = opdsl.compile("input A : [64, 64]\ninput B : [64, 64]\ninput x : [4096, 2]\n"
                         "export y = kron(A, B) @ x", backend="numpy")
    need, big, n = check_bytes(prog.graph, "y")
    assert n == 4096 ** 2 and prog.graph.kind(big) == "kron" and 8 * n < need < 8 * 4 * n
    with pytest.raises(MemoryLimitError, match="kron.*as a dense matrix is \\[4096, 4096\\]"):
        check_fits(prog.graph, "y", limit=64 * 2 ** 20)
    check_fits(prog.graph, "y", limit=need)
    monkeypatch.setenv("OPDSL_CHECK_MEMORY", "64M")
    with pytest.raises(MemoryLimitError):
        check_fits(prog.graph, "y")
    monkeypatch.setenv("OPDSL_CHECK_MEMORY", "1G")
    check_fits(prog.graph, "y")
    monkeypatch.setenv("OPDSL_CHECK_MEMORY", "lots")
    with pytest.raises(opdsl.OpdslError, match="OPDSL_CHECK_MEMORY='lots' is not a size"):
        check_fits(prog.graph, "y")
    monkeypatch.delenv("OPDSL_CHECK_MEMORY")
    assert reference.check_memory_limit() <= reference.CHECK_MEMORY_LIMIT
