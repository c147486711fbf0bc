"""The host inventory: which machines the farm spans, how to reach them, what they do.

One YAML file (`ops/inventory.example.yaml` shows the format). It is checked as a whole
when loaded, so a typo is one message naming the file and line at start-up, not a hang
or a misrouted task hours later. PyYAML keeps the last of two equal keys without a word,
so the loader here records every key's line and every key given twice.

From a host's roles and GPU count the inventory derives its Celery workers
(`worker_plan`): one per GPU pinned with CUDA_VISIBLE_DEVICES, one for the CPU roles;
every worker also listens on `host.<name>` so work can be pinned to a machine.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from farm.darknet.dialect import NAMES as DIALECTS, Dialect
from farm.darknet.memory import parse_size
from farm.errors import BadInput, Finding, FindingsError, Severity
from farm.queues import WorkerSpec, host_queue

ROLES = ("gpu", "cpu", "augment", "label", "eval")
#: Roles served by the one CPU worker of a host, in queue order.
CPU_ROLES = ("cpu", "augment", "label", "eval")
HOST_FIELDS = ("address", "ssh", "roles", "data_dir", "darknet", "gpus", "gpu_memory",
               "dialect")
DEFAULT_FIELDS = ("ssh", "data_dir", "darknet", "dialect")
SSH_FIELDS = ("user", "port", "key", "known_hosts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def default_inventory_path(env: Mapping[str, str] | None = None) -> Path:
    """`$FARM_INVENTORY`, else `~/.config/farm/inventory.yaml`."""
    env = os.environ if env is None else env
    if env.get("FARM_INVENTORY"):
        return Path(env["FARM_INVENTORY"])
    return Path.home() / ".config" / "farm" / "inventory.yaml"


@dataclass(frozen=True)
class SSHSpec:
    user: str
    port: int
    key: str          # local path of the private key
    known_hosts: str  # local path of the known_hosts file the host key is checked against


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ssh: SSHSpec
    roles: tuple[str, ...]
    data_dir: str     # on the host
    darknet: str      # on the host: a name on its PATH or a path
    gpus: int
    line: int         # where the host starts in the inventory file
    #: memory of each of its GPUs in bytes (`gpu_memory: 80GB`); None: not given
    gpu_memory: int | None = None
    #: the dialect of its darknet (`dialect: alexeyab`); None: not given (its worker
    #: detects it; the head then judges cfgs by their own features)
    dialect: Dialect | None = None


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: dict[str, Host]  # in file order

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise BadInput(f"no host {name!r} in the inventory", path=self.path,
                           hint=f"known hosts: {', '.join(self.hosts)}") from None

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if role in h.roles]

    def worker_plan(self, host: str) -> list[WorkerSpec]:
        """The Celery workers `host` runs: one per GPU (pinned), one for its CPU roles."""
        h = self.host(host)
        base = {"FARM_HOST_NAME": h.name, "FARM_DATA_DIR": h.data_dir,
                "FARM_DARKNET": h.darknet}
        own = host_queue(h.name)
        plan = [WorkerSpec(h.name, f"gpu{i}", ("gpu", own), 1,
                           {"CUDA_VISIBLE_DEVICES": str(i), **base})
                for i in range(h.gpus if "gpu" in h.roles else 0)]
        cpu_queues = tuple(r for r in CPU_ROLES if r in h.roles)
        if cpu_queues:
            plan.append(WorkerSpec(h.name, "cpu", cpu_queues + (own,), None, dict(base)))
        return plan

    def check_coverage(self, workers_seen: set[str]) -> list[Finding]:
        """What is wrong when the workers that answered are `workers_seen` (node names).

        A host none of whose workers answers is an error: tasks pinned to it, or to a
        role only it has, would wait in Redis for ever.
        """
        findings = []
        for h in self.hosts.values():
            expected = [w.node for w in self.worker_plan(h.name)]
            missing = [n for n in expected if n not in workers_seen]
            if not missing:
                continue
            units = " ".join(f"farm-worker@{n.split('@')[0]}" for n in missing)
            fix = (f"start them on {h.name} (systemctl start {units}), "
                   f"or run `farm hosts check {h.name}`")
            if len(missing) == len(expected):
                reason = (f"host {h.name} ({', '.join(h.roles)}) has no worker answering: "
                          f"expected {', '.join(expected)}")
                findings.append(Finding(self.path, h.line, reason, fix))
            else:
                reason = f"host {h.name}: {', '.join(missing)} did not answer"
                findings.append(Finding(self.path, h.line, reason, fix, Severity.WARNING))
        return findings


# -- loading -----------------------------------------------------------------------------

class _Map(dict):
    """A YAML mapping that remembers its line, each key's line and keys given twice."""

    line: int
    key_lines: dict
    duplicates: list  # (key, line, first_line)


class _Seq(list):
    line: int
    item_lines: list


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers and does not drop duplicate keys silently."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    m = _Map()
    m.line, m.key_lines, m.duplicates = node.start_mark.line + 1, {}, []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = m.key_lines.get(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or mapping",
                key_node.start_mark) from None
        if first is not None:
            m.duplicates.append((key, line, first))
            continue
        m.key_lines[key] = line
        m[key] = loader.construct_object(value_node, deep=True)
    return m


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [child.start_mark.line + 1 for child in node.value]
    return s


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)

_KINDS = {str: "text", int: "a whole number", _Map: "a mapping", _Seq: "a list"}


def _kind_of(value: Any) -> str:
    if value is None:
        return "empty"
    return {bool: "true/false", int: "a number", float: "a number", str: "text",
            _Map: "a mapping", _Seq: "a list"}.get(type(value), type(value).__name__)


class _Checker:
    """Collects every problem of one inventory file as Findings."""

    def __init__(self, path: str, check_files: bool = True):
        self.path = path
        self.check_files = check_files
        self.base = Path(path).resolve().parent
        self.findings: list[Finding] = []

    def error(self, line: int | None, reason: str, fix: str) -> None:
        finding = Finding(self.path, line, reason, fix)
        if finding not in self.findings:  # a bad default is one problem, not one per host
            self.findings.append(finding)

    def mapping(self, m: _Map, where: str, known: tuple[str, ...], dup_what: str,
                dup_fix: str = "keep one of them (YAML readers differ on which one wins)") -> None:
        """Report keys given twice and keys that are not in `known`."""
        for key, line, first in m.duplicates:
            self.error(line, f"duplicate {dup_what} {key!r} in {where} (first at line {first})",
                       dup_fix)
        for key in m:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.error(m.key_lines[key], f"unknown field {key!r} in {where}",
                           f"{hint}known fields: {', '.join(known)}")

    def typed(self, m: _Map, key: str, kind: type, where: str) -> Any:
        """m[key] if it has the right type (None if absent); a finding otherwise."""
        if key not in m:
            return None
        value = m[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if ok and kind is str and not value.strip():
            ok = False
        if not ok:
            self.error(m.key_lines[key],
                       f"{where}: {key} must be {_KINDS[kind]}, not {_kind_of(value)} {value!r}",
                       f"write {key} as {_KINDS[kind]}"
                       + (" (quote it if YAML reads it as something else)" if kind is str else ""))
            return None
        return value

    def local_file(self, value: str, line: int, what: str, fix: str) -> str | None:
        path = Path(os.path.expanduser(value))
        path = path if path.is_absolute() else self.base / path
        if self.check_files and not path.is_file():
            self.error(line, f"{what} {value} not found (looked at {path})", fix)
            return None
        return str(path)


def _read(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BadInput("inventory not found", path=path,
                       hint="copy ops/inventory.example.yaml to ~/.config/farm/inventory.yaml "
                            "and edit it, or pass --inventory / set FARM_INVENTORY") from None
    except OSError as e:
        raise BadInput(f"cannot read the inventory: {e.strerror}", path=path) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise BadInput(f"not valid YAML: {problem}", path=path,
                       line=mark.line + 1 if mark else None,
                       hint="fix the YAML syntax at that line") from None


def load_inventory(path: str | os.PathLike, *, check_files: bool = True) -> Inventory:
    """Read and check the inventory at `path`; every problem is reported with its line.

    check_files=False skips the SSH key and known_hosts files, which exist only where the
    farm logs in from (the head): a worker host reads the inventory for its own plan.
    """
    path = str(path)
    doc = _read(path)
    c = _Checker(path, check_files)
    if not isinstance(doc, _Map) or not isinstance(doc.get("hosts"), _Map) or not doc["hosts"]:
        line = doc.key_lines.get("hosts") if isinstance(doc, _Map) else 1
        raise FindingsError([Finding(path, line or 1, "the inventory has no hosts",
                                     "write `hosts:` with one mapping per host "
                                     "(see ops/inventory.example.yaml)")], "inventory")
    c.mapping(doc, "the inventory", ("hosts", "defaults"), "section")
    defaults = _defaults(c, doc)
    hosts = doc["hosts"]
    c.mapping(hosts, "hosts", tuple(hosts), "host name",
              "give each machine its own name; merge the two entries if they are one machine")
    parsed = {}
    for name, body in hosts.items():
        host = _host(c, name, body, hosts.key_lines[name], defaults)
        if host is not None:
            parsed[host.name] = host
    if c.findings:
        raise FindingsError(c.findings, "inventory")
    return Inventory(path, parsed)


def _defaults(c: _Checker, doc: _Map) -> dict[str, tuple[Any, int]]:
    """`defaults:` as {field: (value, line)}; ssh fields flattened as `ssh.<field>`."""
    if "defaults" not in doc:
        return {}
    d = c.typed(doc, "defaults", _Map, "the inventory")
    if d is None:
        return {}
    c.mapping(d, "defaults", DEFAULT_FIELDS, "field")
    out = {k: (d[k], d.key_lines[k]) for k in ("data_dir", "darknet", "dialect") if k in d}
    ssh = c.typed(d, "ssh", _Map, "defaults")
    if ssh is not None:
        c.mapping(ssh, "defaults.ssh", SSH_FIELDS, "field")
        out.update({f"ssh.{k}": (ssh[k], ssh.key_lines[k]) for k in SSH_FIELDS if k in ssh})
    return out


def _merged(body: _Map, defaults: dict, key: str, sub: _Map | None = None) -> _Map | None:
    """The mapping that holds `key` for this host: its own (`sub` for ssh fields), else a
    stand-in holding the default with the default's line; None if neither has it."""
    own = sub if sub is not None else body
    if key in own:
        return own
    dkey = f"ssh.{key}" if sub is not None else key
    if dkey not in defaults:
        return None
    value, line = defaults[dkey]
    m = _Map({key: value})
    m.line, m.key_lines, m.duplicates = line, {key: line}, []
    return m


def _host(c: _Checker, name: Any, body: Any, line: int, defaults: dict) -> Host | None:
    before = len(c.findings)
    if not isinstance(name, str) or not _NAME.match(name):
        c.error(line, f"host name {name!r} is not usable in queue and worker names",
                "use letters, digits, - and _ (quote it if YAML reads it as a number or "
                "true/false)")
        return None
    where = f"host {name}"
    if not isinstance(body, _Map):
        c.error(line, f"{where} must be a mapping of its fields, not {_kind_of(body)}",
                f"indent its fields under `{name}:` (address, ssh, roles, data_dir, …)")
        return None
    c.mapping(body, where, HOST_FIELDS, "field")

    def need(m: _Map | None, key: str, kind: type, what: str, example: str) -> Any:
        if m is None or key not in m:
            c.error(line, f"{where} has no {what}", f"add {example}")
            return None
        return c.typed(m, key, kind, where if m is body else "defaults")

    address = need(body, "address", str, "address", "`address: 192.168.1.20` (or a DNS name)")
    roles = _roles(c, body, where, line)
    gpus = c.typed(body, "gpus", int, where) if "gpus" in body else 0
    if gpus is not None and gpus < 0:
        c.error(body.key_lines["gpus"], f"{where}: gpus must be 0 or more, not {gpus}",
                "write the number of GPUs the host has")
    if roles is not None and gpus is not None and gpus >= 0:
        if "gpu" in roles and gpus == 0:
            c.error(line, f"{where} has the gpu role but gpus is 0",
                    "set `gpus:` to the number of GPUs it has (one worker each)")
        if gpus > 0 and "gpu" not in roles:
            c.error(body.key_lines["gpus"], f"{where} has gpus: {gpus} but not the gpu role",
                    "add gpu to its roles, or remove gpus")
    dm = _merged(body, defaults, "data_dir")
    data_dir = need(dm, "data_dir", str, "data_dir", "`data_dir: /srv/farm` (or under defaults:)")
    if data_dir is not None and not data_dir.startswith("/"):
        c.error(dm.key_lines["data_dir"],
                f"{where if dm is body else 'defaults'}: data_dir {data_dir!r} is not absolute",
                "write the full path on that host, e.g. /srv/farm")
    km = _merged(body, defaults, "darknet")
    darknet = "darknet" if km is None else c.typed(km, "darknet", str,
                                                   where if km is body else "defaults")
    ssh = _ssh(c, body, where, defaults, line)
    gpu_memory = _gpu_memory(c, body, where, gpus)
    dm = _merged(body, defaults, "dialect")
    dialect = None if dm is None else c.typed(dm, "dialect", str,
                                             where if dm is body else "defaults")
    if dialect is not None and dialect not in DIALECTS:
        c.error(dm.key_lines["dialect"], f"{where if dm is body else 'defaults'}: dialect "
                f"{dialect!r} is not one of {', '.join(DIALECTS)}",
                "write alexeyab, hankai or pjreddie (Debian's package), or leave it out")
    if len(c.findings) > before or None in (address, roles, gpus, data_dir, darknet, ssh):
        return None
    return Host(name, address, ssh, tuple(roles), data_dir, darknet, gpus, line, gpu_memory,
                None if dialect is None else Dialect(dialect))


def _gpu_memory(c: _Checker, body: _Map, where: str, gpus: int | None) -> int | None:
    """`gpu_memory: 80GB` (each GPU's) in bytes; the farm refuses a run whose cfg needs
    more before it is queued."""
    if "gpu_memory" not in body:
        return None
    raw, line = body["gpu_memory"], body.key_lines["gpu_memory"]
    size = parse_size(raw) if isinstance(raw, str) else None
    if size is None:
        c.error(line, f"{where}: gpu_memory {raw!r} is not a size",
                "write each GPU's memory with its unit, e.g. `gpu_memory: 24GB`")
        return None
    if not gpus:
        c.error(line, f"{where} has gpu_memory but no gpus", "add `gpus: N`, or remove "
                                                             "gpu_memory")
        return None
    return size


def _roles(c: _Checker, body: _Map, where: str, line: int) -> list[str] | None:
    if "roles" not in body:
        c.error(line, f"{where} has no roles", f"add `roles: [gpu]` (any of {', '.join(ROLES)})")
        return None
    roles = c.typed(body, "roles", _Seq, where)
    if roles is None:
        return None
    if not roles:
        c.error(body.key_lines["roles"], f"{where} has an empty roles list",
                f"give it at least one of {', '.join(ROLES)}")
        return None
    ok = True
    for role, line in zip(roles, roles.item_lines):
        if role not in ROLES:
            close = difflib.get_close_matches(str(role), ROLES, n=1)
            c.error(line, f"unknown role {role!r} for {where}",
                    (f"did you mean {close[0]!r}? " if close else "")
                    + f"known roles: {', '.join(ROLES)}")
            ok = False
    return list(dict.fromkeys(roles)) if ok else None


def _ssh(c: _Checker, body: _Map, where: str, defaults: dict, line: int) -> SSHSpec | None:
    own = c.typed(body, "ssh", _Map, where) if "ssh" in body else _Map()
    if own is None:
        return None
    if "ssh" in body:
        c.mapping(own, f"{where} ssh", SSH_FIELDS, "field")
    else:
        own.line, own.key_lines, own.duplicates = line, {}, []
    values: dict[str, Any] = {}
    for key, kind in (("user", str), ("port", int), ("key", str), ("known_hosts", str)):
        m = _merged(body, defaults, key, own)
        if m is None:
            if key == "port":
                values[key] = 22
                continue
            example = {"user": "`user: farm`", "key": "`key: ~/.ssh/farm_ed25519`",
                       "known_hosts": "`known_hosts: ~/.config/farm/known_hosts`"}[key]
            c.error(own.line, f"{where} has no ssh {key}", f"add {example} under ssh: "
                                                              "(or under defaults: ssh:)")
            continue
        src = where if m is own else "defaults"  # a bad default is reported once, as such
        value = c.typed(m, key, kind, f"{src} ssh")
        if value is None:
            continue
        at = m.key_lines[key]
        if key == "port" and not 0 < value < 65536:
            c.error(at, f"{src}: ssh port {value} is not a TCP port", "use 1–65535 (22 by default)")
            continue
        if key == "key":
            value = c.local_file(value, at, f"{src}: ssh key file",
                                 "create it (ssh-keygen -t ed25519 -f FILE) or fix the path; "
                                 "relative paths start at the inventory's folder")
        elif key == "known_hosts":
            value = c.local_file(value, at, f"{src}: known_hosts file",
                                 "collect the host key once and check its fingerprint: "
                                 "ssh-keyscan -p PORT ADDRESS >> FILE")
        values[key] = value
    if len(values) < 4 or None in values.values():
        return None
    return SSHSpec(**values)
