"""Dataset lint: refuse a dataset darknet would misread, before a CPU second is spent on it.

The seed lost days to lists and labels darknet accepts without a word: a `.txt` path and a
blank line in valid.txt ("Cannot load image", a meaningless mAP), class ids outside
0..classes-1 (heap corruption in the mAP code, `realloc(): invalid old size`), labels
where darknet does not look for them. Each rule here names the file, the line, what
darknet does with it, and the fix.

The farm runs this before every training attempt and before packaging, so it must be
fast: files are read with os.open/os.read (no Python file objects), images are checked by
their first and last bytes only (magic number, JPEG end marker FFD9, PNG IEND chunk), and
label lines are split with bytes.split(), not regular expressions.

A room per job: obj.data (`objdata`), one list (`lists`), label files (`labels`), where
labels are looked for (`labelpaths`), images (`images`), the report (`report`), and the
boxes calc_anchors clusters (`boxes`).
"""
from farm.datasets.lint.boxes import box_sizes
from farm.datasets.lint.images import IMAGE_EXTENSIONS, image_problem
from farm.datasets.lint.labelpaths import label_path
from farm.datasets.lint.lists import MIN_IMAGES_PER_CLASS, MIN_OBJECT_PX, lint_list
from farm.datasets.lint.objdata import OBJ_DATA_KEYS, lint_obj_data, train_list
from farm.datasets.lint.report import MAX_FINDINGS_PER_RULE, LintReport

__all__ = ["IMAGE_EXTENSIONS", "MAX_FINDINGS_PER_RULE", "MIN_IMAGES_PER_CLASS",
           "MIN_OBJECT_PX", "OBJ_DATA_KEYS", "LintReport", "box_sizes", "image_problem",
           "label_path", "lint_list", "lint_obj_data", "train_list"]
