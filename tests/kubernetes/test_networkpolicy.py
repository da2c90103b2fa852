"""deploy/networkpolicy.yaml, evaluated the way a network plugin does (for the pod-to-pod and
address cases it uses): only API -> PostgreSQL/MinIO, jobs -> MinIO, DNS, the API server and
callbacks get through."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from scheduler.runners.kubernetes.objects import job_labels

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "fractal"
POLICIES = [d for d in yaml.safe_load_all((REPO / "deploy" / "networkpolicy.yaml").read_text()) if d]


@dataclass(frozen=True)
class Peer:
    ip: str
    namespace: str | None = NAMESPACE  # None: not a pod (a node, a client outside the cluster)
    labels: dict[str, str] = field(default_factory=dict)


def template_labels(path: str) -> dict[str, str]:
    (doc,) = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d and d["kind"] != "Service"]
    return doc["spec"]["template"]["metadata"]["labels"]


API = Peer("10.244.0.10", labels=template_labels("deploy/deployment.yaml"))
JOB = Peer("10.244.0.11", labels=job_labels("0" * 32))
POSTGRES = Peer("10.244.0.12", labels=template_labels("deploy/postgres.yaml"))
MINIO = Peer("10.244.0.13", labels=template_labels("deploy/minio.yaml"))
OTHER = Peer("10.244.0.14", labels={"app": "something-else"})
INGRESS = Peer("10.244.1.2", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
DNS = Peer("10.244.1.3", "kube-system", {"k8s-app": "kube-dns"})
API_SERVER = Peer("192.168.49.2", None)  # minikube's node
INTERNET = Peer("203.0.113.5", None)
PRIVATE = Peer("10.20.30.40", None)


def matches(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # what this evaluator understands
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def peer_matches(rule_peer: dict, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(c) for c in block.get("except", [])
        )
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not matches(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return matches(rule_peer.get("podSelector", {}), peer.labels)


def port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def side_allows(pod: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
    """Whether `pod`'s policies let the connection through in `direction` ("Ingress"/"Egress")."""
    if pod.namespace != NAMESPACE:
        return True  # another namespace: not governed by these policies
    selecting = [p for p in POLICIES if matches(p["spec"]["podSelector"], pod.labels)]
    selecting = [p for p in selecting if direction in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if port_matches(rule.get("ports"), port, protocol) and (
                not peers or any(peer_matches(p, other) for p in peers)
            ):
                return True
    return False


def allowed(src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    out = side_allows(src, dst, port, protocol, "Egress")
    return out and side_allows(dst, src, port, protocol, "Ingress")


@pytest.mark.parametrize(
    ("src", "dst", "port", "protocol", "expected"),
    [
        (API, POSTGRES, 5432, "TCP", True),
        (API, MINIO, 9000, "TCP", True),
        (JOB, MINIO, 9000, "TCP", True),
        (API, DNS, 53, "UDP", True),
        (JOB, DNS, 53, "UDP", True),
        (API, API_SERVER, 8443, "TCP", True),
        (API, INTERNET, 8080, "TCP", True),  # callbacks
        (INGRESS, API, 8888, "TCP", True),
        (INTERNET, MINIO, 9000, "TCP", True),  # the NodePort, for an API outside the cluster
        (JOB, POSTGRES, 5432, "TCP", False),
        (JOB, API, 8888, "TCP", False),
        (JOB, INTERNET, 443, "TCP", False),
        (JOB, API_SERVER, 8443, "TCP", False),
        (API, PRIVATE, 8080, "TCP", False),  # as the SSRF guard
        (API, POSTGRES, 22, "TCP", False),
        (OTHER, API, 8888, "TCP", False),
        (OTHER, POSTGRES, 5432, "TCP", False),
        (OTHER, MINIO, 9000, "TCP", False),
        (MINIO, POSTGRES, 5432, "TCP", False),
        (POSTGRES, INTERNET, 443, "TCP", False),
        (MINIO, INTERNET, 443, "TCP", False),
        (INTERNET, POSTGRES, 5432, "TCP", False),
        (INTERNET, API, 8888, "TCP", False),
    ],
)
def test_only_the_flow_gets_through(src: Peer, dst: Peer, port: int, protocol: str, expected: bool) -> None:
    assert allowed(src, dst, port, protocol) is expected


def test_policies_select_pods_that_exist() -> None:
    for policy in POLICIES:
        selector = policy["spec"]["podSelector"]
        if selector:
            assert any(matches(selector, p.labels) for p in (API, JOB, POSTGRES, MINIO)), policy["metadata"]
