"""Hidden-layer nonlinearities of the MLPs mechgrok reads, in numpy (float32-friendly).

Used to score a run's real weights on all pairs when it was not trained with ReLU (imports,
your own loop). Definitions follow torch.nn: gelu(x) = x (1 + erf(x / sqrt 2)) / 2 (the exact
form, erf to ~1.5e-7 by Abramowitz & Stegun 7.1.26), silu(x) = x sigmoid(x), quadratic(x) = x^2.
"""

from __future__ import annotations

import numpy as np

from mechgrok.config import ACTIVATIONS
from mechgrok.errors import InvalidOptionError


def check_activation(name: str) -> str:
    """`name` if mechgrok knows it, else ValueError listing the known ones."""
    if name not in ACTIVATIONS:
        raise InvalidOptionError(
            f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}"
        )
    return name


def activate(name: str, x: np.ndarray) -> np.ndarray:
    """The activation applied to pre-activations `x` (may reuse x's memory)."""
    check_activation(name)
    if name == "relu":
        return np.maximum(x, 0, out=x)
    if name == "gelu":
        return x * (0.5 * (1.0 + erf(x * np.float32(1 / np.sqrt(2)))))
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "quadratic":
        return np.square(x, out=x)
    return x


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(x.dtype, copy=False)
