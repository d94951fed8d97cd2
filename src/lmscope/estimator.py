"""The one estimator convention for rankers, probes, SAEs and transcoders: scikit-learn's.

- hyperparameters are explicit `__init__` keywords that `__init__` only stores (nothing is checked or
  computed there, so `sklearn.base.clone` and `set_params` rebuild an estimator exactly); they are checked
  in `fit`, which raises `InputError` naming the hyperparameter;
- `fit(...)` returns `self`; what it learns ends in `_` (`ranking_`, `coef_`, `dictionary_`, ...);
- `get_params()` / `set_params(**params)` / `repr` come from `sklearn.base.BaseEstimator`, so an lmscope
  estimator works with scikit-learn's `clone`, `GridSearchCV` and pipelines.

Where an estimator's run settings (output directory, checkpoints) are not hyperparameters, they are an
argument of `fit`, never of `__init__` (see `lmscope.dictionary.train.RunConfig`). A bottom-layer module:
it imports only scikit-learn and `lmscope.errors`.
"""

from __future__ import annotations

from typing import Any, Self

from sklearn.base import BaseEstimator
from sklearn.base import clone as sklearn_clone

from lmscope.errors import InputError


class Estimator(BaseEstimator):  # type: ignore[misc]
    """Base class of lmscope's estimators; see the module docstring for the conventions it stands for."""

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name (scikit-learn's `set_params`); an unknown name is an InputError."""
        valid = self.get_params(deep=False)
        for name in params:
            if name.partition("__")[0] not in valid:
                raise InputError(f"{name}: not a hyperparameter of {type(self).__name__}; expected one of "
                                 f"{', '.join(sorted(valid))}")
        super().set_params(**params)
        return self

    def clone(self, **overrides: Any) -> Self:
        """A fresh, unfitted estimator with the same hyperparameters (`sklearn.base.clone`), `overrides` set."""
        fresh: Self = sklearn_clone(self)
        return fresh.set_params(**overrides)

    def _check_is_fitted(self, attribute: str) -> None:
        """InputError unless `fit` has run (it sets the learned `attribute`)."""
        if not hasattr(self, attribute):
            raise InputError(f"{type(self).__name__}: not fitted yet; call fit first")
