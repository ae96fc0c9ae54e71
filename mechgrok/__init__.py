"""mechgrok: record, analyze and report how the Fourier algorithm forms inside grokking
ReLU MLPs on modular addition (Swaroop 2026, arXiv 2603.23784).

The public API is imported on first use, so that `mechgrok --help` waits for neither torch
nor xarray. The `ds.mechgrok` accessor is registered by mechgrok.trajectory, through which
every Dataset mechgrok returns is opened (`import mechgrok.accessor` registers it alone)."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "RunConfig": "mechgrok.config",
    "record": "mechgrok.recorder",
    "Recorder": "mechgrok.loop_recorder",
    "open_trajectory": "mechgrok.trajectory",
    "analyze": "mechgrok.analysis",
    "AnalysisParams": "mechgrok.analysis",
    "report": "mechgrok.reporting",
}
__all__ = sorted(_PUBLIC)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mechgrok' has no attribute {name!r}")
