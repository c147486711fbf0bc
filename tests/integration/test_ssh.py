"""farm.remote.ssh and `farm hosts check` against a real OpenSSH sshd on loopback.

The fixture writes a host key, a user key, authorized_keys, an sshd_config and a
known_hosts, and runs /usr/sbin/sshd on a free 127.0.0.1 port (as root: this machine and
CI run as root). The "remote" file system is this machine's, so a test can look at what
arrived directly. Only the GPU check uses a stand-in (no GPU here; its name says so).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from farm.errors import BadInput, HostUnreachable
from farm.remote import transfer
from farm.remote.ssh import RemoteFileError, RemoteTimeout, SSHHost, UnknownHostKey

from tests.conftest import free_port
from tests.sshd import LoopbackSSHD, keygen, need_root_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    need_root_sshd()
    server = LoopbackSSHD(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def host(sshd):
    h = sshd.host()
    yield h
    h.close()


def _random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]  # "256 SHA256:… comment (ED25519)"


# -- commands -------------------------------------------------------------------------------

def test_arguments_arrive_intact_and_nothing_in_them_is_executed(host, tmp_path):
    marker = tmp_path / "pwned"
    args = ["two words", f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`",
            "it's \"quoted\"", "*", "", "tab\there", "new\nline", "--", "-n", "back\\slash"]
    code, out, err = host.run(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))",
                               *args])
    assert (code, err) == (0, "")
    assert json.loads(out) == args
    assert not marker.exists()


def test_exit_code_stdout_and_stderr_come_back_apart(host):
    assert host.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    assert host.run(["no-such-program-here"])[0] == 127
    with pytest.raises(TypeError, match="never a shell string"):
        host.run("echo hi")


def test_a_command_past_its_timeout_raises(host):
    started = time.monotonic()
    with pytest.raises(RemoteTimeout, match="did not finish within 0.5s"):
        host.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - started < 3
    assert host.run(["true"])[0] == 0  # the connection is still usable


# -- push and pull ------------------------------------------------------------------------------

def test_push_and_pull_verify_sha256_and_leave_no_part(host, tmp_path):
    src = tmp_path / "weights.bin"
    digest = _random_file(src, 3_000_000)
    remote = tmp_path / "remote" / "sub dir" / "w.bin"  # parent made on the host
    sent = transfer.push(host, src, str(remote))
    assert (sent.sha256, sent.sent, sent.resumed_from, sent.restarted) == (digest, 3_000_000, 0, False)
    assert hashlib.sha256(remote.read_bytes()).hexdigest() == digest
    assert not Path(f"{remote}.part").exists()

    back = tmp_path / "back" / "w.bin"
    got = transfer.pull(host, str(remote), back)
    assert (got.sha256, got.size, got.resumed_from) == (digest, 3_000_000, 0)
    assert back.read_bytes() == src.read_bytes()
    assert not Path(f"{back}.part").exists()


def test_a_push_cut_midway_resumes_from_the_part_and_verifies(host, tmp_path):
    src = tmp_path / "big.bin"
    digest = _random_file(src, 4 * 1024 * 1024)
    remote = tmp_path / "dest.bin"

    class Cut(Exception):
        pass

    def cut_at_half(done, total):
        if done >= total // 2:
            raise Cut()
    with pytest.raises(Cut):
        transfer.push(host, src, str(remote), progress=cut_at_half)
    part = Path(f"{remote}.part")
    assert not remote.exists()
    have = part.stat().st_size
    assert 0 < have < src.stat().st_size
    assert part.read_bytes() == src.read_bytes()[:have]

    seen = []
    t = transfer.push(host, src, str(remote), progress=lambda d, n: seen.append(d))
    assert (t.resumed_from, t.sent, t.restarted, t.sha256) == (have, t.size - have, False, digest)
    assert seen[0] > have  # counted from the resume point
    assert remote.read_bytes() == src.read_bytes() and not part.exists()


def test_an_interrupted_pull_resumes_from_its_part(host, tmp_path):
    remote = tmp_path / "remote.bin"
    digest = _random_file(remote, 1_500_000)
    local = tmp_path / "local" / "copy.bin"
    local.parent.mkdir()
    Path(f"{local}.part").write_bytes(remote.read_bytes()[:600_000])
    t = transfer.pull(host, str(remote), local)
    assert (t.resumed_from, t.sent, t.restarted, t.sha256) == (600_000, 900_000, False, digest)
    assert local.read_bytes() == remote.read_bytes()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_part_whose_prefix_differs_is_detected_and_restarted(host, tmp_path, direction):
    src = tmp_path / "src.bin"
    digest = _random_file(src, 1_000_000)
    dest = tmp_path / "dest.bin"
    bad = bytearray(src.read_bytes()[:400_000])
    bad[1234] ^= 0xFF  # one flipped byte in the middle of the prefix
    Path(f"{dest}.part").write_bytes(bytes(bad))
    t = transfer.push(host, src, str(dest)) if direction == "push" else transfer.pull(host, str(src), dest)
    assert (t.restarted, t.resumed_from, t.sent, t.sha256) == (True, 0, 1_000_000, digest)
    assert dest.read_bytes() == src.read_bytes()


def test_pulling_a_missing_file_names_host_and_path(host, tmp_path):
    with pytest.raises(RemoteFileError, match=r"loopback:/nonexistent/x\.weights not found"):
        transfer.pull(host, "/nonexistent/x.weights", tmp_path / "x.weights")


# -- host keys and unreachable hosts ----------------------------------------------------------

def test_an_unknown_host_key_is_refused_with_its_fingerprint(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(UnknownHostKey) as e, sshd.host(known_hosts=empty) as h:
        h.run(["true"])
    text = str(e.value)
    assert "ssh-ed25519" in text and _fingerprint(Path(f"{sshd.host_key}.pub")) in text
    assert f"ssh-keyscan -p {sshd.port} -t ed25519 127.0.0.1 >> {empty}" in text
    assert empty.read_text() == ""  # never added


def test_a_changed_host_key_is_refused_with_both_fingerprints(sshd, tmp_path):
    other = tmp_path / "other_key"
    keygen(other)
    pub = Path(f"{other}.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    with pytest.raises(UnknownHostKey, match="CHANGED") as e, sshd.host(known_hosts=kh) as h:
        h.run(["true"])
    assert _fingerprint(Path(f"{sshd.host_key}.pub")) in str(e.value)
    assert _fingerprint(Path(f"{other}.pub")) in str(e.value)
    assert "ssh-keygen -R" in str(e.value)


def test_a_host_that_goes_away_is_host_unreachable_with_its_name(tmp_path):
    need_root_sshd()
    server = LoopbackSSHD(tmp_path / "sshd").start()
    h = server.host(name="lily2", timeout=2)
    try:
        assert h.run(["true"])[0] == 0
        server.stop()  # listener and sessions: the machine is gone
        with pytest.raises(HostUnreachable, match="lily2"):
            h.run(["true"])
        with pytest.raises(HostUnreachable, match=r"lily2 did not answer SSH within 2s .*refused") as e:
            server.host(name="lily2", timeout=2).run(["true"])
        assert "farm hosts check lily2" in str(e.value)
    finally:
        h.close()
        server.stop()


def test_a_missing_key_file_is_bad_input_not_unreachable(sshd, tmp_path):
    h = SSHHost("127.0.0.1", sshd.port, "root", str(tmp_path / "nokey"), str(sshd.known_hosts))
    with pytest.raises(BadInput, match="SSH key for 127.0.0.1:.* not found"):
        h.run(["true"])


# -- sync_dir -------------------------------------------------------------------------------

def test_sync_dir_sends_only_missing_or_changed_files(host, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "RESUMABLE_SIZE", 100_000)  # one file takes the push() path
    local = tmp_path / "dataset"
    for i in range(30):
        sub = local / ("images" if i % 2 else "labels")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img {i:03d}.txt").write_text(f"0 0.5 0.5 0.1 0.1 # {i}\n")
    (local / "odd name;$(touch x) 'q'.txt").write_text("odd\n")
    _random_file(local / "images" / "big.jpg", 300_000)
    remote = tmp_path / "remote dataset"

    first = transfer.sync_dir(host, local, str(remote))
    assert (len(first.sent), first.unchanged) == (32, 0)

    def same() -> bool:
        files = [p.relative_to(local) for p in local.rglob("*") if p.is_file()]
        return all((remote / f).read_bytes() == (local / f).read_bytes() for f in files)
    assert same() and not list(remote.rglob("*.part"))

    again = transfer.sync_dir(host, local, str(remote))
    assert (again.sent, again.unchanged, again.bytes_sent) == ((), 32, 0)

    (local / "labels" / "img 004.txt").write_text("changed\n")
    (local / "images" / "img 005.txt").write_text("changed too\n")
    (local / "images" / "new.txt").write_text("new\n")
    third = transfer.sync_dir(host, local, str(remote))
    assert sorted(third.sent) == ["images/img 005.txt", "images/new.txt", "labels/img 004.txt"]
    assert third.unchanged == 30 and same()


# -- farm hosts check -------------------------------------------------------------------------

def _inventory(tmp_path: Path, sshd: LoopbackSSHD, port: int | None = None) -> Path:
    data = tmp_path / "farm-data"
    data.mkdir(exist_ok=True)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f"""\
hosts:
  lily2:
    address: 127.0.0.1
    ssh: {{user: root, port: {port or sshd.port}, key: {sshd.user_key}, known_hosts: {sshd.known_hosts}}}
    roles: [cpu, eval]
    data_dir: {data}
    darknet: darknet
""")
    return inv


def test_hosts_check_reports_the_debian_darknet_as_pjreddie_and_free_disk(sshd, tmp_path, capsys):
    if shutil.which("darknet") is None:
        pytest.fail("darknet is not installed (apt-get install darknet)")
    from workers.cli import main
    code = main(["hosts", "check", "lily2", "--inventory", str(_inventory(tmp_path, sshd))])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ssh      ok (root@127.0.0.1" in out
    assert "darknet  /usr/bin/darknet (pjreddie)" in out
    assert "GiB free of" in out and "gpus     none (no nvidia-smi)" in out


def test_hosts_check_names_an_unreachable_host_and_exits_3(sshd, tmp_path, capsys):
    from workers.cli import main
    inv = _inventory(tmp_path, sshd, port=free_port())
    code = main(["hosts", "check", "--inventory", str(inv), "--timeout", "2"])
    captured = capsys.readouterr()
    assert code == 3
    assert "PROBLEM: lily2 did not answer SSH within 2s" in captured.out
    assert "1 of 1 host(s) failed the check: lily2" in captured.err


class _CannedNvidiaSmi:
    """Stand-in for a GPU host (no GPU here): answers nvidia-smi as a 2-GPU machine does."""

    def run(self, argv, timeout=None):
        assert argv[0] == "nvidia-smi" and "--format=csv,noheader" in argv
        return 0, "NVIDIA H100 80GB HBM3, 81559 MiB\nNVIDIA H100 80GB HBM3, 81559 MiB\n", ""


def test_gpu_line_from_nvidia_smi_standin_no_gpu_here(sshd, tmp_path):
    from farm.inventory import load_inventory
    from workers.cli.hosts import Report, _check_gpus
    host = load_inventory(_inventory(tmp_path, sshd)).host("lily2")
    r = Report(host)
    _check_gpus(_CannedNvidiaSmi(), host, r)
    assert r.lines == [("gpus", "2: NVIDIA H100 80GB HBM3, 81559 MiB; NVIDIA H100 80GB HBM3, 81559 MiB")]
    assert not r.problems


def test_sync_dir_refuses_files_that_arrive_different_and_removes_them(host, tmp_path, monkeypatch):
    local = tmp_path / "ds"
    local.mkdir()
    (local / "good.txt").write_text("good\n")
    (local / "bad.txt").write_text("what is sent\n")
    real = transfer.sha256_file

    def lying(path, limit=None):  # the local digest of bad.txt claims other content
        return hashlib.sha256(b"what was meant") if path.name == "bad.txt" else real(path, limit)
    monkeypatch.setattr(transfer, "sha256_file", lying)
    remote = tmp_path / "remote"
    with pytest.raises(transfer.TransferFailed, match="1 file.* different sha256, e.g. .*bad.txt"):
        transfer.sync_dir(host, local, str(remote))
    assert not (remote / "bad.txt").exists() and not (remote / "bad.txt.part").exists()
    assert not list(remote.glob(".farm-sync-*"))  # the checklist is gone too


# -- fetch by content (farm.remote.flow) ------------------------------------------------------

def _packaged(root: Path, seed: int = 2, size: int = 64) -> Path:
    from farm.datasets.package import package
    from workers.micro import micro_dataset
    src = micro_dataset(root / f"src{seed}", images=40, seed=seed, size=size).parent
    return Path(package([src], root / "there", names=["close"], network=(64, 64)).path)


def test_a_dataset_fetch_cut_in_the_middle_resumes_and_verifies(tmp_path):
    from farm.datasets.package import verify_dataset
    from farm.remote.flow import fetch_dataset
    need_root_sshd()
    server = LoopbackSSHD(tmp_path / "sshd").start()
    remote = _packaged(tmp_path, size=768)  # ~20 MB: more than SSH and sockets buffer
    here = tmp_path / "here"

    def cut(done, total):  # the host vanishes after 10 of the 84 files
        if done == 10:
            server.stop()
    try:
        with server.host(name="augmentation", timeout=2) as h, \
                pytest.raises(HostUnreachable, match="augmentation"):
            fetch_dataset(h, str(remote), here, progress=cut)
        staging = here / f".fetch-{remote.name}"
        arrived = [p for p in staging.rglob("*") if p.is_file() and p.suffix != ".part"]
        assert 10 <= len(arrived) < 84 and not (here / remote.name).exists()
        assert len(list(staging.rglob("*.part"))) <= 1  # the file the cut went through
        server.start()
        with server.host(name="augmentation") as h:
            got = fetch_dataset(h, str(remote), here)
        assert got.fetched == 84 - len(arrived) and not got.already
        assert verify_dataset(here / remote.name)["id"] == remote.name
        assert (here / remote.name / "valid.txt").read_text().startswith(f"{here / remote.name}/")
        assert not (here / f".fetch-{remote.name}").exists()
    finally:
        server.stop()


def test_fetch_refuses_names_that_leave_the_folder_and_bad_content(host, tmp_path):
    from farm.remote.flow import fetch_dataset
    remote = _packaged(tmp_path, seed=3)
    with pytest.raises(BadInput, match="not a plain relative path"):
        transfer.fetch_files(host, str(remote), {"../../etc/passwd": "0" * 64}, tmp_path / "x")
    manifest = json.loads((remote / "manifest.json").read_text())
    rel = next(r for r in manifest["files"] if r.endswith(".jpg"))
    with pytest.raises(transfer.TransferFailed, match="differs from its manifest"):
        transfer.fetch_files(host, str(remote), {rel: "0" * 64}, tmp_path / "y")
    assert not list((tmp_path / "y").rglob("*.jpg*"))  # nothing unverified is left
    (remote / "manifest.json").write_text(json.dumps({"format": "farm-dataset/1", "id": "../x",
                                                      "files": {}, "lists": {}}))
    with pytest.raises(BadInput, match="not the manifest of a packaged dataset"):
        fetch_dataset(host, str(remote), tmp_path / "z")
