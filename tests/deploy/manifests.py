"""Rendering the Kubernetes manifests and reading them the way the cluster would.

Pure helpers for tests/deploy: kustomize build of an overlay, lookups, pod templates, and a
container's environment resolved as the kubelet resolves it (envFrom, then env with $(VAR)
references expanded, ConfigMap and Secret keys looked up in the rendered objects).
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZE_SH = ROOT / "deploy" / "tools" / "kustomize.sh"
OVERLAYS = ("dev", "prod", "strimzi")
# Cold machine: kustomize is built from source once (about a minute on 2 cores).
KUSTOMIZE_INSTALL_TIMEOUT_S = 540

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
SERVICES = ("ingest", "dispatcher", "retry")


def kustomize_path() -> Path:
    """The pinned kustomize binary (deploy/tools/kustomize.sh installs it when missing)."""
    result = subprocess.run(
        ["bash", str(KUSTOMIZE_SH), "--path"],
        capture_output=True,
        text=True,
        timeout=KUSTOMIZE_INSTALL_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"deploy/tools/kustomize.sh --path failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def kustomize_build(kustomize: Path, directory: Path) -> list[Obj]:
    result = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {directory} failed:\n{result.stderr}")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


@dataclass(frozen=True)
class Rendered:
    """The objects of one overlay, as `kustomize build` prints them."""

    overlay: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> Obj | None:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]

    def deployment(self, service: str) -> Obj:
        return self.get("Deployment", f"clickhook-{service}")

    def settings_configmap(self) -> Obj:
        """The generated clickhook-config-<hash> ConfigMap."""
        found = [
            obj
            for obj in self.of_kind("ConfigMap")
            if re.fullmatch(r"clickhook-config(-[a-z0-9]{10})?", obj["metadata"]["name"])
        ]
        assert len(found) == 1, f"{self.overlay}: {len(found)} clickhook-config ConfigMaps"
        return found[0]

    def settings(self) -> dict[str, str]:
        data: dict[str, str] = self.settings_configmap().get("data", {})
        return dict(data)


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_named(workload: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{workload['metadata']['name']}: no container {name}"
    return found[0]


def selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, others left, $$ is $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, value)


def _secret_data(rendered: Rendered, namespace: str | None, name: str) -> dict[str, str] | None:
    for secret in rendered.of_kind("Secret"):
        meta = secret["metadata"]
        if meta["name"] == name and meta.get("namespace") == namespace:
            decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            return {**decoded, **secret.get("stringData", {})}
    return None


def _configmap_data(rendered: Rendered, namespace: str | None, name: str) -> dict[str, str]:
    for configmap in rendered.of_kind("ConfigMap"):
        meta = configmap["metadata"]
        if meta["name"] == name and meta.get("namespace") == namespace:
            data: dict[str, str] = configmap.get("data", {})
            return dict(data)
    raise AssertionError(f"{rendered.overlay}: ConfigMap {namespace}/{name} is not rendered")


def resolve_env(
    rendered: Rendered,
    workload: Obj,
    container: Obj,
    external_secrets: Mapping[tuple[str, str], str],
) -> dict[str, str]:
    """The container's environment as the kubelet builds it.

    Secrets that the overlay does not render (production creates them itself) are taken from
    ``external_secrets`` by (secret name, key); a missing one fails the test.
    """
    namespace = workload["metadata"].get("namespace")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = _configmap_data(rendered, namespace, source["configMapRef"]["name"])
        else:
            name = source["secretRef"]["name"]
            found = _secret_data(rendered, namespace, name)
            assert found is not None, f"Secret {name} for envFrom is not rendered"
            data = found
        env.update({prefix + key: value for key, value in data.items()})
    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = _configmap_data(rendered, namespace, ref["name"])[ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = _secret_data(rendered, namespace, ref["name"])
            if secret is not None:
                env[name] = secret[ref["key"]]
            elif ref.get("optional") and (ref["name"], ref["key"]) not in external_secrets:
                continue  # as Kubernetes does for an optional Secret that does not exist
            else:
                assert (ref["name"], ref["key"]) in external_secrets, (
                    f"no test value for Secret {ref['name']} key {ref['key']}"
                )
                env[name] = external_secrets[(ref["name"], ref["key"])]
        elif "fieldRef" in source:
            env[name] = f"fieldref-{source['fieldRef']['fieldPath']}"
        else:
            raise AssertionError(f"unsupported env source for {name}: {source}")
    return env


def named_port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            number: int = item["containerPort"]
            return number
    raise AssertionError(f"container {container['name']} has no port named {port}")


def iter_dicts(node: Any) -> Iterator[Obj]:
    """Every mapping inside a YAML tree, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from iter_dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_dicts(item)
