"""Dialect detection and the command lines each dialect gets (docs/darknet.md §4, §9)."""
from __future__ import annotations

import json
import shutil

import pytest

from farm.darknet.dialect import (Dialect, classify_banner, detect, map_argv, train_argv,
                                  train_stdin, valid_argv)
from farm.errors import DarknetNotFound


def test_banners_of_the_three_dialects():
    assert classify_banner("usage: darknet <function>\nNot an option: version") is Dialect.PJREDDIE
    assert classify_banner(" GPU isn't used \n Used AVX \nusage: ./darknet <function>") \
        is Dialect.ALEXEYAB
    assert classify_banner('Darknet V5 "Moonlit" v5.1-104-gf684e1d7') is Dialect.HANKAI


def test_pjreddie_gets_no_flag_it_would_read_as_the_weights_path():
    argv = train_argv(Dialect.PJREDDIE, "/usr/bin/darknet", "/r/o.data", "/r/n.cfg", None,
                      with_map=True)
    assert argv == ["/usr/bin/darknet", "detector", "train", "/r/o.data", "/r/n.cfg"]
    argv = train_argv(Dialect.PJREDDIE, "d", "/r/o.data", "/r/n.cfg", "/r/w.weights")
    assert argv[-1] == "/r/w.weights"


def test_alexeyab_and_hankai_flags():
    a = train_argv(Dialect.ALEXEYAB, "d", "/r/o.data", "/r/n.cfg", "/r/w.weights", with_map=True)
    assert a[:6] == ["d", "detector", "train", "/r/o.data", "/r/n.cfg", "/r/w.weights"]
    assert "-dont_show" in a and "-map" in a
    h = train_argv(Dialect.HANKAI, "d", "/r/o.data", "/r/n.cfg", None)
    assert "-nocolour" in h and "-dont_show" in h and "-map" not in h
    assert train_stdin(Dialect.HANKAI) == b"yes\n" and train_stdin(Dialect.PJREDDIE) is None


def test_the_debian_binary_is_detected_as_pjreddie():
    if shutil.which("darknet") is None:
        pytest.fail("darknet is not installed (apt-get install darknet)")
    assert detect("darknet") is Dialect.PJREDDIE
    assert detect("darknet", "alexeyab") is Dialect.ALEXEYAB  # a setting overrides detection


def test_a_missing_binary_says_how_to_get_one():
    with pytest.raises(DarknetNotFound, match="apt-get install darknet"):
        detect("/nonexistent/darknet")


def test_every_path_darknet_is_given_is_absolute(tmp_path, monkeypatch):
    """darknet runs in a folder of the farm's (an attempt's, a scratch one) and opens
    files relative to it: relative paths from the user's command line would miss."""
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    t = train_argv(Dialect.ALEXEYAB, "d", "ds/obj.data", "net.cfg", "../w.weights")
    assert t[3:6] == [f"{here}/ds/obj.data", f"{here}/net.cfg",
                      f"{tmp_path.parent}/w.weights"]
    m = map_argv("d", "obj.data", "net.cfg", "w/best.weights", points=0, iou_thresh=0.5,
                 thresh=0.25)
    assert m[:6] == ["d", "detector", "map", f"{here}/obj.data", f"{here}/net.cfg",
                     f"{here}/w/best.weights"]
    assert m[6:] == ["-points", "0", "-iou_thresh", "0.5", "-thresh", "0.25"]
    v = valid_argv("d", "obj.data", "./net.cfg", "best.weights")
    assert v == ["d", "detector", "valid", f"{here}/obj.data", f"{here}/net.cfg",
                 f"{here}/best.weights"]


def test_a_detected_dialect_is_remembered_until_the_binary_changes(tmp_path, monkeypatch):
    """Each `farm` command is a new process: darknet's banner is read once per binary
    (path, size, mtime), not once per command."""
    from farm.darknet import dialect as dialects
    monkeypatch.setattr(dialects, "DIALECT_CACHE", tmp_path / "cache" / "dialects.json")
    binary = tmp_path / "darknet"
    binary.write_text('#!/bin/sh\necho \'Darknet V5 "Moonlit" v5.1\'\n')
    binary.chmod(0o755)
    dialects._detect_cached.cache_clear()
    assert detect(str(binary)) is Dialect.HANKAI
    remembered = json.loads(dialects.DIALECT_CACHE.read_text())
    [key] = remembered
    assert key.startswith(f"{binary} ") and remembered[key] == "hankai"
    dialects.DIALECT_CACHE.write_text(json.dumps({key: "alexeyab"}))  # read, not re-run
    dialects._detect_cached.cache_clear()
    assert detect(str(binary)) is Dialect.ALEXEYAB
    binary.write_text("#!/bin/sh\necho 'usage: darknet <function>'\n")  # a new binary
    dialects._detect_cached.cache_clear()
    assert detect(str(binary)) is Dialect.PJREDDIE


def test_checkpoint_cadence_follows_what_each_dialect_can_write():
    from farm.darknet.dialect import checkpoint_cadence
    p = checkpoint_cadence("pjreddie", 40)  # .backup every 100, nothing in between
    assert p.every == 100 and "rounded to 100" in p.note and not p.data and not p.argv
    assert checkpoint_cadence("pjreddie", 260).every == 300
    assert checkpoint_cadence("pjreddie", 1000).note is None
    a = checkpoint_cadence("alexeyab", 40)  # savelast= in obj.data
    assert a.every == 40 and a.data == {"savelast": "20"} and a.note is None
    h = checkpoint_cadence("hankai", 150)  # -saveweights on the command line
    assert h.every == 150 and h.argv == ("-saveweights", "150")
    assert checkpoint_cadence("alexeyab", 1000).data == {}
