"""Optimizers, gradient clipping and learning-rate schedules.

An optimizer takes the model and moves all its parameters and gradients into one flat buffer
each (the modules' dicts are re-bound to views of them), so an update is a handful of
vectorised passes over one array instead of a Python loop over every parameter: at book sizes
the update costs microseconds beside the kernels' tens. The update rules are torch.optim's,
term by term, so a model trained here follows the same trajectory as in PyTorch.

    opt = Adam(model, lr=1e-3)
    model.zero_grad(); ...; model.backward(dy); clip_grad_norm(opt, 1.0); opt.step()
"""

from __future__ import annotations

import math

import numpy as np

from .nn.module import Module


class FlatParameters:
    """One flat buffer for a model's parameters and one for their gradients; each module's
    params/grads entries become views into them (in named_parameters order)."""

    def __init__(self, model: Module):
        slots = list(model._param_slots())
        if not slots:
            raise ValueError("the model has no parameters to optimize")
        dtypes = {m.params[k].dtype for _, m, k in slots}
        if len(dtypes) != 1:
            raise TypeError(f"all parameters must share one dtype, got {sorted(str(d) for d in dtypes)}")
        dtype = dtypes.pop()
        total = sum(m.params[k].size for _, m, k in slots)
        self.params = np.empty(total, dtype)
        self.grads = np.empty(total, dtype)
        self.slots, self.names, o = [], [], 0
        for full, m, k in slots:
            v, g = m.params[k], m.grads[k]
            n = v.size
            self.params[o:o + n] = v.reshape(-1)
            self.grads[o:o + n] = g.reshape(-1)
            m.params[k] = self.params[o:o + n].reshape(v.shape)
            m.grads[k] = self.grads[o:o + n].reshape(v.shape)
            self.slots.append((m, k, o, n))
            self.names.append(full)
            o += n
        model._flat = self

    def intact(self) -> bool:
        """True while every module still holds the views (nobody re-bound an entry). Cheap: a
        view's .base is the flat buffer itself (NumPy collapses view chains)."""
        P, G = self.params, self.grads
        for m, k, _, _ in self.slots:
            if m.params[k].base is not P or m.grads[k].base is not G:
                return False
        return True


def _flat_of(model: Module) -> FlatParameters:
    flat = getattr(model, "_flat", None)
    if flat is not None and flat.intact() and [n for n, *_ in model._param_slots()] == flat.names:
        return flat
    return FlatParameters(model)


class Optimizer:
    """Base: the flat buffers, lr, step(), zero_grad(), state_dict()/load_state_dict()."""

    def __init__(self, model: Module, lr: float):
        if not isinstance(model, Module):
            raise TypeError(f"an optimizer takes the model (a fastlstm.nn.Module), got {type(model).__name__}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.model = model
        self.flat = _flat_of(model)
        self.lr = float(lr)
        self.steps = 0
        self.state: dict[str, np.ndarray] = {}

    @property
    def params(self):
        return self.flat.params

    @property
    def grads(self):
        return self.flat.grads

    def _buffer(self, name):
        if name not in self.state:
            self.state[name] = np.zeros_like(self.flat.params)
        return self.state[name]

    def zero_grad(self):
        self.flat.grads[...] = 0

    def step(self):
        if not self.flat.intact():  # e.g. a layer re-bound a parameter: rebuild the views
            self.flat = FlatParameters(self.model)
        self.steps += 1
        self._update(self.flat.params, self.flat.grads)

    def _update(self, w, g):
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        return {"class": type(self).__name__, "hyper": self.hyperparameters(), "steps": self.steps,
                "buffers": {k: v.copy() for k, v in self.state.items()}, "names": list(self.flat.names)}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("class") != type(self).__name__:
            raise ValueError(f"optimizer state is for {sd.get('class')}, not {type(self).__name__}")
        if list(sd.get("names", self.flat.names)) != self.flat.names:
            raise ValueError("optimizer state was saved for a model with other parameters")
        for k, v in sd["buffers"].items():
            if np.shape(v) != self.flat.params.shape:
                raise ValueError(f"optimizer buffer {k!r} has {np.size(v)} values, the model {self.flat.params.size}")
        for k, v in sd["hyper"].items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.steps = int(sd["steps"])
        self.state = {k: np.array(v, self.flat.params.dtype) for k, v in sd["buffers"].items()}


class SGD(Optimizer):
    """torch.optim.SGD: g += wd·w; buf = μ·buf + g (buf = g at the first step);
    g = g + μ·buf (Nesterov) or buf; w -= lr·g."""

    def __init__(self, model, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(model, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def hyperparameters(self):
        return dict(lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)

    def _update(self, w, g):
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            buf = self._buffer("momentum")
            if self.steps == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        w -= self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam: m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
    w -= lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps). weight_decay adds wd·w to g (L2)."""

    decoupled = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr)
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)
        self._tmp = np.empty_like(self.flat.params)

    def hyperparameters(self):
        return dict(lr=self.lr, betas=list(self.betas), eps=self.eps, weight_decay=self.weight_decay)

    def _update(self, w, g):
        b1, b2 = self.betas
        m, v = self._buffer("exp_avg"), self._buffer("exp_avg_sq")
        if self._tmp.shape != w.shape:
            self._tmp = np.empty_like(w)
        tmp = self._tmp
        if self.weight_decay:
            if self.decoupled:
                w *= 1 - self.lr * self.weight_decay   # AdamW: decay the weights themselves
            else:
                g = g + self.weight_decay * w
        # in place, one temporary: each line is one pass over the flat buffer
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        bc1, bc2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        np.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(bc2)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / bc1
        w -= tmp


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, w *= 1 - lr·wd before the update."""

    decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(model, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """torch.optim.RMSprop (no momentum, not centered): v = α·v + (1-α)·g²; w -= lr·g/(√v + eps)."""

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr)
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)

    def hyperparameters(self):
        return dict(lr=self.lr, alpha=self.alpha, eps=self.eps, weight_decay=self.weight_decay)

    def _update(self, w, g):
        if self.weight_decay:
            g = g + self.weight_decay * w
        v = self._buffer("square_avg")
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        w -= self.lr * g / (np.sqrt(v) + self.eps)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(opt, model, lr=None) -> Optimizer:
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str) and opt.lower() in OPTIMIZERS:
        cls = OPTIMIZERS[opt.lower()]
        return cls(model) if lr is None else cls(model, lr=lr)
    raise ValueError(f"unknown optimizer {opt!r}; choose one of {', '.join(OPTIMIZERS)} or pass an Optimizer")


def clip_grad_norm(target, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm (torch's
    clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1). Returns the norm
    before clipping. target: an Optimizer or a Module."""
    if isinstance(target, Optimizer):
        g = target.flat.grads
        norm = math.sqrt(float(np.dot(g, g)))
        grads = [g]
    else:
        grads = [g for _, _, g in target.named_parameters()]
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return norm


# -- learning-rate schedules ----------------------------------------------------------------

class StepLR:
    """lr = base · gamma^(epoch // step_size); call step() once per epoch."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.opt, self.step_size, self.gamma = optimizer, int(step_size), float(gamma)
        self.base, self.epoch = optimizer.lr, 0

    def step(self, metric=None):
        self.epoch += 1
        self.opt.lr = self.base * self.gamma ** (self.epoch // self.step_size)


class CosineWarmup:
    """Linear warm-up over warmup_steps, then cosine decay to min_lr at total_steps; call
    step() once per optimizer step (per batch)."""

    per_batch = True

    def __init__(self, optimizer, total_steps, warmup_steps=0, min_lr=0.0):
        self.opt, self.total, self.warmup, self.min_lr = optimizer, int(total_steps), int(warmup_steps), float(min_lr)
        self.base, self.t = optimizer.lr, 0
        self._apply()

    def _apply(self):
        t = self.t
        if self.warmup and t < self.warmup:
            self.opt.lr = self.base * (t + 1) / self.warmup
            return
        frac = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        self.opt.lr = self.min_lr + (self.base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))

    def step(self, metric=None):
        self.t += 1
        self._apply()


class ReduceLROnPlateau:
    """lr *= factor when the metric has not improved (by more than min_delta) for `patience`
    epochs; never below min_lr. Call step(metric) once per epoch."""

    def __init__(self, optimizer, factor=0.5, patience=5, min_lr=0.0, min_delta=0.0, mode="min"):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.opt, self.factor, self.patience = optimizer, float(factor), int(patience)
        self.min_lr, self.min_delta, self.mode = float(min_lr), float(min_delta), mode
        self.best, self.bad = math.inf if mode == "min" else -math.inf, 0

    def step(self, metric):
        metric = float(metric)
        better = metric < self.best - self.min_delta if self.mode == "min" else metric > self.best + self.min_delta
        if better:
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.opt.lr = max(self.min_lr, self.opt.lr * self.factor)
            self.bad = 0
