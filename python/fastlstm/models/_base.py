"""scikit-learn's estimator conventions without scikit-learn (it stays an optional extra).

What a fastlstm estimator promises (sklearn's "developing estimators" guide):
- `__init__` only stores its keyword arguments, unvalidated, under the same names;
- `get_params(deep=True)` / `set_params(**params)` read and write them, so `sklearn.base.clone`,
  grid search and `Pipeline` work;
- `fit` validates, learns attributes whose names end in `_`, and returns `self`;
- using a fitted-only method before `fit` raises NotFittedError (a ValueError and an AttributeError,
  like sklearn's, so `except NotFittedError` and sklearn's own checks both catch it);
- `__sklearn_tags__` answers sklearn >= 1.6 when sklearn asks (imported lazily).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..data import NotFittedError  # one exception for scalers, encoders and estimators  # noqa: F401


class BaseEstimator:
    """get_params / set_params from the `__init__` signature, a readable repr, fitted checks."""

    _estimator_type = None  # "classifier" / "regressor" (sklearn < 1.6 reads this attribute)

    @classmethod
    def _param_names(cls) -> list:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must take explicit keyword arguments "
                                f"(no *args/**kwargs) so get_params can list them")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict:
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        valid = self._param_names()
        nested = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters: {', '.join(valid)}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for k in self._param_names():
            v = getattr(self, k)
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = v is d or bool(v == d)
            except Exception:  # arrays and odd types compare ambiguously: show them
                same = False
            if not same:
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def _check_fitted(self, attr: str = "model_"):
        if not hasattr(self, attr):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() "
                                 f"before using this method")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

        clf = self._estimator_type == "classifier"
        return Tags(estimator_type=self._estimator_type,
                    target_tags=TargetTags(required=clf),
                    transformer_tags=None,
                    classifier_tags=ClassifierTags() if clf else None,
                    regressor_tags=None if clf else RegressorTags(),
                    input_tags=InputTags(two_d_array=True, three_d_array=True),
                    non_deterministic=False)


def check_random_state(seed) -> int:
    """An int seed from None / int / np.random.Generator (our layers take int seeds)."""
    if seed is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(seed).__name__}")


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"finite number, got {value!r}")
    return v
