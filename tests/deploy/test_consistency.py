"""The manifests agree with the code: settings the services read, topic and consumer group names
the autoscaler watches, the topics Strimzi declares, the metrics the alerts use, the broker the
dev overlay runs."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

import shared.ops.metrics
from services.ingest.delivery_log.store import WAL_LIMIT_BYTES
from services.ingest.portal.sessions import portal_key
from shared.kafka.clients import topic_specs
from shared.model.topics import DISPATCHER_GROUP, RETRY_GROUP, Topics
from shared.ops.settings import load_settings
from tests.deploy.manifests import (
    KUSTOMIZE_INSTALL_TIMEOUT_S,
    ROOT,
    SERVICES,
    Obj,
    Rendered,
    container_named,
    expand,
    named_port,
    pod_labels,
    pod_spec,
    resolve_env,
    selector_matches,
)

pytestmark = pytest.mark.timeout(KUSTOMIZE_INSTALL_TIMEOUT_S + 60)

TEST_SECRETS = {
    ("clickhook-api-keys", "api-keys"): "test-publish:publish,test-admin:admin",
    ("clickhook-portal-key", "portal-key"): secrets.token_hex(32),
    ("clickhook-delivery-log-url", "url"): "postgresql://clickhook:pw@pg.example:5432/clickhook",
}
GROUPS = {"dispatcher": DISPATCHER_GROUP, "retry": RETRY_GROUP}


def known_settings() -> set[str]:
    source = (ROOT / "shared" / "ops" / "settings.py").read_text()
    return set(re.findall(r'"(CLICKHOOK_[A-Z_]+)"', source))


def test_every_setting_in_the_configmap_is_one_the_services_read(rendered: Rendered) -> None:
    unknown = set(rendered.settings()) - known_settings()
    assert not unknown, f"{rendered.overlay}: settings no service reads: {sorted(unknown)}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_environment_of_each_service_loads(rendered: Rendered, service: str) -> None:
    deployment = rendered.deployment(service)
    env = resolve_env(rendered, deployment, container_named(deployment, service), TEST_SECRETS)
    settings = load_settings(env)
    assert settings.bind_host == "0.0.0.0"
    assert settings.kafka_bootstrap == rendered.settings()["CLICKHOOK_KAFKA_BOOTSTRAP"]
    if service == "ingest":
        assert settings.api_keys, "ingest gets CLICKHOOK_API_KEYS"
        assert portal_key(settings), "ingest gets a usable CLICKHOOK_PORTAL_KEY"
        delivery_log_url = TEST_SECRETS[("clickhook-delivery-log-url", "url")]
        assert settings.delivery_log_url == delivery_log_url, "ingest may use PostgreSQL"
    else:
        assert "CLICKHOOK_API_KEYS" not in env, f"{service} needs no API keys"
        assert "CLICKHOOK_PORTAL_KEY" not in env, f"{service} needs no portal key"
        assert "CLICKHOOK_DELIVERY_LOG_URL" not in env, f"{service} keeps no delivery log"


def test_the_topics_job_runs_topic_creation_with_the_settings(rendered: Rendered) -> None:
    job = rendered.find("Job", "clickhook-topics")
    if rendered.overlay == "strimzi":
        assert job is None, "Strimzi's Topic Operator owns the topics"
        return
    assert job is not None
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["clickhook", "topics", "create"]
    env = resolve_env(rendered, job, container, TEST_SECRETS)
    assert env == rendered.settings()
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"


def scaled_objects(rendered: Rendered) -> dict[str, Obj]:
    return {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in rendered.of_kind("ScaledObject")}


def test_autoscalers_cover_the_services(rendered: Rendered) -> None:
    scaled = scaled_objects(rendered)
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    if rendered.overlay == "dev":
        assert not scaled, "dev runs one replica each, without KEDA"
        assert not hpas
        return
    assert set(scaled) == {"clickhook-dispatcher", "clickhook-retry"}
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["clickhook-ingest"]
    metrics = hpas[0]["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics] == ["cpu"]
    assert hpas[0]["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("service", ["dispatcher", "retry"])
def test_keda_watches_the_services_own_group_and_topic(rendered: Rendered, service: str) -> None:
    scaled = scaled_objects(rendered).get(f"clickhook-{service}")
    if rendered.overlay == "dev":
        assert scaled is None
        return
    assert scaled is not None
    settings = rendered.settings()
    partitions = int(settings["CLICKHOOK_TOPIC_PARTITIONS"])
    spec = scaled["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, (
        f"{service}: replicas {spec['minReplicaCount']}..{spec['maxReplicaCount']}"
        f" with {partitions} partitions"
    )
    deployment = rendered.deployment(service)
    container = container_named(deployment, spec["scaleTargetRef"]["envSourceContainerName"])
    env = resolve_env(rendered, deployment, container, TEST_SECRETS)
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]

    def param(name: str) -> str | None:
        if name in metadata:
            value: str = metadata[name]
            return value
        env_name = metadata.get(f"{name}FromEnv")
        assert env_name is None or env_name in env, f"{service}: {env_name} not in the env"
        return None if env_name is None else env[env_name]

    topics = Topics(settings["CLICKHOOK_TOPIC_PREFIX"])
    assert param("bootstrapServers") == settings["CLICKHOOK_KAFKA_BOOTSTRAP"]
    assert param("consumerGroup") == topics.group(GROUPS[service])
    assert param("topic") == (topics.clicks if service == "dispatcher" else None)
    assert metadata["offsetResetPolicy"] == "earliest", "the consumers start at the earliest"
    # The derived names follow a prefix too (Kubernetes and KEDA expand $(VAR) alike).
    prefixed = Topics("acme.")
    derived = {
        item["name"]: expand(item["value"], {"CLICKHOOK_TOPIC_PREFIX": "acme."})
        for item in container.get("env", [])
        if item["name"].startswith("KEDA_KAFKA_")
    }
    assert derived["KEDA_KAFKA_CONSUMER_GROUP"] == prefixed.group(GROUPS[service])
    if service == "dispatcher":
        assert derived["KEDA_KAFKA_TOPIC"] == prefixed.clicks
    else:
        assert metadata["excludePersistentLag"] == "true", "retry lag waits by design"


def test_strimzi_topics_are_the_ones_the_services_create(rendered: Rendered) -> None:
    declared = {obj["spec"]["topicName"]: obj for obj in rendered.of_kind("KafkaTopic")}
    if rendered.overlay != "strimzi":
        assert not declared
        return
    settings = load_settings(rendered.settings())
    wanted = {spec.name: spec for spec in topic_specs(settings)}
    assert set(declared) == set(wanted), "regenerate with deploy/tools/strimzi_topics.py"
    for name, spec in wanted.items():
        topic = declared[name]["spec"]
        assert topic["partitions"] == spec.num_partitions, name
        assert topic["replicas"] == spec.replication_factor, name
        assert {k: str(v) for k, v in topic.get("config", {}).items()} == spec.topic_configs, name
        assert declared[name]["metadata"]["labels"]["strimzi.io/cluster"]


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for value in vars(shared.ops.metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            suffixes = {
                "counter": ("_total", "_created"),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",),
                "summary": ("_sum", "_count", "_created", ""),
            }.get(family.type, ("",))
            names |= {family.name + suffix for suffix in suffixes}
    return names


def test_monitoring_scrapes_every_service_and_alerts_on_real_metrics(rendered: Rendered) -> None:
    monitors = rendered.of_kind("PodMonitor")
    rules = rendered.of_kind("PrometheusRule")
    if rendered.overlay == "dev":
        assert not monitors
        assert not rules
        return
    (monitor,) = monitors
    for service in SERVICES:
        deployment = rendered.deployment(service)
        assert selector_matches(monitor["spec"]["selector"], pod_labels(deployment)), service
        container = container_named(deployment, service)
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert named_port(container, endpoint["port"]) > 0
            assert endpoint["path"] == "/metrics"
    job = rendered.get("Job", "clickhook-topics") if rendered.overlay == "prod" else None
    if job is not None:
        assert not selector_matches(monitor["spec"]["selector"], pod_labels(job))
    exported = exported_metric_names()
    runbooks = (ROOT / "docs" / "operations" / "alerts.md").read_text()
    (rule,) = rules
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            used = set(re.findall(r"\bclickhook_[a-z_]+\b", alert["expr"]))
            assert used <= exported, f"{alert['alert']}: not exported: {used - exported}"
            assert alert["labels"]["severity"] in ("critical", "warning")
            page, anchor = alert["annotations"]["runbook_url"].split("#", 1)
            assert page == "https://clickhook.example/docs/operations/alerts/", alert["alert"]
            heading = re.compile(rf"^#+ .*\b{anchor}\b", re.IGNORECASE | re.MULTILINE)
            assert heading.search(runbooks), f"{alert['alert']}: no runbook heading {anchor}"


def test_dev_kafka_is_the_broker_the_services_are_given(rendered: Rendered) -> None:
    if rendered.overlay != "dev":
        assert rendered.find("StatefulSet", "kafka") is None
        return
    kafka = rendered.get("StatefulSet", "kafka")
    container = container_named(kafka, "kafka")
    pom = (ROOT / "deploy" / "local" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+?)</kafka.version>", pom)
    assert version is not None
    assert container["image"] == f"apache/kafka:{version.group(1)}", "same Kafka as make test"
    (config_volume,) = [v for v in pod_spec(kafka)["volumes"] if "configMap" in v]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    properties_path = f"{mounts[config_volume['name']]}/server.properties"
    assert properties_path in container["command"][-1]
    configmap = rendered.get("ConfigMap", config_volume["configMap"]["name"])
    props = dict(
        line.split("=", 1)
        for line in configmap["data"]["server.properties"].splitlines()
        if line and not line.startswith("#")
    )
    advertised = dict(item.split("://", 1) for item in props["advertised.listeners"].split(","))
    service = rendered.get("Service", "kafka")
    (service_port,) = service["spec"]["ports"]
    assert advertised["PLAINTEXT"] == f"kafka:{service_port['port']}"
    assert rendered.settings()["CLICKHOOK_KAFKA_BOOTSTRAP"] == advertised["PLAINTEXT"]
    assert named_port(container, service_port["targetPort"]) == 9092
    listeners = dict(item.split("://", 1) for item in props["listeners"].split(","))
    assert listeners["PLAINTEXT"].endswith(":9092")
    voter_port = props["controller.quorum.voters"].rsplit(":", 1)[1]
    assert listeners[props["controller.listener.names"]].endswith(f":{voter_port}")
    assert props["inter.broker.listener.name"] in advertised
    assert props["log.dirs"] in mounts.values(), "log.dirs is a volume"
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(kafka))
    cluster_id = next(e["value"] for e in container["env"] if e["name"] == "KAFKA_CLUSTER_ID")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)


def test_python_containers_get_a_writable_tmp(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for container in pod_spec(workload)["containers"]:
            if container["command"][0] != "python":
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{workload['metadata']['name']}: no /tmp"
            volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in volume


def test_the_delivery_log_budget_fits_its_volume_with_headroom(rendered: Rendered) -> None:
    deployment = rendered.deployment("ingest")
    container = container_named(deployment, "ingest")
    settings = load_settings(resolve_env(rendered, deployment, container, TEST_SECRETS))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(
        v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts[settings.state_dir]
    )
    size = volume["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi"), size
    limit_bytes = int(size.removesuffix("Gi")) * 1024**3
    # The file stays within the budget; its WAL and the headroom come on top of it.
    assert settings.delivery_log_max_bytes + WAL_LIMIT_BYTES <= 0.9 * limit_bytes


def test_every_overlay_is_tested() -> None:
    overlays = {p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir() if p.is_dir()}
    from tests.deploy.manifests import OVERLAYS  # noqa: PLC0415

    assert overlays == set(OVERLAYS)
    assert Path(ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml").is_file()
