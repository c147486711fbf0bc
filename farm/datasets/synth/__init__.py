"""Synthetic training images, a room per job: the settings (`spec`), the draws of one image
(`draws`), pixel operations (`pixels`), templates and backgrounds (`assets`), one mark
(`marks`), the canvas (`canvas`), drawing and writing images (`render`), the contact sheet
(`sheet`), and synthesis that learns from the user's own labelled screenshots
(`fromscreens`)."""
from farm.datasets.synth.assets import load_assets, load_template
from farm.datasets.synth.marks import make_close_mark
from farm.datasets.synth.render import render, synthesize, yolo_line
from farm.datasets.synth.sheet import contact_sheet
from farm.datasets.synth.spec import (CANVAS_PRESETS, IMAGE_EXTS, PROCEDURAL_STYLES,
                                      VISIBLE_ALPHA, SampleRecord, SynthSpec)

__all__ = ["CANVAS_PRESETS", "IMAGE_EXTS", "PROCEDURAL_STYLES", "VISIBLE_ALPHA",
           "SampleRecord", "SynthSpec", "contact_sheet", "load_assets", "load_template",
           "make_close_mark", "render", "synthesize", "yolo_line"]
