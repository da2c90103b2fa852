"""Every manifest file validates against the Kubernetes JSON schemas; RBAC matches the code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from scheduler.runners.kubernetes.objects import API_ACCESS
from tests.kubernetes.test_objects import K8S_VERSION

REPO = Path(__file__).resolve().parents[2]
DIRS = ("serviceaccount", "configmaps", "deploy")
FILES = sorted(p for d in DIRS for p in (REPO / d).glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[dict]:
    return [d for p in FILES for d in docs(p)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_validates(path: Path) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_directory_has_manifests() -> None:
    for d in DIRS:
        assert list((REPO / d).glob("*.yaml")), d


def test_role_grants_exactly_what_the_code_calls() -> None:
    (role,) = [d for d in all_docs() if d["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == set(API_ACCESS)
    assert not [d for d in all_docs() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_rolebinding_binds_the_role_to_the_service_account() -> None:
    kinds = {d["kind"]: d for d in all_docs()}
    binding, account, role = kinds["RoleBinding"], kinds["ServiceAccount"], kinds["Role"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["kind"] == "ServiceAccount"
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    deployments = [d for d in all_docs() if d["kind"] == "Deployment"]
    deployment = next(d for d in deployments if d["metadata"]["name"] == "fractal-scheduler")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_configmap_and_secret_template_carry_the_job_contract() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in all_docs()}
    assert set(kinds["ConfigMap", "minio-config"]["data"]) == {
        "MINIO_ENDPOINT",
        "MINIO_BUCKET",
        "MINIO_SECURE",
    }
    secret = kinds["Secret", "minio-secret"]["stringData"]
    assert set(secret) == {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}
    assert all(v.startswith("change-me") for v in secret.values())  # placeholders, never real values


def test_api_deployment() -> None:
    (api,) = [
        d for d in all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "fractal-scheduler"
    ]
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
    assert {"minio-config", "minio-secret"} <= set(refs)
    config = next(
        d
        for d in all_docs()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] in refs and "RUNNER" in d.get("data", {})
    )
    assert config["data"]["RUNNER"] == "kubernetes"


def test_kustomization_lists_everything() -> None:
    listed: set[Path] = set()

    def walk(d: Path) -> None:
        for entry in yaml.safe_load((d / "kustomization.yaml").read_text())["resources"]:
            target = (d / entry).resolve()
            if target.is_dir():
                walk(target)
            else:
                assert target.exists(), target
                listed.add(target)

    walk(REPO / "deploy")
    assert listed == {p.resolve() for p in FILES}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_one_namespace() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    assert len(built) == len(all_docs())
    for doc in built:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "fractal", doc["metadata"]["name"]
    binding = next(d for d in built if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "fractal"


def test_mint_script_is_valid_bash() -> None:
    script = REPO / "serviceaccount" / "mint-kubeconfig.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    text = script.read_text()
    assert "kubectl" in text and "create token" in text and "certificate-authority" in text
