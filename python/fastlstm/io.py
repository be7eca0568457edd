"""Save and load: one portable file with the architecture, weights, optimizer state, a format
version and a checksum, written atomically.

    fastlstm.save("model.fastlstm", model, optimizer, extra={"epoch": 3})
    model, optimizer, extra = fastlstm.load("model.fastlstm")

The file is a NumPy .npz (no pickle: loading never runs code from the file): `__meta__` is JSON
(format, version, each module's class name and constructor config, the optimizer's class and
hyperparameters, `extra`), `p:<name>` the parameters, `o:<name>` the optimizer's buffers,
`x:<name>` arrays in `extra`, and `__checksum__` a SHA-256 over all of it. It is written to a
temporary file in the same folder, fsynced and renamed over the target, so a crash mid-save
leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

import numpy as np

from .nn.module import Module, registered

FORMAT = "fastlstm"
VERSION = 1


class CheckpointError(ValueError):
    """The file is not a fastlstm checkpoint, is corrupted, or has another format version."""


def module_spec(module: Module) -> dict:
    return {"class": type(module).__name__, "config": module.get_config()}


def module_from_spec(spec: dict) -> Module:
    return registered(spec["class"]).from_config(spec["config"])


def _digest(meta: bytes, arrays: dict) -> str:
    h = hashlib.sha256(meta)
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write data to path so that a reader sees the old file or the new one, never a mix."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _split_extra(extra: dict | None):
    plain, arrays = {}, {}
    for k, v in (extra or {}).items():
        if isinstance(v, np.ndarray):
            arrays[f"x:{k}"] = v
        else:
            plain[k] = v
    return plain, arrays


def save(path, model: Module, optimizer=None, extra: dict | None = None) -> None:
    """Write model (+ optimizer state, + extra: JSON values or NumPy arrays) to one file, atomically."""
    if not isinstance(model, Module):
        raise TypeError(f"save() takes a fastlstm.nn.Module, got {type(model).__name__}")
    arrays = {f"p:{name}": np.ascontiguousarray(v) for name, v, _ in model.named_parameters()}
    opt_meta = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        opt_meta = {k: v for k, v in sd.items() if k != "buffers"}
        arrays.update({f"o:{k}": v for k, v in sd["buffers"].items()})
    plain, extra_arrays = _split_extra(extra)
    arrays.update(extra_arrays)
    meta = {"format": FORMAT, "version": VERSION, "model": module_spec(model),
            "params": [name for name, _, _ in model.named_parameters()], "optimizer": opt_meta, "extra": plain}
    try:
        meta_bytes = json.dumps(meta, sort_keys=True).encode()
    except TypeError as e:
        raise TypeError(f"extra must hold JSON values or NumPy arrays: {e}") from None
    arrays["__meta__"] = np.frombuffer(meta_bytes, np.uint8)
    arrays["__checksum__"] = np.frombuffer(_digest(meta_bytes, {k: v for k, v in arrays.items()
                                                               if k != "__meta__"}).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read(path) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint, after checking format, version and checksum."""
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # truncated zip, not a zip, bad member...
        raise CheckpointError(f"{path}: not a readable fastlstm checkpoint ({type(e).__name__}: {e})") from None
    if "__meta__" not in arrays or "__checksum__" not in arrays:
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (no __meta__/__checksum__)")
    meta_bytes = arrays.pop("__meta__").tobytes()
    stored = arrays.pop("__checksum__").tobytes().decode(errors="replace")
    if _digest(meta_bytes, arrays) != stored:
        raise CheckpointError(f"{path}: checksum mismatch — the file is corrupted")
    meta = json.loads(meta_bytes)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')} is not supported "
                              f"(this fastlstm reads version {VERSION})")
    return meta, arrays


def load(path, model: Module | None = None):
    """Returns (model, optimizer or None, extra). With model given, its weights are loaded in
    place (its architecture must match) instead of building a new one from the file."""
    from . import optim

    meta, arrays = read(path)
    if model is None:
        model = module_from_spec(meta["model"])
    state = {k[2:]: v for k, v in arrays.items() if k.startswith("p:")}
    model.load_state_dict(state, strict=True)
    optimizer = None
    if meta.get("optimizer"):
        om = meta["optimizer"]
        cls = optim.OPTIMIZERS.get(om["class"].lower())
        if cls is None:
            raise CheckpointError(f"{path}: unknown optimizer class {om['class']!r}")
        optimizer = cls(model)
        optimizer.load_state_dict({**om, "buffers": {k[2:]: v for k, v in arrays.items() if k.startswith("o:")}})
    extra = dict(meta.get("extra") or {})
    extra.update({k[2:]: v for k, v in arrays.items() if k.startswith("x:")})
    return model, optimizer, extra
