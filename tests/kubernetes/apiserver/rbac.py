"""RBAC as a cluster applies it: the Role of serviceaccount/role.yaml reaches a user only through
the RoleBinding of serviceaccount/rolebinding.yaml; bearer tokens name the users (the service
account's, and an admin's that may do everything); SelfSubjectAccessReview is open to all."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml

from .resources import REPO, ApiError, Obj

ROLE_FILE = REPO / "serviceaccount" / "role.yaml"
ROLEBINDING_FILE = REPO / "serviceaccount" / "rolebinding.yaml"


def load_rules(path: Path = ROLE_FILE) -> list[Obj]:
    """The rules of the Role in serviceaccount/role.yaml."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            return list(doc.get("rules") or [])
    raise AssertionError(f"no Role in {path}")


def load_binding(namespace: str, path: Path = ROLEBINDING_FILE) -> Obj:
    """The RoleBinding of serviceaccount/rolebinding.yaml as applied to `namespace`: kustomize
    rewrites its ServiceAccount subjects' namespace to the kustomization's."""
    binding = yaml.safe_load(path.read_text())
    binding.setdefault("metadata", {})["namespace"] = namespace
    for subject in binding.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject["namespace"] = namespace
    return binding


def binds(binding: Obj, user: str, role: str) -> bool:
    """Whether `binding` grants the Role `role` to `user` (a ServiceAccount's or a User's name)."""
    ref = binding.get("roleRef") or {}
    if ref.get("kind") != "Role" or ref.get("name") != role:
        return False
    for subject in binding.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            ns = subject.get("namespace") or binding["metadata"].get("namespace")
            if user == f"system:serviceaccount:{ns}:{subject.get('name')}":
                return True
        elif subject.get("kind") == "User" and user == subject.get("name"):
            return True
    return False


def allowed(rules: list[Obj], group: str, resource: str, verb: str) -> bool:
    for rule in rules:
        if (
            group in rule.get("apiGroups", [])
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        ):
            return True
    return False


class Rbac:
    """Who a request's bearer token is, and whether the Role (through its bindings) lets them."""

    def __init__(self, namespace: str, rules: list[Obj] | None = None) -> None:
        self.namespace = namespace
        self.rules = load_rules() if rules is None else rules  # the Role's
        self.role_name = "fractal-scheduler"
        self.bindings = [load_binding(namespace)]  # RBAC goes through these: who has the Role
        self.sa_user = f"system:serviceaccount:{namespace}:fractal-scheduler"
        self.tokens = {"sa-" + uuid.uuid4().hex: self.sa_user, "admin-" + uuid.uuid4().hex: "admin"}
        self.denials: list[str] = []  # 403s the service account got (a missing Role verb)

    @property
    def sa_token(self) -> str:
        return next(t for t, u in self.tokens.items() if u == self.sa_user)

    def authenticate(self, header: str) -> str:
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        user = self.tokens.get(token)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def authorize(self, user: str, group: str, resource: str, verb: str, ns: str, name: str | None) -> None:
        if user == "admin":
            return
        if self.may(user, ns, group, resource, verb):
            return
        qualified = f"{resource}.{group}" if group else resource
        named = f' "{name}"' if name else ""
        message = (
            f'{qualified}{named} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" in the namespace "{ns}"'
        )
        self.denials.append(f"{verb} {qualified}")
        raise ApiError(403, "Forbidden", message, {"name": name or "", "group": group, "kind": resource})

    def may(self, user: str, ns: str, group: str, resource: str, verb: str) -> bool:
        """RBAC: the Role's rules apply to `user` in its namespace only through a RoleBinding."""
        bound = any(
            b["metadata"].get("namespace") == ns and binds(b, user, self.role_name) for b in self.bindings
        )
        return ns == self.namespace and bound and allowed(self.rules, group, resource, verb)

    def access_review(self, user: str, body: Obj) -> Obj:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        ok = user == "admin" or self.may(
            user, attrs.get("namespace", ""), attrs.get("group", ""), resource, attrs.get("verb", "")
        )
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": {
                "allowed": ok,
                **({"reason": 'RBAC: allowed by RoleBinding "fractal-scheduler"'} if ok else {}),
            },
        }
