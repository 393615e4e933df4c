"""Our own policy over the rendered objects of every overlay: what a reviewer would otherwise
check by eye (security context, probes, resources, image tags, shutdown, spreading, budgets,
network policy), as assertions."""

from __future__ import annotations

import ipaddress
import re

import pytest

from shared.model.schedule import parse_duration_s
from tests.deploy.manifests import (
    KUSTOMIZE_INSTALL_TIMEOUT_S,
    SERVICES,
    Obj,
    Rendered,
    container_named,
    containers,
    named_port,
    pod_labels,
    pod_spec,
    selector_matches,
)

pytestmark = pytest.mark.timeout(KUSTOMIZE_INSTALL_TIMEOUT_S + 60)

# Addresses no delivery may reach (the SSRF rule of design.md, enforced again by the network).
PRIVATE_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
PRIVATE_V4_MORE = ("100.64.0.0/10", "0.0.0.0/8")
PRIVATE_V6 = ("fc00::/7", "fe80::/10", "::1/128")


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none); a digest counts as a tag."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_image_tag_helper() -> None:
    assert image_tag("registry:5000/clickhook/clickhook:0.1.0") == "0.1.0"
    assert image_tag("registry:5000/clickhook") is None
    assert image_tag("clickhook") is None
    assert image_tag("apache/kafka:4.1.2") == "4.1.2"
    assert image_tag("x@sha256:abc") == "sha256:abc"


def test_every_container_is_locked_down(rendered: Rendered) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped,
    the runtime's seccomp profile, no host namespaces or host paths, no API token."""
    problems: list[str] = []
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        pod_sc = spec.get("securityContext", {})
        where = name_of(workload)
        problems += [
            f"{where}: {flag}" for flag in ("hostNetwork", "hostPID", "hostIPC") if spec.get(flag)
        ]
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{where}: hostPath volume")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        for container in containers(workload):
            sc = container.get("securityContext", {})
            cwhere = f"{where} container {container['name']}"
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True:
                problems.append(f"{cwhere}: runAsNonRoot is not true")
            if user is not None and user == 0:
                problems.append(f"{cwhere}: runAsUser 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{cwhere}: capabilities must drop ALL and add none")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{cwhere}: no RuntimeDefault seccomp profile")
    assert not problems, f"{rendered.overlay}:\n" + "\n".join(problems)


def test_every_container_has_resources_and_a_pinned_image(rendered: Rendered) -> None:
    problems: list[str] = []
    for workload in rendered.workloads():
        for container in containers(workload):
            cwhere = f"{name_of(workload)} container {container['name']}"
            resources = container.get("resources", {})
            for path in ("requests.cpu", "requests.memory", "limits.memory"):
                section, key = path.split(".")
                if key not in resources.get(section, {}):
                    problems.append(f"{cwhere}: no resources.{path}")
            tag = image_tag(container["image"])
            if tag is None or tag == "latest":
                problems.append(f"{cwhere}: image {container['image']} is not pinned (tag/digest)")
            if container.get("imagePullPolicy") == "Always":
                problems.append(f"{cwhere}: imagePullPolicy Always with a pinned tag")
    assert not problems, f"{rendered.overlay}:\n" + "\n".join(problems)


def test_long_running_containers_have_probes(rendered: Rendered) -> None:
    problems: list[str] = []
    for workload in rendered.workloads():
        if workload["kind"] == "Job":
            continue
        for container in pod_spec(workload)["containers"]:
            problems += [
                f"{name_of(workload)} {container['name']}: no {probe}"
                for probe in ("startupProbe", "livenessProbe", "readinessProbe")
                if probe not in container
            ]
    assert not problems, f"{rendered.overlay}:\n" + "\n".join(problems)


@pytest.mark.parametrize("service", SERVICES)
def test_service_probes_use_healthz_and_readyz_on_the_service_port(
    rendered: Rendered, service: str
) -> None:
    deployment = rendered.deployment(service)
    container = container_named(deployment, service)
    port_setting = f"CLICKHOOK_{service.upper()}_PORT"
    port = int(rendered.settings()[port_setting])
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{service} {probe}"
        assert named_port(container, get["port"]) == port, f"{service} {probe} port"
    assert container["command"][:3] == ["python", "-m", f"services.{service}"]


@pytest.mark.parametrize("service", SERVICES)
def test_termination_grace_covers_the_drain(rendered: Rendered, service: str) -> None:
    deployment = rendered.deployment(service)
    spec = pod_spec(deployment)
    drain_s = parse_duration_s(rendered.settings()["CLICKHOOK_DRAIN_GRACE"])
    pre_stop = container_named(deployment, service).get("lifecycle", {}).get("preStop", {})
    pre_stop_s = pre_stop.get("sleep", {}).get("seconds", 0)
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= pre_stop_s + drain_s + 5, (
        f"{service}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop_s} s"
        f" + CLICKHOOK_DRAIN_GRACE {drain_s} s + 5 s"
    )


def test_ingest_leaves_the_service_before_it_stops(rendered: Rendered) -> None:
    container = container_named(rendered.deployment("ingest"), "ingest")
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= 3


@pytest.mark.parametrize("service", SERVICES)
def test_replicas_spread_and_budgeted(rendered: Rendered, service: str) -> None:
    deployment = rendered.deployment(service)
    labels = pod_labels(deployment)
    assert selector_matches(deployment["spec"]["selector"], labels)
    spread = pod_spec(deployment).get("topologySpreadConstraints", [])
    keys = {item["topologyKey"] for item in spread}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    for item in spread:
        assert selector_matches(item["labelSelector"], labels), f"{service}: spread selector"
    budgets = [
        pdb
        for pdb in rendered.of_kind("PodDisruptionBudget")
        if selector_matches(pdb["spec"]["selector"], labels)
    ]
    assert len(budgets) == 1, f"{service}: {len(budgets)} PodDisruptionBudgets"
    assert budgets[0]["spec"].get("maxUnavailable") == 1
    if rendered.overlay in ("prod", "strimzi"):
        terms = pod_spec(deployment)["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert any(
            t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            and selector_matches(t["podAffinityTerm"]["labelSelector"], labels)
            for t in terms
        ), f"{service}: no hostname anti-affinity"
    if rendered.overlay == "dev":
        assert deployment["spec"]["replicas"] == 1
    else:
        assert "replicas" not in deployment["spec"], f"{service}: the autoscaler owns replicas"


def test_service_account_mounts_no_token(rendered: Rendered) -> None:
    account = rendered.get("ServiceAccount", "clickhook")
    assert account["automountServiceAccountToken"] is False
    for service in SERVICES:
        assert pod_spec(rendered.deployment(service))["serviceAccountName"] == "clickhook"
    assert not rendered.of_kind("Role")
    assert not rendered.of_kind("RoleBinding")


def test_ingest_service_reaches_the_api_port(rendered: Rendered) -> None:
    deployment = rendered.deployment("ingest")
    service = rendered.get("Service", "clickhook-ingest")
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    container = container_named(deployment, "ingest")
    for port in service["spec"]["ports"]:
        assert named_port(container, port["targetPort"]) == int(
            rendered.settings()["CLICKHOOK_INGEST_PORT"]
        )


def secret_ref_of(rendered: Rendered, setting: str) -> Obj:
    """Where ingest's ``setting`` comes from: a Secret, never the ConfigMap."""
    assert setting not in rendered.settings(), f"{setting} in a ConfigMap"
    env = container_named(rendered.deployment("ingest"), "ingest")["env"]
    ref: Obj = next(item for item in env if item["name"] == setting)["valueFrom"]["secretKeyRef"]
    return ref


def test_api_keys_come_from_a_secret(rendered: Rendered) -> None:
    secret_ref = secret_ref_of(rendered, "CLICKHOOK_API_KEYS")
    assert re.fullmatch(r"clickhook-api-keys(-[a-z0-9]{10})?", secret_ref["name"])
    if rendered.overlay != "dev":
        assert not rendered.of_kind("Secret"), "production Secrets are not kept in the repo"


def test_the_portal_key_comes_from_an_optional_secret(rendered: Rendered) -> None:
    # Optional: without it ingest still takes clicks, with the portal off (never a key of
    # its own making).
    secret_ref = secret_ref_of(rendered, "CLICKHOOK_PORTAL_KEY")
    assert re.fullmatch(r"clickhook-portal-key(-[a-z0-9]{10})?", secret_ref["name"])
    assert secret_ref["key"] == "portal-key"
    assert secret_ref["optional"] is True


def policies_selecting(rendered: Rendered, labels: dict[str, str], kind: str) -> list[Obj]:
    return [
        policy
        for policy in rendered.of_kind("NetworkPolicy")
        if kind in policy["spec"]["policyTypes"]
        and selector_matches(policy["spec"]["podSelector"], labels)
    ]


def test_network_policies_deny_by_default(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        labels = pod_labels(workload)
        if labels.get("app.kubernetes.io/name") != "clickhook":
            continue
        for kind in ("Ingress", "Egress"):
            assert policies_selecting(rendered, labels, kind), (
                f"{name_of(workload)}: no {kind} NetworkPolicy selects it"
            )


def egress_rules(rendered: Rendered, labels: dict[str, str]) -> list[Obj]:
    return [
        rule
        for policy in policies_selecting(rendered, labels, "Egress")
        for rule in policy["spec"].get("egress", [])
    ]


@pytest.mark.parametrize("service", ["dispatcher", "retry"])
def test_deliveries_go_out_on_443_to_public_addresses_only(
    rendered: Rendered, service: str
) -> None:
    labels = pod_labels(rendered.deployment(service))
    internet = [
        rule
        for rule in egress_rules(rendered, labels)
        if any("ipBlock" in peer for peer in rule.get("to", []))
    ]
    assert internet, f"{service}: no egress to the internet"
    for rule in internet:
        assert [p["port"] for p in rule["ports"]] == [443], "internet egress on 443 only"
        for peer in rule["to"]:
            block = peer["ipBlock"]
            network = ipaddress.ip_network(block["cidr"])
            excluded = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
            wanted = PRIVATE_V4 + PRIVATE_V4_MORE if network.version == 4 else PRIVATE_V6
            for cidr in wanted:
                private = ipaddress.ip_network(cidr)
                if private.version == network.version and private.subnet_of(network):  # type: ignore[arg-type]
                    assert any(
                        private.subnet_of(ex)  # type: ignore[arg-type]
                        for ex in excluded
                        if ex.version == private.version
                    ), f"{service}: egress to {cidr} is not excluded"


def test_every_egress_rule_names_its_ports(rendered: Rendered) -> None:
    for policy in rendered.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: egress on every port"
            assert rule.get("to"), f"{policy['metadata']['name']}: egress to everywhere"


def test_ingress_ports_match_the_container_ports(rendered: Rendered) -> None:
    for service in SERVICES:
        deployment = rendered.deployment(service)
        labels = pod_labels(deployment)
        port = named_port(container_named(deployment, service), "http")
        allowed = {
            p["port"]
            for policy in policies_selecting(rendered, labels, "Ingress")
            for rule in policy["spec"].get("ingress", [])
            for p in rule.get("ports", [])
        }
        assert port in allowed, f"{service}: no ingress to its port {port}"
        others = {
            int(rendered.settings()[f"CLICKHOOK_{other.upper()}_PORT"])
            for other in SERVICES
            if other != service
        }
        # dispatcher and retry share one policy; ingest's API port is open to ingest only.
        if service == "ingest":
            assert not (allowed & others)


def test_the_broker_is_reachable_and_dns_too(rendered: Rendered) -> None:
    bootstrap = rendered.settings()["CLICKHOOK_KAFKA_BOOTSTRAP"]
    ports = {int(server.rsplit(":", 1)[1]) for server in bootstrap.split(",")}
    for workload in rendered.workloads():
        labels = pod_labels(workload)
        if labels.get("app.kubernetes.io/name") != "clickhook":
            continue
        allowed = {
            (p.get("protocol", "TCP"), p["port"])
            for rule in egress_rules(rendered, labels)
            for p in rule.get("ports", [])
        }
        assert ("UDP", 53) in allowed, f"{name_of(workload)}: DNS over UDP"
        assert ("TCP", 53) in allowed, f"{name_of(workload)}: DNS over TCP"
        assert {("TCP", port) for port in ports} <= allowed, f"{name_of(workload)}: broker"


def test_namespaces_enforce_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    namespaces = rendered.of_kind("Namespace")
    assert len(namespaces) == 1
    namespace = namespaces[0]["metadata"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in rendered.objects:
        if obj["kind"] in ("Namespace", "KafkaTopic"):
            continue
        assert obj["metadata"].get("namespace") == namespace["name"], name_of(obj)
