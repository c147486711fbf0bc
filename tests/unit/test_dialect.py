"""Dialect detection and the command lines each dialect gets (docs/darknet.md §4, §9)."""
from __future__ import annotations

import shutil

import pytest

from farm.darknet.dialect import Dialect, classify_banner, detect, train_argv, train_stdin
from farm.errors import DarknetNotFound


def test_banners_of_the_three_dialects():
    assert classify_banner("usage: darknet <function>\nNot an option: version") is Dialect.PJREDDIE
    assert classify_banner(" GPU isn't used \n Used AVX \nusage: ./darknet <function>") \
        is Dialect.ALEXEYAB
    assert classify_banner('Darknet V5 "Moonlit" v5.1-104-gf684e1d7') is Dialect.HANKAI


def test_pjreddie_gets_no_flag_it_would_read_as_the_weights_path():
    argv = train_argv(Dialect.PJREDDIE, "/usr/bin/darknet", "o.data", "n.cfg", None, with_map=True)
    assert argv == ["/usr/bin/darknet", "detector", "train", "o.data", "n.cfg"]
    argv = train_argv(Dialect.PJREDDIE, "d", "o.data", "n.cfg", "w.weights")
    assert argv[-1] == "w.weights"


def test_alexeyab_and_hankai_flags():
    a = train_argv(Dialect.ALEXEYAB, "d", "o.data", "n.cfg", "w.weights", with_map=True)
    assert a[:6] == ["d", "detector", "train", "o.data", "n.cfg", "w.weights"]
    assert "-dont_show" in a and "-map" in a
    h = train_argv(Dialect.HANKAI, "d", "o.data", "n.cfg", None)
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
