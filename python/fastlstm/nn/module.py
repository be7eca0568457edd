"""The module protocol every layer and model follows (llm.c's habit, no autograd engine).

A Module has an explicit forward that keeps what its backward needs (only in training mode) and
a backward right below it that returns the input gradient and ACCUMULATES parameter gradients:

    y  = module.forward(x, lengths=None)      # one array out; lengths (B,) for sequences
    dx = module.backward(dy)                   # dL/dx; grads += dL/dparams

Parameters live in two dicts per module, `params[name]` and `grads[name]` (same shapes). An
optimizer may re-bind both to views of one flat buffer (optim.py), so a layer always reads
through the dicts and never keeps its own references. Child modules are found among the
attributes in assignment order (lists of modules too), so a model with several inputs
(encoder–decoder) is a plain subclass writing forward/backward over its children.

Modules start in inference mode (training=False), as Keras layers do: fit() and train() switch
training on, so a forgotten train() is a clear error at backward, never a silently kept tape.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a Module subclass loadable by fastlstm.load (by class name)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered(name: str) -> type:
    if name not in _REGISTRY:  # the ready models register when fastlstm.models is imported
        import importlib

        importlib.import_module("fastlstm.models")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown module class {name!r} in the file; define it and decorate it "
                         f"with @fastlstm.nn.register before loading") from None


class Module:
    """Base class: parameters by name, train/eval mode, state_dict, zero_grad, summary."""

    training: bool = False

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = False

    # -- parameters -------------------------------------------------------------------------
    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        value = np.ascontiguousarray(value)
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def _children(self) -> Iterator[tuple[str, Module]]:
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v
            elif isinstance(v, (list, tuple)) and v and all(isinstance(m, Module) for m in v):
                for i, m in enumerate(v):
                    yield f"{name}.{i}", m

    def children(self) -> list[Module]:
        return [m for _, m in self._children()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, m in self._children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def _param_slots(self, prefix: str = "") -> Iterator[tuple[str, Module, str]]:
        """(full name, owning module, local name) for every parameter, once each."""
        seen = set()
        for mprefix, m in self.named_modules(prefix):
            if id(m) in seen:
                continue
            seen.add(id(m))
            for k in m.params:
                yield (f"{mprefix}.{k}" if mprefix else k), m, k

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, value, grad) for every parameter; dotted names like torch's."""
        for full, m, k in self._param_slots(prefix):
            yield full, m.params[k], m.grads[k]

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(v, g) for _, v, g in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(v.size for _, v, _ in self.named_parameters()))

    def zero_grad(self) -> None:
        flat = getattr(self, "_flat", None)
        if flat is not None and flat.intact():
            flat.grads[...] = 0  # one memset over the optimizer's flat buffer
            return
        for _, _, g in self.named_parameters():
            g[...] = 0

    # -- mode --------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            m.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: v.copy() for name, v, _ in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays in place (NumPy arrays or anything with .numpy(), e.g. torch tensors).

        strict=True: the names must match exactly. Shapes must always match. Nothing is
        changed unless every entry checks out.
        """
        slots = {full: (m, k) for full, m, k in self._param_slots()}
        missing = sorted(set(slots) - set(state))
        unexpected = sorted(set(state) - set(slots))
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        staged = []
        for name, v in state.items():
            if name not in slots:
                continue
            m, k = slots[name]
            arr = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            if arr.shape != m.params[k].shape:
                raise ValueError(f"{name}: expected shape {m.params[k].shape}, got {arr.shape}")
            if arr.dtype.kind != "f":
                raise TypeError(f"{name}: expected a float array, got dtype {arr.dtype}")
            staged.append((m.params[k], arr))
        for dst, src in staged:
            dst[...] = src

    # -- architecture ------------------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments that rebuild this module (fastlstm.save stores them)."""
        raise NotImplementedError(f"{type(self).__name__}.get_config() is needed to save it")

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def _reseed(self, seed_seq: list) -> None:
        """Give every module that draws random numbers (dropout) a generator derived from
        seed_seq, so that a resumed run draws exactly what an uninterrupted one would."""
        for i, (_, m) in enumerate(self.named_modules()):
            if hasattr(m, "rng"):
                m.rng = np.random.default_rng([*seed_seq, i])

    def _inference_cache(self, on: bool) -> None:
        """predict() packs LSTM weights once per call; modules that can, override this."""

    # -- calling -----------------------------------------------------------------------------
    def forward(self, x, lengths=None):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = list(self._children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return f"{head}\n{body}\n)"

    def summary(self) -> str:
        """A table of the modules with their parameter counts."""
        rows = [("module", "type", "parameters")]
        for name, m in self.named_modules():
            n = sum(v.size for v in m.params.values())
            rows.append((name or "(model)", type(m).__name__ + (f"({m.extra_repr()})" if m.extra_repr() else ""),
                         f"{n:,}" if m.params else ""))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}" for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"total parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    # Pickling: the flat buffer is an optimizer detail; a pickled module owns plain arrays.
    def __getstate__(self):
        state = dict(vars(self))
        state.pop("_flat", None)
        return state
