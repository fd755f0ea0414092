"""What the TE builder records about each stage and what the scheduler decides on: the role of a
stage, complex values as pairs of real tensors, and the StageInfo of every te.compute."""
from __future__ import annotations

from dataclasses import dataclass, field

from tvm import te

REAL = {"complex64": "float32", "complex128": "float64"}

# Roles a stage can have; the scheduler decides per role.
VIEW = "view"              # pure data movement: reshape, permute, swap, slice, concat
CONST = "const"            # eye, zeros: no reads
ELEMENTWISE = "elementwise"  # add, mul, unary, ...: one output element from the same element of each input
REDUCTION = "reduction"    # matmul, einsum, sum
EXTERN = "extern"          # cumsum (a sequential scan, written by topi as an opaque loop)
FFT_STAGE = "fft"          # one radix-2 butterfly stage: read twice, so never inlined


@dataclass
class Cplx:
    re: te.Tensor
    im: te.Tensor

    @property
    def shape(self):
        return self.re.shape


@dataclass
class StageInfo:
    """What the scheduler knows about one te.compute (block of the same name)."""

    name: str
    role: str
    prim: str
    node: int
    line: str = ""                 # "file:line  source text" the primitive came from
    inputs: list = field(default_factory=list)     # names of the stages/args it reads
    consumers: list = field(default_factory=list)  # names of the stages that read it
    # reductions: for each input, whether that input is indexed by the innermost output axis
    # (the axis a CPU schedule vectorizes); a view feeding it must then keep that axis contiguous
    vec_inputs: set = field(default_factory=set)
    # views: whether consecutive elements along the last axis stay consecutive in memory
    keeps_last_axis: bool = True
    complex: bool = False
    dtype: str = "float32"
    numel: int | None = None       # elements of its buffer (None: a free dim's size); memory.plan


def numel(shape) -> int | None:
    """Elements of a shape of known sizes (ints or TIR integer constants); None with a free dim."""
    from tvm import tirx
    n = 1
    for d in shape:
        if isinstance(d, tirx.IntImm):
            d = int(d.value)
        if not isinstance(d, int):
            return None
        n *= d
    return n


def numel_of(t) -> int | None:
    return numel(tuple(t.shape))


def tensors_of(x):
    return (x.re, x.im) if isinstance(x, Cplx) else (x,)
