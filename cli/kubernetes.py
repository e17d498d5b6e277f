"""The Kubernetes manifests, as code: `msp k8s` writes them to k8s/.

Generated rather than hand-written so that they follow the code: one KafkaTopic per declared
topic (libs/common/topics.py), one KEDA trigger per consumer group and topic the services
subscribe (CONSUMERS below, checked against the services' wiring by the tests), the
Prometheus rules of deploy/prometheus/rules.yml as a PrometheusRule. The tests validate every
manifest offline: core kinds with kubernetes-validate, custom resources against the published
CRD schemas (Strimzi, KEDA, Prometheus Operator).

Memory: measured on this platform after the embedding model loaded (`msp up`, RSS): triage
1.0 GiB, packet 0.95 GiB, automation 1.05 GiB, ingest and audit under 0.1 GiB; limits leave
room for a batch of encodings on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from libs.common.settings import REPO_ROOT
from libs.common.topics import TOPICS

OUT_DIR = REPO_ROOT / "k8s"
IMAGE = "msp-platform:latest"
KAFKA_CLUSTER = "msp"
BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap:9092"  # Strimzi's bootstrap service
PARTITIONS = 12
REPLICATION = 3
PART_OF = {"app.kubernetes.io/part-of": "msp"}


@dataclass(frozen=True)
class Workload:
    name: str  # the Deployment (msp-<name>)
    module: str  # python -m services.<module>
    port: int
    memory_request: str
    memory_limit: str
    # (consumer group, topic) pairs KEDA scales on; none: a fixed number of replicas.
    consumes: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    public: bool = False  # reachable from outside the namespace (sources post to ingest)
    replicas: int = 2


def _groups(group: str, *topics: str) -> tuple[tuple[str, str], ...]:
    return tuple((group, t) for t in topics)


WORKLOADS = (
    Workload("ingest", "ingest", 8081, "128Mi", "512Mi", public=True),
    Workload(
        "triage",
        "triage",
        8082,
        "1280Mi",
        "2Gi",
        consumes=_groups("msp-triage-alerts", "alerts.raw.v1")
        + _groups("msp-triage-tickets", "tickets.events.v1"),
    ),
    Workload(
        "packet",
        "packet",
        8083,
        "1280Mi",
        "2Gi",
        consumes=_groups(
            "msp-packet-packets",
            "tickets.events.v1",
            "tickets.triaged.v1",
            "signals.clustered.v1",
            "automation.runs.v1",
            "automation.results.v1",
        ),
    ),
    Workload(
        "automation",
        "automation",
        8084,
        "1280Mi",
        "2Gi",
        consumes=_groups(
            "msp-automation-automations", "tickets.events.v1", "tickets.triaged.v1", "automation.results.v1"
        ),
        env=(("MSP_AUTOMATION_ROLE", "api"),),
    ),
    Workload(
        "automation-executor",
        "automation",
        8086,
        "128Mi",
        "512Mi",
        consumes=_groups("msp-automation-executor", "automation.runs.v1"),
        env=(("MSP_AUTOMATION_ROLE", "executor"),),
    ),
    Workload("audit", "audit", 8085, "128Mi", "512Mi", consumes=_groups("msp-audit", "audit.events.v1")),
)

_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001}
_ENV_FROM = [{"configMapRef": {"name": "msp-platform"}}, {"secretRef": {"name": "msp-secrets"}}]
_VOLUMES = [{"name": "var", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
_MOUNTS = [{"name": "var", "mountPath": "/var/lib/msp"}, {"name": "tmp", "mountPath": "/tmp"}]


def _labels(name: str) -> dict[str, str]:
    return {"app": f"msp-{name}", **PART_OF}


def config_map() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "msp-platform", "labels": PART_OF},
        "data": {
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "MSP_ENVIRONMENT": "prod",
            "MSP_HTTP_HOST": "0.0.0.0",
            "MSP_MIGRATE_ON_START": "false",  # the migration Job does it, once
            "MSP_INGEST_URL": "http://msp-ingest:8081",
            "MSP_TRIAGE_URL": "http://msp-triage:8082",
            "MSP_VAR_DIR": "/var/lib/msp",
            "HF_HUB_OFFLINE": "1",
        },
    }


def secret_template() -> dict[str, Any]:
    """The Secret's shape; the values come from `msp secrets` (see the README)."""
    from cli.main import DEPLOYMENT_SECRETS

    keys = [k for k in DEPLOYMENT_SECRETS if k.startswith("MSP_")] + ["MSP_DATABASE_URL"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "msp-secrets", "labels": PART_OF},
        "type": "Opaque",
        "stringData": {k: "REPLACE: see the README (msp secrets)" for k in keys},
    }


def kafka() -> list[dict[str, Any]]:
    """A Strimzi Kafka in KRaft mode: three nodes, each controller and broker."""
    cluster = {"strimzi.io/cluster": KAFKA_CLUSTER}
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaNodePool",
            "metadata": {"name": "dual-role", "labels": {**cluster, **PART_OF}},
            "spec": {
                "replicas": REPLICATION,
                "roles": ["controller", "broker"],
                "storage": {
                    "type": "jbod",
                    "volumes": [
                        {
                            "id": 0,
                            "type": "persistent-claim",
                            "size": "100Gi",
                            "deleteClaim": False,
                            "kraftMetadata": "shared",
                        }
                    ],
                },
                "resources": {"requests": {"memory": "2Gi", "cpu": "500m"}, "limits": {"memory": "4Gi"}},
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "Kafka",
            # Strimzi's v1 API: KRaft and node pools are the only way, no annotations needed.
            "metadata": {"name": KAFKA_CLUSTER, "labels": PART_OF},
            "spec": {
                "kafka": {
                    "version": "4.1.1",
                    "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": False}],
                    "config": {
                        "default.replication.factor": REPLICATION,
                        "min.insync.replicas": 2,
                        "offsets.topic.replication.factor": REPLICATION,
                        "transaction.state.log.replication.factor": REPLICATION,
                        "transaction.state.log.min.isr": 2,
                        "auto.create.topics.enable": False,
                    },
                },
                "entityOperator": {"topicOperator": {}, "userOperator": {}},
            },
        },
    ]


def kafka_topics() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": {
                "name": spec.name.replace("_", "-"),
                "labels": {"strimzi.io/cluster": KAFKA_CLUSTER, **PART_OF},
            },
            "spec": {
                "topicName": spec.name,
                "partitions": PARTITIONS,
                "replicas": REPLICATION,
                "config": {**spec.config(), "min.insync.replicas": "2"},
            },
        }
        for spec in TOPICS.values()
    ]


def _container(w: Workload) -> dict[str, Any]:
    port = {"name": "http", "containerPort": w.port}
    probe = {"port": "http"}
    return {
        "name": w.name,
        "image": IMAGE,
        "command": ["python", "-m", f"services.{w.module}"],
        "ports": [port],
        "envFrom": _ENV_FROM,
        "env": [
            {"name": "MSP_HTTP_PORT", "value": str(w.port)},
            *({"name": k, "value": v} for k, v in w.env),
        ],
        # Up to five minutes to load the embedding model before the other probes begin.
        "startupProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": w.memory_request},
            "limits": {"memory": w.memory_limit},
        },
        "securityContext": _SECURITY,
        "volumeMounts": _MOUNTS,
    }


def workload(w: Workload) -> list[dict[str, Any]]:
    labels = _labels(w.name)
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"msp-{w.name}", "labels": labels},
            "spec": {
                # KEDA owns the replica count of a consumer; the others run two.
                **({} if w.consumes else {"replicas": w.replicas}),
                "selector": {"matchLabels": {"app": f"msp-{w.name}"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": _POD_SECURITY,
                        "automountServiceAccountToken": False,
                        "containers": [_container(w)],
                        "volumes": _VOLUMES,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"msp-{w.name}", "labels": labels},
            "spec": {
                "selector": {"app": f"msp-{w.name}"},
                "ports": [{"name": "http", "port": w.port, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": f"msp-{w.name}", "labels": labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": f"msp-{w.name}"}}},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"msp-{w.name}", "labels": labels},
            "spec": {
                "podSelector": {"matchLabels": {"app": f"msp-{w.name}"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "ports": [{"port": w.port, "protocol": "TCP"}],
                        # Ingest takes posts from the sources (through the cluster's ingress);
                        # the others only from the platform's pods and the monitoring namespace.
                        **(
                            {}
                            if w.public
                            else {
                                "from": [
                                    {"podSelector": {"matchLabels": PART_OF}},
                                    {
                                        "namespaceSelector": {
                                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                                        }
                                    },
                                ]
                            }
                        ),
                    }
                ],
            },
        },
    ]
    if w.consumes:
        docs.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": f"msp-{w.name}", "labels": labels},
                "spec": {
                    "scaleTargetRef": {"name": f"msp-{w.name}"},
                    "minReplicaCount": 1,
                    # More consumers than partitions would sit idle.
                    "maxReplicaCount": PARTITIONS,
                    "pollingInterval": 15,
                    "cooldownPeriod": 300,
                    "triggers": [
                        {
                            "type": "kafka",
                            "metadata": {
                                "bootstrapServers": BOOTSTRAP,
                                "consumerGroup": group,
                                "topic": topic,
                                "lagThreshold": "1000",
                                "offsetResetPolicy": "earliest",
                                "allowIdleConsumers": "false",
                            },
                        }
                        for group, topic in w.consumes
                    ],
                },
            }
        )
    return docs


def migrate_job() -> dict[str, Any]:
    """Every service's tables, once per release (the replicas only check the revision)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "msp-migrate", "labels": _labels("migrate")},
        "spec": {
            "backoffLimit": 4,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": _labels("migrate")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "securityContext": _POD_SECURITY,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "migrate",
                            "image": IMAGE,
                            "command": ["python", "-m", "cli.main", "migrate"],
                            "envFrom": _ENV_FROM,
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": _SECURITY,
                            "volumeMounts": _MOUNTS,
                        }
                    ],
                    "volumes": _VOLUMES,
                },
            },
        },
    }


def monitoring() -> list[dict[str, Any]]:
    rules = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "msp", "labels": PART_OF},
            "spec": {
                "selector": {"matchLabels": PART_OF},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "msp", "labels": PART_OF},
            "spec": {"groups": rules["groups"]},
        },
    ]


def manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> its documents."""
    files: dict[str, list[dict[str, Any]]] = {
        "configmap.yaml": [config_map()],
        "kafka.yaml": kafka(),
        "topics.yaml": kafka_topics(),
        "migrate-job.yaml": [migrate_job()],
        "monitoring.yaml": monitoring(),
    }
    for w in WORKLOADS:
        files[f"{w.name}.yaml"] = workload(w)
    return files


HEADER = "# Written by `msp k8s` from cli/kubernetes.py: change that, not this file.\n"
# Outside k8s/, so that `kubectl apply -f k8s/` never replaces the real Secret with placeholders.
SECRET_TEMPLATE = REPO_ROOT / "deploy" / "k8s-secret.template.yaml"


def outputs() -> dict[Path, str]:
    """Every file `msp k8s` writes, with its text."""
    files = {OUT_DIR / name: render(docs) for name, docs in manifests().items()}
    files[SECRET_TEMPLATE] = render([secret_template()])
    return files


def render(docs: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=110) for d in docs)
