"""A grouped bar chart as a standalone SVG string, so benchmarks can draw their figures without a plotting library."""

from __future__ import annotations

from html import escape

_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
_WIDTH, _HEIGHT = 640, 360
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 40, 60


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= ``value`` (a readable axis maximum)."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value)))
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= step * power:
            return step * power
    return float(power)


def _frame(title: str, top_value: float) -> list[str]:
    """The opening of a chart: canvas, title, and the y axis's grid lines and labels up to ``top_value``."""
    plot_h = _HEIGHT - _TOP - _BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for tick in range(5):
        y = _TOP + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{top_value * tick / 4:g}</text>')
    return parts


def bar_chart_svg(title: str, groups: list[str], series: dict[str, list[float]]) -> str:
    """One cluster of bars per group, one bar per series (labelled with its value), a legend and a y axis."""
    top_value = _nice_ceiling(max((v for values in series.values() for v in values), default=1.0))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    cluster = plot_w / max(len(groups), 1)
    bar = cluster * 0.7 / max(len(series), 1)
    parts = _frame(title, top_value)
    for g, group in enumerate(groups):
        x0 = _LEFT + g * cluster + cluster * 0.15
        for s, (name, values) in enumerate(series.items()):
            if g >= len(values):
                continue
            height = plot_h * values[g] / top_value
            x, y = x0 + s * bar, _TOP + plot_h - height
            colour = _COLOURS[s % len(_COLOURS)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(name)}: {values[g]:.1f}</title></rect>"
            )
            parts.append(f'<text x="{x + bar * 0.45:.1f}" y="{y - 4:.1f}" text-anchor="middle">{values[g]:.0f}</text>')
        label_x = _LEFT + g * cluster + cluster / 2
        parts.append(f'<text x="{label_x:.1f}" y="{_TOP + plot_h + 20}" text-anchor="middle">{escape(group)}</text>')
    for s, name in enumerate(series):
        x = _LEFT + s * 140
        colour = _COLOURS[s % len(_COLOURS)]
        parts.append(f'<rect x="{x}" y="{_HEIGHT - 22}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="{_HEIGHT - 12}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def line_chart_svg(title: str, x_label: str, xs: list[float], series: dict[str, list[float]]) -> str:
    """One line per series over shared ``xs`` (e.g. seconds into a run), with a legend and both axes."""
    top_value = _nice_ceiling(max((v for values in series.values() for v in values), default=1.0))
    right = max(xs, default=1.0) or 1.0
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def point(x: float, y: float) -> str:
        return f"{_LEFT + plot_w * x / right:.1f},{_TOP + plot_h - plot_h * y / top_value:.1f}"

    parts = _frame(title, top_value)
    for tick in range(5):
        x = _LEFT + plot_w * tick / 4
        parts.append(f'<text x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{right * tick / 4:.0f}</text>')
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h + 32}" text-anchor="middle">{escape(x_label)}</text>'
    )
    for s, (name, values) in enumerate(series.items()):
        colour = _COLOURS[s % len(_COLOURS)]
        points = " ".join(point(x, y) for x, y in zip(xs, values, strict=False))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<rect x="{_LEFT + s * 150}" y="{_HEIGHT - 22}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{_LEFT + s * 150 + 18}" y="{_HEIGHT - 12}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
