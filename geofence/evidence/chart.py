"""``geofence audit summary --chart OUT.svg``: one picture an auditor can read at a glance.

Decisions per hour as stacked bars (allowed, report-mode would-be denials, denials), and the top countries and
reasons beside them. SVG rather than PNG: it needs no plotting library, keeps its text searchable and readable
at any size, and opens in every browser.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any, Final

from .records import read_records

__all__ = ["write_chart"]

_COLOURS: Final = {"allow": "#2e7d32", "would_deny": "#f9a825", "deny": "#c62828"}
_LABELS: Final = {"allow": "allowed", "would_deny": "would be denied (report mode)", "deny": "denied"}
_WIDTH, _HEIGHT, _LEFT, _TOP, _PLOT_H = 960, 420, 60, 50, 260


def write_chart(files: Iterable[str], out: Path) -> int:
    """Write the chart for the records in *files* to *out*; the number of records drawn."""
    per_hour: dict[str, Counter[str]] = {}
    countries: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    total = 0
    for _, _, record in read_records(files):
        outcome = str(record.get("outcome"))
        hour = str(record.get("time", ""))[:13] + ":00Z"
        per_hour.setdefault(hour, Counter())[outcome if outcome in _COLOURS else "deny"] += 1
        location = (record.get("facts") or {}).get("location") or {}
        countries[str(location.get("country") or "-")] += 1
        for reason in record.get("reasons") or []:
            if isinstance(reason, dict) and reason.get("code") not in ("report_only", "exempt"):
                reasons[str(reason.get("code"))] += 1
        total += 1
    out.write_text(_svg(per_hour, countries, reasons, total), encoding="utf-8")
    return total


def _svg(per_hour: dict[str, Counter[str]], countries: Counter[str], reasons: Counter[str], total: int) -> str:
    hours = sorted(per_hour)
    peak = max((sum(c.values()) for c in per_hour.values()), default=1)
    plot_w = _WIDTH - _LEFT - 300
    bar_w = plot_w / max(len(hours), 1)
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        'font-family="sans-serif" font-size="12">',
        "<title>geofence audit summary</title>",
        f"<desc>{total} decisions, {len(hours)} hours, by outcome per hour; top countries and reasons</desc>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_LEFT}" y="28" font-size="16" font-weight="bold">{total} audited decisions by hour (UTC)</text>',
        f'<line x1="{_LEFT}" y1="{_TOP + _PLOT_H}" x2="{_LEFT + plot_w}" y2="{_TOP + _PLOT_H}" stroke="#333"/>',
        f'<text x="{_LEFT - 8}" y="{_TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{_LEFT - 8}" y="{_TOP + _PLOT_H}" text-anchor="end">0</text>',
    ]
    for i, hour in enumerate(hours):
        x, base = _LEFT + i * bar_w, float(_TOP + _PLOT_H)
        for outcome, colour in _COLOURS.items():
            height = per_hour[hour][outcome] / peak * _PLOT_H
            if height:
                base -= height
                parts.append(
                    f'<rect x="{x + 1:.1f}" y="{base:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{height:.1f}" '
                    f'fill="{colour}"><title>{escape(hour)}: {per_hour[hour][outcome]} {_LABELS[outcome]}</title>'
                    "</rect>"
                )
        if len(hours) <= 24 or i % max(len(hours) // 12, 1) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{_TOP + _PLOT_H + 16}" text-anchor="end" '
                f'transform="rotate(-45 {x + bar_w / 2:.1f} {_TOP + _PLOT_H + 16})">{escape(hour[5:16])}</text>'
            )
    for i, (outcome, colour) in enumerate(_COLOURS.items()):
        y = _TOP + _PLOT_H + 70 + i * 18
        parts.append(f'<rect x="{_LEFT}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{_LEFT + 18}" y="{y}">{_LABELS[outcome]}</text>')
    parts += _table("Top countries", countries, _WIDTH - 280, _TOP)
    parts += _table("Top denial reasons", reasons, _WIDTH - 280, _TOP + 170)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _table(title: str, counts: Counter[Any], x: int, y: int) -> list[str]:
    rows = [f'<text x="{x}" y="{y}" font-weight="bold">{escape(title)}</text>']
    for i, (name, count) in enumerate(counts.most_common(8)):
        rows.append(f'<text x="{x}" y="{y + 18 * (i + 1)}">{escape(str(name))}</text>')
        rows.append(f'<text x="{x + 240}" y="{y + 18 * (i + 1)}" text-anchor="end">{count}</text>')
    return rows
