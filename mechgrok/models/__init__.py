"""Model architectures, one module each, and the registry that names them.

An architecture module holds its parameters (PARAM_NAMES, a params class), initialization
(`init_params`) and forward pass (`forward`) in torch for training; numpy forms for analysis
live beside it (`activations.py` for the hidden nonlinearities, `tables.py` for activation
tables and effective curves, `layout.py` for parameter names and shapes). Adding an
architecture is a module here plus an entry in ARCHITECTURES (docs/architecture.md, "Adding a
model architecture"); code that handles more than one looks them up here."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from mechgrok.errors import InvalidOptionError


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its name in files and options, what it is, and the module
    (imported on demand: it needs torch) that holds its parameters and forward pass."""

    name: str
    description: str
    module: str

    def load(self) -> ModuleType:
        return import_module(self.module)


ARCHITECTURES = {
    "mlp": Architecture(
        "mlp",
        "two-hot MLP: W_a[a] + W_b[b] (+ b_in) -> activation -> W_out (+ b_out), the paper's model",
        "mechgrok.models.mlp",
    ),
    "transformer": Architecture(
        "transformer",
        "Nanda et al. (2023)'s 1-layer transformer on [a, b, =]; neurons read by their "
        "activation tables (models/tables.py)",
        "mechgrok.models.transformer",
    ),
}


def architecture(name: str) -> Architecture:
    """The registered architecture `name`; InvalidOptionError naming the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise InvalidOptionError(f"unknown architecture {name!r}; known: {known}") from None
