"""Dataset transfer over SSH: the farm's SFTP sync against `rsync -a`, same sshd, one run.

A loopback OpenSSH sshd (started here, as the tests start it: run as root) serves both.
The dataset is many small files, as a darknet dataset is (default 200 MB of ~50 KB
files). Measured, in this order:

1. full sync into an empty folder: `SSHHost.sync_dir` (SFTP, sha256 of every file on both
   sides, `.part` + rename) and `rsync -a` over `ssh`; MB/s of each and the ratio;
2. sync again after 1 % of the files changed (new content, same size): time of each;
3. sync again with nothing changed: time of each.

    python bench/bench_sftp.py [--size-mb 200] [--file-kb 50] [--changed 0.01]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def rsync(sshd: LoopbackSSHD, src: Path, dest: Path) -> subprocess.CompletedProcess:
    ssh = (f"ssh -p {sshd.port} -i {sshd.user_key} -o BatchMode=yes "
           f"-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes")
    return subprocess.run(["rsync", "-a", "--stats", "-e", ssh, f"{src}/", f"root@127.0.0.1:{dest}/"],
                          check=True, capture_output=True, text=True)


def rsync_sent(out: str) -> int:
    for line in out.splitlines():
        if line.startswith("Number of regular files transferred:"):
            return int(line.split(":")[1].replace(",", ""))
    return -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--file-kb", type=int, default=50)
    ap.add_argument("--changed", type=float, default=0.01, help="fraction of files changed")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or not shutil.which("rsync"):
        print("bench_sftp: needs root, /usr/sbin/sshd and rsync", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    sshd = LoopbackSSHD(root / "sshd").start()
    try:
        local = root / "dataset"
        files = make_dataset(local, args.size_mb, args.file_kb)
        nbytes = sum(p.stat().st_size for p in files)
        mb = nbytes / 1e6
        print(f"dataset: {len(files)} files, {mb:.0f} MB (~{args.file_kb} KB each); "
              f"loopback sshd on port {sshd.port}; {os.cpu_count()} CPUs")
        host = sshd.host(name="bench", timeout=30)
        host.connect()
        lat = sorted(timed(lambda: host.run(["true"]))[0] for _ in range(5))[2]
        print(f"one remote command (run(['true'])): {lat * 1000:.0f} ms median; sync_dir "
              f"runs 2 (rsync starts 1), so that cost is in both figures below")

        t_sftp, r = timed(lambda: host.sync_dir(local, str(root / "via-sftp")))
        assert len(r.sent) == len(files)
        t_rsync, _ = timed(lambda: rsync(sshd, local, root / "via-rsync"))
        print(f"full sync   farm SFTP {t_sftp:7.2f} s ({mb / t_sftp:6.1f} MB/s)   "
              f"rsync -a {t_rsync:7.2f} s ({mb / t_rsync:6.1f} MB/s)   "
              f"SFTP/rsync throughput {t_rsync / t_sftp:.2f}")

        changed = random.Random(1).sample(files, max(1, int(len(files) * args.changed)))
        for p in changed:
            p.write_bytes(os.urandom(p.stat().st_size))
        t_sftp1, r1 = timed(lambda: host.sync_dir(local, str(root / "via-sftp")))
        t_rsync1, out1 = timed(lambda: rsync(sshd, local, root / "via-rsync"))
        assert len(r1.sent) == len(changed), (len(r1.sent), len(changed))
        print(f"{len(changed)} changed  farm SFTP {t_sftp1:7.2f} s (sent {len(r1.sent)})"
              f"             rsync -a {t_rsync1:7.2f} s (sent {rsync_sent(out1.stdout)})")

        t_sftp0, r0 = timed(lambda: host.sync_dir(local, str(root / "via-sftp")))
        t_rsync0, out0 = timed(lambda: rsync(sshd, local, root / "via-rsync"))
        assert not r0.sent
        print(f"no change   farm SFTP {t_sftp0:7.2f} s (sent 0)"
              f"               rsync -a {t_rsync0:7.2f} s (sent {rsync_sent(out0.stdout)})")
        host.close()
    finally:
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
