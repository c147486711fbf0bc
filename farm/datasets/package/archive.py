"""A packaged dataset on the move: exported as a tar.gz, extracted (unsafe members refused
before anything is kept), verified against its manifest, its lists pointed at a new place."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from farm.datasets.package.build import _CHUNK, MANIFEST, _write_lists
from farm.errors import BadInput


def export_dataset(dataset_dir: str | os.PathLike, out_tar_gz: str | os.PathLike) -> str:
    """A tar.gz of the dataset folder (top folder = id), written atomically."""
    src = Path(dataset_dir).resolve()
    if not (src / MANIFEST).is_file():
        raise BadInput("not a packaged dataset (no manifest.json)", path=str(src),
                       hint="package it first with `farm dataset package`")
    out = Path(out_tar_gz)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # JPEGs do not compress
            tar.add(src, arcname=src.name, filter=_plain)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return str(out)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def extract_dataset(tar_gz: str | os.PathLike, dest: str | os.PathLike) -> str:
    """Unpack an exported dataset under dest, verify it, point its lists at the new place.

    Refuses absolute paths, `..`, links leaving the dataset, devices and more than one
    top folder, before anything is kept. Returns the dataset folder.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-extract-", dir=dest))
    try:
        top = _safe_extract(Path(tar_gz), tmp)
        final = dest / top
        if (final / MANIFEST).is_file():
            return str(final)
        verify_dataset(tmp / top)
        relocate(tmp / top, final)
        os.rename(tmp / top, final)
        return str(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_extract(archive: Path, into: Path) -> str:
    top = None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                top = _check_member(member, top, archive)
                tar.extract(member, into, filter="data")
    except tarfile.ReadError:
        raise BadInput("not a tar.gz archive, or a damaged one", path=str(archive),
                       hint="give a .tar.gz written by `farm dataset export`") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"cannot unpack the archive: {e}", path=str(archive),
                       hint="give a .tar.gz written by `farm dataset export`") from None
    if top is None:
        raise BadInput("the archive is empty", path=str(archive),
                       hint="give a .tar.gz written by `farm dataset export`")
    return top


def _check_member(m: tarfile.TarInfo, top: str | None, archive: Path) -> str:
    def refuse(why: str):
        raise BadInput(f"unsafe archive member {m.name!r}: {why}; nothing was extracted",
                       path=str(archive), hint="only extract archives written by "
                                               "`farm dataset export`, from a trusted place")

    path = PurePosixPath(m.name)
    if m.name.startswith(("/", "\\")) or path.is_absolute() or ":" in path.parts[0]:
        refuse("absolute path")
    if ".." in path.parts:
        refuse("'..' climbs out of the destination")
    if top is not None and path.parts[0] != top:
        refuse(f"outside the dataset folder {top!r}")
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        refuse("device or pipe")
    if m.issym() or m.islnk():
        target = PurePosixPath(m.linkname)
        resolved = PurePosixPath(os.path.normpath(
            (path.parent / target).as_posix() if m.issym() else target.as_posix()))
        if target.is_absolute() or resolved.parts[:1] != path.parts[:1] or ".." in resolved.parts:
            refuse(f"link to {m.linkname!r} points outside the dataset")
    elif not (m.isfile() or m.isdir()):
        refuse("not a regular file or folder")
    return path.parts[0]


def verify_dataset(dataset_dir: str | os.PathLike) -> dict:
    """Check every content file against the manifest's sha256; return the manifest."""
    ds = Path(dataset_dir)
    try:
        manifest = json.loads((ds / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        raise BadInput(f"no readable manifest: {e}", path=str(ds / MANIFEST),
                       hint="the folder is not a packaged dataset, or it was damaged") from None
    for rel, entry in files.items():
        p = ds / rel
        if not p.is_file():
            raise BadInput("file listed in the manifest is missing", path=str(p),
                           hint="the archive or copy is incomplete: export it again")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != entry["sha256"]:
            raise BadInput("file content differs from the manifest", path=str(p),
                           hint="the dataset was modified or damaged: export it again")
    return manifest


def relocate(dataset_dir: str | os.PathLike, new_location: str | os.PathLike) -> None:
    """Rewrite train.txt/valid.txt/obj.data for the folder's new absolute location."""
    ds, new = Path(dataset_dir), Path(new_location)
    manifest = json.loads((ds / MANIFEST).read_text())
    old = manifest["location"]
    (ds / ".work").mkdir(exist_ok=True)
    for split in ("train", "valid"):
        with open(ds / f"{split}.txt") as f, open(ds / ".work" / f"{split}.rel", "w") as rel:
            for line in f:
                if not line.startswith(old + "/"):
                    raise BadInput(f"{split}.txt holds a path outside the dataset: {line.strip()}",
                                   path=str(ds / f"{split}.txt"),
                                   hint="the dataset was edited by hand: package it again")
                rel.write(line[len(old) + 1:])
    backup = _obj_data_value(ds / "obj.data", "backup")
    backup = str(new / "backup") if backup == f"{old}/backup" else backup
    manifest["lists"] = _write_lists(ds, new, Path(backup), len(manifest["names"]))
    manifest["location"] = str(new)
    shutil.rmtree(ds / ".work")
    (ds / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _obj_data_value(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == key:
            return v.strip()
    return ""
