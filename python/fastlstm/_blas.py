"""NumPy's OpenBLAS thread count, through its C API, found in this process's mapped libraries
(what threadpoolctl does, without the dependency): the benchmarks set it per thread count, and
`fit` runs it on one thread while fastlstm's kernels run on more (see serial_blas)."""

from __future__ import annotations

import ctypes
from contextlib import contextmanager


class OpenBLAS:
    """The OpenBLAS this process loaded (NumPy's), if any: get() / set(n) its thread count (None /
    False when there is none)."""

    SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
               "openblas_set_num_threads")
    GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
               "openblas_get_num_threads")

    def __init__(self):
        self.lib = self.set_fn = self.get_fn = None
        try:
            with open("/proc/self/maps") as f:
                paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            s = next((getattr(lib, n) for n in self.SETTERS if hasattr(lib, n)), None)
            g = next((getattr(lib, n) for n in self.GETTERS if hasattr(lib, n)), None)
            if s is not None and g is not None:
                s.argtypes, s.restype, g.restype = [ctypes.c_int], None, ctypes.c_int
                self.lib, self.set_fn, self.get_fn = path, s, g
                return

    def get(self) -> int | None:
        return None if self.get_fn is None else int(self.get_fn())

    def set(self, n: int) -> bool:
        if self.set_fn is None:
            return False
        self.set_fn(int(n))
        return True


@contextmanager
def serial_blas(when: bool = True):
    """Run NumPy's OpenBLAS on one thread inside the block (when `when`), restoring its count after.

    Why: OpenBLAS's workers spin after each multi-threaded call, on the cores fastlstm's own
    thread team needs next. In `fit`'s char-LM training at 2 threads (the per-step Linear's GEMMs
    through NumPy between the LSTM kernels), the epoch took 0.55 s with OpenBLAS on 2 threads and
    0.40 s on 1; on 1 thread of fastlstm nothing changes, so nothing is done."""
    blas = OpenBLAS() if when else None
    old = blas.get() if blas is not None else None
    if old is not None and old > 1:
        blas.set(1)
    try:
        yield
    finally:
        if old is not None and old > 1:
            blas.set(old)
