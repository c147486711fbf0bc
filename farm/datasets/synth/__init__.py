"""Synthetic training images, a room per job: the settings (`spec`), the draws of one image
(`draws`), pixel operations (`pixels`), templates and backgrounds (`assets`), one mark
(`marks`), the canvas (`canvas`), drawing and writing images (`render`), the contact sheet
(`sheet`), and synthesis that learns from the user's own labelled screenshots
(`fromscreens`).

The settings are imported with the package; the drawing rooms when one of their names is
first asked for, so that reading a recipe (sweeps, the board) does not load OpenCV.
`render` names the room (one image is drawn by `farm.datasets.synth.render.render`)."""
import importlib

from farm.datasets.synth.spec import (CANVAS_PRESETS, IMAGE_EXTS, PROCEDURAL_STYLES,
                                      VISIBLE_ALPHA, SampleRecord, SynthSpec)

_LAZY = {"load_assets": "assets", "load_template": "assets", "make_close_mark": "marks",
         "synthesize": "render", "yolo_line": "render", "contact_sheet": "sheet"}

__all__ = ["CANVAS_PRESETS", "IMAGE_EXTS", "PROCEDURAL_STYLES", "VISIBLE_ALPHA",
           "SampleRecord", "SynthSpec", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
