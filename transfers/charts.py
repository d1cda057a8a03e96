"""Chart geometry for server-side SVG: computed here, drawn by templates, no JavaScript.

Coordinates are whole numbers in the SVG's own viewBox units (so no locale ever formats
them), and the SVG scales to its container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

ROW, GAP = 22, 6


@dataclass
class Bar:
    label: str
    value: int
    x: int
    y: int
    width: int
    height: int
    css: str = ""

    @property
    def text_y(self) -> int:  # baseline of a label centred on a horizontal bar
        return self.y + self.height // 2 + 5

    @property
    def end_x(self) -> int:
        return self.x + self.width + 6


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    label_width: int = 0
    ticks: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    top: int = 0


def hbars(rows: list[tuple[str, int, str]], width: int = 520, label_width: int = 150) -> Chart:
    """One horizontal bar a row: (label, value, css class)."""
    top = max((value for _, value, _ in rows), default=0) or 1
    plot = width - label_width - 50  # the rest holds the value after the bar
    bars = [
        Bar(label, value, label_width, i * (ROW + GAP), round(plot * value / top), ROW, css)
        for i, (label, value, css) in enumerate(rows)
    ]
    return Chart(width, max(len(rows) * (ROW + GAP) - GAP, ROW), bars, label_width, top=top)


def columns(counts: dict[date, int], first: date, days: int, width: int = 620) -> Chart:
    """A column a day from ``first``, zero for days without any."""
    height, left, bottom, top_pad = 170, 34, 22, 8
    top = max(counts.values(), default=0) or 1
    plot_h = height - bottom - top_pad
    step = (width - left) / days
    chart = Chart(width, height, label_width=left, top=top)
    for i in range(days):
        day = first + timedelta(days=i)
        value = counts.get(day, 0)
        h = round(plot_h * value / top)
        chart.bars.append(
            Bar(
                day.isoformat(),
                value,
                round(left + i * step + 1),
                top_pad + plot_h - h,
                max(round(step) - 2, 1),
                h,
            )
        )
        if i % 7 == (days - 1) % 7:  # a label a week, the last day always labelled
            chart.ticks.append(
                {"x": round(left + i * step + step / 2), "y": height - 6, "text": f"{day:%d %b}"}
            )
    chart.rows = [  # the y axis: zero and the maximum
        {"y": top_pad + plot_h, "text": "0"},
        {"y": top_pad, "text": str(top)},
    ]
    return chart


def stacked(
    rows: list[tuple[str, list[tuple[str, int]]]], width: int = 720, label_width: int = 220
) -> Chart:
    """One bar a row, split into segments: (label, [(segment name, value), ...])."""
    top = max((sum(v for _, v in segments) for _, segments in rows), default=0) or 1
    plot = width - label_width - 50
    chart = Chart(width, max(len(rows) * (ROW + GAP) - GAP, ROW), label_width=label_width, top=top)
    for i, (label, segments) in enumerate(rows):
        y, x, parts = i * (ROW + GAP), label_width, []
        for name, value in segments:
            w = round(plot * value / top)
            if value:
                parts.append(Bar(f"{label}: {name}", value, x, y, w, ROW, name))
            x += w
        total = sum(v for _, v in segments)
        chart.rows.append(
            {"label": label, "y": y + ROW // 2 + 5, "parts": parts, "total": total, "end_x": x + 6}
        )
    return chart


def duration(delta: timedelta | None) -> str:
    """3 d 4 h, 2 h 5 min, 40 s."""
    if delta is None:
        return "—"
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"
