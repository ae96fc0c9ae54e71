"""The self-contained HTML page: inline CSS, figures as base64 PNG data URIs, the explorer's
scripts inlined (explorer.py), and no network requests."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

from matplotlib.figure import Figure

from mechgrok.reporting.explorer import EXPLORER_CSS

FIGURE_SOFTWARE = "mechgrok"  # PNG tEXt "Software": how outputs.file_role knows our figures

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.2rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; } h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p, li { line-height: 1.5; } .muted { color: #666; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; background: white; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: right; } th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
.paper { color: #0072B2; } .note { background: #fff4d6; border: 1px solid #e8d28a; padding: .5rem .8rem; border-radius: 6px; } .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: .6rem; }
.card { background: white; border: 1px solid #e2e2e2; border-radius: 6px; padding: .6rem .8rem; }
.card .value { font-size: 1.35rem; font-weight: 600; } .card .label { color: #555; font-size: .85rem; }
figure { margin: 1rem 0; background: white; border: 1px solid #e2e2e2; border-radius: 6px; padding: .6rem; }
figure img { width: 100%; height: auto; display: block; } figcaption { color: #444; font-size: .9rem; margin-top: .4rem; }
code { background: #f0f0f0; padding: 0 .25rem; border-radius: 3px; }
"""


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": FIGURE_SOFTWARE})
    return buffer.getvalue()


def figure_html(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table_html(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{(classes or [""] * len(r))[i]}">{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards_html(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="grid">'
        + "".join(
            f'<div class="card"><div class="value">{html.escape(value)}</div><div class="label">{html.escape(label)}</div></div>'
            for label, value in items
        )
        + "</div>"
    )


def _version() -> str:
    from .. import __version__

    return __version__


def page(title: str, sections: list[str]) -> str:
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="mechgrok {_version()}">'
        f"<title>{html.escape(title)}</title><style>{CSS}{EXPLORER_CSS}</style></head><body><main>"
        + "".join(sections)
        + f'<p class="muted">Made by mechgrok on {created}. Self-contained: figures are embedded, nothing is fetched.</p>'
        + "</main></body></html>"
    )
