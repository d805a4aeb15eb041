"""Charts drawn on the server as SVG: no script, no library, readable on a phone (they scale to the width).

``heart_rate_chart``: a patient's heart rate over time, each recording's answer as the point's colour
(a strip below holds recordings without a heart rate). ``exams_per_day``: stacked bars of exams per day
by answer, one small chart per clinic and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = {"normal": "#1e7b45", "abnormal": "#b3261e", "unsure": "#9a6700"}
OTHER = "#5d6b7a"
ORDER = ("abnormal", "unsure", "normal")  # stacking order, bottom first


@dataclass(frozen=True)
class Point:
    at: datetime
    heart_rate_bpm: float | None
    label: str
    title: str  # the tooltip: time and the answer in words


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "axis") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{cls}">{escape(text)}</text>'


def _local(at: datetime) -> datetime:
    return timezone.localtime(at) if timezone.is_aware(at) else at


def heart_rate_chart(points: Sequence[Point], *, width: int = 720, height: int = 260) -> SafeString:
    """Heart rate (bpm) against time; colour = the recording's answer."""
    if not points:
        return mark_safe("")
    left, right, top, strip = 48, 16, 30, 34
    plot_h = height - top - strip - 28
    times = [p.at.timestamp() for p in points]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 3600:
        t0, t1 = t0 - 43200, t1 + 43200  # one visit: half a day either side
    rates = [p.heart_rate_bpm for p in points if p.heart_rate_bpm is not None]
    lo = min([50.0, *rates]) - 5
    hi = max([120.0, *rates]) + 5

    def x(t: float) -> float:
        return left + (width - left - right) * (t - t0) / (t1 - t0)

    def y(bpm: float) -> float:
        return top + plot_h * (1 - (bpm - lo) / (hi - lo))

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="hr-title" '
        f'preserveAspectRatio="xMidYMid meet" data-chart="heart-rate">',
        '<title id="hr-title">Heart rate and result over time</title>',
    ]
    for bpm in range(int(lo // 20 * 20 + 20), int(hi) + 1, 20):
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(bpm):.1f}" y2="{y(bpm):.1f}" class="grid"/>')
        out.append(_text(left - 6, y(bpm) + 4, f"{bpm}", "end"))
    out.append(_text(4, 14, "heart rate (bpm)"))
    ticks = 4 if t1 - t0 > 86400 * 2 else 2
    for i in range(ticks + 1):
        t = t0 + (t1 - t0) * i / ticks
        label = date_format(_local(datetime.fromtimestamp(t, tz=points[0].at.tzinfo)), "Y-m-d")
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        out.append(_text(x(t), height - 6, label, anchor))
    with_rate = sorted((p for p in points if p.heart_rate_bpm is not None), key=lambda p: p.at)
    if len(with_rate) > 1:
        path = " ".join(f"{x(p.at.timestamp()):.1f},{y(p.heart_rate_bpm or 0):.1f}" for p in with_rate)
        out.append(f'<polyline points="{path}" class="hr-line"/>')
    strip_y = top + plot_h + 18
    out.append(_text(4, strip_y + 4, "result"))
    for p in sorted(points, key=lambda p: p.at):
        colour = COLOURS.get(p.label, OTHER)
        cx = x(p.at.timestamp())
        title = f"<title>{escape(p.title)}</title>"
        if p.heart_rate_bpm is not None:
            out.append(
                f'<circle cx="{cx:.1f}" cy="{y(p.heart_rate_bpm):.1f}" r="6" fill="{colour}" '
                f'class="pt pt-{escape(p.label)}">{title}</circle>'
            )
        out.append(
            f'<rect x="{cx - 5:.1f}" y="{strip_y - 6:.1f}" width="10" height="12" rx="2" fill="{colour}" '
            f'class="mark mark-{escape(p.label)}">{title}</rect>'
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every text above is escaped


@dataclass(frozen=True)
class DayCounts:
    clinic: str
    device: str
    counts: dict[date, dict[str, int]]  # day -> label -> exams


def exams_per_day(groups: Sequence[DayCounts], *, days: int, today: date) -> list[tuple[str, SafeString]]:
    """One stacked-bar chart per (clinic, device): exams per day over the last ``days`` days, by answer."""
    first = today - timedelta(days=days - 1)
    out: list[tuple[str, SafeString]] = []
    for group in groups:
        width, height, left, bottom, top = 360, 120, 26, 18, 8
        peak = max([1, *(sum(c.values()) for c in group.counts.values())])
        slot = (width - left - 4) / days
        plot_h = height - bottom - top
        parts = [
            f'<svg class="chart small" viewBox="0 0 {width} {height}" role="img" data-chart="exams-per-day" '
            f'data-device="{escape(group.device)}"><title>Exams per day by result, {escape(group.clinic)}, '
            f"{escape(group.device)}</title>",
            f'<line x1="{left}" x2="{width - 4}" y1="{top + plot_h}" y2="{top + plot_h}" class="grid"/>',
            _text(left - 4, top + 8, str(peak), "end"),
            _text(left - 4, top + plot_h, "0", "end"),
        ]
        for i in range(days):
            day = first + timedelta(days=i)
            counts = group.counts.get(day, {})
            y = float(top + plot_h)
            labels = [*ORDER, *sorted(set(counts) - set(ORDER))]
            for label in labels:
                n = counts.get(label, 0)
                if not n:
                    continue
                h = plot_h * n / peak
                y -= h
                parts.append(
                    f'<rect x="{left + i * slot + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="{COLOURS.get(label, OTHER)}" class="bar bar-{escape(label)}" '
                    f'data-day="{day.isoformat()}" data-n="{n}"><title>{day.isoformat()}: {n} {escape(label)}'
                    "</title></rect>"
                )
        parts.append(_text(left, height - 4, first.strftime("%m-%d")))
        parts.append(_text(width - 4, height - 4, today.strftime("%m-%d"), "end"))
        parts.append("</svg>")
        out.append((f"{group.clinic} · {group.device}", mark_safe("".join(parts))))  # noqa: S308 - escaped
    return out
