"""The Python around the TVM kernels in a generated module: arguments handed to a kernel through
DLPack (aligned, contiguous, writeable, without a copy where possible), results of the first
argument's framework and device, the kernel of a call's free-dim sizes, zero-size calls, and (for
target cuda) copies to and from the GPU.  backend.py writes these into `Program.source`."""
from __future__ import annotations

WRAPPER_RUNTIME = '''

def _is_torch(v):
    return type(v).__module__.split(".")[0] == "torch"


_SPECIALIZE = None   # set by opdsl when it loads this module: (export, free dims) -> kernel or None
_KERNELS = {}


def _kernel(name, **free):
    """The kernel of export `name` for these values of its free dims: one compiled for exactly
    these sizes when opdsl provides it (a symbolic size costs tiling and vectorization), else the
    symbolic kernel in `_lib`, which takes any size."""
    key = (name,) + tuple(sorted(free.items()))
    k = _KERNELS.get(key)
    if k is None:
        if len(_KERNELS) > 4096:
            _KERNELS.clear()
        k = _KERNELS[key] = (_SPECIALIZE(name, free) if _SPECIALIZE is not None else None) or _lib[name]
    return k


def _dtype_name(v):
    return str(v.dtype).replace("torch.", "")


def _device_name(v):
    return str(v.device) if _is_torch(v) else "cpu"


def _aligned_empty(shape, dtype):
    """A numpy array whose data starts on a 64-byte boundary (the kernels assume it)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + n].view(dtype).reshape(shape)


def _arg(v):
    """The array as the kernel needs it: row-major contiguous and 64-byte aligned.

    No copy when it already is (DLPack hands the kernel the array's own memory);
    torch allocates 64-byte aligned, numpy often only 16-byte aligned.
    """
    if _is_torch(v):
        if not v.is_contiguous():
            v = v.contiguous()
        return v.clone() if v.data_ptr() % 64 else v
    v = np.ascontiguousarray(v)
    if v.ctypes.data % 64:
        a = _aligned_empty(v.shape, v.dtype)
        a[...] = v
        return a
    if not v.flags.writeable:
        return _writeable_alias(v)
    return v


def _writeable_alias(v):
    """Read-only array v (np.asarray of a JAX array, a read-only memory map) as a writeable
    array on the same memory, without a copy: TVM asks numpy for a
    DLPack version that cannot flag an array read-only, so numpy refuses to export it.  The
    kernels write only their result, never an argument."""
    import ctypes
    mem = (ctypes.c_char * v.nbytes).from_address(v.ctypes.data)
    mem.owner = v                       # the alias keeps v's memory alive
    return np.frombuffer(mem, dtype=v.dtype).reshape(v.shape)


def _no_elements(*arrays):
    return any(0 in tuple(a.shape) for a in arrays)


_ZERO_SIZE = None   # set by opdsl when it loads this module: (export, {argument: numpy array}) -> numpy result


def _zero_size(name, like, out, args):
    """A call with a free dim of size 0, as the numpy and torch backends compute it: `out` when the
    result has no elements, else the numpy backend's result (zeros for a product over an empty
    sum, ...) as an array of the framework and device of `like`.  The kernels cannot run it: TVM
    refuses the strides numpy and torch give zero-size arrays, and a reduction over an empty range
    would never initialize its result."""
    if _no_elements(out):
        return out
    res = _ZERO_SIZE(name, {a: (v.detach().cpu().numpy() if _is_torch(v) else np.asarray(v)) for a, v in args.items()})
    if like is not None and _is_torch(like):
        import torch
        return torch.from_numpy(np.ascontiguousarray(res)).to(like.device)
    return res


_CONSTS = {}   # constants the kernels take after the arguments (numpy arrays, from the manifest)
_CONSTS_ON = {}


def _constant(name, like):
    """A constant as an array of the framework (and device) of `like`."""
    v = _CONSTS[name]
    if like is not None and _is_torch(like):
        key = (name, str(like.device))
        t = _CONSTS_ON.get(key)
        if t is None:
            import torch
            t = _CONSTS_ON[key] = _arg(torch.from_numpy(v).to(like.device))
        return t
    return v


def _empty(like, shape, dtype):
    """An uninitialized result array of the framework (and device) of `like`."""
    if like is not None and _is_torch(like):
        import torch
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    return _aligned_empty(shape, dtype)
'''

GPU_RUNTIME = '''

def _call(kernel, args, out):
    """Run a CUDA kernel into `out`: torch CUDA tensors pass through DLPack without a copy; numpy
    arrays (and CPU tensors) are copied to the GPU and the result back."""
    if all(_is_torch(a) and a.is_cuda for a in args + [out]):
        kernel(*args, out)
        return
    dev = tvm.cuda(0)
    targs = [a if (_is_torch(a) and a.is_cuda) else tvm.runtime.tensor(np.asarray(a.cpu() if _is_torch(a) else a), dev)
             for a in args]
    tout = tvm.runtime.empty(tuple(out.shape), _dtype_name(out), dev)
    kernel(*targs, tout)
    res = tout.numpy()
    if _is_torch(out):
        import torch
        out.copy_(torch.from_numpy(res))
    else:
        out[...] = res
'''
