"""mechgrok: record, analyze and report how algorithms form inside networks trained on
modular arithmetic, snapshot by snapshot (Swaroop 2026, arXiv 2603.23784).

The public API is imported on first use, so that `mechgrok --help` waits for neither torch
nor xarray. Datasets opened through `mechgrok.open_trajectory` or returned by
`mechgrok.analyze` carry the `ds.mechgrok` accessor (registered by mechgrok.analysis)."""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import Any

from mechgrok.config import installed_version as _installed_version

__version__ = _installed_version("mechgrok")

_PUBLIC = {
    "RunConfig": "mechgrok.config",
    "record": "mechgrok.recording.runs",
    "Recorder": "mechgrok.ingest.recorder",
    "open_trajectory": "mechgrok.analysis",
    "analyze": "mechgrok.analysis.pipeline",
    "AnalysisParams": "mechgrok.analysis.pipeline",
    "report": "mechgrok.reporting",
    "MechgrokError": "mechgrok.errors",
}
__all__ = sorted(_PUBLIC)


def __dir__() -> list[str]:
    return sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(_import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mechgrok' has no attribute {name!r}")
