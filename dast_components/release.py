# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Model Zoo style release of a bundle: a reproducible ``<name>_v<version>.zip``, its weights and checksum.

The zip holds one top folder ``<name>/`` (what ``python -m monai.bundle download --name <name> --url ...`` expects),
its entries sorted, with fixed timestamps and permissions, so two builds of the same files give identical bytes.
Weights are not zipped: they are listed in the bundle's ``large_files.yml`` (Model Zoo format, read by
``python -m monai.bundle download_large_files``)::

    large_files:
      - path: models/model.pt
        url: https://.../dast_kits19_seg_v0.1.0_model.pt
        hash_val: 0f1e...
        hash_type: md5

A ``large_files.yml`` never carries an empty ``url``: it lists only weights that are published. With
``--weights_url`` every weight file ``models/*.pt`` present in the bundle is published: copied next to the zip as
``<name>_v<version>_<file name>``, with ``url`` = ``<weights_url>/<that name>`` and ``hash_val`` from the local file;
upload the files of the output folder to that address. Without it, the entries already in ``large_files.yml`` are
kept (hashes filled for files present). When no weights are published, the zip's ``large_files.yml`` holds
``large_files: []`` under a comment saying so and how to train them. The bundle folder itself is never modified.
Finally ``model_info.json`` (Model Zoo format, ``{"<name>_v<version>": {"checksum": ..., "source": ...}}``) gets the
zip's checksum and download address.

**The code travels in the zip.** The package ``dast_components`` (the copy this module belongs to) is written into
the zip as ``<name>/dast_components/``. MONAI's ``run`` (from the bundle folder), the Model Zoo's CI and MONAI Label
put the bundle root on ``sys.path``, so the configs' ``_target_: dast_components...`` resolve to the code of the
release without installing anything beyond the bundle's metadata; when the package is installed (``pip install -e
.`` in the repository) the configs resolve to it the same way. The sources are generated at release time, so the
repository holds them once. (Not ``scripts/``: the package imports itself as ``dast_components.*``, and a top-level
``scripts`` module of two bundles loaded in one process, e.g. by MONAI Label, would shadow each other.) See also
docs/design.md, "Bundles".

Command line::

    python -m dast_components.release BUNDLE_DIR --out DIR [--weights_url URL_BASE] [--source_url URL_BASE]
        [--model_info FILE] [--hash_type md5|sha256] [--repo_url URL [--repo_ref REF]] [--no_code]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from dast_components.utils import atomic_path

__all__ = [
    "EXCLUDED_DIRS",
    "EXCLUDED_FILES",
    "LARGE_FILES_NAME",
    "PACKAGE_DIR",
    "WEIGHT_SUFFIXES",
    "ReleaseResult",
    "build_release",
    "bundle_files",
    "bundle_version",
    "file_hash",
    "main",
    "absolute_doc_links",
    "package_files",
    "read_large_files",
    "update_model_info",
    "write_reproducible_zip",
]

logger = logging.getLogger(__name__)

LARGE_FILES_NAME = "large_files.yml"
"""Name of the weight list in the bundle root (Model Zoo convention)."""

WEIGHT_SUFFIXES = (".pt", ".ts", ".pth", ".onnx", ".ckpt")
"""Files with these suffixes under ``models/`` are weights: never zipped."""

PUBLISHED_WEIGHTS = "models/*.pt"
"""The weight files ``--weights_url`` publishes (trained weights; exported ``.ts``/``.onnx`` files are derived)."""

PACKAGE_DIR = Path(__file__).resolve().parent
"""The ``dast_components`` package written into every release zip."""

EXCLUDED_DIRS = (
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ipynb_checkpoints",
    ".git",
    "*.egg-info",
)
"""Folder names skipped at any depth (caches)."""

EXCLUDED_TOP_DIRS = (
    "eval",
    "logs",
    "log",
    "runs",
    "mlruns",
    "cache",
    "output",
    "outputs",
    "*_output",
    "*_outputs",
    "tensorboard",
)
"""Folder name patterns of the bundle root that hold run outputs (``output_dir`` is ``<bundle_root>/eval``)."""

EXCLUDED_FILES = (
    "*.pyc",
    "*.pyo",
    "*.log",
    "*.tmp",
    "*~",
    ".*.swp",
    ".DS_Store",
    ".lock",
    "configs/monailabel_train.json",  # written into the bundle by MONAI Label's multi-GPU training
)
"""File patterns skipped (matched against the file name, or the relative path when the pattern has a ``/``)."""

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can store: the same for every build
_FILE_MODE = 0o100644
_DIR_MODE = 0o040755
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")  # what monai.bundle download accepts as <name>_v<version>
_HASH_TYPES = ("md5", "sha1", "sha256", "sha512")


@dataclass
class ReleaseResult:
    """What :func:`build_release` produced.

    Attributes:
        name: bundle name (folder name).
        version: bundle version from ``configs/metadata.json``.
        zip_path: the zip written.
        checksum: the zip's checksum (``hash_type``).
        hash_type: hash algorithm of ``checksum`` and of the weight hashes filled in.
        source: download address recorded in ``model_info.json``.
        model_info: the ``model_info.json`` updated.
        large_files: the ``large_files`` entries written into the zip.
        weight_files: weight files copied next to the zip (to upload to ``--weights_url``).
        files: bundle-relative paths zipped, in zip order.
    """

    name: str
    version: str
    zip_path: Path
    checksum: str
    hash_type: str
    source: str
    model_info: Path
    large_files: list[dict[str, str]] = field(default_factory=list)
    weight_files: list[Path] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def file_hash(path: str | os.PathLike, hash_type: str = "md5") -> str:
    """Hex digest of a file.

    Args:
        path: file to hash.
        hash_type: one of ``md5``, ``sha1``, ``sha256``, ``sha512`` (the types ``monai.apps.utils.check_hash`` reads).

    Returns:
        the lowercase hex digest.
    """
    if hash_type not in _HASH_TYPES:
        raise ValueError(f"hash_type {hash_type!r} is not supported, expected one of {_HASH_TYPES}.")
    digest = hashlib.new(hash_type, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_version(bundle_dir: str | os.PathLike) -> str:
    """The ``version`` of ``<bundle_dir>/configs/metadata.json``.

    Args:
        bundle_dir: bundle root.

    Returns:
        the version string (``MAJOR.MINOR.PATCH``).
    """
    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise ValueError(f"{meta_file} does not exist: a bundle release needs configs/metadata.json with a version.")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file} is not valid JSON: {err}") from None
    version = meta.get("version") if isinstance(meta, Mapping) else None
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(f"{meta_file}: 'version' is {version!r}, expected a string like '0.1.0' (MAJOR.MINOR.PATCH).")
    return version


def read_large_files(bundle_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Entries of ``<bundle_dir>/large_files.yml`` (empty list when the file does not exist or lists none).

    Args:
        bundle_dir: bundle root.

    Returns:
        one dict per entry with string values for ``path``, ``url``, ``hash_val``, ``hash_type``
        (missing hashes as ``""``).

    Raises:
        ValueError: the file is malformed, or an entry has an empty ``url``.
    """
    lf_file = Path(bundle_dir) / LARGE_FILES_NAME
    if not lf_file.is_file():
        return []
    try:
        content = yaml.safe_load(lf_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{lf_file} is not valid YAML: {err}") from None
    items = content.get("large_files") if isinstance(content, Mapping) else None
    if items is None and isinstance(content, Mapping) and "large_files" in content:
        items = []
    if not isinstance(items, list):
        raise ValueError(f"{lf_file} must hold a mapping with a list under 'large_files', got {content!r}.")
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("path"), str) or not item["path"]:
            raise ValueError(f"{lf_file}: large_files[{i}] must be a mapping with a non-empty 'path', got {item!r}.")
        path = PurePosixPath(item["path"])
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{lf_file}: large_files[{i}] path {item['path']!r} must be relative inside the bundle.")
        rel = path.as_posix()
        if rel in seen:
            raise ValueError(f"{lf_file}: path {rel!r} is listed twice.")
        seen.add(rel)
        entry = {k: "" if item.get(k) is None else str(item.get(k)) for k in ("url", "hash_val", "hash_type")}
        if not entry["url"].strip():
            raise ValueError(
                f"{lf_file}: large_files[{i}] ({rel}) has an empty url. List only published weights (an empty url "
                "stops `monai.bundle download_large_files` with 'unknown url type'); the release adds trained "
                "weights itself with --weights_url."
            )
        entries.append({"path": rel, **entry})
    return entries


def _excluded(rel: PurePosixPath, is_dir: bool, large: set[str]) -> bool:
    parts = rel.parts
    if any(fnmatch.fnmatch(p, pat) for p in (parts if is_dir else parts[:-1]) for pat in EXCLUDED_DIRS):
        return True
    if any(fnmatch.fnmatch(parts[0], pat) for pat in EXCLUDED_TOP_DIRS) and (is_dir or len(parts) > 1):
        return True
    if is_dir:
        return False
    if rel.as_posix() in large or rel.as_posix() == LARGE_FILES_NAME:
        return True
    if parts[0] == "models" and rel.suffix.lower() in WEIGHT_SUFFIXES:
        return True
    return any(
        fnmatch.fnmatch(rel.as_posix() if "/" in pat else rel.name, pat) for pat in EXCLUDED_FILES
    )


def _git_ignored(root: Path, paths: Sequence[str]) -> set[str]:
    """The ``paths`` (relative to ``root``) that git ignores; empty when ``root`` is not in a git work tree."""
    if not paths:
        return set()
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "--stdin", "-z"],
            input="\0".join(paths) + "\0",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    if proc.returncode not in (0, 1):  # 128: not a git work tree (e.g. a downloaded bundle)
        return set()
    return {p.rstrip("/") for p in proc.stdout.split("\0") if p}


def bundle_files(bundle_dir: str | os.PathLike, large_files: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The folders and files of a bundle that go into its release zip.

    Skipped: caches (:data:`EXCLUDED_DIRS`, :data:`EXCLUDED_FILES`), run outputs (``eval/``, ``logs/``, ``runs/`` ...
    in the bundle root), weights (``models/*.pt|.ts|.pth|.onnx|.ckpt``), the paths in ``large_files`` and
    ``large_files.yml`` itself (the release writes its own), and, when the bundle lies in a git work tree, whatever
    git ignores there (e.g. ``models/arch_code_iter*.json`` written by a search run); tracked files are kept.

    Args:
        bundle_dir: bundle root.
        large_files: bundle-relative POSIX paths listed in ``large_files.yml``.

    Returns:
        ``(folders, files)``: bundle-relative POSIX paths, each list sorted; folders that end up empty are kept
        (``models/`` must exist for the weights to be downloaded into).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ValueError(f"bundle folder {root} does not exist.")
    large = set(large_files)
    folders: list[str] = []
    files: list[str] = []
    for cur, dirnames, filenames in os.walk(root):
        cur_rel = PurePosixPath(Path(cur).relative_to(root).as_posix())
        kept = []
        for d in sorted(dirnames):
            rel = cur_rel / d
            if not _excluded(rel, True, large):
                kept.append(d)
                folders.append(rel.as_posix())
        dirnames[:] = kept
        for f in sorted(filenames):
            rel = cur_rel / f
            if Path(cur, f).is_file() and not _excluded(rel, False, large):
                files.append(rel.as_posix())
    ignored = _git_ignored(root, files + [f"{d}/" for d in folders])
    files = [f for f in files if f not in ignored]
    folders = [d for d in folders if d not in ignored]
    return sorted(folders), sorted(files)


def write_reproducible_zip(entries: Mapping[str, bytes | None], zip_path: str | os.PathLike) -> Path:
    """Write a zip whose bytes depend only on ``entries``: sorted names, fixed date, fixed permissions.

    Args:
        entries: archive name -> file content, or ``None`` for a folder (its name ends with ``/``).
        zip_path: destination, written atomically.

    Returns:
        the destination as a ``Path``.
    """
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in sorted(entries):
                content = entries[name]
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.create_system = 3  # unix, so external_attr holds POSIX permissions on every platform
                if content is None:
                    if not name.endswith("/"):
                        raise ValueError(f"zip folder entry {name!r} must end with '/'.")
                    info.external_attr = (_DIR_MODE << 16) | 0x10  # 0x10: MS-DOS directory flag
                    info.compress_type = zipfile.ZIP_STORED
                    zf.writestr(info, b"")
                else:
                    info.external_attr = _FILE_MODE << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, content, compresslevel=9)
    return zip_path


_NO_WEIGHTS_HEADER = (
    "# No trained weights are published with this version of the bundle: `download_large_files` downloads\n"
    "# nothing. Make them yourself (from the bundle folder, see docs/README.md):\n"
    "#   python -m monai.bundle run training --config_file configs/train.json --dataset_dir <KiTS19 data> --fold 0\n"
    "# which writes models/model.pt (and models/model_fold0.pt) with the intensity window next to it.\n"
)


def _large_files_yaml(entries: Sequence[Mapping[str, str]]) -> bytes:
    if not entries:
        return (_NO_WEIGHTS_HEADER + "large_files: []\n").encode("utf-8")
    header = (
        "# Weights of this bundle that are not inside the zip. Fetch them with\n"
        "#   python -m monai.bundle download_large_files --bundle_path <this folder>\n"
    )
    body = yaml.safe_dump({"large_files": [dict(e) for e in entries]}, sort_keys=False, default_flow_style=False)
    return (header + body).encode("utf-8")


def _complete_large_files(
    root: Path,
    name: str,
    version: str,
    entries: Sequence[Mapping[str, str]],
    out_dir: Path,
    weights_url: str | None,
    hash_type: str,
) -> tuple[list[dict[str, str]], list[tuple[Path, Path]]]:
    """The published weights (entries with url and hash) and the (source, asset) copies to make.

    With ``weights_url`` every ``models/*.pt`` present is published (an entry of ``large_files.yml`` for a file that
    is present is replaced); other entries are kept as they are.
    """
    published: dict[str, dict[str, str]] = {e["path"]: dict(e) for e in entries}
    copies: list[tuple[Path, Path]] = []
    if weights_url:
        assets: dict[str, str] = {}
        for local in sorted(root.glob(PUBLISHED_WEIGHTS)):
            if not local.is_file():
                continue
            rel = local.relative_to(root).as_posix()
            asset = f"{name}_v{version}_{local.name}"
            if asset in assets:
                raise ValueError(f"{rel} and {assets[asset]} would both be published as {asset}; rename one.")
            assets[asset] = rel
            kind = published.get(rel, {}).get("hash_type") or hash_type
            published[rel] = {"path": rel, "url": f"{weights_url.rstrip('/')}/{asset}", "hash_val": "",
                              "hash_type": kind}
            copies.append((local, out_dir / asset))
    completed: list[dict[str, str]] = []
    for rel in sorted(published):
        new = dict(published[rel])
        local = root / rel
        if local.is_file():
            new["hash_type"] = new.get("hash_type") or hash_type
            new["hash_val"] = file_hash(local, new["hash_type"])
        if not new.get("hash_val"):  # Model Zoo files leave unknown hashes out rather than empty
            new.pop("hash_val", None)
            new.pop("hash_type", None)
        completed.append({k: new[k] for k in ("path", "url", "hash_val", "hash_type") if k in new})
    return completed, copies


_MD_LINK_RE = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def absolute_doc_links(text: str, doc: PurePosixPath, repo_url: str | None, ref: str) -> tuple[str, list[str]]:
    """Rewrite the Markdown links of a bundle doc that leave the bundle into absolute repository addresses.

    A downloaded bundle holds only its own folder, so ``[README](../../../README.md#use)`` in
    ``bundles/<name>/docs/README.md`` would point nowhere; it becomes ``<repo_url>/blob/<ref>/README.md#use``.
    Links inside the bundle and absolute links are kept.

    Args:
        text: the Markdown text.
        doc: the doc's path relative to the bundle root (``docs/README.md``).
        repo_url: the repository's address (``https://github.com/<owner>/<repo>``); None leaves the text as it is.
        ref: the git ref to link to (a tag such as ``v0.2.0``, or ``main``).

    Returns:
        ``(new_text, targets)``: the text and the repository paths of the links that leave the bundle.
    """
    outside: list[str] = []

    def repl(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        parts: list[str] = list(PurePosixPath("bundles/_b").parts) + list(doc.parent.parts)
        for part in PurePosixPath(target).parts:
            if part == "..":
                if parts:
                    parts.pop()
            elif part != ".":
                parts.append(part)
        if parts[:2] == ["bundles", "_b"]:
            return match.group(0)  # inside the bundle
        path = "/".join(p for p in parts)
        outside.append(path)
        if repo_url is None:
            return match.group(0)
        return f"{match.group(1)}{repo_url.rstrip('/')}/blob/{ref}/{path}{match.group(3) or ''}{match.group(4)}"

    return _MD_LINK_RE.sub(repl, text), outside


def package_files(package_dir: str | os.PathLike = PACKAGE_DIR) -> dict[str, bytes]:
    """The source files of a Python package, for the release zip.

    Args:
        package_dir: the package folder (default: the ``dast_components`` this module belongs to).

    Returns:
        ``{"<package name>/<relative path>": content}`` of every ``*.py`` file (caches skipped), sorted.
    """
    root = Path(package_dir)
    if not (root / "__init__.py").is_file():
        raise ValueError(f"{root} is not a Python package (no __init__.py).")
    files = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(fnmatch.fnmatch(p, pat) for p in rel.parts[:-1] for pat in EXCLUDED_DIRS):
            continue
        files[f"{root.name}/{rel.as_posix()}"] = path.read_bytes()
    return files


def update_model_info(
    model_info: str | os.PathLike, key: str, checksum: str, source: str
) -> dict[str, dict[str, str]]:
    """Add or replace ``key`` in a Model Zoo ``model_info.json`` (created when missing), written atomically.

    Args:
        model_info: the JSON file.
        key: ``<name>_v<version>``.
        checksum: the zip's checksum.
        source: the zip's download address.

    Returns:
        the whole updated mapping.
    """
    path = Path(model_info)
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(info, dict):
            raise ValueError(f"{path} must hold a JSON object of '<name>_v<version>' entries.")
    info[key] = {"checksum": checksum, "source": source}
    info = dict(sorted(info.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=4) + "\n", encoding="utf-8")
    return info


def build_release(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights_url: str | None = None,
    source_url: str | None = None,
    model_info: str | os.PathLike | None = None,
    hash_type: str = "md5",
    include_code: bool = True,
    repo_url: str | None = None,
    repo_ref: str | None = None,
) -> ReleaseResult:
    """Build ``<out_dir>/<name>_v<version>.zip`` from a bundle folder and record it in ``model_info.json``.

    Args:
        bundle_dir: bundle root; its folder name is the bundle name.
        out_dir: output folder (created); receives the zip, the weight copies and by default ``model_info.json``.
        weights_url: address the weights will be published under; each ``models/*.pt`` present in the bundle is
            copied to ``<out_dir>/<name>_v<version>_<file name>`` and listed in the zip's ``large_files.yml`` with
            url ``<weights_url>/<that name>``. Default None keeps the entries of ``large_files.yml``.
        source_url: address the zip will be published under (``source`` = ``<source_url>/<zip name>``). Defaults to
            ``weights_url``, else the ``file://`` address of the zip just built.
        model_info: the ``model_info.json`` to update. Defaults to ``<out_dir>/model_info.json``.
        hash_type: hash of the zip checksum and of weights whose entry names no ``hash_type``: ``md5`` (Model Zoo's
            choice), ``sha1``, ``sha256`` or ``sha512``.
        include_code: write the ``dast_components`` package into the zip (``<name>/dast_components/``), so the
            downloaded bundle runs with only the packages its metadata lists. Defaults to True.
        repo_url: the repository's address; links of ``docs/*.md`` that leave the bundle (``../../../README.md``)
            become absolute links to it, so the docs of a downloaded bundle still lead somewhere. Without it such
            links are kept and a warning names them.
        repo_ref: the git ref those links use. Defaults to ``v<version>``.

    Returns:
        a :class:`ReleaseResult`.

    Example::

        build_release("bundles/dast_kits19_seg", "dist", weights_url="https://example.org/releases/v0.1.0")
    """
    if hash_type not in _HASH_TYPES:
        raise ValueError(f"hash_type {hash_type!r} is not supported, expected one of {_HASH_TYPES}.")
    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"bundle folder {bundle_dir} does not exist.")
    name = root.name
    if not _NAME_RE.match(name):
        raise ValueError(f"bundle folder name {name!r} is not a valid bundle name (letters, digits, '_', '-').")
    out = Path(out_dir).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"--out {out} must lie outside the bundle folder {root}.")
    version = bundle_version(root)
    out.mkdir(parents=True, exist_ok=True)

    entries = read_large_files(root)
    large, copies = _complete_large_files(root, name, version, entries, out, weights_url, hash_type)
    folders, files = bundle_files(root, [e["path"] for e in entries])
    code = package_files() if include_code else {}
    if code:  # the bundle's own copy (a downloaded bundle released again) is replaced by the current package
        top = PACKAGE_DIR.name
        folders = [d for d in folders if d != top and not d.startswith(f"{top}/")]
        files = [f for f in files if not f.startswith(f"{top}/")]
    stray = [
        f"models/{p.name}"
        for p in sorted((root / "models").glob("*"))
        if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES and f"models/{p.name}" not in {e["path"] for e in large}
    ]
    if stray:
        logger.warning(f"not released (weights, and not published): {', '.join(stray)}")
    if not large and (root / LARGE_FILES_NAME).is_file():
        logger.warning(f"{name}: no weights published; the zip's {LARGE_FILES_NAME} says so (large_files: [])")

    zip_entries: dict[str, bytes | None] = {f"{name}/": None}
    zip_entries.update({f"{name}/{d}/": None for d in folders})
    zip_entries.update({f"{name}/{f}": (root / f).read_bytes() for f in files})
    for f in files:
        if f.startswith("docs/") and f.endswith(".md"):
            text, outside = absolute_doc_links(
                (root / f).read_text(encoding="utf-8"), PurePosixPath(f), repo_url, repo_ref or f"v{version}"
            )
            if outside and repo_url is None:
                logger.warning(f"{f} links outside the bundle ({', '.join(sorted(set(outside)))}), which a "
                               "downloaded bundle lacks: pass --repo_url to make them absolute")
            zip_entries[f"{name}/{f}"] = text.encode("utf-8")
    for rel, content in code.items():
        parts = rel.split("/")
        zip_entries.update({f"{name}/{'/'.join(parts[:i])}/": None for i in range(1, len(parts))})
        zip_entries[f"{name}/{rel}"] = content
    if large or (root / LARGE_FILES_NAME).is_file():
        zip_entries[f"{name}/{LARGE_FILES_NAME}"] = _large_files_yaml(large)
    zip_path = write_reproducible_zip(zip_entries, out / f"{name}_v{version}.zip")

    weight_files: list[Path] = []
    for src, dst in copies:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        weight_files.append(dst)

    checksum = file_hash(zip_path, hash_type)
    base = source_url or weights_url
    source = f"{base.rstrip('/')}/{zip_path.name}" if base else zip_path.as_uri()
    info_file = Path(model_info) if model_info is not None else out / "model_info.json"
    update_model_info(info_file, f"{name}_v{version}", checksum, source)
    zipped = files + list(code) + ([LARGE_FILES_NAME] if f"{name}/{LARGE_FILES_NAME}" in zip_entries else [])
    return ReleaseResult(
        name=name,
        version=version,
        zip_path=zip_path,
        checksum=checksum,
        hash_type=hash_type,
        source=source,
        model_info=info_file,
        large_files=large,
        weight_files=weight_files,
        files=sorted(zipped),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m dast_components.release BUNDLE_DIR --out DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.release",
        description="Build a reproducible Model Zoo zip <name>_v<version>.zip of a bundle (with the dast_components "
        "code; weights listed in large_files.yml, not zipped) and record its checksum in model_info.json. The bundle "
        "folder is not changed.",
    )
    parser.add_argument("bundle_dir", help="[REQUIRED] bundle folder, e.g. bundles/dast_kits19_seg")
    parser.add_argument("--out", required=True, help="[REQUIRED] output folder for the zip and the weight copies")
    parser.add_argument(
        "--weights_url",
        default=None,
        help="[OPTIONAL] address the weights will be uploaded to: every models/*.pt of the bundle is copied to "
        "DIR/<name>_v<version>_<file> and listed with url URL_BASE/<that file>. Without it only the weights already "
        "listed in large_files.yml are (no weights: the zip says none are published).",
    )
    parser.add_argument(
        "--source_url",
        default=None,
        help="[OPTIONAL] address the zip will be uploaded to (model_info.json 'source'); default: --weights_url, "
        "else the file:// address of the built zip",
    )
    parser.add_argument(
        "--model_info",
        default=None,
        help="[OPTIONAL] model_info.json to update (default DIR/model_info.json; pass bundles/model_info.json when "
        "publishing)",
    )
    parser.add_argument("--hash_type", default="md5", choices=_HASH_TYPES, help="[OPTIONAL] checksum type (md5)")
    parser.add_argument(
        "--repo_url",
        default=None,
        help="[OPTIONAL] the repository's address (https://github.com/<owner>/<repo>): links of the bundle docs that "
        "leave the bundle become absolute links to it (at --repo_ref); without it they would break once downloaded",
    )
    parser.add_argument("--repo_ref", default=None, help="[OPTIONAL] git ref of those links (default v<version>)")
    parser.add_argument(
        "--no_code",
        action="store_true",
        help="[OPTIONAL] DANGER ZONE: leave the dast_components package out of the zip; the downloaded bundle then "
        "runs only where the package is installed",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = build_release(
            args.bundle_dir,
            args.out,
            weights_url=args.weights_url,
            source_url=args.source_url,
            model_info=args.model_info,
            hash_type=args.hash_type,
            include_code=not args.no_code,
            repo_url=args.repo_url,
            repo_ref=args.repo_ref,
        )
    except ValueError as err:
        print(f"release failed: {err}", file=sys.stderr)
        return 1
    print(f"{result.zip_path} ({result.hash_type} {result.checksum}), {len(result.files)} files")
    for entry in result.large_files:
        print(f"  large file {entry['path']}: {entry['url']}")
    for w in result.weight_files:
        print(f"  upload {w}")
    print(f"  model_info: {result.model_info} [{result.name}_v{result.version}] source {result.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
