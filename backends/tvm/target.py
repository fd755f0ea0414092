"""The TVM target of the backend's `target` option, and the size of TVM's CPU thread pool."""
from __future__ import annotations

import os
from pathlib import Path

from opdsl.errors import BackendError


def host_cpu() -> str | None:
    try:
        from tvm.target import codegen
        cpu = codegen.llvm_get_system_cpu()
        return cpu if cpu and cpu != "generic" else None
    except Exception:  # noqa: BLE001 - an LLVM without host detection: generic code
        return None


def make_target(target: str, num_cores: int | None = None):
    """A tvm Target from the backend's `target` option."""
    import tvm
    t = (target or "llvm").strip()
    if t in ("llvm", "cpu"):
        spec = {"kind": "llvm"}
        cpu = host_cpu()
        if cpu:
            spec["mcpu"] = cpu
        if num_cores:
            spec["num-cores"] = num_cores
        return tvm.target.Target(spec)
    if t == "cuda":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tvm.target.Target("cuda")
    try:
        return tvm.target.Target(t)
    except Exception as e:  # noqa: BLE001 - TVM's own message, as a user error
        raise BackendError(f"unknown TVM target {target!r}: {str(e).strip().splitlines()[-1]}",
                           hint="use target='llvm' (this CPU), 'cuda', or a TVM target string") from None


def physical_cores() -> int:
    """The cores this process may run on, SMT siblings counted once (torch's default thread count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


_THREADS_SET = False


def set_num_threads(n: int | None = None, *, respect_env: bool = False) -> int:
    """Size TVM's CPU thread pool: n threads sharing the cores this process may use (default:
    one per physical core).  Returns the pool's size.

    TVM 0.27 starts its pool with hardware_concurrency / 2 threads on x86 (it assumes two
    hyper-threads per core), so on a machine without SMT its kernels use half the cores
    (one thread on a 2-core VM: measured 2x slower than torch there).  With respect_env, an
    explicit TVM_NUM_THREADS or OMP_NUM_THREADS wins and nothing is changed.
    """
    import tvm
    global _THREADS_SET
    if respect_env and ("TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ):
        return tvm.runtime.num_threads()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    n = int(n or physical_cores())
    # mode -3 (kSpecifyThreadShareAllCore): n workers, none pinned, all on `cpus`
    tvm.get_global_func("runtime.config_threadpool")(-3, n, [str(c) for c in cpus])
    _THREADS_SET = True
    return tvm.runtime.num_threads()


def threads_configured() -> bool:
    """Whether set_num_threads has sized the pool in this process (then the user's choice stands)."""
    return _THREADS_SET
