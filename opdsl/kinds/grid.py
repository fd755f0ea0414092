"""Primitive helpers for operators on flattened grids (conv, circulant(c, ndim=d), spectral_conv,
fftdiag): moving an axis, zero padding, periodic rolls, and the strided views of a stride."""
from __future__ import annotations


def moveaxis(lw, x, src, dst):
    perm = list(range(len(lw.shape(x))))
    perm.insert(dst, perm.pop(src))
    return lw.permute(x, tuple(perm))


def zeros(lw, x, axis, size):
    s = list(lw.shape(x))
    s[axis] = size
    return lw.prim("fill", shape=tuple(s), value=0.0, dtype=lw.dtype(x))


def pad(lw, x, axis, before, after):
    parts = ([zeros(lw, x, axis, before)] if before != 0 else []) + [x] + \
        ([zeros(lw, x, axis, after)] if after != 0 else [])
    return parts[0] if len(parts) == 1 else lw.prim("concat", *parts, axis=axis)


def roll(lw, x, axis, shift):
    """x rolled left by `shift` along axis (numpy.roll(x, −shift)): x[shift:] then x[:shift]."""
    n = lw.shape(x)[axis]
    if shift == 0:
        return x
    return lw.prim("concat", lw.prim("slice", x, axis=axis, start=shift, stop=n),
                   lw.prim("slice", x, axis=axis, start=0, stop=shift), axis=axis)


def every(lw, y, axis, s, m):
    """Entries 0, s, ..., s (m − 1) of axis (which holds s·m): a view as [m, s], its first column."""
    if s == 1:
        return y
    shape = list(lw.shape(y))
    shape[axis:axis + 1] = [m, s]
    y = lw.prim("slice", lw.reshape(y, tuple(shape)), axis=axis + 1 - len(shape), start=0, stop=1)
    shape[axis:axis + 2] = [m]
    return lw.reshape(y, tuple(shape))


def spread(lw, y, axis, s):
    """The transpose of _every: each entry followed by s − 1 zeros (axis m -> s·m)."""
    if s == 1:
        return y
    shape = list(lw.shape(y))
    m = shape[axis]
    shape.insert(axis + 1, 1)
    y = lw.reshape(y, tuple(shape))
    y = lw.prim("concat", y, zeros(lw, y, axis + 1 - len(shape), s - 1), axis=axis + 1 - len(shape))
    shape[axis:axis + 2] = [m * s]
    return lw.reshape(y, tuple(shape))
