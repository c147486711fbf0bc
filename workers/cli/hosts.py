"""`farm hosts list|check|plan|workers`: the machines of the inventory.

`check` logs in to each host the way the farm will (the inventory's key, its
known_hosts, no agent) and asks what a task would need there: darknet and its dialect,
free disk in the data dir, the GPUs. A problem is named with its host and what to do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from farm.darknet.dialect import classify_banner
from farm.errors import FarmError, FarmUnavailable
from farm.inventory import Host, Inventory, default_inventory_path, load_inventory
from farm.remote.ssh import SSHHost
from workers.cli import EXIT_OK, Context, pass_ctx

inventory_option = click.option(
    "--inventory", "inventory_path", metavar="FILE", envvar="FARM_INVENTORY",
    help="Host inventory (FARM_INVENTORY; default ~/.config/farm/inventory.yaml; "
         "format: ops/inventory.example.yaml).")


def _load(path: str | None, *, check_files: bool = True) -> Inventory:
    return load_inventory(path or default_inventory_path(), check_files=check_files)


@click.group()
def hosts() -> None:
    """The machines of the farm, from the inventory.

    \b
    Examples:
      farm hosts list
      farm hosts check lily2           # SSH, darknet and its dialect, disk, GPUs
      farm hosts plan lily2            # the Celery workers lily2 runs
      farm hosts workers               # which hosts have no worker answering
    """


@hosts.command("list")
@inventory_option
def list_hosts(inventory_path: str | None) -> int:
    """Print the hosts: name, address, roles, GPUs, data dir."""
    inv = _load(inventory_path)
    rows = [("NAME", "ADDRESS", "ROLES", "GPUS", "DATA DIR")]
    rows += [(h.name, f"{h.address}:{h.ssh.port}" if h.ssh.port != 22 else h.address,
              ",".join(h.roles), str(h.gpus), h.data_dir) for h in inv.hosts.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


@dataclass
class Report:
    """What `check` found on one host: (label, text) lines and the problems among them."""

    host: Host
    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, label: str, text: str) -> None:
        self.lines.append((label, text))

    def bad(self, label: str, text: str) -> None:
        self.lines.append((label, f"PROBLEM: {text}"))
        self.problems.append(f"{label}: {text.splitlines()[0]}")


def check_host(host: Host, timeout: float) -> Report:
    r = Report(host)
    with SSHHost.from_host(host, timeout) as ssh:
        started = time.monotonic()
        try:
            ssh.connect()
        except FarmError as e:
            r.bad("ssh", str(e))
            return r
        r.ok("ssh", f"ok ({host.ssh.user}@{host.address}:{host.ssh.port}, "
                    f"{time.monotonic() - started:.2f} s)")
        _check_darknet(ssh, host, r)
        _check_disk(ssh, host, r)
        _check_gpus(ssh, host, r)
    return r


def _check_darknet(ssh: SSHHost, host: Host, r: Report) -> None:
    code, out, _ = ssh.run(["sh", "-c", 'command -v -- "$1"', "sh", host.darknet])
    if code != 0 or not out.strip():
        r.bad("darknet", f"{host.darknet} not found on {host.name} "
                         f"(install it there, e.g. apt-get install darknet, or fix `darknet:` "
                         f"in the inventory)")
        return
    path = out.strip().splitlines()[0]
    banner = []
    for argv in ([path], [path, "version"]):
        _, o, e = ssh.run(argv, timeout=max(ssh.timeout, 20))
        banner.append(o + e)
    r.ok("darknet", f"{path} ({classify_banner(chr(10).join(banner)).value})")


def _check_disk(ssh: SSHHost, host: Host, r: Report) -> None:
    code, out, err = ssh.run(["df", "-Pk", "--", host.data_dir])
    if code != 0:
        r.bad("disk", f"data dir {host.data_dir} unusable: {err.strip() or out.strip()} "
                      f"(create it: mkdir -p {host.data_dir}, owned by {host.ssh.user})")
        return
    fields = out.strip().splitlines()[-1].split()
    total, free = int(fields[1]) * 1024, int(fields[3]) * 1024
    r.ok("disk", f"{host.data_dir}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")


def _check_gpus(ssh: SSHHost, host: Host, r: Report) -> None:
    code, out, err = ssh.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader"])
    gpus = [line.strip() for line in out.splitlines() if line.strip()] if code == 0 else []
    if code == 127:
        text = "none (no nvidia-smi)"
    elif code != 0:
        text = f"nvidia-smi failed (exit {code}): {(err or out).strip()[:200]}"
    else:
        text = f"{len(gpus)}: " + "; ".join(gpus)
    if host.gpus and len(gpus) < host.gpus:
        r.bad("gpus", f"{text}; the inventory says {host.gpus} "
                      f"(install the NVIDIA driver there, or fix `gpus:`)")
    else:
        r.ok("gpus", text)


@hosts.command("check")
@click.argument("name", required=False)
@inventory_option
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for SSH.")
def check(name: str | None, inventory_path: str | None, timeout: float) -> int:
    """Check NAME (or every host): SSH, darknet and its dialect, free disk, GPUs."""
    inv = _load(inventory_path)
    targets = [inv.host(name)] if name else list(inv.hosts.values())
    failed = []
    for host in targets:
        report = check_host(host, timeout)
        click.echo(f"{host.name}  ({', '.join(host.roles)})")
        for label, text in report.lines:
            click.echo(f"  {label:<8} " + text.replace("\n", "\n" + " " * 11))
        if report.problems:
            failed.append(f"{host.name} ({report.problems[0]})")
    if failed:
        raise FarmUnavailable(f"{len(failed)} of {len(targets)} host(s) failed the check: "
                              + "; ".join(failed), hint="see the PROBLEM lines above")
    return EXIT_OK


@hosts.command("plan")
@click.argument("name")
@inventory_option
@click.option("--write-env", metavar="DIR", type=click.Path(file_okay=False),
              help="Write worker-<instance>.env for the farm-worker@ systemd units into DIR.")
def plan(name: str, inventory_path: str | None, write_env: str | None) -> int:
    """Print the Celery workers NAME runs (one per GPU, one for its CPU roles).

    Works on the worker host itself (ops/bootstrap-worker.sh): the SSH key files the
    inventory names need not exist there.
    """
    inv = _load(inventory_path, check_files=False)
    for spec in inv.worker_plan(name):
        if write_env:
            path = Path(write_env) / f"worker-{spec.instance}.env"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(spec.env_file())
            click.echo(f"{spec.instance}  {path}")
        else:
            click.echo(f"{spec.node}: {spec.command_line()}")
    return EXIT_OK


@hosts.command("workers")
@inventory_option
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for pings.")
@pass_ctx
def workers(ctx: Context, inventory_path: str | None, timeout: float) -> int:
    """Ping the workers and name every host that has none answering."""
    inv = _load(inventory_path)
    replies = ctx.celery().control.ping(timeout=timeout) or []
    seen = {node for reply in replies for node in reply}
    silent = []
    for host in inv.hosts.values():
        nodes = [w.node for w in inv.worker_plan(host.name)]
        state = ", ".join(f"{n} {'ok' if n in seen else 'MISSING'}" for n in nodes)
        click.echo(f"{host.name:<14} {state}")
        if not seen.intersection(nodes):
            silent.append(host.name)
    findings = inv.check_coverage(seen)
    for f in findings:
        click.echo(str(f), err=True)
    if silent:
        raise FarmUnavailable(f"{len(silent)} host(s) have no worker answering: "
                              f"{', '.join(silent)}", hint=findings[0].fix)
    return EXIT_OK
