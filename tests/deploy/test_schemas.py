"""Every rendered object validates offline: built-in kinds against the Kubernetes OpenAPI schemas
bundled by kubernetes-validate (strict: no unknown fields), custom resources against the CRD
schemas in tests/deploy/schemas (see its README for where they come from)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from tests.deploy.manifests import KUSTOMIZE_INSTALL_TIMEOUT_S, Obj, Rendered

pytestmark = pytest.mark.timeout(KUSTOMIZE_INSTALL_TIMEOUT_S + 60)

SCHEMAS = Path(__file__).parent / "schemas"
# The newest release the installed kubernetes-validate bundles, and the oldest we support
# (lifecycle.preStop.sleep, topologySpreadConstraints.matchLabelKeys).
OLDEST_SUPPORTED = "1.31"
KUBERNETES_VERSIONS = (OLDEST_SUPPORTED, latest_version())

CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafka.strimzi.io/kafkatopic_v1.json",
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


GO_INLINE_FLAGS = re.compile(r"^\^\(\?([a-zA-Z]+)\)")


def python_pattern(pattern: str) -> str:
    """Go's RE2 takes inline flags anywhere (``^(?i)abc``); Python only at the start."""
    match = GO_INLINE_FLAGS.match(pattern)
    return f"(?{match.group(1)})^{pattern[match.end() :]}" if match else pattern


def strict(schema: Any) -> Any:
    """Reject unknown fields where the structural schema lists the known ones."""
    if isinstance(schema, dict):
        out = {
            key: python_pattern(value)
            if key == "pattern" and isinstance(value, str)
            else strict(value)
            for key, value in schema.items()
        }
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields", False)
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@functools.cache
def custom_validator(filename: str) -> Any:
    schema = json.loads((SCHEMAS / filename).read_text())
    schema = strict(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_custom(obj: Obj) -> list[str]:
    filename = CUSTOM_KINDS[(obj["apiVersion"], obj["kind"])]
    errors = sorted(custom_validator(filename).iter_errors(obj), key=lambda e: list(e.path))
    problems = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
    meta = obj["metadata"]
    if not DNS_SUBDOMAIN.fullmatch(meta["name"]) or len(meta["name"]) > 253:
        problems.append(f"metadata.name {meta['name']!r} is not a DNS subdomain")
    for key, value in meta.get("labels", {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            problems.append(f"label {key}={value!r} is not a valid label value")
    return problems


def describe(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(
    rendered: Rendered, version: str
) -> None:
    problems: list[str] = []
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except SchemaNotFoundError:
            problems.append(f"{describe(obj)}: no schema (unknown kind for Kubernetes {version})")
        except jsonschema.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            problems.append(f"{describe(obj)}: {path}: {exc.message}")
    assert not problems, f"{rendered.overlay} on Kubernetes {version}:\n" + "\n".join(problems)


def test_custom_resources_validate_against_crd_schemas(rendered: Rendered) -> None:
    problems = [
        f"{describe(obj)}: {problem}"
        for obj in rendered.objects
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS
        for problem in validate_custom(obj)
    ]
    assert not problems, f"{rendered.overlay}:\n" + "\n".join(problems)


def test_keda_kafka_triggers_use_known_parameters(rendered: Rendered) -> None:
    validator = custom_validator("keda.sh/kafka-trigger-metadata.json")
    problems: list[str] = []
    for obj in rendered.of_kind("ScaledObject"):
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "kafka", f"{describe(obj)}: unexpected trigger type"
            problems += [
                f"{describe(obj)}: {e.message}" for e in validator.iter_errors(trigger["metadata"])
            ]
    assert not problems, "\n".join(problems)


def test_the_strict_schemas_catch_a_misspelt_field() -> None:
    """The checks above are only worth something if they reject mistakes."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x:1", "readinesProbe": {}}]},
            },
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "maxReplicas": 3,
            "triggers": [{"type": "kafka", "metadata": {}}],
        },
    }
    assert any("maxReplicas" in problem for problem in validate_custom(scaled_object))
    metadata = {"bootstrapServers": "k:9092", "consumerGroup": "g", "lagTreshold": "5"}
    errors = list(custom_validator("keda.sh/kafka-trigger-metadata.json").iter_errors(metadata))
    assert any("lagTreshold" in error.message for error in errors)
