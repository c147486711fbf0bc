"""farm.runs.checks without Redis: which dialect and which memory a run is judged by, and
where a finding is shown when `--set` changed the cfg. The refusals at submit, with
nothing queued, are in tests/integration/test_submit_checks.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from farm.darknet.cfg import Cfg, check_cfg
from farm.errors import Finding, FindingsError
from farm.inventory import load_inventory
from farm.runs import checks
from farm.settings import Settings
from workers.micro import micro_cfg

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

INVENTORY = """\
defaults:
  ssh: {user: farm, key: k, known_hosts: kh}
  data_dir: /srv/farm
hosts:
  lily2:
    address: 10.0.0.2
    roles: [gpu]
    gpus: 1
    gpu_memory: 24GB
    dialect: alexeyab
  h100:
    address: 10.0.0.3
    roles: [gpu]
    gpus: 8
    gpu_memory: 80 GiB
    dialect: alexeyab
  aug:
    address: 10.0.0.4
    roles: [augment, cpu, eval]
"""


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return load_inventory(path, check_files=False)


def settings(**kw) -> Settings:
    return Settings(data_dir="/tmp/x", host_name="head", **kw)


def cfg_of(tmp_path, **kw) -> Cfg:
    return Cfg.load(micro_cfg(tmp_path / "micro.cfg", **kw))


def test_inventory_gpu_memory_and_dialect(inventory):
    lily2, h100, aug = inventory.hosts.values()
    assert (lily2.gpu_memory, lily2.dialect) == (24 << 30, "alexeyab")
    assert h100.gpu_memory == 80 << 30 and aug.gpu_memory is None and aug.dialect is None


@pytest.mark.parametrize("old, new, said, line", [
    ("gpu_memory: 24GB", "gpu_memory: lots", "gpu_memory 'lots' is not a size", 9),
    ("gpu_memory: 24GB", "gpu_memory: 24", "gpu_memory 24 is not a size", 9),
    ("dialect: alexeyab", "dialect: yolo", "dialect 'yolo' is not one of alexeyab, hankai, "
                                           "pjreddie", 10),
])
def test_bad_inventory_fields_name_their_line(tmp_path, old, new, said, line):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace(old, new, 1))
    with pytest.raises(FindingsError) as e:
        load_inventory(path, check_files=False)
    assert said in e.value.reason and e.value.line == line


def test_the_dialect_a_run_is_judged_with(tmp_path, inventory):
    micro = cfg_of(tmp_path)
    # the farm's configured dialect wins; then the inventory's trainers
    assert checks.trainer_dialect(settings(darknet_dialect="hankai"), micro) == "hankai"
    assert checks.trainer_dialect(settings(), micro, None, inventory) == "alexeyab"
    assert checks.trainer_dialect(settings(), micro, "lily2", inventory) == "alexeyab"
    # a farm with workers elsewhere (a Redis URL): the cfg's own features, then the
    # darknet installed here (Debian's: pjreddie), then AlexeyAB's rules, the widest
    head = settings(redis_url="redis://127.0.0.1:6379/0")
    y4t = SHARED / "darknet" / "cfg" / "yolov4-tiny.cfg"
    if y4t.exists():
        assert checks.trainer_dialect(head, Cfg.load(y4t)) == "alexeyab"
        # the embedded farm's workers are all here: the darknet here trains it
        assert checks.trainer_dialect(settings(), Cfg.load(y4t)) == "pjreddie"
    assert checks.trainer_dialect(head, micro) == "pjreddie"
    no_darknet = settings(redis_url="redis://127.0.0.1:6379/0", darknet="/nonexistent/darknet")
    assert checks.trainer_dialect(no_darknet, micro) == "alexeyab"


def test_the_memory_a_run_may_use(inventory):
    s = settings()
    pinned = checks.submit_limit(s, "lily2", inventory)
    assert (pinned.bytes, pinned.gpu, pinned.where) == (24 << 30, True, "lily2's GPUs")
    anywhere = checks.submit_limit(s, None, inventory)  # it must fit one of them: the largest
    assert anywhere.bytes == 80 << 30 and "h100" in anywhere.where
    here = checks.submit_limit(s)  # no inventory: the embedded farm trains here
    assert here.bytes == checks.host_memory() and here.where == "head's RAM" and not here.gpu
    assert checks.submit_limit(s, "elsewhere") is None  # unknown: its worker checks


def test_a_gpu_host_without_gpu_memory_is_not_guessed(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace("    gpu_memory: 24GB\n", ""))
    inv = load_inventory(path, check_files=False)
    assert checks.submit_limit(settings(), None, inv) is None
    assert checks.submit_limit(settings(), "h100", inv).bytes == 80 << 30


def test_host_memory_is_this_machines():
    import os
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < checks.host_memory() <= total


def test_findings_on_set_values_point_at_the_set_and_others_at_the_users_line(tmp_path):
    base = Cfg.load(micro_cfg(tmp_path / "m.cfg", filters=21))
    user_line = next(n for n, t in enumerate(base.lines, 1) if t.strip() == "filters=21")
    cfg, place = checks.with_overrides(base, {"subdivisions": "3", "letter_box": "1"})
    assert cfg.net_get("subdivisions") == "3" and cfg.net_get("letter_box") == "1"
    placed = [place(f) for f in check_cfg(cfg) if f.severity == "error"]
    batch = next(f for f in placed if "not a multiple of subdivisions" in f.reason)
    assert batch.line == next(n for n, t in enumerate(base.lines, 1) if t.startswith("batch="))
    filters = next(f for f in placed if "filters=21" in f.reason)
    assert filters.line == user_line  # letter_box=1 was added above it: shifted back
    memory = Finding(cfg.path, cfg.net.line_of("letter_box"), "x", "y")
    assert place(memory).path == "--set letter_box=1" and place(memory).line is None


def test_check_training_raises_every_finding_and_returns_warnings(tmp_path):
    bad = cfg_of(tmp_path, filters=21)
    with pytest.raises(FindingsError) as e:
        checks.check_training(data=None, cfg=bad, weights=None, dialect="pjreddie",
                              base_dir=None, limit=None)
    assert "filters=21" in e.value.reason and e.value.line is not None
    good = cfg_of(tmp_path)
    good.set_net("burn_in", 100)  # ≥ max_batches 60: a warning, not an error
    found = checks.check_training(data=None, cfg=good, weights=None, dialect="pjreddie",
                                  base_dir=None, limit=checks.MemoryLimit(1 << 40, "x"))
    assert [f.severity for f in found.warnings] == ["warning"] and found.memory.host > 0
    with pytest.raises(FindingsError, match="training needs about"):
        checks.check_training(data=None, cfg=good, weights=None, dialect="pjreddie",
                              base_dir=None, limit=checks.MemoryLimit(1 << 20, "x"))


def test_the_inventory_example_declares_what_the_checks_read():
    path = Path(__file__).resolve().parents[2] / "ops" / "inventory.example.yaml"
    inv = load_inventory(path, check_files=False)
    assert inv.hosts["lily2"].gpu_memory and inv.hosts["lily2"].dialect == "alexeyab"
