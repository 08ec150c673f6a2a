"""Small pieces every page uses: links that keep the study, state badges, the style sheet."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

POLL_MS = 500  # every page polls the control plane at about 2 Hz

STATE_COLORS = {"RUNNING": "#2563eb", "COMPLETE": "#16a34a", "PRUNED": "#d97706", "FAIL": "#dc2626",
                "WAITING": "#6b7280"}
PAUSED_COLOR = "#b45309"  # paused trials, a held study
COMMAND_COLORS = {"pending": "#2563eb", "applied": "#16a34a", "rejected": "#dc2626", "expired": "#6b7280"}


def href(path: str, study: str, **query: Any) -> str:
    """An app URL that keeps the study in the query (`/trial/3?study=quick`)."""
    return f"{path}?{urlencode({'study': study, **query})}"


def badge(text: str, color: str) -> html.Span:
    return html.Span(text, className="badge", style={"background": color})


def state_badge(state: str) -> html.Span:
    return badge(state.lower(), STATE_COLORS.get(state, "#6b7280"))


def card(title: str | None, *children: Any, class_name: str = "", **kwargs: Any) -> html.Div:
    head = [html.H3(title, className="card-title")] if title else []
    return html.Div([*head, *children], className=f"card {class_name}".strip(), **kwargs)


def message_page(title: str, text: str, study: str | None = None) -> html.Div:
    """A page that only says something (unknown page, unknown trial)."""
    back = [dcc.Link("back to the study", href=href("/", study))] if study else []
    return html.Div(card(title, html.P(text), *back), className="page")


# Inlined into the index page (no asset files to package).
CSS = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f3f4f6; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); font-size: 14px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.nav { display: flex; align-items: center; gap: 18px; padding: 10px 24px; background: #111827; color: #f9fafb; }
.nav a { color: #d1d5db; font-weight: 500; }
.nav a.active, .nav a:hover { color: #fff; }
.brand { font-weight: 700; font-size: 17px; letter-spacing: .02em; color: #fff; }
.nav .study-name { color: #93c5fd; font-weight: 600; }
.nav .spacer { flex: 1; }
.nav-links { display: flex; align-items: center; gap: 18px; }
.nav .picker { width: 220px; color: var(--fg); }
.nav .live-dot { font-size: 12px; color: #9ca3af; }
.page { padding: 18px 24px; max-width: 1400px; margin: 0 auto; }
.row { display: flex; gap: 16px; flex-wrap: wrap; align-items: stretch; }
.grow { flex: 1 1 420px; min-width: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
        box-shadow: 0 1px 2px rgba(0,0,0,.04); margin-bottom: 16px; }
.card-title { margin: 0 0 10px 0; font-size: 14px; text-transform: uppercase; letter-spacing: .05em;
              color: var(--muted); font-weight: 600; }
h2 { margin: 4px 0 14px 0; font-size: 22px; }
.muted { color: var(--muted); }
.best-note { flex-basis: 100%; font-size: 13px; color: #92400e; }
.signed-in { margin-left: 12px; font-size: 13px; }
.lead { margin: 0 0 12px; padding: 8px 12px; background: #eff6ff; border-left: 3px solid var(--accent); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; color: #fff; font-size: 12px;
         font-weight: 600; line-height: 18px; }
.chip { display: inline-block; white-space: nowrap; padding: 1px 7px; margin: 1px 3px 1px 0; border-radius: 6px; background: #eef2ff;
        color: #3730a3; font-size: 12px; }
.chip.pin { background: #fef3c7; color: #92400e; }
table.data { border-collapse: collapse; width: 100%; }
table.data th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; padding: 6px 8px;
                border-bottom: 1px solid var(--line); position: sticky; top: 0; background: #fff; }
table.data td { padding: 6px 8px; border-bottom: 1px solid #f3f4f6; vertical-align: top; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.data tr:hover td { background: #f9fafb; }
table.data tr.best td { background: #f0fdf4; }
.scroll { max-height: 560px; overflow-y: auto; }
.stats { display: flex; gap: 22px; flex-wrap: wrap; }
.stat .value { font-size: 22px; font-weight: 700; }
.stat .label { font-size: 12px; color: var(--muted); }
.images { display: flex; gap: 16px; justify-content: center; }
.images figure { margin: 0; text-align: center; }
.images img, .placeholder { width: 256px; height: 256px; image-rendering: pixelated; border-radius: 8px;
                            border: 1px solid var(--line); background: #f9fafb; object-fit: contain; }
.placeholder { display: flex; align-items: center; justify-content: center; color: var(--muted); }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
.controls label.field { display: block; font-size: 12px; font-weight: 600; color: var(--muted);
                        margin: 12px 0 4px 0; text-transform: uppercase; letter-spacing: .04em; }
.controls .line { display: flex; gap: 8px; align-items: center; }
.controls .lr-value { font-size: 20px; font-weight: 700; font-variant-numeric: tabular-nums; min-width: 90px; }
.controls .steps .btn { padding: 3px 0; flex: 1 1 0; font-variant-numeric: tabular-nums; }
.controls .line .btn { flex: none; }
.field-error { color: #b91c1c; font-size: 13px; margin-top: 4px; }
.field-error:empty { display: none; }
.note-paused { color: #b45309; font-weight: 600; }
.note-kept { color: #047857; font-weight: 600; }
.held-banner { display: flex; align-items: center; gap: 14px; padding: 8px 24px; background: #fef3c7;
               color: #92400e; font-weight: 600; border-bottom: 1px solid #fcd34d; }
.held-status { color: #b91c1c; padding: 0 24px; font-size: 13px; }
.held-status:empty { display: none; }
.page-head { display: flex; align-items: center; gap: 12px; margin-bottom: 14px; }
.page-head h2 { margin: 4px 0 0 0; }
.page-head .spacer { flex: 1; }
.controls .line .dash-input-container, .controls .line input { max-width: 190px; }
.btn { border: 1px solid var(--line); background: #fff; border-radius: 7px; padding: 6px 11px; cursor: pointer;
       font-size: 13px; font-weight: 500; }
.btn:hover:not(:disabled) { background: #f3f4f6; }
.btn:disabled { opacity: .45; cursor: not-allowed; }
.btn.danger { color: #b91c1c; border-color: #fecaca; }
.btn.primary { color: #1d4ed8; border-color: #bfdbfe; }
.btn-row { display: flex; gap: 8px; flex-wrap: wrap; margin-top: 6px; }
.status-list { list-style: none; padding: 0; margin: 0; }
.status-list li { padding: 5px 0; border-bottom: 1px solid #f3f4f6; font-size: 13px; }
.status-list li .state { font-weight: 600; }
.wall { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 14px; }
.wall-cell { position: relative; }
.wall-pause { position: absolute; top: 16px; right: 16px; padding: 3px 9px; font-size: 12px; opacity: .92; }
.wall-card.paused { border-color: #fcd34d; }
.wall-card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px;
             display: block; color: var(--fg); }
.wall-card:hover { border-color: var(--accent); text-decoration: none; }
.wall-card img, .wall-card .placeholder { width: 100%; height: auto; aspect-ratio: 1; image-rendering: pixelated;
                                          border-radius: 6px; }
.wall-card.target { background: #f9fafb; }
.progress { height: 4px; background: var(--line); border-radius: 2px; margin-top: 6px; overflow: hidden; }
.progress > div { height: 100%; background: var(--accent); }
.wall-card .title { display: flex; justify-content: space-between; font-weight: 700; margin: 6px 0 2px 0; }
.wall-card .meta { font-size: 12px; color: var(--muted); }
.pin-row { display: flex; align-items: center; gap: 10px; padding: 4px 0; }
.chip.hint { background: #ecfdf5; color: #065f46; }
.explain { margin: 0 0 8px; font-size: 13px; }
.form-row { display: flex; gap: 8px; align-items: flex-end; flex-wrap: wrap; margin-top: 10px; }
.form-field { display: flex; flex-direction: column; gap: 3px; font-size: 12px; color: var(--muted); font-weight: 600; }
.form-field input { width: 100%; padding: 6px 8px; border: 1px solid #d1d5db; border-radius: 6px; font-size: 13px; }
.form-status { margin-top: 6px; font-size: 13px; min-height: 18px; }
.space-row { padding: 3px 0; font-variant-numeric: tabular-nums; }
.note-edited { color: #b45309; }
.find-lr { margin-top: 8px; }
.range-test-text { font-size: 13px; display: flex; flex-direction: column; gap: 3px; margin: 4px 0 8px; }
.card-head { display: flex; align-items: center; gap: 10px; margin-bottom: 10px; }
.card-head .card-title { margin: 0; flex: 1; }
.undo-status { font-size: 13px; }
.controls .pair { display: flex; gap: 10px; }
.fork-status { margin-top: 8px; font-size: 13px; }
.fork-status:empty, .forks:empty { display: none; }
.fork-made { color: #047857; font-weight: 600; }
.forks { margin-top: 8px; font-size: 13px; color: var(--muted); display: flex; flex-direction: column; gap: 3px; }
"""
