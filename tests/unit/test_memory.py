"""The memory estimate, term by term, against sums done here by hand; how close it is to
Debian's darknet's real peak is measured in tests/integration/test_submit_checks.py and
bench/bench_memory.py."""
from __future__ import annotations

import pytest

from farm.darknet.cfg import Cfg
from farm.darknet.memory import (CUDA_CONTEXT_BYTES, PROCESS_BYTES, TRUTH_FLOATS, estimate,
                                 parse_size,
                                 size_text, train_size)
from farm.errors import Finding
from farm.runs.checks import MemoryLimit, memory_findings
from workers.micro import micro_cfg_text


def micro(size=64, batch=4, subdivisions=1, random=0) -> Cfg:
    text = micro_cfg_text(size=size)
    cfg = Cfg.parse(text.replace("random=0", f"random={random}"), "micro.cfg")
    cfg.set_net("batch", batch)
    cfg.set_net("subdivisions", subdivisions)
    return cfg


def by_hand(size: int) -> int:
    """Floats one image keeps in the micro network at size×size (workers/micro.py)."""
    s1, s2, s3, s4 = size, size // 2, size // 4, size // 8
    return (size * size * 3                      # the network's input
            + 4 * s1 * s1 * 8 + 3 * s2 * s2 * 8  # conv 8 with batchnorm, maxpool
            + 4 * s2 * s2 * 16 + 3 * s3 * s3 * 16
            + 4 * s3 * s3 * 32 + 3 * s4 * s4 * 32
            + 2 * s4 * s4 * 18 + 2 * s4 * s4 * 18  # 1×1 conv 18 (no batchnorm), [yolo]
            + TRUTH_FLOATS)


def test_each_term_of_the_micro_network():
    e = estimate(micro(64, batch=4))
    assert (e.width, e.height, e.batch, e.mini_batch) == (64, 64, 4, 4)
    assert e.activations == 4 * 4 * by_hand(64)
    params = (8 + 3 * 8 + 3 * 8 * 9) + (16 + 3 * 16 + 8 * 16 * 9) + (32 + 3 * 32 + 16 * 32 * 9) \
        + (18 + 32 * 18)
    assert e.parameters == 4 * 2 * params  # the weights and their updates
    assert e.workspace == 4 * 64 * 64 * 9 * 3  # im2col of the first 3×3 conv, one image
    assert e.images == 4 * 2 * 4 * (64 * 64 * 3 + TRUTH_FLOATS)  # this batch and the next
    assert e.host == e.activations + e.parameters + e.workspace + e.images + PROCESS_BYTES
    assert e.gpu == e.activations + e.parameters + e.workspace + CUDA_CONTEXT_BYTES


def test_subdivisions_shrink_the_activations_not_the_loaded_images():
    whole, split = estimate(micro(128, batch=16)), estimate(micro(128, batch=16, subdivisions=4))
    assert split.mini_batch == 4 and whole.activations == 4 * split.activations
    assert whole.images == split.images


def test_random_resizes_to_the_largest_size_of_each_dialect():
    assert train_size(micro(416, random=1), "pjreddie") == (608, 608)
    assert train_size(micro(320, random=1), "alexeyab") == (480, 480)  # round(1.4×10+1)×32
    assert train_size(micro(416, random=1), "alexeyab") == (608, 608)
    assert train_size(micro(320, random=0), "pjreddie") == (320, 320)
    e = estimate(micro(320, random=1), dialect="pjreddie")
    assert (e.width, e.height) == (608, 608)
    assert e.activations == 4 * 4 * by_hand(608)


def test_the_refusal_says_what_it_needs_and_what_there_is():
    cfg = micro(4096, batch=64)
    need = estimate(cfg)
    [f] = memory_findings(cfg, need, MemoryLimit(24 << 30, "lily2's RAM"))
    assert isinstance(f, Finding) and f.severity == "error"
    assert f.line == next(n for n, t in enumerate(cfg.lines, 1) if t.startswith("width="))
    assert f"training needs about {size_text(need.host)} at 4096×4096, batch 64/" \
           "subdivisions 1" in f.reason
    assert "lily2's RAM has 24 GB" in f.reason and "subdivisions" in f.fix
    gpu = MemoryLimit(need.gpu - 1, "lily2's GPUs", gpu=True)
    [f] = memory_findings(cfg, need, gpu)
    assert "CUDA context" in f.reason and "lily2's GPUs have" in f.reason
    assert memory_findings(cfg, need, MemoryLimit(need.host, "here")) == []
    assert memory_findings(cfg, need, None) == []


@pytest.mark.parametrize("n, text", [(512, "512 B"), (3 << 20, "3 MB"), (int(2.5 * (1 << 30)),
                                                                        "2.5 GB")])
def test_sizes_read_as_people_write_them(n, text):
    assert size_text(n) == text


@pytest.mark.parametrize("text, n", [("24GB", 24 << 30), ("80 GiB", 80 << 30),
                                     ("512mb", 512 << 20), ("1.5TB", int(1.5 * (1 << 40))),
                                     ("24", None), ("0GB", None), ("lots", None)])
def test_sizes_as_the_inventory_and_cfg_check_take_them(text, n):
    assert parse_size(text) == n
