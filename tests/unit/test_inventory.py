"""The host inventory: every bad case is one clear message naming file:line; the worker
plan and the "host with no worker" check follow docs/celery.md §3."""
from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from farm.errors import BadInput, FindingsError
from farm.inventory import Inventory, load_inventory

GOOD = """\
defaults:
  ssh: {user: farm, key: farm_key, known_hosts: known_hosts}
  data_dir: /srv/farm
hosts:
  lily2:
    address: 192.168.1.20
    roles: [gpu]
    gpus: 2
    darknet: /opt/darknet/darknet
  augmentation:
    address: 192.168.1.21
    roles: [augment, cpu]
  imglabeling:
    address: imglabeling.lan
    ssh: {port: 2222, user: label}
    roles: [label]
"""


@pytest.fixture
def write(tmp_path):
    (tmp_path / "farm_key").write_text("not read by the loader\n")
    (tmp_path / "known_hosts").write_text("")

    def write(text: str) -> Path:
        path = tmp_path / "inventory.yaml"
        path.write_text(textwrap.dedent(text))
        return path
    return write


def one_error(path: Path) -> FindingsError:
    """Load `path`, expecting exactly one problem; return the error."""
    with pytest.raises(FindingsError) as e:
        load_inventory(path)
    assert len(e.value.findings) == 1, [str(f) for f in e.value.findings]
    return e.value


def test_a_good_inventory_loads_with_defaults_applied(write, tmp_path):
    inv = load_inventory(write(GOOD))
    assert list(inv.hosts) == ["lily2", "augmentation", "imglabeling"]
    lily2, aug, lab = inv.hosts.values()
    assert (lily2.gpus, lily2.roles, lily2.darknet, lily2.line) == (2, ("gpu",), "/opt/darknet/darknet", 5)
    assert aug.darknet == "darknet" and aug.data_dir == "/srv/farm"
    assert lily2.ssh.key == str(tmp_path / "farm_key")  # relative to the inventory's folder
    assert (lab.ssh.user, lab.ssh.port, aug.ssh.port) == ("label", 2222, 22)


def test_duplicate_host_name_is_caught_although_yaml_would_keep_the_last(write):
    path = write(GOOD + "  lily2:\n    address: 10.0.0.9\n    roles: [cpu]\n")
    e = one_error(path)
    assert str(e).startswith(f"{path}:17: duplicate host name 'lily2' in hosts (first at line 5)")
    assert "give each machine its own name" in str(e)


def test_a_field_given_twice_in_one_host_is_caught(write):
    path = write(GOOD.replace("    gpus: 2\n", "    gpus: 2\n    gpus: 1\n"))
    assert f"{path}:9: duplicate field 'gpus' in host lily2 (first at line 8)" in str(one_error(path))


def test_unknown_role_lists_the_known_ones(write):
    path = write(GOOD.replace("[augment, cpu]", "[augment, trainer]"))
    e = one_error(path)
    assert str(e).startswith(f"{path}:12: unknown role 'trainer' for host augmentation")
    assert "known roles: gpu, cpu, augment, label, eval" in str(e)


def test_missing_key_file_names_the_host_and_the_path_looked_at(write, tmp_path):
    path = write(GOOD.replace("key: farm_key", "key: ~/.ssh/no_such_key_here"))
    e = one_error(path)  # one finding, though all three hosts use that default
    assert str(e).startswith(f"{path}:2: defaults: ssh key file ~/.ssh/no_such_key_here not found")
    assert e.findings[0].line == 2 and "ssh-keygen -t ed25519" in str(e)
    assert len({f.line for f in e.findings}) == 1


def test_missing_key_file_of_one_host_points_at_its_own_line(write):
    path = write(GOOD.replace("ssh: {port: 2222, user: label}",
                              "ssh: {port: 2222, user: label, key: /nope/key}"))
    assert str(one_error(path)).startswith(
        f"{path}:15: host imglabeling: ssh key file /nope/key not found")


def test_unknown_field_suggests_the_close_one(write):
    path = write(GOOD.replace("    address: 192.168.1.21", "    adress: 192.168.1.21"))
    with pytest.raises(FindingsError) as e:
        load_inventory(path)
    reasons = [f"{f.line}: {f.reason}" for f in e.value.findings]
    # the typo, and as a consequence the host has no address: both at their lines
    assert reasons == ["11: unknown field 'adress' in host augmentation",
                       "10: host augmentation has no address"]
    assert "did you mean 'address'?" in e.value.findings[0].fix


def test_wrong_type_says_what_was_found(write):
    path = write(GOOD.replace("gpus: 2", "gpus: two"))
    assert str(one_error(path)).startswith(
        f"{path}:8: host lily2: gpus must be a whole number, not text 'two'")


def test_a_yes_no_host_name_is_refused_with_how_to_quote_it(write):
    path = write(GOOD.replace("  imglabeling:", "  yes:"))
    e = one_error(path)
    assert str(e).startswith(f"{path}:13: host name True is not usable")
    assert "quote it" in str(e)


def test_gpu_role_and_gpu_count_must_agree(write):
    path = write(GOOD.replace("    gpus: 2\n", ""))
    assert "host lily2 has the gpu role but gpus is 0" in str(one_error(path))


def test_every_problem_is_reported_not_only_the_first(write):
    path = write(GOOD.replace("[gpu]", "[gpus]").replace("[label]", "[labels]"))
    with pytest.raises(FindingsError) as e:
        load_inventory(path)
    assert [f.line for f in e.value.findings] == [7, 16]
    assert "(and 1 more errors)" in str(e.value)


def test_broken_yaml_and_a_missing_file_name_the_file(write, tmp_path):
    path = write("hosts:\n  lily2: {address: [\n")
    with pytest.raises(BadInput, match=rf"^{path}:3: not valid YAML"):
        load_inventory(path)
    with pytest.raises(BadInput, match="inventory not found") as e:
        load_inventory(tmp_path / "absent.yaml")
    assert "ops/inventory.example.yaml" in str(e.value)


def test_the_example_inventory_in_ops_loads(tmp_path, monkeypatch):
    example = Path(__file__).resolve().parents[2] / "ops" / "inventory.example.yaml"
    text = example.read_text()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "farm").mkdir(parents=True)
    (home / ".ssh" / "farm_ed25519").write_text("")
    (home / ".config" / "farm" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    inv = load_inventory(path)
    assert {n: h.roles for n, h in inv.hosts.items()} == {
        "lily2": ("gpu",), "augmentation": ("augment", "cpu", "eval"),
        "imglabeling": ("label",)}
    assert inv.hosts["lily2"].gpus == 1


# -- worker plan and coverage ---------------------------------------------------------------

def test_worker_plan_one_pinned_worker_per_gpu_and_one_for_cpu_roles(write):
    inv = load_inventory(write(GOOD))
    gpu0, gpu1 = inv.worker_plan("lily2")
    assert (gpu0.node, gpu0.env["CUDA_VISIBLE_DEVICES"], gpu1.env["CUDA_VISIBLE_DEVICES"]) == \
        ("gpu0@lily2", "0", "1")
    argv = gpu0.argv("/opt/farm/venv/bin/python")
    assert argv[:6] == ["/opt/farm/venv/bin/python", "-m", "celery", "-A", "workers.app", "worker"]
    assert ["-n", "gpu0@lily2", "-Q", "gpu,host.lily2", "-c", "1"] == argv[6:12]
    assert "--disable-prefetch" in argv and "--prefetch-multiplier=1" in argv
    assert gpu0.command_line().startswith("CUDA_VISIBLE_DEVICES=0 FARM_HOST_NAME=lily2 ")
    assert shlex.split(gpu0.command_line())[4:] == gpu0.argv()

    (cpu,) = inv.worker_plan("augmentation")
    assert (cpu.node, cpu.queues, cpu.concurrency) == \
        ("cpu@augmentation", ("cpu", "augment", "host.augmentation"), None)
    assert "CUDA_VISIBLE_DEVICES" not in cpu.env and "--disable-prefetch" not in cpu.argv()
    assert inv.worker_plan("imglabeling")[0].queues == ("label", "host.imglabeling")
    env = dict(line.split("=", 1) for line in gpu1.env_file().splitlines())
    assert env["FARM_WORKER_ARGS"].startswith("-n gpu1@lily2 -Q gpu,host.lily2 -c 1")


def test_unknown_host_in_plan_lists_the_known_ones(write):
    with pytest.raises(BadInput, match="no host 'lily3'") as e:
        load_inventory(write(GOOD)).worker_plan("lily3")
    assert "known hosts: lily2, augmentation, imglabeling" in str(e.value)


def test_a_host_with_no_worker_answering_is_an_error_at_its_line(write):
    inv: Inventory = load_inventory(write(GOOD))
    seen = {"gpu0@lily2", "gpu1@lily2", "cpu@augmentation", "celery@elsewhere"}
    (finding,) = inv.check_coverage(seen)
    assert (finding.severity, finding.line) == ("error", 13)
    assert finding.reason == "host imglabeling (label) has no worker answering: expected cpu@imglabeling"
    assert "systemctl start farm-worker@cpu" in finding.fix

    (partial,) = inv.check_coverage(seen - {"gpu1@lily2"} | {"cpu@imglabeling"})
    assert partial.severity == "warning" and partial.reason == "host lily2: gpu1@lily2 did not answer"
    assert inv.check_coverage(seen | {"cpu@imglabeling"}) == []


def test_a_worker_host_reads_its_plan_without_the_heads_key_files(write):
    path = write(GOOD.replace("key: farm_key", "key: /only/on/the/head"))
    with pytest.raises(FindingsError):
        load_inventory(path)
    inv = load_inventory(path, check_files=False)
    assert [w.node for w in inv.worker_plan("lily2")] == ["gpu0@lily2", "gpu1@lily2"]
