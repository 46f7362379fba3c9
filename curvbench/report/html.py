"""The report as one self-contained HTML page: the tables and the figures inlined as base64 PNGs."""

from __future__ import annotations

import base64

from curvbench.report import claims
from curvbench.report.tables import CLAIMS_NOTE, SEARCH_COLUMNS, search_cells, table_body


def html_page(rows, figures, n, found=(), captions=None, notes=(), search_note="", generated="", verdicts=None) -> str:
    import html

    def table_html(head, body) -> str:
        return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>" for cells in body)
                + "</table>")

    captions = captions or {}
    parts = [table_html(*table_body(rows))]
    if found:
        parts.append(f"<h2>Searches</h2><p>{html.escape(search_note)}</p>")
        parts.append(table_html(SEARCH_COLUMNS, [search_cells(s) for s in found]))
    if verdicts is not None:
        parts.append(f"<h2>Claims</h2><p>{html.escape(CLAIMS_NOTE)}</p>")
        parts.append(table_html(claims.COLUMNS, [claims.cells(v) for v in verdicts]))
    imgs = [f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
            f'alt="{html.escape(captions.get(p.name, p.stem))}"><figcaption>{html.escape(captions.get(p.name, p.stem))}'
            f'</figcaption></figure>' for p in figures]
    intro = "".join(f"<p>{html.escape(t)}</p>" for t in notes)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2),th:nth-child(2)"
             "{text-align:left}figure{display:inline-block;margin:1em;vertical-align:top;max-width:46%}"
             "figure img{max-width:100%}figcaption{font-size:0.85em;color:#444}p{max-width:60em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>curvbench report</title><style>{style}</style>"
            f"</head><body><h1>curvbench report</h1><p>{n} runs; generated {html.escape(generated)}.</p>{intro}"
            f"{''.join(parts)}{''.join(imgs)}</body></html>\n")
