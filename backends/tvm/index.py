"""Index arithmetic the emit functions share: constants, numpy broadcasting of an operand's
index, the index of a reshape (axes grouped by equal sizes), products of extents."""
from __future__ import annotations

import sympy as sp
from tvm import tirx

def const(v, dtype):
    return tirx.const(v, dtype)


def broadcast_index(idx, in_shape, out_shape):
    """Index into an operand of shape in_shape broadcast to out_shape (numpy rules)."""
    off = len(out_shape) - len(in_shape)
    out = []
    for t, d in enumerate(in_shape):
        o = out_shape[t + off]
        out.append(0 if (sp.sympify(d) == 1 and sp.sympify(o) != 1) else idx[t + off])
    return tuple(out)


def _reshape_groups(b, out_shape, in_shape):
    """Group axes so that each group of output axes has the same size as a group of input axes."""
    hint = b.dims.hinted
    i = j = 0
    groups = []
    O, S = list(out_shape), list(in_shape)
    while i < len(O) and j < len(S):
        oi, sj = [i], [j]
        po, ps = O[i], S[j]
        i, j = i + 1, j + 1
        while sp.expand(po - ps) != 0:
            if hint(po) < hint(ps) and i < len(O):
                po = po * O[i]
                oi.append(i)
                i += 1
            elif j < len(S):
                ps = ps * S[j]
                sj.append(j)
                j += 1
            else:
                return None
        groups.append((oi, sj))
    rest_o, rest_s = list(range(i, len(O))), list(range(j, len(S)))
    if any(not b.is_one(O[t]) for t in rest_o) or any(not b.is_one(S[t]) for t in rest_s):
        return None
    if groups:
        groups[-1] = (groups[-1][0] + rest_o, groups[-1][1] + rest_s)
    else:
        groups = [(rest_o, rest_s)]
    return groups


def prod(xs):
    out = 1
    for x in xs:
        out = out * x
    return out


def _flatten(idx, sizes):
    flat = 0
    for i, s in zip(idx, sizes):
        flat = flat * s + i
    return flat


def reshape_index(b, idx, out_sym, in_sym, out_te, in_te):
    groups = _reshape_groups(b, out_sym, in_sym)
    if groups is None:
        groups = [(list(range(len(out_sym))), list(range(len(in_sym))))]
    res = [None] * len(in_sym)
    for oi, sj in groups:
        if len(oi) == 1 and len(sj) == 1:
            res[sj[0]] = idx[oi[0]]
            continue
        keep_o = [t for t in oi if not b.is_one(out_sym[t])]
        keep_s = [t for t in sj if not b.is_one(in_sym[t])]
        for t in sj:
            res[t] = 0
        if not keep_s:
            continue
        if len(keep_o) == 1 and len(keep_s) == 1:
            res[keep_s[0]] = idx[keep_o[0]]
            continue
        flat = _flatten([idx[t] for t in keep_o], [out_te[t] for t in keep_o]) if keep_o else 0
        if len(keep_s) == 1:
            res[keep_s[0]] = flat
            continue
        sizes = [in_te[t] for t in keep_s]
        parts = []
        stride = 1
        for s in reversed(sizes[1:]):
            parts.append(tirx.floormod(tirx.floordiv(flat, stride) if not is_int(stride, 1) else flat, s))
            stride = stride * s
        parts.append(tirx.floordiv(flat, stride))
        parts.reverse()
        for t, p in zip(keep_s, parts):
            res[t] = p
    return tuple(res)


def is_int(x, v):
    return isinstance(x, int) and x == v


def infinity(dt, sign):
    return tirx.infinity(dt) if sign > 0 else -tirx.infinity(dt)
