"""Runtime configuration: threads, the active backend and show_config().

Imports run one way: this module reads the backend registry (fastlstm.backends), which holds
the thread count every backend shares; no backend imports this module.
"""

from __future__ import annotations

import platform
import sys

from . import backends
from .backends import empty_cache, get_num_threads, set_num_threads

__all__ = ["config", "show_config", "get_num_threads", "set_num_threads"]


def config() -> dict:
    """Everything show_config() prints, as a dict."""
    from . import __version__

    act = backends.active()
    out = {
        "fastlstm": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "backend": act.NAME,
        "backend_info": act.info(),
        "threads": get_num_threads(),
        "backends": {},
    }
    for name, err in backends.available().items():
        out["backends"][name] = "available" if err is None else f"unavailable ({err})"
        if err is None and name != act.NAME:
            out.setdefault("other_backend_info", {})[name] = backends.load(name).info()
    import numpy

    out["numpy"] = numpy.__version__
    for mod in ("numba", "torch", "onnxruntime"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                from importlib.metadata import version

                out[mod] = version(mod)
            except Exception:
                out[mod] = "not installed"
        else:
            out[mod] = getattr(m, "__version__", "?")
    return out


def show_config(file=None) -> None:
    """Print the backend, the runtime ISA, threads and versions."""
    cfg = config()
    w = (lambda s: print(s, file=file))
    w(f"fastlstm {cfg['fastlstm']}  (python {cfg['python']}, {cfg['platform']})")
    w(f"  backend   : {cfg['backend']}")
    for k, v in cfg["backend_info"].items():
        if k != "name":
            w(f"    {k:<10}: {v}")
    w(f"  threads   : {cfg['threads']}")
    w("  backends  :")
    for name, state in cfg["backends"].items():
        w(f"    {name:<10}: {state}")
    for name, inf in cfg.get("other_backend_info", {}).items():
        w(f"    {name:<10}  " + ", ".join(f"{k}={v}" for k, v in inf.items() if k != "name"))
    w("  versions  : " + ", ".join(f"{m} {cfg[m]}" for m in ("numpy", "numba", "torch", "onnxruntime")))
