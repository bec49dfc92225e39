"""The report as a standalone HTML file: the page's report section with its CSS inlined and the
charts as inline SVG — nothing loaded from anywhere."""

from __future__ import annotations

from tallygate.research.report import Report
from tallygate.web.render import templates

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccd;padding:.2rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.mismatch{background:#fde8e8}
.disclaimer{font-weight:600;border-left:4px solid #c80;padding:.3rem .7rem;background:#fff6e5}
figure{display:inline-block;margin:.5rem}figure svg{max-width:100%;height:auto}
pre.analysis{white-space:pre-wrap;font:inherit}
"""


def standalone(report: Report) -> str:
    return templates.env.get_template("research_report_file.html").render(
        report=report, style=STYLE
    )
