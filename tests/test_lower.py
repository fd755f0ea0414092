"""Lowering (passes/lower.py): structured operators become primitive graphs that never
materialize them, and an operator applied to the same tensor is lowered once (CSE)."""
import re

import opdsl

from .test_reassociate import compile_sound


def test_structured_lowering_never_materializes():
    """kron as mode products (no einsum over all factors), blockdiag as one batched matmul,
    lowrank as U (Vᵀ x), diag as a broadcast multiply, perm as reshape/transpose."""
    kron = opdsl.compile_file("examples/kron.op").source.split("def apply(")[1].split("def apply_t(")[0]
    matmuls = lambda src: len(re.findall(r"= \w+ @ \w+$", src, re.M))  # noqa: E731
    assert "einsum" not in kron and "torch.kron" not in kron and matmuls(kron) == 2
    bd = opdsl.compile_file("examples/blockdiag.op").source
    assert matmuls(bd) == 1 and "= W @" in bd
    lr = opdsl.compile_file("examples/diag_lowrank.op", fuse=False).source    # the lowering, unfused
    body = lr.split("def apply(")[1].split("def apply_t(")[0]
    assert "= V.mT" in body and "= d.reshape(n, 1)" in body and "U @ t" in body and " * x" in body
    assert "torch.diag" not in body
    sp = opdsl.compile_file("examples/stride_perm.op").source
    assert ".permute(" in sp and "torch.eye" not in sp

def _prims(prog, kind, export=None):
    g = prog.primitive
    roots = None if export is None else [g.exports[export]]
    return [v for v in g.live(roots) if g.kind(v) == kind]


def test_same_operator_on_same_tensor_is_computed_once():
    src = ("input A : [3, 3]\ninput B : [4, 4]\ninput x : [12, 2]\n"
           "export y = kron(A, B) @ x + 2 * (kron(A, B) @ x)\n")
    prog = compile_sound(src)
    assert len(_prims(prog, "matmul")) == 2     # one application of kron (two mode products), not two


def test_lowering_memoizes_operator_tensor_pairs():
    # (A + lowrank) x lowers A x once and reuses it for the direct A x of z
    src = ("input A : [4, 4]\ninput U : [4, 1]\ninput V : [4, 1]\ninput x : [4, 2]\n"
           "export y = (kron(A, eye(1)) + lowrank(U, V)) @ x\nexport z = kron(A, eye(1)) @ x\n")
    prog = compile_sound(src)
    ys = set(_prims(prog, "matmul", "y"))
    zs = set(_prims(prog, "matmul", "z"))
    assert zs and zs <= ys                       # z's matmul is the same node as in y


def test_across_exports_the_primitive_graph_is_shared():
    src = ("input K : [6, 5]\ninput x : [5, 3]\n"
           "export y = K @ x\nexport z = 3 * (K @ x)\n")
    prog = compile_sound(src)
    gy, gz = prog.primitive.exports["y"], prog.primitive.exports["z"]
    assert gy in prog.primitive.live([gz])       # z is computed from y's node
    assert len(_prims(prog, "matmul")) == 1
