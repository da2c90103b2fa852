"""Every manifest file validates against the Kubernetes JSON schemas; RBAC matches the code; the
deployment keeps no state in its pods, and the quota admits what the runner starts."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from decimal import Decimal
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from scheduler.core.config import Settings
from scheduler.runners.kubernetes.objects import API_ACCESS
from tests.kubernetes.test_objects import K8S_VERSION

REPO = Path(__file__).resolve().parents[2]
DIRS = ("serviceaccount", "configmaps", "deploy")
FILES = sorted(p for d in DIRS for p in (REPO / d).glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[dict]:
    return [d for p in FILES for d in docs(p)]


def find(kind: str, name: str) -> dict:
    (doc,) = [d for d in all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads() -> list[dict]:
    return [d for d in all_docs() if d["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def environment(container: dict) -> dict[str, str]:
    """What the container's process sees from envFrom (ConfigMaps, Secrets here) and plain env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= find("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= find("Secret", source["secretRef"]["name"])["stringData"]
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return env


def api_config() -> dict[str, str]:
    return find("ConfigMap", "fractal-scheduler-config")["data"]


def setting(name: str) -> str:
    """A setting as the in-cluster API sees it: deploy/api-config.yaml, else the code's default."""
    return str(api_config().get(name.upper(), Settings.model_fields[name].default))


_SUFFIXES = {"m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9)}
_SUFFIXES |= {"Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40)}


def quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("500m", "2", "256Mi", 48) as a number."""
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(text)


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


def test_api_secret_template_holds_obvious_but_working_placeholders() -> None:
    secret = find("Secret", "fractal-scheduler-secret")["stringData"]
    assert set(secret) == {"DATABASE_URL", "JWT_SECRET"}
    assert secret["JWT_SECRET"].startswith("change-me")
    # The service refuses a shorter key, and `kubectl apply -k deploy/` must give a working dev cluster.
    assert len(secret["JWT_SECRET"].encode()) >= Settings.model_fields["jwt_min_secret_bytes"].default
    assert make_url(secret["DATABASE_URL"]).password.startswith("change-me")
    assert find("Secret", "postgres-secret")["stringData"]["POSTGRES_PASSWORD"].startswith("change-me")


def test_database_url_names_the_dev_postgres() -> None:
    url = make_url(find("Secret", "fractal-scheduler-secret")["stringData"]["DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg"  # psycopg[binary] is what requirements.txt installs
    postgres, service = find("StatefulSet", "postgres"), find("Service", "postgres")
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    env = environment(container)
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    assert url.host == service["metadata"]["name"] == postgres["spec"]["serviceName"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    labels = postgres["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_postgres_keeps_its_data_on_a_claim() -> None:
    postgres = find("StatefulSet", "postgres")
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    claims = {c["metadata"]["name"] for c in postgres["spec"]["volumeClaimTemplates"]}
    pgdata = environment(container)["PGDATA"]
    (mount,) = [m for m in container["volumeMounts"] if pgdata.startswith(m["mountPath"] + "/")]
    assert mount["name"] in claims
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(container[probe]["exec"]["command"])


def test_no_state_on_an_emptydir() -> None:
    """The API's database and signing key outlive its pod: a rollout or drain loses nothing."""
    api = find("Deployment", "fractal-scheduler")
    env = environment(api["spec"]["template"]["spec"]["containers"][0])
    assert not make_url(env["DATABASE_URL"]).drivername.startswith("sqlite")
    # Unset, the key would be generated into DATA_DIR: an emptyDir here.
    assert len(env["JWT_SECRET"].encode()) >= Settings.model_fields["jwt_min_secret_bytes"].default
    # (PostgreSQL's own data is on a claim: test_postgres_keeps_its_data_on_a_claim.)


def test_api_deployment() -> None:
    (api,) = [
        d for d in all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "fractal-scheduler"
    ]
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"  # the runner too, once
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz?exclude=runner"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
    assert {"minio-config", "minio-secret", "fractal-scheduler-secret"} <= set(refs)
    # It waits for the database with the same URL before the API starts.
    (wait,) = api["spec"]["template"]["spec"]["initContainers"]
    assert "DATABASE_URL" in environment(wait)
    assert wait["image"] == container["image"]
    config = next(
        d
        for d in all_docs()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] in refs and "RUNNER" in d.get("data", {})
    )
    assert config["data"]["RUNNER"] == "kubernetes"


def test_pods_meet_restricted_and_the_quota() -> None:
    """deploy/namespace.yaml enforces "restricted"; the ResourceQuota refuses a pod whose containers
    lack CPU/memory requests and limits. Both would only show as pods that never start."""
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where


def pod_resources(workload: dict) -> dict[str, Decimal]:
    """A pod's quota charge: per resource, the larger of its containers' sum and any init container."""
    spec = workload["spec"]["template"]["spec"]
    charge = {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            total = sum(quantity(c["resources"][kind][resource]) for c in spec["containers"])
            init = [quantity(c["resources"][kind][resource]) for c in spec.get("initContainers", [])]
            charge[f"{kind}.{resource}"] = max([total, *init])
    charge["pods"] = Decimal(1)
    return charge


def most_pods(workload: dict) -> int:
    """How many of its pods can exist at once: a Deployment's rolling update adds maxSurge."""
    replicas = workload["spec"].get("replicas", 1)
    strategy = workload["spec"].get("strategy", {})
    if workload["kind"] == "Deployment" and strategy.get("type", "RollingUpdate") == "RollingUpdate":
        surge = strategy["rollingUpdate"]["maxSurge"]
        assert isinstance(surge, int), "give maxSurge as a number of pods"
        replicas += surge
    return replicas


SHORT_JOB_SECONDS = 30  # a short job's life, Job created to Job finished (pod start, render, upload)


def test_quota_admits_kube_max_active_jobs() -> None:
    """KUBE_MAX_ACTIVE_JOBS job pods at the job's requests and limits fit next to the other pods:
    a Job past the quota would get no pod and fail at its pending deadline."""
    hard = find("ResourceQuota", "fractal-jobs")["spec"]["hard"]
    jobs = int(setting("kube_max_active_jobs"))
    job_pod = {
        "requests.cpu": quantity(setting("job_cpu_request")),
        "requests.memory": quantity(setting("job_memory_request")),
        "limits.cpu": quantity(setting("job_cpu_limit")),
        "limits.memory": quantity(setting("job_memory_limit")),
        "pods": Decimal(1),
    }
    others = dict.fromkeys(job_pod, Decimal(0))
    for workload in workloads():
        for resource, amount in pod_resources(workload).items():
            others[resource] += most_pods(workload) * amount
    for resource, per_job in job_pod.items():
        if resource in hard:
            admitted = (quantity(hard[resource]) - others[resource]) // per_job
            assert jobs <= admitted, f"{resource}: the quota admits {admitted} job pods, not {jobs}"
    # Finished Jobs count against count/jobs.batch until their TTL: beyond the active ones, room
    # for every slot finishing a short job (deploy/resourcequota.yaml's arithmetic) per TTL.
    ttl = int(setting("job_ttl_seconds_after_finished"))
    assert int(hard["count/jobs.batch"]) >= jobs + jobs * ttl // SHORT_JOB_SECONDS


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


FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$*" in
  *"create token"*) echo fake.token.value ;;
  *context.namespace*) printf '%s' "$FAKE_NAMESPACE" ;;
  *context.cluster*) printf minikube ;;
  *cluster.server*) printf https://127.0.0.1:32771 ;;
  *certificate-authority-data*) printf Q0E= ;;
esac
"""


@pytest.mark.parametrize(
    ("context_namespace", "args", "namespace", "server"),
    [
        ("", [], "fractal", "https://127.0.0.1:32771"),
        ("dev", ["-s", "https://192.168.49.2:8443"], "dev", "https://192.168.49.2:8443"),
        ("dev", ["-n", "fractal"], "fractal", "https://127.0.0.1:32771"),
    ],
)
def test_mint_script_writes_a_private_kubeconfig(
    tmp_path: Path, context_namespace: str, args: list[str], namespace: str, server: str
) -> None:
    """The namespace: -n, else the current context's, else fractal; the server: -s, else the context's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    out = tmp_path / "sa.kubeconfig"
    env = os.environ | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls"),
        "FAKE_NAMESPACE": context_namespace,
    }
    script = REPO / "serviceaccount" / "mint-kubeconfig.sh"
    subprocess.run(["bash", str(script), *args, "-o", str(out)], env=env, check=True, timeout=30)
    config = yaml.safe_load(out.read_text())
    assert config["clusters"][0]["cluster"] == {"server": server, "certificate-authority-data": "Q0E="}
    assert config["users"][0]["user"]["token"] == "fake.token.value"
    assert config["contexts"][0]["context"]["namespace"] == namespace
    assert f"-n {namespace} create token fractal-scheduler" in (tmp_path / "calls").read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_dockerfiles_copy_and_nothing_secret() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for dockerfile in (REPO / "Dockerfile", REPO / "job_image" / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                *sources, _dest = line.split()[1:]
                for source in sources:
                    path = REPO / source
                    files = [path] if path.is_file() else [f for f in path.rglob("*.py") if f.is_file()]
                    assert files, source
                    for f in files:
                        rel = f.relative_to(REPO).as_posix()
                        if "__pycache__" not in rel:
                            assert not dockerignore_excludes(rel, patterns), f"{dockerfile.name}: {rel}"
    for secret_or_bulk in (
        ".venv/bin/python",
        "data/scheduler.db",
        "data/jwt_secret",
        "fractal-scheduler.kubeconfig",
        "scheduler/x.kubeconfig",
        ".git/config",
        "tests/conftest.py",
        "benchmarks/kernel.py",
        "out/m.png",
        "scheduler/__pycache__/db.cpython-311.pyc",
    ):
        assert dockerignore_excludes(secret_or_bulk, patterns), secret_or_bulk


def test_devcontainer_names_services_that_exist() -> None:
    text = (REPO / ".devcontainer" / "devcontainer.json").read_text()
    # JSON with comments: drop // and /* */ comments outside strings.
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', lambda m: m.group(1) or "", text, flags=re.S)
    config = json.loads(text)
    env = config["containerEnv"]
    # The dev MinIO, through its NodePort: nothing in the dev container serves MinIO itself.
    node_ports = {p.get("nodePort") for p in find("Service", "minio")["spec"]["ports"]}
    assert int(env["MINIO_ENDPOINT"].rsplit(":", 1)[1]) in node_ports
    assert env["KUBE_NAMESPACE"] == "fractal"


def kustomized() -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kustomization_tags() -> dict[str, str]:
    images = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())["images"]
    return {i["name"]: i["newTag"] for i in images}


def test_our_images_carry_no_tag_outside_the_kustomization() -> None:
    """One place sets the tags; ':latest' with IfNotPresent would never pick up a rebuild."""
    tags = kustomization_tags()
    assert set(tags) == {"fractal-scheduler", "fractal-job"} and "latest" not in tags.values()
    for workload in workloads():
        for container in containers(workload):
            if container["image"].startswith("fractal-"):
                assert ":" not in container["image"], container["image"]
    assert api_config()["JOB_IMAGE"] == "fractal-job"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_sets_every_image_tag() -> None:
    tags = kustomization_tags()
    built = kustomized()
    for doc in built:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in containers(doc):
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag != "latest", container["image"]
                assert tags.get(name, tag) == tag
    configs = [d for d in built if d["kind"] == "ConfigMap"]
    (config,) = [d for d in configs if d["metadata"]["name"] == "fractal-scheduler-config"]
    assert config["data"]["JOB_IMAGE"] == f"fractal-job:{tags['fractal-job']}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "job_image/Dockerfile"])
def test_base_images_name_their_debian_release(dockerfile: str) -> None:
    bases = re.findall(r"^FROM\s+(\S+)", (REPO / dockerfile).read_text(), re.M)
    pinned = r"python:3\.\d+(\.\d+)?-slim-(bookworm|trixie)"
    assert bases and all(re.fullmatch(pinned, base) for base in bases), bases


def test_build_script_tags_the_images_as_the_kustomization_says() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "build-images"), "--dry-run"], capture_output=True, text=True, check=True
    )
    tags = kustomization_tags()
    lines = done.stdout.splitlines()
    assert f"-t fractal-scheduler:{tags['fractal-scheduler']} -f Dockerfile ." in lines[0]
    assert f"-t fractal-job:{tags['fractal-job']} -f job_image/Dockerfile ." in lines[1]


def test_the_ingress_serves_https_for_every_host() -> None:
    ingress = find("Ingress", "fractal-scheduler")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    tls = ingress["spec"]["tls"]
    assert hosts <= {h for entry in tls for h in entry["hosts"]} and all(entry["secretName"] for entry in tls)
    assert "fractal-tls" not in {d["metadata"]["name"] for d in all_docs()}  # the key is never in git
