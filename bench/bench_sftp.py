"""Dataset transfer over SSH: the farm's SFTP push and tar-stream pull against `rsync -a`.

A loopback OpenSSH sshd (started here, as the tests start it: run as root) serves both
sides; "remote" folders are folders of this machine served by that sshd. The datasets are
many small files, as a darknet dataset is (default 200 MB of ~50 KB files). Measured, in
this order, each farm figure side by side with rsync in the same run:

push (`--only push`): random-byte files, `transfer.sync_dir` vs `rsync -a` host-ward
1. full sync into an empty folder: `transfer.sync_dir` (SFTP, sha256 of every file on both
   sides, `.part` + rename) and `rsync -a` over `ssh`; MB/s of each and the ratio;
2. sync again after 1 % of the files changed (new content, same size): time of each;
3. sync again with nothing changed: time of each.

pull (`--only pull`): a real packaged dataset (noisy 200x200 JPEGs, ~50 KB each, each
with a one-line YOLO label) made with farm.datasets.package on the "remote" side
4. full fetch into an empty root: `flow.fetch_dataset` (manifest over SFTP, every file in
   one `tar` stream, sha256 of each checked, lists relocated) vs `rsync -a` pulling the
   same folder over the same sshd; MB/s of each and the ratio (best of --repeat, alternated);
5. 1 % of the images changed and the folder packaged again (a new dataset id):
   `fetch_dataset` of the new one into the same root (hard-links what the first has) vs
   `rsync -a` pulling the new folder into a copy of the first rsync copy; time, files and
   bytes that travelled. The new package's files all carry new mtimes, so rsync's quick
   check matches none of them; `rsync -a --checksum` is shown too.

    python bench/bench_sftp.py [--size-mb 200] [--file-kb 50] [--changed 0.01]
                               [--only push|pull] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.remote import transfer  # noqa: E402
from tests.sshd import LoopbackSSHD  # noqa: E402  (the tests' sshd)


def make_dataset(root: Path, size_mb: int, file_kb: int, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    files, total, i = [], 0, 0
    while total < size_mb * 1_000_000:
        size = int(file_kb * 1000 * rng.uniform(0.8, 1.2))
        path = root / ("images" if i % 10 else "labels") / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        files.append(path)
        total += size
        i += 1
    return files


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def ssh_command(sshd: LoopbackSSHD) -> str:
    """The `ssh` rsync runs: the sshd's user key and known_hosts, as the farm uses them."""
    return (f"ssh -p {sshd.port} -i {sshd.user_key} -o BatchMode=yes "
            f"-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes")


def rsync(sshd: LoopbackSSHD, src: Path, dest: Path) -> subprocess.CompletedProcess:
    """Push: local `src` to `dest` on the host."""
    return subprocess.run(["rsync", "-a", "--stats", "-e", ssh_command(sshd), f"{src}/",
                           f"root@127.0.0.1:{dest}/"], check=True, capture_output=True, text=True)


def rsync_pull(sshd: LoopbackSSHD, src: str, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    """Pull: `src` on the host to local `dest`."""
    return subprocess.run(["rsync", "-a", "--stats", *extra, "-e", ssh_command(sshd),
                           f"root@127.0.0.1:{src}/", f"{dest}/"],
                          check=True, capture_output=True, text=True)


def rsync_stats(out: str) -> dict[str, int]:
    """rsync --stats as {label: number}: `Number of regular files transferred`,
    `Total bytes sent` (from this side), `Total bytes received`, `Literal data`, …"""
    stats = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            word = value.split()[0].replace(",", "")
            if word.isdigit():
                stats[key.strip()] = int(word)
    return stats


def rsync_sent(out: str) -> int:
    return rsync_stats(out).get("Number of regular files transferred", -1)


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(files, bytes) under folder."""
    n = size = 0
    for p in folder.rglob("*"):
        if p.is_file():
            n += 1
            size += p.stat().st_size
    return n, size


# --------------------------------------------------------------------------- push (SFTP)

def bench_push(args, sshd: LoopbackSSHD, root: Path) -> None:
    local = root / "dataset"
    files = make_dataset(local, args.size_mb, args.file_kb)
    nbytes = sum(p.stat().st_size for p in files)
    mb = nbytes / 1e6
    print(f"\n== push: {len(files)} random-byte files, {mb:.0f} MB (~{args.file_kb} KB each)")
    host = sshd.host(name="bench", timeout=30)
    host.connect()
    lat = sorted(timed(lambda: host.run(["true"]))[0] for _ in range(5))[2]
    print(f"one remote command (run(['true'])): {lat * 1000:.0f} ms median; sync_dir "
          f"runs 2 (rsync starts 1), so that cost is in both figures below")

    t_sftp, r = timed(lambda: transfer.sync_dir(host, local, str(root / "via-sftp")))
    assert len(r.sent) == len(files)
    t_rsync, _ = timed(lambda: rsync(sshd, local, root / "via-rsync"))
    print(f"full sync   farm SFTP {t_sftp:7.2f} s ({mb / t_sftp:6.1f} MB/s)   "
          f"rsync -a {t_rsync:7.2f} s ({mb / t_rsync:6.1f} MB/s)   "
          f"SFTP/rsync throughput {t_rsync / t_sftp:.2f}")

    changed = random.Random(1).sample(files, max(1, int(len(files) * args.changed)))
    for p in changed:
        p.write_bytes(os.urandom(p.stat().st_size))
    t_sftp1, r1 = timed(lambda: transfer.sync_dir(host, local, str(root / "via-sftp")))
    t_rsync1, out1 = timed(lambda: rsync(sshd, local, root / "via-rsync"))
    assert len(r1.sent) == len(changed), (len(r1.sent), len(changed))
    print(f"{len(changed)} changed  farm SFTP {t_sftp1:7.2f} s (sent {len(r1.sent)})"
          f"             rsync -a {t_rsync1:7.2f} s (sent {rsync_sent(out1.stdout)})")

    t_sftp0, r0 = timed(lambda: transfer.sync_dir(host, local, str(root / "via-sftp")))
    t_rsync0, out0 = timed(lambda: rsync(sshd, local, root / "via-rsync"))
    assert not r0.sent
    print(f"no change   farm SFTP {t_sftp0:7.2f} s (sent 0)"
          f"               rsync -a {t_rsync0:7.2f} s (sent {rsync_sent(out0.stdout)})")
    host.close()
    for folder in (local, root / "via-sftp", root / "via-rsync"):
        shutil.rmtree(folder, ignore_errors=True)  # disk for the pull part


# --------------------------------------------------------------------------- pull (tar stream)

def noise_jpeg(rng, side: int, quality: int) -> bytes:
    import cv2
    import numpy as np
    img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def make_images(folder: Path, size_mb: int, seed: int = 11) -> list[Path]:
    """Noisy 200x200 JPEGs (uniform noise at quality 95: ~48 KB), a one-line YOLO label
    beside each, 1000 to a subfolder; until size_mb of images."""
    import numpy as np
    rng = np.random.default_rng(seed)
    images, total, i = [], 0, 0
    while total < size_mb * 1_000_000:
        sub = folder / f"f{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        path = sub / f"img{i:06d}.jpg"
        data = noise_jpeg(rng, 200, 95)
        path.write_bytes(data)
        x, y, s = rng.uniform(0.2, 0.8, 2).tolist() + [float(rng.uniform(0.05, 0.3))]
        path.with_suffix(".txt").write_text(f"0 {x:.6f} {y:.6f} {s:.6f} {s:.6f}\n")
        images.append(path)
        total += len(data)
        i += 1
    (folder / "obj.names").write_text("noise\n")
    return images


def package_remote(source: Path, remote_root: Path) -> tuple[str, float]:
    from farm.datasets.package import package
    t, res = timed(lambda: package([source], remote_root, names=["noise"], network=(416, 416),
                                   check_images=False))
    return res.path, t


def farm_fetch(sshd: LoopbackSSHD, remote_dir: str, root: Path):
    """One fetch as a worker does it: a fresh SSHHost (connect included), fetch, close.
    Returns (Fetch, seconds in fetch_files, CPU seconds of this process, seconds to
    connect)."""
    from farm.remote.flow import fetch_dataset
    host = sshd.host(name="bench", timeout=30)
    inner = host.fetch_files
    spent = [0.0]

    def fetch_files(*a, **kw):
        t, r = timed(lambda: inner(*a, **kw))
        spent[0] += t
        return r
    host.fetch_files = fetch_files  # timed: the rest is SFTP manifest, links, relocate
    cpu = cpu_self()
    try:
        t_connect, _ = timed(host.connect)
        got = fetch_dataset(host, remote_dir, root)
    finally:
        host.close()
    return got, spent[0], cpu_self() - cpu, t_connect


def rsync_fetch(sshd: LoopbackSSHD, remote_dir: str, dest: Path, *extra: str):
    cpu = cpu_children()
    out = rsync_pull(sshd, remote_dir, dest, *extra)
    return rsync_stats(out.stdout), cpu_children() - cpu


def bench_pull(args, sshd: LoopbackSSHD, root: Path) -> list[tuple]:
    src, remote = root / "source", root / "remote"
    t_make, images = timed(lambda: make_images(src, args.size_mb))
    first, t_pkg = package_remote(src, remote)
    n_files, nbytes = folder_bytes(Path(first))
    mb = nbytes / 1e6
    manifest_kb = (Path(first) / "manifest.json").stat().st_size / 1e3
    print(f"\n== pull: packaged dataset {Path(first).name}: {len(images)} JPEGs "
          f"(mean {sum(p.stat().st_size for p in images) / len(images) / 1e3:.1f} KB) + labels, "
          f"{n_files} files, {mb:.0f} MB, manifest {manifest_kb:.0f} KB "
          f"(setup: images {t_make:.0f} s, package {t_pkg:.0f} s)")
    rows = []

    # 4. full fetch, alternated, best of --repeat
    farm_t, rsync_t, farm_in, farm_cpu, rs_cpu = [], [], [], [], []
    for rep in range(args.repeat):
        for d in (root / "local-farm", root / "local-rsync"):
            shutil.rmtree(d, ignore_errors=True)
        t_f, (got, t_in, c_f, _) = timed(lambda: farm_fetch(sshd, first, root / "local-farm"))
        assert got.fetched == n_files - 1 and got.linked == 0, got  # all but manifest.json
        t_r, (st, c_r) = timed(lambda: rsync_fetch(sshd, first, root / "local-rsync"))
        assert st["Number of regular files transferred"] == n_files, st
        farm_t.append(t_f), rsync_t.append(t_r), farm_in.append(t_in)
        farm_cpu.append(c_f), rs_cpu.append(c_r)
        print(f"  full fetch rep {rep + 1}: farm {t_f:6.2f} s (fetch_files {t_in:6.2f} s, "
              f"CPU here {c_f:5.1f} s)   rsync {t_r:6.2f} s (CPU of rsync+ssh {c_r:5.1f} s)")
    tf, tr = min(farm_t), min(rsync_t)
    rows.append(("full fetch", f"{tf:.2f} s", f"{mb / tf:.1f} MB/s", f"{got.fetched} files",
                 f"{got.bytes / 1e6:.1f} MB",
                 f"{tr:.2f} s", f"{mb / tr:.1f} MB/s",
                 f"{st['Number of regular files transferred']} files",
                 f"{(st['Total bytes received'] + st['Total bytes sent']) / 1e6:.1f} MB",
                 f"{tr / tf:.2f}"))
    print(f"  best: farm {mb / tf:.1f} MB/s, rsync {mb / tr:.1f} MB/s, farm/rsync throughput "
          f"{tr / tf:.2f} (medians {statistics.median(rsync_t) / statistics.median(farm_t):.2f}); "
          f"fetch_files is {statistics.median(farm_in) / statistics.median(farm_t):.0%} of the "
          f"farm's time")

    # 5. 1 % changed, packaged again
    import numpy as np
    changed = random.Random(1).sample(images, max(1, int(len(images) * args.changed)))
    rng = np.random.default_rng(99)
    for p in changed:
        p.write_bytes(noise_jpeg(rng, 200, 95))
    second, t_pkg2 = package_remote(src, remote)
    assert Path(second).name != Path(first).name
    print(f"  {len(changed)} images changed, packaged again as {Path(second).name} "
          f"({t_pkg2:.0f} s setup)")
    new_final = root / "local-farm" / Path(second).name
    ch_f, ch_r, ch_c = [], [], []
    for rep in range(args.repeat):
        shutil.rmtree(new_final, ignore_errors=True)
        t_f, (got1, t_in1, _, t_con) = timed(lambda: farm_fetch(sshd, second, root / "local-farm"))
        # rsync into a copy of its first copy (setup, not timed), -a then --checksum. A real
        # copy (cp -a keeps mtimes): with a hard-linked one (cp -al), --checksum fixes the
        # mtimes of unchanged files in place, i.e. in the first copy too, and the next
        # `rsync -a` would then find 99 % up to date by its quick check.
        results = {}
        for name, extra in (("rsync -a", ()), ("rsync -a --checksum", ("--checksum",))):
            dest = root / "local-rsync-new"
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["cp", "-a", str(root / "local-rsync"), str(dest)], check=True)
            results[name] = timed(lambda: rsync_fetch(sshd, second, dest, *extra))
        ch_f.append((t_f, t_in1, got1))
        ch_r.append(results["rsync -a"])
        ch_c.append(results["rsync -a --checksum"])
        print(f"  1 % fetch rep {rep + 1}: farm {t_f:6.2f} s (connect {t_con:4.2f} s, fetch_files "
              f"{t_in1:4.2f} s, manifests+links+relocate {t_f - t_con - t_in1:4.2f} s; "
              f"{got1.fetched} fetched, {got1.linked} linked)   rsync -a "
              f"{results['rsync -a'][0]:6.2f} s   rsync -a --checksum "
              f"{results['rsync -a --checksum'][0]:6.2f} s")
    assert got1.linked == n_files - 1 - got1.fetched, got1
    # travelled, farm: files + the manifest read over SFTP (+ tar headers, ~1 KB a file)
    tf1 = min(x[0] for x in ch_f)
    travel_farm = got1.bytes + (Path(second) / "manifest.json").stat().st_size
    for name, runs in (("rsync -a", ch_r), ("rsync -a --checksum", ch_c)):
        tr1 = min(x[0] for x in runs)
        st1 = runs[-1][1][0]
        rows.append((f"{len(changed)} changed: {name}" if name != "rsync -a" else
                     f"{len(changed)} changed", f"{tf1:.2f} s", "",
                     f"{got1.fetched} fetched + {got1.linked} linked",
                     f"{travel_farm / 1e6:.2f} MB",
                     f"{tr1:.2f} s", "" if name == "rsync -a" else "(--checksum)",
                     f"{st1['Number of regular files transferred']} files",
                     f"{(st1['Total bytes received'] + st1['Total bytes sent']) / 1e6:.2f} MB "
                     f"(literal {st1.get('Literal data', 0) / 1e6:.2f})",
                     f"{tr1 / tf1:.2f}"))
    return rows


def print_table(rows: list[tuple]) -> None:
    head = ("pull", "farm time", "farm rate", "farm files", "farm bytes", "rsync time",
            "rsync rate", "rsync files", "rsync bytes (wire)", "rsync/farm time")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    print()
    for r in (head, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print("farm bytes: file payload + manifest.json (tar adds ~1 KB a file); rsync bytes: "
          "Total bytes sent + received (its checksums included); rsync/farm time > 1: farm faster")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--file-kb", type=int, default=50, help="push files' size (the pull's "
                    "JPEGs are ~48 KB)")
    ap.add_argument("--changed", type=float, default=0.01, help="fraction of files changed")
    ap.add_argument("--only", choices=("push", "pull"), help="one part only (default: both)")
    ap.add_argument("--repeat", type=int, default=3, help="pull runs of each, alternated")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or not shutil.which("rsync"):
        print("bench_sftp: needs root, /usr/sbin/sshd and rsync", file=sys.stderr)
        return 2
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    root = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    sshd = LoopbackSSHD(root / "sshd").start()
    print(f"loopback sshd on port {sshd.port}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}")
    try:
        if args.only in (None, "push"):
            bench_push(args, sshd, root)
        if args.only in (None, "pull"):
            print_table(bench_pull(args, sshd, root))
    finally:
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
