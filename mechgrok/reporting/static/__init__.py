"""The report's JavaScript and CSS, shipped as package files and inlined into each page."""

from __future__ import annotations

import functools
from importlib.resources import files


@functools.cache
def static_text(name: str) -> str:
    """The text of the static file `name` (e.g. "explorer.js")."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
