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
"""The Model Zoo's bundle checks, offline: one PASS/FAIL/SKIP line per check, non-zero exit on any FAIL.

Checks, in order:

- ``files``: ``LICENSE``, ``configs/metadata.json``, ``docs/README.md`` exist (recommended ones are named when
  missing: ``configs/logging.conf``, ``docs/data_license.txt``).
- ``configs``: every ``configs/*.json|yaml|yml`` parses.
- ``metadata``: MONAI's ``verify_metadata`` with a local JSON schema: ``--schema``, else a copy of the schema its
  ``schema`` field names in ``bundles/schemas/``, else the project's ``bundles/schemas/bundle_meta_schema.json``
  (the official schema's required fields and more), else the official one, downloaded by MONAI.
- ``changelog``: ``version`` is listed in ``changelog`` and is its newest entry.
- ``large_files``: ``large_files.yml``, when present, is in Model Zoo format.
- ``monailabel``: with ``configs/inference.json``, the facts MONAI Label 0.8.5's ``monaibundle`` app relies on
  (read from its 0.8.5 source and checked by the MONAI Label test): ids, no ``_meta_`` references,
  ``image``/``pred`` keys, ``channel_def``, no plain ``Spacingd``, no other ``models/*.pt`` name as short as
  ``model.pt``; with ``configs/train.json`` the training ids too.
- ``net_in_out``: ``monai.bundle.verify_net_in_out`` of ``network_def`` on the metadata's input shape (on CPU).
- ``torchscript``: ``network_def`` exported with ``monai.bundle.ckpt_export`` *without* ``key_in_ckpt``, as the Model
  Zoo's CI does (``models/model.pt`` must be a plain state dict; without it the untrained weights are exported),
  reloaded, and its output compared with the eager network's. A search supernet (``TopologySearch``) is not
  scriptable by design: the network its architecture parameters decode to (``decode_arch()`` -> ``DASTNet``, what
  the search exports) is checked instead, or SKIP without ``decode_arch``.

Which checks are the Model Zoo's (``ci/verify_bundle.py``) and which are this project's own: ``metadata``,
``net_in_out`` and ``torchscript`` call MONAI's ``verify_metadata``, ``verify_net_in_out`` and ``ckpt_export``, as the
Zoo's CI does; ``files`` and ``changelog`` restate the Zoo CI's necessary/preferred files and version-in-changelog
rules (they live in the Zoo's ``ci/`` scripts, not in MONAI). The project adds: ``docs/README.md`` required,
changelog newest entry, ``configs`` parse, ``large_files`` format (no empty url), ``monailabel``, and the
eager-vs-TorchScript output comparison.

Command line::

    python -m dast_components.verify BUNDLE_DIR [--schema FILE] [--config FILE] [--overlay FILE ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dast_components.networks import DASTNet, save_arch
from dast_components.release import LARGE_FILES_NAME, read_large_files

__all__ = [
    "PROJECT_SCHEMA",
    "CheckResult",
    "check_changelog",
    "check_configs",
    "check_large_files",
    "check_metadata",
    "check_monailabel",
    "check_net_in_out",
    "check_required_files",
    "check_torchscript",
    "find_network_config",
    "main",
    "verify_bundle",
]

logger = logging.getLogger(__name__)

PROJECT_SCHEMA = "bundle_meta_schema.json"
"""The project's own offline metadata schema in ``bundles/schemas/`` (used when the official one named in the
metadata is not available locally)."""
REQUIRED_FILES = ("LICENSE", "configs/metadata.json", "docs/README.md")
RECOMMENDED_FILES = ("configs/logging.conf", "docs/data_license.txt")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")  # the Model Zoo CI's preferred_files_list
_NETWORK_CONFIGS = ("inference.json", "inference.yaml", "train.json", "train.yaml", "search.json", "search.yaml")
_OVERLAY_RE = re.compile(r"^(quick|multi_gpu_.*|metadata|monailabel_train)\.(json|ya?ml)$")
_SHAPE_RE = re.compile(r"^\s*(\d+)\s*(\*\*\s*p)?\s*(\*\s*n)?\s*$")
_MODEL_PT = "model.pt"


@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes:
        name: check name (``files``, ``metadata``, ...).
        status: ``"PASS"``, ``"FAIL"`` or ``"SKIP"``.
        detail: what was checked, or what is wrong and what was expected.
    """

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        """Whether the check failed."""
        return self.status == "FAIL"

    def line(self) -> str:
        """``"PASS metadata: ..."``."""
        return f"{self.status} {self.name}: {self.detail}"


def _pass(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "PASS", detail)


def _fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "FAIL", detail)


def _skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "SKIP", detail)


def _load(path: Path) -> Any:
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(str(path))


def _metadata(root: Path) -> dict[str, Any] | None:
    try:
        meta = _load(root / "configs" / "metadata.json")
    except Exception:  # noqa: BLE001  reported by the files/configs checks
        return None
    return meta if isinstance(meta, dict) else None


def check_required_files(bundle_dir: str | os.PathLike) -> CheckResult:
    """``LICENSE``, ``configs/metadata.json`` and ``docs/README.md`` exist and are not empty; the Model Zoo's
    preferred files (``models/model.pt``, ``configs/inference.json``) are named when missing.

    Args:
        bundle_dir: bundle root.
    """
    root = Path(bundle_dir)
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file() or (root / f).stat().st_size == 0]
    if missing:
        return _fail("files", f"missing or empty: {', '.join(missing)} (required: {', '.join(REQUIRED_FILES)})")
    extra = [f for f in RECOMMENDED_FILES if not (root / f).is_file()]
    note = f"; recommended but missing: {', '.join(extra)}" if extra else ""
    preferred = [f for f in PREFERRED_FILES if not (root / f).is_file()]
    if preferred:
        note += (f"; the Model Zoo's preferred {', '.join(preferred)} missing (a bundle without them goes on the "
                 "Zoo CI's exclude_verify_preferred_files_list)")
    return _pass("files", f"{', '.join(REQUIRED_FILES)} present{note}")


def check_configs(bundle_dir: str | os.PathLike) -> CheckResult:
    """Every ``configs/*.json``, ``*.yaml`` and ``*.yml`` parses.

    Args:
        bundle_dir: bundle root.
    """
    configs = sorted(p for p in (Path(bundle_dir) / "configs").glob("*") if p.suffix in (".json", ".yaml", ".yml"))
    if not configs:
        return _fail("configs", f"no config files in {Path(bundle_dir) / 'configs'}")
    bad = []
    for path in configs:
        try:
            _load(path)
        except Exception as err:  # noqa: BLE001  any parse error is the finding
            bad.append(f"{path.name}: {str(err).splitlines()[0]}")
    if bad:
        return _fail("configs", "; ".join(bad))
    return _pass("configs", f"{len(configs)} files parse ({', '.join(p.name for p in configs)})")


def _find_schema(root: Path, url: str, schema: str | os.PathLike | None) -> Path | None:
    if schema is not None:
        return Path(schema)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    folders = (root.parent / "schemas", Path(__file__).resolve().parents[1] / "bundles" / "schemas")
    for candidate in (name, PROJECT_SCHEMA):
        for folder in folders:
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def check_metadata(bundle_dir: str | os.PathLike, schema: str | os.PathLike | None = None) -> CheckResult:
    """``configs/metadata.json`` checked by MONAI's own ``monai.bundle.verify_metadata`` (the Model Zoo's check).

    ``verify_metadata`` downloads the schema named in the metadata's ``schema`` field to ``filepath`` unless a file
    is already there; a local schema is placed there first, so nothing is downloaded when one is found.

    Args:
        bundle_dir: bundle root.
        schema: the schema file. Default: the file named like the metadata's ``schema`` URL (e.g.
            ``meta_schema_20240725.json``) in ``<bundle_dir>/../schemas/`` (the repository's ``bundles/schemas/``),
            else the project's own ``bundles/schemas/bundle_meta_schema.json`` (the official schema's required
            fields and more), else the official schema is downloaded by MONAI (network needed).
    """
    from monai.bundle import verify_metadata

    root = Path(bundle_dir)
    meta = _metadata(root)
    if meta is None:
        return _fail("metadata", f"{root / 'configs' / 'metadata.json'} is missing or not a JSON object")
    url = meta.get("schema")
    if not isinstance(url, str) or not url:
        return _fail("metadata", "metadata has no 'schema' field (the URL of its JSON schema)")
    path = _find_schema(root, url, schema)
    if path is not None and not path.is_file():
        return _fail("metadata", f"schema file {path} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "schema.json"
        if path is not None:
            shutil.copyfile(path, target)
        try:
            verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(target))
        except Exception as err:  # noqa: BLE001  any failure of the MONAI check is the finding
            where = path.name if path is not None else url
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            return _fail("metadata", f"monai.bundle.verify_metadata against {where}: {first}")
    return _pass("metadata", f"monai.bundle.verify_metadata: valid against {path if path else url}")


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def check_changelog(bundle_dir: str | os.PathLike) -> CheckResult:
    """``version`` appears in ``changelog`` and no changelog entry is newer.

    Args:
        bundle_dir: bundle root.
    """
    meta = _metadata(Path(bundle_dir))
    if meta is None:
        return _fail("changelog", "configs/metadata.json is missing or not a JSON object")
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(version, str) or not isinstance(changelog, Mapping) or not changelog:
        return _fail("changelog", f"need a string 'version' and a non-empty 'changelog' mapping, got {version!r}, "
                     f"{type(changelog).__name__}")
    if version not in changelog:
        return _fail("changelog", f"version {version} is not listed in changelog (entries: {', '.join(changelog)})")
    try:
        newest = max(changelog, key=_version_key)
    except ValueError:
        return _fail("changelog", f"changelog keys must be versions, got {list(changelog)}")
    if _version_key(newest) > _version_key(version):
        return _fail("changelog", f"changelog lists {newest}, newer than version {version}: bump 'version'")
    return _pass("changelog", f"version {version} listed ({len(changelog)} entries)")


def check_large_files(bundle_dir: str | os.PathLike) -> CheckResult:
    """``large_files.yml``, when present, lists relative paths with Model Zoo keys and never an empty url.

    Args:
        bundle_dir: bundle root.
    """
    root = Path(bundle_dir)
    if not (root / LARGE_FILES_NAME).is_file():
        return _skip("large_files", f"no {LARGE_FILES_NAME}")
    try:
        entries = read_large_files(root)
    except ValueError as err:
        return _fail("large_files", str(err))
    if not entries:
        return _pass("large_files", "no weights published (large_files: [])")
    return _pass("large_files", f"{len(entries)} entries ({', '.join(e['path'] for e in entries)}), each with a url")


def _walk(obj: Any) -> Iterator[Any]:
    yield obj
    if isinstance(obj, Mapping):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _meta_refs(config: Any) -> list[str]:
    return sorted({s for s in _walk(config) if isinstance(s, str) and "_meta_" in s})


def _has_id(config: Any, id_: str) -> bool:
    node = config
    for part in id_.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_monailabel(bundle_dir: str | os.PathLike) -> CheckResult:
    """The bundle meets what MONAI Label 0.8.5's ``monaibundle`` app needs (see the module docstring).

    Args:
        bundle_dir: bundle root.
    """
    root = Path(bundle_dir)
    infer_file = root / "configs" / "inference.json"
    if not infer_file.is_file():
        return _skip("monailabel", "no configs/inference.json (not a MONAI Label model)")
    problems: list[str] = []
    try:
        infer = _load(infer_file)
    except Exception as err:  # noqa: BLE001
        return _fail("monailabel", f"inference.json does not parse: {err}")
    for id_ in ("network_def", "inferer"):
        if not _has_id(infer, id_):
            problems.append(f"inference.json has no '{id_}'")
    for ids in (("preprocessing", "pre_transforms"), ("postprocessing", "post_transforms")):
        if not any(_has_id(infer, i) for i in ids):
            problems.append(f"inference.json has none of {ids}")
    refs = _meta_refs(infer)
    if refs:
        problems.append(f"inference.json refers to metadata, which MONAI Label does not load: {refs[:3]}")
    plain = [t for t in _walk(infer) if isinstance(t, Mapping) and t.get("_target_") in ("Spacingd",
             "monai.transforms.Spacingd", "monai.transforms.spatial.dictionary.Spacingd")]
    if plain:
        problems.append("inference.json uses Spacingd, which fails on MONAI Label's 'image_path' string; use "
                        "dast_components.transforms.PathSafeSpacingd")
    meta = _metadata(root) or {}
    fmt = meta.get("network_data_format", {})
    inputs, outputs = fmt.get("inputs", {}), fmt.get("outputs", {})
    if not inputs or next(iter(inputs)) != "image":
        problems.append(f"metadata network_data_format.inputs must start with 'image', got {list(inputs)}")
    if not outputs or next(iter(outputs)) != "pred":
        problems.append(f"metadata network_data_format.outputs must start with 'pred', got {list(outputs)}")
    channel_def = outputs.get("pred", {}).get("channel_def", {}) if isinstance(outputs, Mapping) else {}
    if not channel_def or not all(isinstance(k, str) and k.isdigit() for k in channel_def):
        problems.append(f"outputs.pred.channel_def must map string integers to label names, got {channel_def}")
    models = sorted(p.name for p in (root / "models").glob("*.pt"))
    shadowing = [m for m in models if m != _MODEL_PT and len(m) <= len(_MODEL_PT)]
    if shadowing:
        problems.append(f"models/{', models/'.join(shadowing)} would be offered (or loaded) before models/model.pt "
                        "(MONAI Label sorts *.pt by name length); rename to a longer name")
    checked = "inference.json"
    train_file = root / "configs" / "train.json"
    if train_file.is_file():
        checked += ", train.json"
        try:
            train = _load(train_file)
        except Exception as err:  # noqa: BLE001
            return _fail("monailabel", f"train.json does not parse: {err}")
        for id_ in ("network", "train#trainer#max_epochs", "train#dataset#data", "validate#dataset#data",
                    "train#handlers", "run"):
            if not _has_id(train, id_):
                problems.append(f"train.json has no '{id_}'")
        if _has_id(train, "train#handlers") and not isinstance(train["train"]["handlers"], list):
            problems.append("train.json 'train#handlers' must be a list (MONAI Label inserts a CheckpointLoader)")
        refs = _meta_refs(train)
        if refs:
            problems.append(f"train.json refers to metadata: {refs[:3]}")
        if not (root / "configs" / "multi_gpu_train.json").is_file():
            problems.append("configs/multi_gpu_train.json is missing (MONAI Label's multi-GPU training)")
    if problems:
        return _fail("monailabel", "; ".join(problems))
    labels = ", ".join(f"{v.lower()}={k}" for k, v in channel_def.items() if v.lower() != "background")
    return _pass("monailabel", f"{checked} fit the monaibundle app (labels {labels})")


def find_network_config(bundle_dir: str | os.PathLike) -> Path | None:
    """The config defining ``network_def``: ``inference``, ``train`` or ``search`` json/yaml, else any other main
    config (overlays such as ``quick.json`` and ``multi_gpu_*.json`` are not candidates).

    Args:
        bundle_dir: bundle root.

    Returns:
        the config path, or None when no config defines ``network_def``.
    """
    configs = Path(bundle_dir) / "configs"
    others = sorted(p.name for p in configs.glob("*") if p.suffix in (".json", ".yaml", ".yml"))
    for name in [*_NETWORK_CONFIGS, *[n for n in others if n not in _NETWORK_CONFIGS and not _OVERLAY_RE.match(n)]]:
        path = configs / name
        if path.is_file():
            try:
                if isinstance(content := _load(path), Mapping) and "network_def" in content:
                    return path
            except Exception:  # noqa: BLE001  reported by the configs check
                continue
    return None


def _fake_shape(meta: Mapping[str, Any]) -> tuple[int, ...]:
    image = meta["network_data_format"]["inputs"]["image"]
    spatial = []
    for s in image["spatial_shape"]:
        if isinstance(s, int):
            spatial.append(s)
            continue
        match = _SHAPE_RE.match(str(s))
        if str(s).strip() == "*":
            spatial.append(1)
        elif match:
            spatial.append(int(match.group(1)))  # p = n = 1, as verify_net_in_out's defaults
        else:
            raise ValueError(f"cannot read spatial_shape entry {s!r}; expected an int, 'A', 'A*n', 'A**p' or '*'.")
    return (1, int(image["num_channels"]), *spatial)


def _parser(config_files: Sequence[Path], meta_file: Path, root: Path, overrides: Mapping[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(root)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def check_net_in_out(
    bundle_dir: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
) -> CheckResult:
    """``monai.bundle.verify_net_in_out`` of ``network_def`` on CPU.

    Args:
        bundle_dir: bundle root (``bundle_root`` is set to it).
        config_files: the config defining ``network_def``, then overlays.
        overrides: extra ``id: value`` overrides.
    """
    from monai.bundle import verify_net_in_out

    root = Path(bundle_dir).resolve()
    meta_file = root / "configs" / "metadata.json"
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(meta_file),
            config_file=[str(f) for f in config_files],
            device="cpu",
            bundle_root=str(root),
            **dict(overrides or {}),
        )
    except Exception as err:  # noqa: BLE001  any failure of the MONAI check is the finding
        return _fail("net_in_out", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    meta = _metadata(root) or {}
    try:
        shape = _fake_shape(meta)
    except (KeyError, ValueError, TypeError):
        shape = ()
    outputs = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    return _pass("net_in_out", f"network_def maps {tuple(shape)} to {outputs.get('num_channels')} channels "
                 f"({outputs.get('dtype')})")


def _is_search_supernet(net: torch.nn.Module) -> bool:
    from monai.networks.nets import TopologySearch

    return any(isinstance(m, TopologySearch) for m in net.modules())


def _decoded_network(net: torch.nn.Module, meta: Mapping[str, Any]) -> torch.nn.Module | None:
    """The network a search supernet's current architecture parameters decode to (``DASTNet``), or None."""
    spaces = [m for m in net.modules() if callable(getattr(m, "decode_arch", None))]
    if not spaces:
        return None
    fmt = meta["network_data_format"]
    return DASTNet(
        spaces[0].decode_arch(),
        in_channels=int(fmt["inputs"]["image"]["num_channels"]),
        num_classes=int(fmt["outputs"]["pred"]["num_channels"]),
    )


def check_torchscript(
    bundle_dir: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
    ckpt_file: str | os.PathLike | None = None,
    atol: float = 1e-4,
) -> CheckResult:
    """MONAI's ``ckpt_export`` without ``key_in_ckpt`` (the Model Zoo's check), then the TorchScript file reloaded
    and its output compared with the eager network's.

    The weights are ``models/model.pt`` when present: it must be a plain state dict, as the Zoo's check loads it.
    Without weights, the untrained network's state dict is exported (what the Zoo's CI does with
    ``_produce_fake_weights``). For a search supernet, which MONAI does not script, the network its architecture
    parameters decode to (``DASTNet``) is exported the same way.

    Args:
        bundle_dir: bundle root.
        config_files: the config defining ``network_def``, then overlays.
        overrides: extra ``id: value`` overrides.
        ckpt_file: weights; default ``models/model.pt`` if it exists.
        atol: largest absolute difference allowed between eager and TorchScript outputs.
    """
    from monai.bundle import ckpt_export

    root = Path(bundle_dir).resolve()
    meta_file = root / "configs" / "metadata.json"
    overrides = dict(overrides or {})
    ckpt = Path(ckpt_file) if ckpt_file is not None else root / "models" / _MODEL_PT
    try:
        parser = _parser([Path(f) for f in config_files], meta_file, root, overrides)
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(0)  # a search supernet's initial architecture parameters decode the same way every run
            net = parser.get_parsed_content("network_def")
        shape = _fake_shape(parser.get("_meta_"))
    except Exception as err:  # noqa: BLE001
        return _fail("torchscript", f"cannot build network_def: {type(err).__name__}: {err}")
    prefix = ""
    export_configs = [str(f) for f in config_files]
    export_overrides: dict[str, Any] = dict(overrides)
    if _is_search_supernet(net):
        decoded = _decoded_network(net, parser.get("_meta_"))
        if decoded is None:
            return _skip("torchscript", "network_def is a search supernet (TopologySearch), which MONAI does not "
                         "script, and it has no decode_arch() to build the searched network from")
        net, ckpt = decoded, Path(os.devnull)  # the search's weights do not belong to the decoded network
        prefix = (f"search supernet (not scriptable by design); its decoded architecture as DASTNet "
                  f"({sum(map(sum, net.arch.arch_code_a))} active paths, ops {net.arch.op_counts()}): ")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        ts_file = Path(tmp) / "model.ts"
        if prefix:  # export the decoded network: a one-entry config whose network_def is that module
            arch_json = Path(tmp) / "arch_code.json"
            save_arch(arch_json, net.arch)
            export_configs = [str(Path(tmp) / "decoded.json")]
            fmt = parser.get("_meta_")["network_data_format"]
            Path(export_configs[0]).write_text(json.dumps({"network_def": {
                "_target_": "dast_components.networks.DASTNet", "arch": str(arch_json),
                "in_channels": int(fmt["inputs"]["image"]["num_channels"]),
                "num_classes": int(fmt["outputs"]["pred"]["num_channels"])}}))
            export_overrides = {}
        if ckpt.is_file():
            try:
                state = torch.load(ckpt, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001
                return _fail("torchscript", f"cannot read {ckpt} with torch.load(weights_only=True): {err}")
            if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                keys = sorted(state)[:5] if isinstance(state, Mapping) else type(state).__name__
                return _fail("torchscript", f"{ckpt.name} is not a plain state dict (top level: {keys}); the Model "
                             "Zoo exports it with ckpt_export without key_in_ckpt, which needs one")
            weights, how = ckpt, f"ckpt_export (no key_in_ckpt) with {ckpt.name}"
        else:
            weights = Path(tmp) / "untrained.pt"
            torch.save(net.state_dict(), weights)
            how = "ckpt_export (no key_in_ckpt) with the untrained network's weights (no models/model.pt)"
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
            ckpt_export(
                net_id="network_def",
                filepath=str(ts_file),
                ckpt_file=str(weights),
                meta_file=str(meta_file),
                config_file=export_configs,
                bundle_root=str(root),
                **export_overrides,
            )
            loaded = torch.jit.load(str(ts_file), map_location="cpu")
        except Exception as err:  # noqa: BLE001  any export failure is the finding
            return _fail("torchscript", f"export failed: {type(err).__name__}: {str(err).splitlines()[0]}")
    net.eval()
    loaded.eval()
    with torch.no_grad():
        expected = net(x)
        got = loaded(x)
    if got.shape != expected.shape:
        return _fail("torchscript", f"reloaded output shape {tuple(got.shape)} != eager {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    if not diff <= atol:
        return _fail("torchscript", f"reloaded output differs from eager by {diff:.3g} (allowed {atol:g})")
    return _pass("torchscript", f"{prefix}{how}, reloaded; output {tuple(got.shape)} equal to eager "
                 f"(max |diff| {diff:.2g})")


def verify_bundle(
    bundle_dir: str | os.PathLike,
    schema: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    overlays: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
) -> list[CheckResult]:
    """Run all checks on a bundle.

    Args:
        bundle_dir: bundle root.
        schema: local metadata schema file (see :func:`check_metadata`).
        config_file: config defining ``network_def``; default :func:`find_network_config`.
        overlays: configs merged after it for the network checks (e.g. ``configs/quick.json`` for a small network).
        overrides: extra ``id: value`` overrides for the network checks.

    Returns:
        one :class:`CheckResult` per check, in order.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ValueError(f"bundle folder {root} does not exist.")
    results = [
        check_required_files(root),
        check_configs(root),
        check_metadata(root, schema),
        check_changelog(root),
        check_large_files(root),
        check_monailabel(root),
    ]
    net_config = Path(config_file) if config_file is not None else find_network_config(root)
    if net_config is None:
        results += [_skip(n, "no config defines network_def") for n in ("net_in_out", "torchscript")]
    elif not (root / "configs" / "metadata.json").is_file():
        results += [_fail(n, "configs/metadata.json is missing") for n in ("net_in_out", "torchscript")]
    else:
        files = [net_config, *[Path(o) for o in overlays]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            results += [_fail(n, f"missing config: {', '.join(missing)}") for n in ("net_in_out", "torchscript")]
        else:
            results.append(check_net_in_out(root, files, overrides))
            results.append(check_torchscript(root, files, overrides))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m dast_components.verify BUNDLE_DIR [options]``; exit 1 on any FAIL."""
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.verify",
        description="Model Zoo bundle checks (files, metadata schema, changelog, MONAI Label layout, network "
        "input/output, TorchScript export). Prints one PASS/FAIL/SKIP line per check; exits 1 if any check fails.",
    )
    parser.add_argument("bundle_dir", help="[REQUIRED] bundle folder, e.g. bundles/dast_kits19_seg")
    parser.add_argument(
        "--schema",
        default=None,
        help="[OPTIONAL] local copy of the metadata JSON schema (default: bundles/schemas/<name in metadata>); "
        "nothing is downloaded",
    )
    parser.add_argument(
        "--config", default=None, help="[OPTIONAL] config defining network_def (default: inference/train/search.json)"
    )
    parser.add_argument(
        "--overlay",
        action="append",
        default=[],
        help="[OPTIONAL] config merged after --config for the network checks, e.g. configs/quick.json for a small, "
        "fast network (repeatable). Without it the full-size network is built and run on CPU.",
    )
    parser.add_argument("--verbose", action="store_true", help="[OPTIONAL] show MONAI's INFO logs of the checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import monai.bundle.scripts  # noqa: F401  its logger is created (at INFO) on import

        for name in ("monai.bundle.scripts", "monai.apps.utils", "monai.apps"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        results = verify_bundle(args.bundle_dir, schema=args.schema, config_file=args.config, overlays=args.overlay)
    except ValueError as err:
        print(f"FAIL bundle: {err}")
        return 1
    for r in results:
        print(r.line(), flush=True)
    failed = [r.name for r in results if r.failed]
    print(f"{Path(args.bundle_dir).name}: {len(results) - len(failed)} of {len(results)} checks did not fail"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
