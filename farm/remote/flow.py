"""Data flow between the farm's hosts: each host's worker pulls what it needs over SSH.

Pull, never push: the host that needs files knows where it keeps them (its data_dir)
and rewrites the lists for that place. Three flows:

- labelImg output is mirrored from the label host (`fetch_tree`) and then imported;
- a packaged dataset is fetched by content (`fetch_dataset`): files that some dataset
  on this host already has (same sha256 in its manifest) are hard-linked, only the rest
  travel, in one tar stream; a changed dataset (a new id) moves only what changed;
- a run whose data lives on another host (`Run.origin`) is made local before training
  (`localize_run`), and a checkpoint is pulled by the host that evaluates it, as is a
  screens set named `HOST:/path` (`localize_screens`).

A fetch builds in `.fetch-<id>` beside the final folder and renames it when complete,
so a cut transfer leaves no half dataset; the next fetch reuses what already arrived.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from farm.datasets.package import FORMAT, MANIFEST, relocate
from farm.errors import BadInput
from farm.inventory import Inventory, default_inventory_path, load_inventory
from farm.remote import transfer
from farm.remote.ssh import RemoteFileError, SSHHost
from farm.remote.transfer import Progress, check_relative, sha256_file
from farm.settings import Settings

DATASETS = "datasets"
#: The location-dependent files of a dataset, rewritten by relocate() after a fetch.
LISTS = ("train.txt", "valid.txt", "obj.data")


@dataclass(frozen=True)
class Fetch:
    """What one fetch did."""

    path: str        # the local folder (or file)
    fetched: int     # files that travelled
    linked: int      # files taken from what this host already had
    bytes: int       # bytes that travelled
    already: bool    # it was all here before


def inventory_of(settings: Settings) -> Inventory:
    return load_inventory(settings.inventory or default_inventory_path())


def connect(settings: Settings, host: str, inventory: Inventory | None = None) -> SSHHost:
    """An SSHHost for an inventory host (not yet connected)."""
    return SSHHost.from_host((inventory or inventory_of(settings)).host(host))


def parse_location(text: str, hosts) -> tuple[str | None, str]:
    """`HOST:/abs/path` with HOST in `hosts` -> (HOST, path); anything else is local."""
    name, sep, path = text.partition(":")
    if sep and name in hosts and path.startswith("/"):
        return name, path
    return None, text


def remote_location(settings: Settings, text: str) -> tuple[str | None, str]:
    """parse_location against the inventory, read only when `text` may name a host."""
    if ":" not in text or text.startswith("/"):
        return None, text
    path = Path(settings.inventory or default_inventory_path())
    if not path.is_file():
        return None, text
    return parse_location(text, load_inventory(path).hosts)


def datasets_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / DATASETS


def fetch_dataset(src: SSHHost, remote_dir: str, root: str | os.PathLike,
                  progress: Progress | None = None) -> Fetch:
    """Make root/<id>/ a verified copy of the packaged dataset `remote_dir` on `src`."""
    root = Path(root)
    raw = transfer.read_file(src, posixpath.join(remote_dir, MANIFEST))
    manifest = _manifest(raw, src, remote_dir)
    final = root / manifest["id"]
    if (final / MANIFEST).is_file():
        return Fetch(str(final), 0, 0, 0, True)
    staging = root / f".fetch-{manifest['id']}"
    resumed = staging.is_dir()
    staging.mkdir(parents=True, exist_ok=True)
    # what arrived (and was verified) before a cut; .part files are fetched again
    present = {p.relative_to(staging).as_posix() for p in staging.rglob("*")
               if p.is_file() and p.suffix != ".part"} if resumed else set()
    known = _local_content(root, skip=final)
    wanted = {rel: (e["sha256"], e.get("bytes")) for rel, e in manifest["files"].items()}
    todo, linked, made = {}, 0, set()
    for rel, (digest, size) in wanted.items():
        check_relative(rel)
        if rel in present:
            continue
        if _link(known.get(digest), size, os.path.join(staging, rel), made):
            linked += 1
        else:
            todo[rel] = digest
    # the lists always travel: a cut after relocate() left them naming this host's place
    todo.update({name: manifest["lists"][name] for name in LISTS})
    moved = transfer.fetch_files(src, remote_dir, todo, staging, progress)
    (staging / MANIFEST).write_bytes(raw)
    relocate(staging, final)
    try:
        os.rename(staging, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # a twin fetch finished first
    return Fetch(str(final), moved.files, linked, moved.bytes, False)


def _manifest(raw: bytes, src: SSHHost, remote_dir: str) -> dict:
    where = f"{src.name}:{remote_dir}/{MANIFEST}"
    try:
        manifest = json.loads(raw)
        ok = (manifest.get("format") == FORMAT and isinstance(manifest.get("files"), dict)
              and all(k in manifest.get("lists", {}) for k in LISTS)
              and posixpath.basename(str(manifest.get("id", ""))) == manifest.get("id"))
    except ValueError:
        ok = False
    if not ok or not manifest["id"] or manifest["id"].startswith("."):
        raise BadInput(f"{where} is not the manifest of a packaged dataset",
                       hint="package the folder with `farm dataset package` on that host")
    return manifest


def _local_content(root: Path, skip: Path) -> dict[str, str]:
    """{sha256: file} over the datasets already on this host, from their manifests
    (datasets are immutable; _link still checks the size of what it links)."""
    known: dict[str, str] = {}
    if not root.is_dir():
        return known
    for manifest in root.glob(f"*/{MANIFEST}"):
        ds = str(manifest.parent)
        if manifest.parent == skip:
            continue
        try:
            files = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError):
            continue
        for rel, entry in files.items():
            known.setdefault(entry["sha256"], os.path.join(ds, rel))
    return known


def _link(src: str | None, size: int | None, dst: str, made: set) -> bool:
    """Hard-link (else copy) a file this host already has; False when it has not."""
    try:
        if src is None or os.stat(src).st_size != size:
            return False
        folder = os.path.dirname(dst)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return True
    except FileNotFoundError:
        return False


def fetch_tree(src: SSHHost, remote_dir: str, local_dir: str | os.PathLike,
               progress: Progress | None = None) -> Fetch:
    """Make `local_dir` a mirror of `remote_dir` (a labelImg folder): files missing or
    different by sha256 travel; local files the host no longer has are removed, so a
    deleted annotation is not imported again."""
    local = Path(local_dir)
    theirs = transfer.manifest(src, remote_dir)
    if not theirs:
        raise BadInput(f"{src.name}:{remote_dir} is empty or missing",
                       hint=f"check the folder labelImg saves into on {src.name}")
    mine = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()} \
        if local.is_dir() else {}
    for rel, path in mine.items():
        if rel not in theirs:
            path.unlink()
    todo = {rel: d for rel, d in theirs.items()
            if rel not in mine or sha256_file(mine[rel]).hexdigest() != d}
    moved = transfer.fetch_files(src, remote_dir, todo, local, progress)
    return Fetch(str(local), moved.files, 0, moved.bytes, not todo)


def localize_run(run, settings: Settings, *, connect_to: Callable[[str], SSHHost] | None = None,
                 progress: Progress | None = None) -> Fetch | None:
    """Fetch a run's dataset and start weights from `run.origin` to this host and point
    the run at the local copies (in place); None when they are already here.

    Only packaged datasets travel: their manifest says what every file must hash to.
    """
    if not run.origin or run.origin == settings.host_name:
        return None
    src = (connect_to or (lambda name: connect(settings, name)))(run.origin)
    try:
        if posixpath.basename(run.data) != "obj.data":
            raise BadInput(f"the run's data {run.origin}:{run.data} is not a packaged "
                           "dataset's obj.data", hint="package it with `farm dataset package` "
                           f"on {run.origin}, then train on <dataset>/obj.data")
        got = fetch_dataset(src, posixpath.dirname(run.data), datasets_root(settings), progress)
        if run.weights:
            run.weights = str(fetch_file(src, run.weights,
                                         Path(settings.data_dir) / "weights", progress))
    finally:
        src.close()
    run.data = str(Path(got.path) / "obj.data")
    run.base_dir = got.path
    run.origin = settings.host_name
    return got


def fetch_file(src: SSHHost, remote: str, folder: str | os.PathLike,
               progress: Progress | None = None) -> Path:
    """A big file (start weights, a checkpoint) under `folder`, named by its sha256 so
    a second fetch of the same content is free and a changed one never collides."""
    digest = src.sha256(remote)
    local = Path(folder) / f"{digest[:16]}-{posixpath.basename(remote)}"
    if not local.is_file():
        transfer.pull(src, remote, local, progress)
    return local


def check_remote_screens(settings: Settings, host: str, path: str, *,
                         connect_to: Callable[[str], SSHHost] | None = None) -> str:
    """`HOST:/…/obj.data` of the screens set at `path` on `host` (its folder or its
    obj.data), once its manifest there says it is one: refused at submit, not at every
    evaluation of the night."""
    folder = _dataset_folder(path)
    if not folder.startswith("/"):
        raise BadInput(f"{host}:{path}: a path on another host must be absolute",
                       hint=f"give {host}:/full/path/to/the/screens/set")
    src = (connect_to or (lambda name: connect(settings, name)))(host)
    try:
        raw = transfer.read_file(src, posixpath.join(folder, MANIFEST))
    except RemoteFileError:
        raise BadInput(f"{host}:{folder} is not a packaged dataset: no {MANIFEST} there",
                       hint=f"package the labelled screenshots on {host} with "
                            "`farm dataset package --kind screens` (or `farm dataset "
                            "pull-labels --kind screens`)") from None
    finally:
        src.close()
    try:
        kind = json.loads(raw).get("kind")
    except (ValueError, AttributeError):
        kind = None
    if kind != "screens":
        raise BadInput(f"{host}:{folder} is not a screens set (its manifest says kind "
                       f"{kind or 'train'})", hint="package full labelled screenshots with "
                                                   "`farm dataset package --kind screens`")
    return f"{host}:{folder}/obj.data"


def localize_screens(run, settings: Settings, *,
                     connect_to: Callable[[str], SSHHost] | None = None,
                     progress: Progress | None = None) -> Fetch | None:
    """Point the run (in place) at a local copy of its screens set when it names another
    host (`HOST:/path`), fetched by content like any packaged dataset; None when it is
    already here. Its first evaluation on this host fetches it, the next find it."""
    if not run.eval_screens:
        return None
    host, path = remote_location(settings, run.eval_screens)
    if host is None:
        return None
    if host == settings.host_name:
        run.eval_screens = path
        return None
    src = (connect_to or (lambda name: connect(settings, name)))(host)
    try:
        got = fetch_dataset(src, _dataset_folder(path), datasets_root(settings), progress)
    finally:
        src.close()
    run.eval_screens = str(Path(got.path) / "obj.data")
    return got


def _dataset_folder(path: str) -> str:
    """A packaged dataset's folder, from itself or its obj.data."""
    path = path.rstrip("/") or "/"
    return posixpath.dirname(path) if posixpath.basename(path) == "obj.data" else path
