"""A picture of one meter's daily consumption: import and export per local day as a bar chart (PNG).

Drawn with matplotlib's Agg backend (no display on a substation box). Days with missing load-profile
intervals are hatched and labelled with how many are missing; days with no data at all get a marker,
so a gap is never mistaken for zero consumption. The day still in progress (the meter's newest data
lies inside it and the day is not over: ``daily_figures``) is labelled so, and hatched only if
intervals that have already ended are missing. Every day of the requested range has a slot.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files only

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from gateway.projections.views import DailyFigure, day_bounds  # noqa: E402

IMPORT_COLOUR = "#1f77b4"
EXPORT_COLOUR = "#ff7f0e"


class ReportError(Exception):
    """A report cannot be drawn as asked (empty range, unwritable file)."""


def _kwh(value: Decimal | None) -> float:
    return 0.0 if value is None else float(value / 1000)


def _incomplete(figure: DailyFigure) -> bool:
    # A day in progress is not finished, but only the intervals that should be there and are not
    # make it incomplete.
    return bool(figure.intervals_missing) if figure.in_progress else not figure.complete


def _day_label(day: date, timezone_name: str | None) -> str:
    label = day.strftime("%a %d %b")
    if timezone_name:
        start, end = day_bounds(day, ZoneInfo(timezone_name))
        hours = round((end - start).total_seconds() / 3600)
        if hours != 24:
            label += f" ({hours} h)"  # a DST change day: its bar is not comparable as it is
    return label


def draw_daily_consumption(
    figures: Sequence[DailyFigure], meter_id: str, first: date, last: date, out: Path,
    timezone_name: str | None = None,
) -> Path:
    """Write the chart of ``figures`` (one meter) for the days ``first``..``last`` to ``out``."""
    if last < first:
        raise ReportError(f"the range ends ({last}) before it starts ({first})")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    by_day = {f.day: f for f in figures if f.meter_id == meter_id}
    positions = list(range(len(days)))
    width = 0.4

    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(days) + 2.5), 5.2), dpi=120)
    try:
        top = max([_kwh(f.import_wh) for f in by_day.values()]
                  + [_kwh(f.export_wh) for f in by_day.values()] + [0.001])
        for offset, colour, attr in ((-width / 2, IMPORT_COLOUR, "import_wh"),
                                     (width / 2, EXPORT_COLOUR, "export_wh")):
            heights = [_kwh(getattr(by_day[d], attr)) if d in by_day else 0.0 for d in days]
            hatches = ["//" if d in by_day and _incomplete(by_day[d]) else "" for d in days]
            bars = ax.bar([p + offset for p in positions], heights, width, color=colour,
                          edgecolor="black", linewidth=0.5)
            for bar, hatch, day in zip(bars, hatches, days):
                bar.set_hatch(hatch)
                if hatch:
                    bar.set_alpha(0.6)
                if day in by_day and by_day[day].in_progress:
                    bar.set_linestyle("--")  # so far, not the day's total
        for position, day in zip(positions, days):
            figure = by_day.get(day)
            if figure is None or (figure.import_wh is None and figure.export_wh is None):
                ax.text(position, top * 0.02, "no data", ha="center", va="bottom", rotation=90,
                        fontsize=8, color="dimgrey")
            elif figure.in_progress:
                height = max(_kwh(figure.import_wh), _kwh(figure.export_wh))
                label = "in progress" + (f"\n{figure.intervals_missing}/{figure.intervals_expected}\nmissing"
                                         if figure.intervals_missing else "")
                ax.text(position, height + top * 0.02, label, ha="center", va="bottom", fontsize=7,
                        color="firebrick" if figure.intervals_missing else "dimgrey")
            elif figure.intervals_missing or not figure.complete and figure.source == "intervals":
                height = max(_kwh(figure.import_wh), _kwh(figure.export_wh))
                # A day with every interval but no value at its midnight lacks its first interval.
                label = (f"{figure.intervals_missing}/{figure.intervals_expected}\nmissing"
                         if figure.intervals_missing else "no start\nvalue")
                ax.text(position, height + top * 0.02, label,
                        ha="center", va="bottom", fontsize=7, color="firebrick")
            elif figure.source == "registers":
                ax.text(position, max(_kwh(figure.import_wh), _kwh(figure.export_wh)) + top * 0.02,
                        "registers", ha="center", va="bottom", fontsize=7, color="dimgrey")
        ax.set_ylim(0, top * 1.25)
        ax.set_xticks(positions)
        ax.set_xticklabels([_day_label(d, timezone_name) for d in days], rotation=45, ha="right")
        zone = f" ({timezone_name})" if timezone_name else ""
        ax.set_xlabel(f"Local day{zone}")
        ax.set_ylabel("Energy per day (kWh)")
        total_import = sum((f.import_wh or Decimal(0) for d, f in by_day.items() if first <= d <= last),
                           Decimal(0))
        total_export = sum((f.export_wh or Decimal(0) for d, f in by_day.items() if first <= d <= last),
                           Decimal(0))
        ax.set_title(f"Daily consumption, meter {meter_id}, {first.isoformat()} to {last.isoformat()}\n"
                     f"total import {_kwh(total_import):.3f} kWh, export {_kwh(total_export):.3f} kWh",
                     fontsize=11)
        ax.grid(axis="y", linestyle=":", linewidth=0.6)
        ax.set_axisbelow(True)
        legend = [
            Patch(facecolor=IMPORT_COLOUR, edgecolor="black", label="Import (kWh)"),
            Patch(facecolor=EXPORT_COLOUR, edgecolor="black", label="Export (kWh)"),
            Patch(facecolor="white", edgecolor="black", hatch="//",
                  label="Incomplete day (intervals missing)"),
        ]
        if any(by_day[d].in_progress for d in days if d in by_day):
            legend.append(Patch(facecolor="white", edgecolor="black", linestyle="--",
                                label="Day in progress (so far)"))
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        try:
            fig.savefig(out, format="png")
        except OSError as exc:
            raise ReportError(f"cannot write {out}: {exc}") from exc
    finally:
        plt.close(fig)
    return out
