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
"""The Model Zoo CI's bundle checks (its ``ci/verify_bundle.py``, mode ``full``), restated with MONAI's functions,
run in a bundle's own environment on a downloaded bundle. Standard library and MONAI only (no ``dast_components``
import here: the bundle's configs import the copy inside the bundle).

What the Zoo does, in order: put the bundle root on ``sys.path``; ``download_large_files`` when the bundle has a
``large_files.yml``; necessary files (``configs/metadata.json``, ``LICENSE``); preferred files (``models/model.pt``,
``configs/inference.json``) unless the bundle is on its ``exclude_verify_preferred_files_list``; version listed in
the changelog; ``verify_metadata``; ``verify_net_in_out`` and ``ckpt_export`` (no ``key_in_ckpt``) of ``network_def``
from the inference config unless excluded. Departures, each for a reason: the metadata schema is read from a local
file placed at ``eval/schema.json`` (this machine has no access to the schema's host; MONAI skips the download when
the file is there), ``--override id=value`` pairs are passed to the network checks (the weights trained in a test are
of a small network), and ``--exclude_preferred`` / ``--exclude_network`` play the Zoo's exclusion lists.

Usage::

    python zoo_checks.py MODELS_DIR BUNDLE_NAME --schema FILE [--config configs/inference.json ...]
        [--override KEY=PYTHON_LITERAL ...] [--exclude_preferred] [--exclude_network] [--fake_weights]

Prints one line per check and exits non-zero at the first failure.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir")
    parser.add_argument("bundle")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--exclude_preferred", action="store_true")
    parser.add_argument("--exclude_network", action="store_true")
    parser.add_argument("--fake_weights", action="store_true",
                        help="without models/model.pt, save the untrained network's state dict there first (the Zoo "
                        "CI's _produce_fake_weights)")
    args = parser.parse_args(argv)

    bundle_path = os.path.join(args.models_dir, args.bundle)
    sys.path = [bundle_path] + sys.path  # as the Zoo's verify(): custom code is imported from the bundle root

    import torch
    from monai.bundle import ckpt_export, download_large_files, verify_metadata, verify_net_in_out

    if any(os.path.exists(os.path.join(bundle_path, f"large_files.{s}")) for s in ("yml", "yaml", "json")):
        download_large_files(bundle_path=bundle_path)
        print("large files: downloaded")
    configs = [os.path.join(bundle_path, c) for c in (args.config or ["configs/inference.json"])]
    model_pt = os.path.join(bundle_path, "models", "model.pt")
    if args.fake_weights and not os.path.exists(model_pt):
        from monai.bundle import ConfigParser

        fake = ConfigParser()
        fake.read_config(f=configs)
        fake.read_meta(f=os.path.join(bundle_path, "configs/metadata.json"))
        fake["bundle_root"] = bundle_path
        torch.save(fake.get_parsed_content("network_def").state_dict(), model_pt)
        print("fake weights: saved")
    for file in ("configs/metadata.json", "LICENSE"):
        if not os.path.exists(os.path.join(bundle_path, file)):
            raise ValueError(f"necessary file {file} is not existing.")
    if not args.exclude_preferred:
        for file in ("models/model.pt", "configs/inference.json"):
            if not os.path.exists(os.path.join(bundle_path, file)):
                raise ValueError(f"preferred file {file} is not existing.")
    print("directory: verified")
    meta_file = os.path.join(bundle_path, "configs/metadata.json")
    with open(meta_file) as f:
        metadata = json.load(f)
    if metadata["version"] not in metadata["changelog"]:
        raise ValueError(f"version {metadata['version']} is missing in the changelog.")
    print("version and changelog: verified")
    schema = os.path.join(bundle_path, "eval", "schema.json")
    os.makedirs(os.path.dirname(schema), exist_ok=True)
    shutil.copyfile(args.schema, schema)
    verify_metadata(meta_file=meta_file, filepath=schema)
    print("metadata format: verified")
    if args.exclude_network:
        return 0
    overrides = {}
    for item in args.override:
        key, value = item.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=configs, bundle_root=bundle_path,
                      **overrides)
    print("data shape: verified")
    ts_file = os.path.join(bundle_path, "models", "verify_model.ts")
    ckpt_export(net_id="network_def", filepath=ts_file, ckpt_file=model_pt,
                meta_file=meta_file, config_file=configs, bundle_root=bundle_path, **overrides)
    torch.jit.load(ts_file)
    print("torchscript: verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
