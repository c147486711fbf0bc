"""A figure as a display list in pixels, and its two renderings: SVG text and PNG bytes.

The models (runchart, overlay) decide everything; a renderer only translates shapes. The
SVG keeps the structure a page needs (groups with `data-*` attributes and a `<title>`
that a browser shows on hover); the PNG is the same shapes drawn by OpenCV (Hershey
fonts are ASCII only, so a few symbols are spelled out there).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator
from xml.sax.saxutils import escape, quoteattr

Point = tuple[float, float]

#: width of a character as a fraction of the font size: what layouts reserve for text
#: (sans-serif in a browser and OpenCV's Hershey simplex are both close to it)
CHAR_WIDTH = 0.6


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


@dataclass
class Shape:
    kind: str          # path | polygon | line | rect | circle | marker | text
    points: list[Point]
    stroke: str | None = None
    fill: str | None = None
    width: float = 1.0
    opacity: float = 1.0
    dash: tuple[float, float] | None = None
    text: str = ""
    size: float = 12.0
    anchor: str = "start"   # start | middle | end (text); the marker's shape
    bold: bool = False


@dataclass
class Group:
    shapes: list["Shape | Group"] = field(default_factory=list)
    cls: str = ""
    data: dict[str, object] = field(default_factory=dict)
    title: str = ""


class Figure:
    """Shapes in drawing order, optionally grouped (a series, a legend entry)."""

    def __init__(self, width: int, height: int, *, background: str = "#ffffff"):
        self.width, self.height, self.background = width, height, background
        self.root = Group()
        self._open = [self.root]
        self.attrs: dict[str, object] = {}   # data-* attributes of the SVG root
        self.style = ""                       # CSS inside the SVG (hover effects)

    def _add(self, shape: Shape) -> None:
        self._open[-1].shapes.append(shape)

    @contextmanager
    def group(self, cls: str = "", data: dict | None = None, title: str = "") -> Iterator[Group]:
        g = Group(cls=cls, data=dict(data or {}), title=title)
        self._open[-1].shapes.append(g)
        self._open.append(g)
        try:
            yield g
        finally:
            self._open.pop()

    # -- shapes -----------------------------------------------------------------------
    def path(self, points: list[Point], stroke: str, width: float = 1.5, *,
             dash=None, opacity: float = 1.0) -> None:
        if len(points) >= 2:
            self._add(Shape("path", list(points), stroke=stroke, width=width, dash=dash,
                            opacity=opacity))

    def polygon(self, points: list[Point], fill: str, opacity: float = 1.0, *,
                stroke: str | None = None) -> None:
        """A filled area; with `stroke`, outlined (a band of zero height still shows)."""
        if len(points) >= 3:
            self._add(Shape("polygon", list(points), fill=fill, stroke=stroke,
                            opacity=opacity))

    def line(self, x0: float, y0: float, x1: float, y1: float, stroke: str,
             width: float = 1.0, *, dash=None, opacity: float = 1.0) -> None:
        self._add(Shape("line", [(x0, y0), (x1, y1)], stroke=stroke, width=width, dash=dash,
                        opacity=opacity))

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str | None = None,
             stroke: str | None = None, width: float = 1.0, opacity: float = 1.0) -> None:
        self._add(Shape("rect", [(x, y), (x + w, y + h)], stroke=stroke, fill=fill,
                        width=width, opacity=opacity))

    def circle(self, x: float, y: float, r: float, fill: str, stroke: str | None = None
               ) -> None:
        self._add(Shape("circle", [(x, y)], fill=fill, stroke=stroke, width=r))

    def marker(self, shape: str, x: float, y: float, size: float, colour: str) -> None:
        """`shape`: up (a triangle pointing up), down, x (a cross) or diamond."""
        self._add(Shape("marker", [(x, y)], stroke=colour, fill=colour, size=size,
                        anchor=shape))

    def text(self, x: float, y: float, text: str, *, size: float = 12, colour: str = "#333",
             anchor: str = "start", bold: bool = False) -> None:
        """`y` is the baseline."""
        self._add(Shape("text", [(x, y)], fill=colour, text=text, size=size, anchor=anchor,
                        bold=bold))

    # -- renderings -------------------------------------------------------------------
    def to_svg(self) -> str:
        attrs = "".join(f" data-{k}={quoteattr(str(v))}" for k, v in self.attrs.items())
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} '
               f'{self.height}" width="{self.width}" height="{self.height}" '
               f'font-family="system-ui, sans-serif"{attrs}>']
        if self.style:
            out.append(f"<style>{escape(self.style)}</style>")
        out.append(f'<rect width="{self.width}" height="{self.height}" '
                   f'fill="{self.background}"/>')
        _svg_group(self.root, out)
        out.append("</svg>")
        return "".join(out)

    def to_image(self):
        """The figure as a BGR numpy array (OpenCV)."""
        import numpy as np
        img = np.full((self.height, self.width, 3), _bgr(self.background), np.uint8)
        _draw_group(img, self.root)
        return img

    def to_png(self) -> bytes:
        import cv2
        ok, png = cv2.imencode(".png", self.to_image())
        return png.tobytes()


# ---------------------------------------------------------------------------------------
# SVG


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _pts(points: list[Point]) -> str:
    return " ".join(f"{_n(x)},{_n(y)}" for x, y in points)


def _svg_group(g: Group, out: list[str]) -> None:
    for s in g.shapes:
        if isinstance(s, Group):
            attrs = f' class="{escape(s.cls)}"' if s.cls else ""
            attrs += "".join(f" data-{k}={quoteattr(str(v))}" for k, v in s.data.items())
            out.append(f"<g{attrs}>")
            if s.title:
                out.append(f"<title>{escape(s.title)}</title>")
            _svg_group(s, out)
            out.append("</g>")
        else:
            out.append(_svg_shape(s))


def _paint(s: Shape) -> str:
    attrs = f' stroke="{s.stroke}" stroke-width="{_n(s.width)}"' if s.stroke else ""
    attrs += f' fill="{s.fill}"' if s.fill else ' fill="none"'
    if s.dash:
        attrs += f' stroke-dasharray="{_n(s.dash[0])} {_n(s.dash[1])}"'
    if s.opacity < 1:
        attrs += f' opacity="{s.opacity:.2f}"'
    return attrs


def _svg_shape(s: Shape) -> str:
    (x, y), *_ = s.points
    if s.kind == "path":
        return (f'<polyline points="{_pts(s.points)}" stroke-linejoin="round" '
                f'stroke-linecap="round"{_paint(s)}/>')
    if s.kind == "polygon":
        return f'<polygon points="{_pts(s.points)}"{_paint(s)}/>'
    if s.kind == "line":
        (x1, y1) = s.points[1]
        return f'<line x1="{_n(x)}" y1="{_n(y)}" x2="{_n(x1)}" y2="{_n(y1)}"{_paint(s)}/>'
    if s.kind == "rect":
        (x1, y1) = s.points[1]
        return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(x1 - x)}" height="{_n(y1 - y)}"'
                f'{_paint(s)}/>')
    if s.kind == "circle":
        stroke = f' stroke="{s.stroke}"' if s.stroke else ""
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(s.width)}" fill="{s.fill}"{stroke}/>'
    if s.kind == "marker":
        if s.anchor == "x":
            d = s.size / 2
            return (f'<path d="M{_n(x - d)} {_n(y - d)}L{_n(x + d)} {_n(y + d)}M{_n(x - d)} '
                    f'{_n(y + d)}L{_n(x + d)} {_n(y - d)}" stroke="{s.stroke}" '
                    f'stroke-width="2" stroke-linecap="round"/>')
        return f'<polygon points="{_pts(_marker_points(s))}" fill="{s.fill}"/>'
    anchor = {"start": "start", "middle": "middle", "end": "end"}[s.anchor]
    weight = ' font-weight="bold"' if s.bold else ""
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(s.size)}" fill="{s.fill}" '
            f'text-anchor="{anchor}"{weight}>{escape(s.text)}</text>')


def _marker_points(s: Shape) -> list[Point]:
    (x, y), d = s.points[0], s.size / 2
    if s.anchor == "up":
        return [(x - d, y + d), (x + d, y + d), (x, y - d)]
    if s.anchor == "down":
        return [(x - d, y - d), (x + d, y - d), (x, y + d)]
    return [(x, y - d), (x + d, y), (x, y + d), (x - d, y)]  # diamond


# ---------------------------------------------------------------------------------------
# PNG (OpenCV)

#: Hershey fonts know ASCII only: what the PNG writes instead of these characters
_ASCII = str.maketrans({"→": "->", "·": "-", "×": "x", "≥": ">=", "≤": "<=", "…": "...",
                        "–": "-", "—": "-", "μ": "u", "✕": "x", "▲": "^", "◆": "*"})
#: OpenCV's font scale per pixel of font size (cap height of Hershey simplex ~ 0.7 size)
_CV_SCALE = 0.034


def _bgr(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    r, g, b = int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    return b, g, r


def _draw_group(img, g: Group) -> None:
    for s in g.shapes:
        if isinstance(s, Group):
            _draw_group(img, s)
        else:
            _draw_shape(img, s)


def _ipts(points: list[Point]):
    import numpy as np
    return np.array([[round(x), round(y)] for x, y in points], np.int32)


def _draw_shape(img, s: Shape) -> None:
    import cv2
    if s.opacity < 1:  # drawn on a copy, blended in
        layer = img.copy()
        _draw_opaque(cv2, layer, s)
        cv2.addWeighted(layer, s.opacity, img, 1 - s.opacity, 0, dst=img)
    else:
        _draw_opaque(cv2, img, s)


def _draw_opaque(cv2, img, s: Shape) -> None:
    aa = cv2.LINE_AA
    width = max(1, round(s.width))
    if s.kind in ("path", "line"):
        if s.dash:
            for a, b in _dashes(s.points, s.dash):
                cv2.line(img, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])),
                         _bgr(s.stroke), width, aa)
        else:
            cv2.polylines(img, [_ipts(s.points)], False, _bgr(s.stroke), width, aa)
    elif s.kind == "polygon":
        cv2.fillPoly(img, [_ipts(s.points)], _bgr(s.fill), aa)
        if s.stroke:
            cv2.polylines(img, [_ipts(s.points)], True, _bgr(s.stroke), width, aa)
    elif s.kind == "rect":
        (x0, y0), (x1, y1) = s.points
        if s.fill:
            cv2.rectangle(img, (round(x0), round(y0)), (round(x1), round(y1)), _bgr(s.fill), -1)
        if s.stroke:
            cv2.rectangle(img, (round(x0), round(y0)), (round(x1), round(y1)),
                          _bgr(s.stroke), width)
    elif s.kind == "circle":
        (x, y) = s.points[0]
        cv2.circle(img, (round(x), round(y)), round(s.width), _bgr(s.fill), -1, aa)
        if s.stroke:
            cv2.circle(img, (round(x), round(y)), round(s.width), _bgr(s.stroke), 1, aa)
    elif s.kind == "marker":
        (x, y), d = s.points[0], s.size / 2
        if s.anchor == "x":
            for (ax, ay), (bx, by) in (((x - d, y - d), (x + d, y + d)),
                                       ((x - d, y + d), (x + d, y - d))):
                cv2.line(img, (round(ax), round(ay)), (round(bx), round(by)), _bgr(s.stroke),
                         2, aa)
        else:
            cv2.fillPoly(img, [_ipts(_marker_points(s))], _bgr(s.fill), aa)
    elif s.kind == "text":
        text = s.text.translate(_ASCII).encode("ascii", "replace").decode()
        scale = s.size * _CV_SCALE
        thickness = 2 if s.bold and s.size >= 14 else 1  # thick small text smears
        w = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
        x, y = s.points[0]
        x -= {"start": 0, "middle": w / 2, "end": w}[s.anchor]
        cv2.putText(img, text, (round(x), round(y)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    _bgr(s.fill), thickness, aa)


def _dashes(points: list[Point], dash: tuple[float, float]):
    """The drawn pieces of a dashed polyline."""
    on, off = dash
    period, phase = on + off, 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while t < length:
            in_period = (phase + t) % period
            if in_period < on:
                step = min(on - in_period, length - t)
                a, b = t / length, (t + step) / length
                yield ((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                       (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b))
            else:
                step = min(period - in_period, length - t)
            t += step
        phase += length
