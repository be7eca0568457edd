"""Report helpers for the demos: markdown tables, atomic text files, a progress bar, timing."""

from __future__ import annotations

import os
import platform
import sys
import time

from ..io import atomic_write


def write_text(path, text: str) -> str:
    """Write text (UTF-8) to path atomically; return the path."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def markdown_table(header, rows) -> str:
    """A GitHub markdown table; floats with 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line() -> str:
    import fastlstm

    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} logical CPUs, fastlstm "
            f"{fastlstm.__version__} backend {fastlstm.backends.active().NAME}, "
            f"{fastlstm.get_num_threads()} threads, Python {sys.version.split()[0]}")


class Progress:
    """A tqdm bar over the demo's steps (a plain line per step without tqdm or when disabled)."""

    def __init__(self, total: int, desc: str, disable: bool = False):
        self.bar = None
        self.disable = disable
        if not disable:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def step(self, what: str):
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)
        elif not self.disable:
            print(f"  done: {what}", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
