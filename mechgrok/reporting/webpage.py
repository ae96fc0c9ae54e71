"""The self-contained HTML page: inline CSS, figures as base64 PNG data URIs, the explorer's
scripts inlined (explorer.py), and no network requests."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

from matplotlib.figure import Figure

from mechgrok.config import installed_version
from mechgrok.reporting.static import static_text

FIGURE_SOFTWARE = "mechgrok"  # PNG tEXt "Software": how outputs.file_role knows our figures


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


def page(title: str, sections: list[str]) -> str:
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="mechgrok {installed_version("mechgrok")}">'
        f"<title>{html.escape(title)}</title><style>{static_text('page.css')}{static_text('explorer.css')}</style></head><body><main>"
        + "".join(sections)
        + f'<p class="muted">Made by mechgrok on {created}. Self-contained: figures are embedded, nothing is fetched.</p>'
        + "</main></body></html>"
    )
