"""What synthesis draws, as settings (SynthSpec), and what it wrote (SampleRecord)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from farm.errors import BadInput

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CANVAS_PRESETS = {"tile": (416, 416), "screen": (1080, 2400)}
PROCEDURAL_STYLES = ("circle", "ring", "square", "plain")
VISIBLE_ALPHA = 128  # a pixel counts as part of the mark from half opacity up


@dataclass
class SynthSpec:
    """Everything that decides what synthesis draws; JSON-friendly (see to_dict/from_dict).

    Sizes are pixels on the canvas (true scale): `mark_px` is the longer side of the mark
    before rotation. Probabilities are in [0, 1]; "±" ranges are symmetric around zero.
    """

    templates: list[str] = field(default_factory=list)  # PNGs with alpha (or colour_key)
    colour_key: tuple[int, int, int] | None = None  # RGB of a template's flat background
    key_tolerance: int = 40  # colour distance still counted as background
    procedural: str = "mixed"  # when no templates: circle | ring | square | plain | mixed
    backgrounds: list[str] = field(default_factory=list)  # files or folders; none: generated UI
    canvas: tuple[int, int] = (416, 416)  # width, height
    mark_px: tuple[float, float] = (24, 48)
    marks: tuple[int, int] = (1, 3)  # marks per image (non-negative images)
    negatives: float = 0.1  # fraction of images with no mark at all
    rotation: float = 10.0  # ± degrees
    aspect: float = 0.1  # ± relative stretch of width against height
    shear: float = 0.05  # ± shear factor
    flip: str = "hv"  # "", "h", "v" or "hv": mirrorings the mark allows ("×" allows both)
    brightness: float = 0.15  # ± fraction of full scale: whole image on file backgrounds,
    contrast: float = 0.2  # ± relative      the marks' colours on generated canvases
    hue: float = 10.0  # ± degrees, marks only
    blur: float = 0.3  # probability of a light Gaussian blur
    noise: float = 0.3  # probability of additive noise
    noise_level: int = 8  # ± grey levels of that noise
    jpeg_quality: tuple[int, int] = (70, 95)
    occlusion: float = 0.15  # probability that a panel partly covers a mark
    distractors: tuple[int, int] = (0, 3)  # plus signs, circles, ticks, ... per image
    min_visible: float = 0.5  # label a mark only when this much of it is visible
    class_names: list[str] = field(default_factory=lambda: ["close"])
    template_classes: list[int] | None = None  # class of each template (default 0)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, *, path: str | None = None) -> "SynthSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown synthesis setting(s): {', '.join(unknown)}", path=path,
                           hint=f"valid settings: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) and k not in _LIST_FIELDS else v
                  for k, v in data.items()}
        spec = cls(**values)
        try:
            spec.check(path=path)
        except (TypeError, ValueError) as e:
            raise BadInput(f"a synthesis setting has the wrong type: {e}", path=path,
                           hint="numbers for sizes and probabilities, [low, high] for ranges"
                           ) from None
        return spec

    def check(self, *, path: str | None = None) -> None:
        """Refuse settings that would make wrong data silently."""
        def bad(reason: str, hint: str) -> None:
            raise BadInput(reason, path=path, hint=hint)

        w, h = self.canvas
        if w < 32 or h < 32:
            bad(f"canvas {w}x{h} is too small", "use at least 32x32, e.g. 416x416 or 1080x2400")
        lo, hi = self.mark_px
        if not 4 <= lo <= hi:
            bad(f"mark_px {lo}-{hi} is not a range of at least 4 px", "e.g. mark_px: [24, 48]")
        if hi * (1 + self.aspect) > min(w, h):
            bad(f"marks of up to {hi} px do not fit on a {w}x{h} canvas",
                "lower mark_px or use a larger canvas")
        for name in ("negatives", "blur", "noise", "occlusion", "min_visible"):
            if not 0 <= getattr(self, name) <= 1:
                bad(f"{name}={getattr(self, name)} is not a probability", "use a value in [0, 1]")
        for name in ("marks", "distractors"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                bad(f"{name}={a}-{b} is not a range", f"e.g. {name}: [1, 3]")
        q_lo, q_hi = self.jpeg_quality
        if not 1 <= q_lo <= q_hi <= 100:
            bad(f"jpeg_quality {q_lo}-{q_hi} is not within 1-100", "e.g. jpeg_quality: [70, 95]")
        if not 0 <= self.rotation < 90 or not 0 <= self.aspect < 1 or not 0 <= self.shear < 1:
            bad("rotation must be in [0, 90) degrees, aspect and shear in [0, 1)",
                "small values keep the mark recognisable (ds7: over-transformed marks hurt)")
        if set(self.flip) - {"h", "v"}:
            bad(f"flip={self.flip!r} is not one of '', 'h', 'v', 'hv'",
                "use 'hv' for a symmetric ×")
        if self.procedural not in PROCEDURAL_STYLES + ("mixed",):
            bad(f"procedural={self.procedural!r} is unknown",
                f"use one of {', '.join(PROCEDURAL_STYLES)} or mixed")
        if not self.class_names:
            bad("class_names is empty", "name at least one class, e.g. [close]")
        if self.template_classes is not None:
            if len(self.template_classes) != len(self.templates):
                bad("template_classes needs one class id per template",
                    "list as many ids as templates, or leave it out for class 0")
            if any(not 0 <= c < len(self.class_names) for c in self.template_classes):
                bad("a template class id is outside class_names", "use ids 0..classes-1")


_LIST_FIELDS = {"templates", "backgrounds", "class_names", "template_classes"}


@dataclass(frozen=True)
class SampleRecord:
    """One written image: where, its size, and the boxes its label file holds.

    Boxes are (class, x0, y0, x1, y1) in canvas pixels, x1/y1 exclusive.
    """

    index: int
    image: str
    label: str
    width: int
    height: int
    boxes: tuple[tuple[int, int, int, int, int], ...]
