"""LogParser on the real darknet logs in ../shared and on synthetic hank-ai (H) output.

The expected numbers were read off the logs by hand; the H text is built from the
format strings quoted in darknet.md and the hank-ai sources.
"""
from __future__ import annotations

import math
import random
from functools import lru_cache
from pathlib import Path

import pytest

from farm.darknet.events import (CheckpointSaved, ClassAP, DarknetError, ErrorKind,
                                 Iteration, MapResult, MapSummary)
from farm.darknet.logparse import LogParser, parse_file, parse_text, strip_ansi

LOGS = Path(__file__).resolve().parents[2].parent / "shared" / "darknet" / "logs"
H100 = "alexeyab-gpu-h100-train-map.log"
# Without ../shared these names still parametrize the log tests, which then skip.
ALL_LOGS = sorted(p.name for p in LOGS.glob("*.log")) or [H100, "alexeyab-missing-cfg.log"]


def log_path(name: str) -> Path:
    if not LOGS.is_dir():
        pytest.skip(f"darknet logs not found: {LOGS} (the shared folder is absent)")
    return LOGS / name


@lru_cache(maxsize=None)
def _parsed(name: str) -> tuple:
    return tuple(parse_file(log_path(name)))


def events(name: str) -> list:
    return list(_parsed(name))


def of(kind: type, evs: list) -> list:
    return [e for e in evs if isinstance(e, kind)]


def feed_in_chunks(data: bytes, sizes) -> tuple[list, int]:
    parser, out, pos = LogParser(), [], 0
    while pos < len(data):
        n = next(sizes)
        out += parser.feed(data[pos:pos + n])
        pos += n
    return out + parser.close(), parser.lines


def same(a, b) -> bool:
    """Event lists equal, nan == nan (dataclass equality says nan != nan)."""
    return len(a) == len(b) and all(x == y or repr(x) == repr(y) for x, y in zip(a, b))


def colour(code: str, text: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


# -- AlexeyAB H100 training with -map ----------------------------------------------------
def test_h100_iterations_are_all_there_in_order_with_exact_values():
    its = of(Iteration, events(H100))
    assert [i.number for i in its] == list(range(1, 1267))
    assert its[0] == Iteration(1, 287.502686, 287.502686, 0.0, 0.583783, 64)
    assert its[499] == Iteration(500, 0.789329, 0.758048, 0.000163, 0.269359, 32000)
    assert its[-1] == Iteration(1266, 0.285442, 0.293245, 0.00261, 0.230289, 81024)


def test_h100_map_blocks_with_their_iteration_and_no_duplicate_from_the_summary():
    evs = events(H100)
    first, second = of(MapResult, evs)  # the `mean_average_precision` repeats add none
    assert (first.iteration, first.map, first.iou_thresh) == (1000, 0.817287, 0.5)
    assert first.classes == (ClassAP(0, "close", pytest.approx(0.8173), 528, 156),)
    assert (first.conf_thresh, first.precision, first.recall, first.f1) == (0.25, 0.77, 0.85,
                                                                          0.81)
    assert (first.tp, first.fp, first.fn) == (528, 156, 91)
    assert first.avg_iou == pytest.approx(0.5494)
    assert (second.iteration, second.map) == (1187, 0.916611)
    assert second.classes == (ClassAP(0, "close", pytest.approx(0.9166), 579, 223),)
    assert (second.precision, second.recall, second.f1) == (0.72, 0.94, 0.81)
    assert (second.tp, second.fp, second.fn) == (579, 223, 40)
    assert second.avg_iou == pytest.approx(0.5492)
    i = evs.index(first)  # emitted between iteration 1000 and 1001
    assert of(Iteration, evs[:i])[-1].number == 1000
    assert of(Iteration, evs[i:])[0].number == 1001


def test_h100_last_accuracy_summaries_follow_the_blocks():
    summaries = of(MapSummary, events(H100))
    assert len(summaries) == 266  # one per iteration 1001..1266, from the title line
    assert summaries[0] == MapSummary(0.5, pytest.approx(0.8173), pytest.approx(0.8173))
    assert summaries[186] == summaries[0]  # iteration 1187
    assert summaries[187] == MapSummary(0.5, pytest.approx(0.9166), pytest.approx(0.9166))


def test_h100_checkpoints_in_order_after_their_iteration():
    evs, previous, last = events(H100), [], None
    for ev in evs:
        if isinstance(ev, Iteration):
            last = ev.number
        elif isinstance(ev, CheckpointSaved):
            previous.append((last, ev.path.rsplit("/", 1)[1]))
    assert previous == [(n, "y4t_last.weights") for n in range(100, 1000, 100)] + [
        (1000, "y4t_best.weights"), (1000, "y4t_1000.weights"), (1000, "y4t_last.weights"),
        (1100, "y4t_last.weights"), (1187, "y4t_best.weights"), (1200, "y4t_last.weights")]
    assert of(CheckpointSaved, evs)[0].path == "/data/ds2/backup/y4t_last.weights"


def test_detector_map_log_gives_one_exact_result_without_iteration():
    assert events("alexeyab-gpu-h100-detector-map.log") == [MapResult(
        0.5, 0.916611, (ClassAP(0, "close", pytest.approx(0.9166), 579, 223),), 0.25,
        0.72, 0.94, 0.81, 579, 223, 40, pytest.approx(0.5492), None)]


# -- AlexeyAB CPU logs -------------------------------------------------------------------
def test_bad_valid_list_reports_each_image_including_the_empty_path():
    evs = events("alexeyab-cpu-map-badlist.log")
    assert evs[:3] == [
        DarknetError(ErrorKind.CANNOT_LOAD_IMAGE, 'Cannot load image ""', ""),
        DarknetError(ErrorKind.CANNOT_LOAD_IMAGE, 'Cannot load image "/data/ds1/valid/0003.txt"',
                     "/data/ds1/valid/0003.txt"),
        DarknetError(ErrorKind.MISSING_LABEL,
                     "Can't open label file. (This can be normal only if you use MSCOCO):", ""),
    ]
    assert evs[3:] == [MapResult(0.5, 0.0, (ClassAP(0, "close", 0.0, 0, 0),), 0.25, None, 0.0,
                                 None, 0, 0, 9, 0.0, None)]


def test_map_with_no_detections_gives_none_for_nan():
    (result,) = events("alexeyab-cpu-map.log")
    assert result.map is None and result.classes == (ClassAP(0, "close", None, 0, 0),)
    assert (result.precision, result.recall, result.f1) == (None, 0.0, None)


def test_training_map_with_nan_precision_gives_none():
    evs = events("alexeyab-cpu-train-ok.log")
    (result,) = of(MapResult, evs)
    assert (result.iteration, result.map, result.fn) == (20, 0.0, 16)
    assert (result.precision, result.recall, result.f1) == (None, 0.0, None)
    assert [c.path for c in of(CheckpointSaved, evs)] == [
        "/data/ds1/backup/y4s_best.weights", "/data/ds1/backup/y4s_final.weights"]


def test_alexeyab_nan_run_first_bad_iteration_and_heap_abort_after_final_weights():
    evs = events("alexeyab-cpu-train-nan.log")
    its = of(Iteration, evs)
    assert [i.number for i in its] == list(range(1, 41))  # `8/40: loss=nan` titles excluded
    assert next(i.number for i in its if not i.finite) == 8
    assert its[6].finite and math.isnan(its[7].loss) and math.isnan(its[7].avg_loss)
    assert evs[-2:] == [CheckpointSaved("/data/ds1/backup/y4t_final.weights"),
                        DarknetError(ErrorKind.HEAP_ABORT, "free(): invalid next size (normal)")]


def test_resumed_run_without_map_skips_the_title_line():
    evs = events("alexeyab-cpu-train-resume.log")
    assert [i.number for i in of(Iteration, evs)] == list(range(21, 27))
    assert of(Iteration, evs)[0] == Iteration(21, 0.612253, 0.612253, 0.000005, 1.795452, 168)
    assert evs[-1] == CheckpointSaved("/data/ds1/backup/y4r_final.weights")


def test_filters_mismatch_is_one_cfg_error_with_the_message_after_the_location():
    assert events("alexeyab-cpu-filters-mismatch.log") == [DarknetError(
        ErrorKind.CFG_ERROR,
        "Error: l.outputs == params.inputs, filters= in the [convolutional]-layer doesn't "
        "correspond to classes= or mask= in [yolo]-layer: Success")]


def test_missing_cfg_is_missing_file_with_path():
    assert events("alexeyab-missing-cfg.log") == [
        DarknetError(ErrorKind.MISSING_FILE, "Couldn't open file: nonexist.cfg", "nonexist.cfg")]


# -- pjreddie / Debian ---------------------------------------------------------------------
def test_pjreddie_micro_run():
    evs = events("pjreddie-debian-cpu-train-micro.log")
    its = of(Iteration, evs)
    assert [i.number for i in its] == list(range(1, 61))
    assert its[0] == Iteration(1, 145.556641, 145.556641, 0.0, 0.333523, 16)
    assert its[-1] == Iteration(60, 3.116009, 4.110156, 0.00001, 2.528261, 960)
    assert of(CheckpointSaved, evs) == [CheckpointSaved("/data/micro/backup/micro_final.weights")]


def test_pjreddie_inf_then_minus_nan():
    its = of(Iteration, events("pjreddie-debian-cpu-train-nan-inf.log"))
    assert its[1] == Iteration(2, 841390424064.0, 84139040768.0, 50.0, 0.475378, 32)
    assert next(i.number for i in its if not i.finite) == 3
    assert its[2].loss == its[2].avg_loss == math.inf
    assert all(math.isnan(i.loss) and math.isnan(i.avg_loss) for i in its[3:])  # `-nan`
    assert len(its) == 20


def test_pjreddie_unknown_layer_ends_in_the_yolo_assertion():
    # P ignores `groups=` in [route] (only `Unused field` warnings), so the shapes break later
    assert events("pjreddie-unknown-layer.log") == [DarknetError(
        ErrorKind.CFG_ERROR,
        "darknet: ./src/parser.c:315: parse_yolo: Assertion `l.outputs == params.inputs' failed.")]


# -- chunking ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_LOGS)
def test_byte_by_byte_equals_whole(name):
    data = log_path(name).read_bytes()
    whole = LogParser()
    expected = whole.feed(data) + whole.close()
    got, lines = feed_in_chunks(data, iter(lambda: 1, None))
    assert same(got, expected) and lines == whole.lines


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", ALL_LOGS)
def test_random_chunks_equal_whole(name, seed):
    data = log_path(name).read_bytes()
    rng = random.Random(seed)
    got, lines = feed_in_chunks(data, iter(lambda: rng.randint(1, 3000), None))
    assert same(got, events(name))
    text = data.decode("utf-8", "replace")
    assert lines == len(text.replace("\r\n", "\n").replace("\r", "\n").splitlines())


@pytest.mark.parametrize("seed", range(5))
def test_garbage_never_raises_and_chunking_still_does_not_matter(seed):
    rng = random.Random(seed)
    vocabulary = [
        "\n", "\r", "\r\n", " ", "7", "12", ": ", ", ", "%", "nan", "-nan(ind)", "1.#INF", '"',
        "=", " avg loss", " rate", " seconds", " images", "loss=", "train=", "\x1b[", "\x1b]2;",
        "\x07", "\x1b[H\x1b[J", "-> ", "Id Name AP TP FP", "class_id = ", "for conf_thresh",
        "mean average precision (mAP@", "mean_average_precision", "Last accuracy mAP@",
        "Saving weights to ", "Darknet error location", "* Error message:", "Cannot load image",
        "free(): ", "Assertion `", "\xff\xfe"]
    data = "".join(rng.choice(vocabulary) for _ in range(4000)).encode("utf-8", "surrogateescape")
    whole = LogParser()
    expected = whole.feed(data) + whole.close()
    got, lines = feed_in_chunks(data, iter(lambda: rng.randint(1, 40), None))
    assert same(got, expected) and lines == whole.lines


def test_crlf_split_between_chunks_is_one_line_break():
    data = b"1: 9.5, 9.5 avg, 0.1 rate, 2.0 seconds, 8 images\r\n2: 9, 9.4 avg, 0.1 rate, 2.0 " \
           b"seconds, 16 images\r\n"
    cut = data.index(b"\n")
    parser = LogParser()
    evs = parser.feed(data[:cut]) + parser.feed(data[cut:]) + parser.close()
    assert [e.number for e in evs] == [1, 2] and parser.lines == 2


def test_utf8_character_split_between_chunks():
    data = "Cannot load image \"/data/café.jpg\"\n".encode()
    cut = data.index("é".encode()) + 1
    parser = LogParser()
    evs = parser.feed(data[:cut]) + parser.feed(data[cut:]) + parser.close()
    assert evs == [DarknetError(ErrorKind.CANNOT_LOAD_IMAGE, 'Cannot load image "/data/café.jpg"',
                                "/data/café.jpg")]


def test_last_line_without_newline_is_parsed_on_close():
    parser = LogParser()
    assert parser.feed(b"Saving weights to /b/x_final.weights") == []
    assert parser.close() == [CheckpointSaved("/b/x_final.weights")] and parser.lines == 1


# -- AlexeyAB formats not in the logs ----------------------------------------------------------
def test_carriage_return_glued_lines():
    text = (" rank = 0 of ranks = 3 \r rank = 100 of ranks = 3 \rclass_id = 0, name = dog, "
            "ap = 50.00%   \t (TP = 1, FP = 2) \n"
            " for conf_thresh = 0.25, precision = 0.33, recall = 0.50, F1-score = 0.40 \n"
            " for conf_thresh = 0.25, TP = 1, FP = 2, FN = 1, average IoU = 40.00 % \n"
            " mean average precision (mAP@0.75) = 0.500000, or 50.00 % \n"
            "\r4\r8Cannot load image \"a b.jpg\"\r12\r16")
    evs = parse_text(text)
    assert evs == [
        MapResult(0.75, 0.5, (ClassAP(0, "dog", 0.5, 1, 2),), 0.25, 0.33, 0.5, 0.4, 1, 2, 1,
                  0.4, None),
        DarknetError(ErrorKind.CANNOT_LOAD_IMAGE, 'Cannot load image "a b.jpg"', "a b.jpg")]


@pytest.mark.parametrize("line, expected", [
    (" 1: 72.867554, 72.867554 avg, 0.000002 rate, 5.487468 seconds, 8 images",
     Iteration(1, 72.867554, 72.867554, 0.000002, 5.487468, 8)),
    (" 7: 1.5, 2.5 avg loss, 0.001 rate, 0.5 seconds, 56 images",
     Iteration(7, 1.5, 2.5, 0.001, 0.5, 56)),
    (" 7: 1.5, 2.5 avg loss, 0.001 rate, 0.5 seconds, 56 images, 0.2 time left",
     Iteration(7, 1.5, 2.5, 0.001, 0.5, 56)),
    ("\x1b]2;7/10: loss=1.5 hours left=0.1\x07\n 7: 1.5, 2.5 avg loss, 0.001 rate, 0.5 seconds, "
     "56 images, 0.2 hours left", Iteration(7, 1.5, 2.5, 0.001, 0.5, 56)),
], ids=["pjreddie-avg", "avg-loss", "time-left", "osc-title-then-hours-left"])
def test_historic_alexeyab_iteration_lines(line, expected):
    assert parse_text(line + "\n") == [expected]


def test_windows_minus_nan_ind():
    (it,) = parse_text(" 5: -nan(ind), -nan(ind) avg loss, 0.001 rate, 0.5 seconds, 40 images\n")
    assert it.number == 5 and math.isnan(it.loss) and math.isnan(it.avg_loss)


@pytest.mark.parametrize("line, expected", [
    (" Last accuracy mAP@0.50 = 81.73 %, best = 90.00 % \x1b[H\x1b[J1001/2000: loss=0.4\x07",
     MapSummary(0.5, pytest.approx(0.8173), pytest.approx(0.9))),
    (" Last accuracy mAP@0.5 = 12.34 %, best = 20.00 % ", MapSummary(0.5, 0.1234, 0.2)),
    (" Last accuracy mAP@0.5 = 12.34 % ", MapSummary(0.5, 0.1234, None)),
    (" Last accuracy mAP@0.50 = -nan %, best = 0.00 % ", MapSummary(0.5, None, 0.0)),
], ids=["2021-with-title", "2019-04", "2019-01", "nan"])
def test_last_accuracy_in_every_wording(line, expected):
    assert parse_text(line + "\n") == [expected]


def test_old_map_line_without_iou_takes_it_from_the_threshold_line():
    text = " IoU threshold = 75 %, used 11 Recall-points \n" \
           " mean average precision (mAP) = 0.450000, or 45.00 % \n"
    assert parse_text(text) == [MapResult(0.75, 0.45)]


def test_training_summary_without_its_block_still_gives_a_result():
    text = " 10: 1.0, 1.0 avg loss, 0.001 rate, 1.0 seconds, 80 images\n\n" \
           " mean_average_precision (mAP@0.50) = 0.250000 \n"
    assert parse_text(text)[1:] == [MapResult(0.5, 0.25, iteration=10)]


def test_block_cut_short_is_flushed_on_the_next_iteration_and_on_close():
    block = "class_id = 0, name = dog, ap = 50.00%   \t (TP = 1, FP = 2) \n"
    it = " 11: 1.0, 1.0 avg loss, 0.001 rate, 1.0 seconds, 88 images\n"
    partial = MapResult(0.5, None, (ClassAP(0, "dog", 0.5, 1, 2),), iteration=None)
    assert parse_text(block + it)[0] == partial
    assert parse_text(it + block)[1:] == [MapResult(0.5, None, partial.classes, iteration=11)]


@pytest.mark.parametrize("text, expected", [
    (" CUDA Error: out of memory\nDarknet error location: ./src/dark_cuda.c, check_error(), "
     "line #69\nCUDA Error: out of memory: Resource temporarily unavailable\n",
     [DarknetError(ErrorKind.OUT_OF_MEMORY, "CUDA Error: out of memory")]),
    ("Failed to malloc 1234\nDarknet error location: ./src/utils.c, xmalloc_location(), line #1"
     "\nMalloc error - possibly out of CPU RAM: Cannot allocate memory\n",
     [DarknetError(ErrorKind.OUT_OF_MEMORY,
                   "Malloc error - possibly out of CPU RAM: Cannot allocate memory")]),
    ("Darknet error location: ./src/detector.c, train_detector(), line #37\nError!: Success\n"
     "backtrace (2 entries)\n1/2: ./darknet(error+0x34) [0x1]\n",
     [DarknetError(ErrorKind.FATAL, "Error!: Success")]),
    ("Darknet error location: ./src/parser.c, parse_network_cfg_custom(), line #1",
     [DarknetError(ErrorKind.FATAL,
                   "Darknet error location: ./src/parser.c, parse_network_cfg_custom(), line #1")]),
], ids=["cuda-oom-printed-before-error", "malloc", "plain-error", "location-at-end-of-output"])
def test_alexeyab_error_location_gives_one_event_for_its_message(text, expected):
    assert parse_text(text) == expected
    data = text.encode()
    for cut in range(1, len(data)):
        parser = LogParser()
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) + parser.close() == expected


@pytest.mark.parametrize("line, kind, message, path", [
    ("Cannot load image /d/img 1.jpg", ErrorKind.CANNOT_LOAD_IMAGE,
     "Cannot load image /d/img 1.jpg", "/d/img 1.jpg"),
    ("Can't open label file. (This can be normal only if you use MSCOCO): /d/x.txt ",
     ErrorKind.MISSING_LABEL, "Can't open label file. (This can be normal only if you use "
     "MSCOCO): /d/x.txt", "/d/x.txt"),
    (" Wrong annotation: class_id = 5. But class_id should be [from 0 to 0], file: /d/x.txt ",
     ErrorKind.WRONG_ANNOTATION, "Wrong annotation: class_id = 5. But class_id should be "
     "[from 0 to 0], file: /d/x.txt", "/d/x.txt"),
    ("Loading weights from b/x.weights...Couldn't open file: b/x.weights",
     ErrorKind.MISSING_FILE, "Couldn't open file: b/x.weights", "b/x.weights"),
    ("Type not recognized: [yolo5]", ErrorKind.CFG_ERROR, "Type not recognized: [yolo5]", None),
    ("Config file error line 3, could parse: foo", ErrorKind.CFG_ERROR,
     "Config file error line 3, could parse: foo", None),
    ("realloc(): invalid old size", ErrorKind.HEAP_ABORT, "realloc(): invalid old size", None),
    ("realloc(): invalid pointer", ErrorKind.HEAP_ABORT, "realloc(): invalid pointer", None),
    ("free(): invalid next size (fast)", ErrorKind.HEAP_ABORT,
     "free(): invalid next size (fast)", None),
    ("1112corrupted size vs. prev_size", ErrorKind.HEAP_ABORT,
     "corrupted size vs. prev_size", None),
    ("corrupted double-linked list (not small)", ErrorKind.HEAP_ABORT,
     "corrupted double-linked list (not small)", None),
    ("double free or corruption (out)", ErrorKind.HEAP_ABORT,
     "double free or corruption (out)", None),
    ("darknet: ./src/utils.c:256: error: Assertion `0' failed.", ErrorKind.FATAL,
     "darknet: ./src/utils.c:256: error: Assertion `0' failed.", None),
])
def test_error_lines(line, kind, message, path):
    assert parse_text(line + "\n") == [DarknetError(kind, message, path)]


@pytest.mark.parametrize("line", [
    "Unused field: 'groups = 2'", "Label file name is too short:  ", "Error: in the file x.names "
    "number of names 2 that isn't equal to classes=1 in the file x.cfg ", "STB Reason: can't fopen",
    "   0 conv     32       3 x 3/ 2    160 x 160 x   3 ->   80 x  80 x  32 0.011 BF",
    "8/40: loss=nan hours left=0.0", "1/11: ./darknet(log_backtrace+0x21) [0x5598f3a21df1]"])
def test_warnings_and_noise_are_not_events(line):
    assert parse_text(line + "\n") == []


# -- hank-ai (synthetic, coloured as H prints by default) ------------------------------------
@pytest.mark.parametrize("line, expected", [
    (f"\x1b]2;1234/5000: loss=0.4 map=0.42 best=0.78 time=7 seconds\x07{colour('1;37', '1234')}: "
     f"loss={colour('1;36', '0.444')}, avg loss={colour('1;36', '0.329')}, "
     f"last={colour('1;34', '42.67%')}, best={colour('1;34', '78.32%')}, mAP=1300, "
     "rate=0.00026100, load 64=12.500 milliseconds, train=64.424 milliseconds, 78976 images, "
     "time remaining=7 seconds",
     Iteration(1234, 0.444, 0.329, 0.000261, pytest.approx(0.064424), 78976)),
    ("5989: loss=0.444, avg loss=0.329, rate=0.000026, 64.424 milliseconds, 383296 images, "
     "time remaining=7 seconds",
     Iteration(5989, 0.444, 0.329, 0.000026, pytest.approx(0.064424), 383296)),
    ("12: loss=3.000, avg loss=4.000, last=none, best=none, next=1000, rate=0.000001, "
     "1.5 seconds, 768 images, time remaining=2 hours",
     Iteration(12, 3.0, 4.0, 0.000001, 1.5, 768)),
    ("12: loss=3.000, avg loss=4.000, last=none, best=none, mAP=DISABLED, rate=0.000001, "
     "load 64=unknown, train=unknown, 768 images, time remaining=unknown",
     Iteration(12, 3.0, 4.0, 0.000001, None, 768)),
], ids=["v5.1-coloured-with-title", "v3", "v5.0", "head-unknown-times"])
def test_hank_ai_iteration_lines(line, expected):
    assert parse_text(line + "\n") == [expected]


def test_hank_ai_non_finite_loss():
    (it,) = parse_text(f"{colour('1;37', '9')}: loss={colour('1;31', '-nan')}, avg loss="
                       f"{colour('1;31', 'inf')}, rate=0.001, 2 seconds, 576 images, "
                       "time remaining=1 minute\n")
    assert math.isnan(it.loss) and it.avg_loss == math.inf and it.seconds == 2.0


def test_hank_ai_head_map_block():
    row = "  " + " " + colour("0", "0") + " " + colour("1;37", "dog") + " " * 17 + " "
    text = "\n".join([
        "Calculating mAP (mean average precision) with threshold 0.25 and IoU threshold 0.5.",
        "-> 64 validation images for 2 classes",
        f"\r-> 120 images/sec: loading #{colour('1;37', '64')} "
        f"(\x1b[0;38;2;255;255;255m100%\x1b[0m), predicting #64 (100%)  ",
        "detections_count=120, unique_truth_count=70",
        "\rrank=0 of ranks=120\rrank=100 of ranks=120",
        "", "",
        " AP=average precision, TP=true positive, FP=false positive,",
        " TN=true negative, FN=false negative, GT=ground truth count", "",
        "  Id Name                        AP     TP     FP     FN     GT  AvgIoU",
        "  -- -------------------- --------- ------ ------ ------ ------ -------",
        row + colour("1;31", "  36.3400") + "     57      5     10     67" + colour("1;36",
                                                                            "       61.2345"),
        "   1 hot dog                 0.0000      0      0      3      3         0.0000",
        "",
        "-> for conf_thresh=0.25, precision=0.919355, recall=0.814286, F1 score=0.863636",
        "-> for conf_thresh=0.25, TP=57, FP=5, FN=13, average IoU=61.2345%",
        "-> IoU threshold=50%, used area-under-curve for each unique recall",
        f"-> mean average precision (mAP@0.5)={colour('1;31', '18.17%')}",
        "mAP calculations took a total of 2.3 seconds.", ""])
    assert parse_text(text) == [MapResult(
        0.5, pytest.approx(0.1817),
        (ClassAP(0, "dog", pytest.approx(0.3634), 57, 5), ClassAP(1, "hot dog", 0.0, 0, 0)),
        0.25, 0.919355, 0.814286, 0.863636, 57, 5, 13, pytest.approx(0.612345), None)]


def test_hank_ai_v5_confusion_matrix_table():
    text = "\n".join([
        "  Id Name             AvgPrecision     TP     FN     FP     TN Accuracy ErrorRate "
        "Precision Recall Specificity FalsePosRate",
        "  -- ----             ------------ ------ ------ ------ ------ -------- --------- "
        "--------- ------ ----------- ------------",
        "   0 vehicle               91.2495  32648   3903   5826  65129   0.9095    0.0905    "
        "0.8486 0.8932      0.9179       0.0821",
        "   4 many vehicles         64.3089   1068    509    733  11288   0.9087    0.0913    "
        "0.5930 0.6772      0.9390       0.0610",
        "mean average precision (mAP@0.50)=78.23%", ""])
    (result,) = parse_text(text)
    assert result.map == pytest.approx(0.7823)
    assert result.classes == (ClassAP(0, "vehicle", pytest.approx(0.912495), 32648, 5826),
                              ClassAP(4, "many vehicles", pytest.approx(0.643089), 1068, 733))


def test_hank_ai_training_lines():
    text = "\n".join([
        f"-> last accuracy mAP@0.50={colour('1;34', '42.67%')}, best={colour('1;34', '78.32%')}",
        f"Saving weights to {colour('1;35', '/nn/animals_best.weights')}",
        "Last accuracy mAP@0.50=80.00%, best=81.50% at iteration #8000.", ""])
    assert parse_text(text) == [
        MapSummary(0.5, pytest.approx(0.4267), pytest.approx(0.7832)),
        CheckpointSaved("/nn/animals_best.weights"),
        MapSummary(0.5, pytest.approx(0.8), pytest.approx(0.815))]


@pytest.mark.parametrize("message, kind, path", [
    ('failed to open annotation file "/d/img1.txt"', ErrorKind.MISSING_LABEL, "/d/img1.txt"),
    ('invalid class id in "/d/img1.txt" (line #3, id=-1)', ErrorKind.WRONG_ANNOTATION,
     "/d/img1.txt"),
    ('invalid coordinate in "/d/img 2.txt" (line #1, x=1.5)', ErrorKind.WRONG_ANNOTATION,
     "/d/img 2.txt"),
    ('failed to load image file "/d/img3.jpg"', ErrorKind.CANNOT_LOAD_IMAGE, "/d/img3.jpg"),
    ("filters in convolutional layer prior to [yolo] on line 31 does not match either the "
     "classes or the mask (inputs=18, outputs=255)", ErrorKind.CFG_ERROR, None),
    ("Config file error line 7", ErrorKind.CFG_ERROR, None),
    ("First section must be [net] or [network]", ErrorKind.CFG_ERROR, None),
    # darknet's own refusal (no "yes" on stdin): bad input in its words, never a crash
    ("Cancel the attempt to train a neural network using a CPU.", ErrorKind.REFUSED, None),
])
def test_hank_ai_fatal_banner(message, kind, path):
    stars = "* " * 29
    text = "\n".join([stars, "* Errno 2: No such file or directory",
                      "* Error location: src-lib/data.cpp, read_boxes(), line #185",
                      f"* Error message:  {colour('1;31', message)}",
                      "* Thread #1: main darknet thread", stars, "known threads: 1", ""])
    assert parse_text(text) == [DarknetError(kind, message, path)]


# -- helpers ---------------------------------------------------------------------------------
def test_strip_ansi():
    assert strip_ansi("\x1b[1;37m12\x1b[0m: \x1b]2;12/40: loss=1\x07x\x1b[H\x1b[J\x07"
                      "\x1b[0;38;2;255;0;0m9%\x1b[0m") == "12: x9%"


def test_parse_file_equals_parse_text(tmp_path):
    text = "1: 9.5, 9.5 avg, 0.1 rate, 2.0 seconds, 8 images\nSaving weights to b/x.backup\n"
    (tmp_path / "run.log").write_text(text)
    assert parse_file(tmp_path / "run.log", chunk_size=7) == parse_text(text) == [
        Iteration(1, 9.5, 9.5, 0.1, 2.0, 8), CheckpointSaved("b/x.backup")]
