"""Turn CustomResourceDefinitions into the JSON schemas tests/deploy validates against.

Usage (from the repository root, with the CRD files taken from the operators' releases):

    .venv/bin/python deploy/tools/crd_schemas.py --source "kedacore/keda v2.20.2 (<commit>)" \
        keda.sh_scaledobjects.yaml

For every served version of every CRD it writes tests/deploy/schemas/<group>/<kind>_<version>.json:
the version's ``openAPIV3Schema`` as the API server would use it, with the descriptions dropped
(they are most of the bytes) and a ``$comment`` naming the source. Nothing else is changed: the
strictness the tests add (no unknown fields) is applied when the schemas are loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[2] / "tests" / "deploy" / "schemas"


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: strip_descriptions(value)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


def convert(path: Path, source: str, out: Path) -> list[Path]:
    written: list[Path] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec["versions"]:
            if not version.get("served", False):
                continue
            schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
            schema = {
                "$comment": (
                    f"openAPIV3Schema of CRD {doc['metadata']['name']} version {version['name']}"
                    f" from {source}, file {path.name}; descriptions removed"
                ),
                **schema,
            }
            target = out / group / f"{kind.lower()}_{version['name']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="project, release tag and commit")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("crds", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.crds:
        for target in convert(path, args.source, args.out):
            print(target)


if __name__ == "__main__":
    main()
