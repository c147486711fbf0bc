"""farm.eval.evaluation: one Evaluation type, and every record the farm ever stored in
Redis loads and is written back as it was (the JSON is the store's format)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from farm.eval.evaluation import Evaluation

#: As evaluate_run_checkpoint wrote them before the type existed (dicts: the run's best
#: with its score, a darknet-map block with darknet's -nan, a failed one, a screens one).
OLD = {
    "best": {"map": 0.8166, "iou_thresh": 0.5, "conf_thresh": 0.25, "points": 0,
             "classes": [{"id": 0, "name": "close", "ap": 0.8166, "tp": 70, "fp": 17,
                          "truths": 80, "detections": 120}],
             "precision": 0.8, "recall": 0.875, "f1": 0.84, "tp": 70, "fp": 17, "fn": 10,
             "avg_iou": 0.61, "detections": 120, "truths": 80, "evaluator": "opencv-dnn",
             "images": 40, "tiled": False, "clipped": False, "weights": "/w/q.weights",
             "cfg": "/r/eval/net.cfg", "data": "/r/eval/obj.data", "valid": "/d/valid.txt",
             "seconds": 3.25, "sha256": "ab" * 32, "run_id": "r-1", "iteration": "1000",
             "source": "/q.weights", "attempt": 2, "worker": "cpu1@lily2:77",
             "host": "lily2", "evaluated_at": 1700000000.5, "best_weights": "/r/best.weights",
             "score": 0.8166},
    "nan": {"map": None, "iou_thresh": 0.5, "conf_thresh": 0.25, "points": None,
            "classes": [{"id": 0, "name": "close", "ap": None, "tp": 0, "fp": 0,
                         "truths": None, "detections": None}],
            "precision": None, "recall": 0.0, "f1": None, "tp": 0, "fp": 0, "fn": 16,
            "avg_iou": 0.0, "detections": None, "truths": 16, "evaluator": "darknet-map",
            "note": "darknet printed -nan: no detections", "run_id": "r-1", "iteration": 100},
    "failed": {"error": "the checkpoint at iteration 300 was written after the loss went "
                        "non-finite: its weights are poisoned", "map": None, "run_id": "r-1",
               "iteration": 300, "source": "/q.weights", "attempt": 1, "worker": "w",
               "host": "lily2", "evaluated_at": 1.0, "best_weights": "/r/best.weights"},
    "screens": {"map": 0.5, "evaluator": "opencv-dnn", "run_id": "r-2", "iteration": 200,
                "screens": {"map": 0.25, "tp": 1, "fp": 0, "fn": 3, "images": 2,
                            "overlap": 64, "tile": [416, 416], "screens_id": "s-9",
                            "evaluator": "opencv-dnn", "screens": "/d/screens/obj.data"}},
    "screens_failed": {"map": 0.5, "iteration": 200,
                       "screens": {"error": "no screens", "map": None,
                                   "screens": "/d/screens/obj.data"},
                       "a_key_of_a_later_farm": {"kept": True}},
}


def test_every_old_record_loads_and_is_written_back_as_it_was():
    for name, doc in OLD.items():
        e = Evaluation.from_dict(json.loads(json.dumps(doc)))
        back = json.loads(json.dumps(e.to_dict()))
        # keys that held null are left out; everything else is as stored
        want = {k: v for k, v in doc.items() if v is not None or k == "map"}
        want["iteration"] = int(want["iteration"])
        assert back == want, name


def test_the_fields_read_as_their_types():
    best = Evaluation.from_dict(OLD["best"])
    assert (best.map, best.iteration, best.score, best.host) == (0.8166, 1000, 0.8166, "lily2")
    assert best.classes[0]["name"] == "close" and best.score_map == 0.8166
    assert Evaluation.from_dict(OLD["nan"]).score_map == 0.0  # no detections ranks as 0
    failed = Evaluation.from_dict(OLD["failed"])
    assert failed.failed and failed.score_map is None and failed.map is None
    screens = Evaluation.from_dict(OLD["screens"])
    assert screens.screens_map == 0.25 and screens.screens.tile == (416, 416)
    assert screens.screens.screens_data == "/d/screens/obj.data"
    odd = Evaluation.from_dict(OLD["screens_failed"])
    assert odd.screens.error == "no screens" and odd.screens_map is None
    assert odd.extra == {"a_key_of_a_later_farm": {"kept": True}}


def test_it_is_frozen_and_changed_by_copy():
    e = Evaluation(map=0.5, iteration=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.map = 0.6
    assert dataclasses.replace(e, host="lily2").to_dict() == {"map": 0.5, "iteration": 100,
                                                              "host": "lily2"}
    assert e.map == 0.5 and e.host is None
