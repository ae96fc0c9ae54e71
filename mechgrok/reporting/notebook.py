"""The explorer inside Jupyter: the report's offline explorer for one run, shown inline as
one self-contained HTML output (an iframe whose page carries its data, plotly.js and the
app), with no server and no network. `ds.mechgrok.explore()` returns it."""

from __future__ import annotations

import html
from pathlib import Path

import xarray as xr

from mechgrok.analysis.pipeline import analyze
from mechgrok.reporting.explorer import MAX_SNAPSHOTS, explorer_data, explorer_section
from mechgrok.reporting.webpage import page
from mechgrok.store.reader import open_trajectory

EXPLORER_HEIGHT_PX = 1500  # the four panels stacked at a notebook's width


class Explorer:
    """An offline explorer of one run; Jupyter shows it through `_repr_html_`, and `html`
    is the page on its own (save it to share it)."""

    def __init__(self, name: str, trajectory: xr.Dataset, analysis: xr.Dataset):
        section = explorer_section(
            [explorer_data(name, trajectory, analysis, MAX_SNAPSHOTS)], static_below=False
        )
        self.html = page(f"mechgrok explorer: {name}", [section])

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
            f'style="width: 100%; height: {EXPLORER_HEIGHT_PX}px; border: 0" '
            'title="mechgrok explorer" sandbox="allow-scripts"></iframe>'
        )


def explorer_for(ds: xr.Dataset) -> Explorer:
    """The Explorer of a trajectory Dataset (analyzed as `mechgrok.analyze` would) or of an
    analysis Dataset (its trajectory reopened from the `source` it names)."""
    if "ideal_acc" in ds:
        analysis = ds
        trajectory = open_trajectory(ds.attrs["source"])
    else:
        trajectory = ds
        source = ds.attrs.get("source")
        analysis = analyze(source) if source else analyze(ds)
    name = Path(str(trajectory.attrs.get("source", "run"))).stem
    return Explorer(name, trajectory, analysis)
