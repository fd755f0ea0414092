"""The PyTorch backend: emit table for torch (CPU or GPU, whichever device the arguments are on)."""
from __future__ import annotations

from .pycodegen import PythonBackend, index_expr, pyexpr, shape_code

UNARY = {
    "neg": "-{x}", "exp": "torch.exp({x})", "log": "torch.log({x})", "sqrt": "torch.sqrt({x})",
    "recip": "torch.reciprocal({x})", "relu": "torch.relu({x})", "abs": "torch.abs({x})",
    "square": "torch.square({x})",
    "elu1": "torch.where({x} >= 0, {x} + 1, torch.exp(torch.clamp({x}, max=0)))",
}


class TorchBackend(PythonBackend):
    name = "torch"
    imports = ("import numpy as np", "import torch")
    dtypes = {"float32": "torch.float32", "float64": "torch.float64", "float16": "torch.float16",
              "bfloat16": "torch.bfloat16"}
    has_device = True
    reserved = ("np", "torch", "_dev")
    emit = {
        "eye": lambda c, n, a: f"torch.eye({pyexpr(n.attrs['n'])}, dtype={c.backend.dtype(n.attrs['dtype'])}, device={c.dev})",
        "zeros": lambda c, n, a: f"torch.zeros({shape_code(n.attrs['shape'])}, dtype={c.backend.dtype(n.attrs['dtype'])}, device={c.dev})",
        "reshape": lambda c, n, a: f"{a[0]}.reshape{shape_code(n.attrs['shape'])}",
        "permute": lambda c, n, a: f"{a[0]}.permute{tuple(n.attrs['perm'])}",
        "swap": lambda c, n, a: f"{a[0]}.mT",
        "matmul": lambda c, n, a: f"{a[0]} @ {a[1]}",
        "einsum": lambda c, n, a: f"torch.einsum({n.attrs['spec']!r}, {', '.join(a)})",
        "add": lambda c, n, a: f"{a[0]} + {a[1]}",
        "sub": lambda c, n, a: f"{a[0]} - {a[1]}",
        "mul": lambda c, n, a: f"{a[0]} * {a[1]}",
        "div": lambda c, n, a: f"{a[0]} / {a[1]}",
        "scale": lambda c, n, a: f"{a[0]} * {n.attrs['c']!r}",
        "unary": lambda c, n, a: UNARY[n.attrs["fn"]].format(x=a[0]),
        "sum": lambda c, n, a: f"{a[0]}.sum(dim={n.attrs['axis']}, keepdim={bool(n.attrs.get('keepdims'))})",
        "cumsum": lambda c, n, a: f"torch.cumsum({a[0]}, dim={n.attrs['axis']})",
        "concat": lambda c, n, a: f"torch.cat([{', '.join(a)}], dim={n.attrs['axis']})",
        "slice": lambda c, n, a: a[0] + index_expr(None, n.attrs["axis"], pyexpr(n.attrs["start"]),
                                                   pyexpr(n.attrs["stop"])),
        "rfft": lambda c, n, a: f"torch.fft.rfft({a[0]}, n={pyexpr(n.attrs['n'])}, dim=-1)",
        "irfft": lambda c, n, a: f"torch.fft.irfft({a[0]}, n={pyexpr(n.attrs['n'])}, dim=-1)",
        "cast": lambda c, n, a: f"{a[0]}.to({c.backend.dtype(n.attrs['dtype'])})",
        "solve_triangular": lambda c, n, a: f"torch.linalg.solve_triangular({a[0]}, {a[1]}, upper={bool(n.attrs.get('upper', True))})",
    }
