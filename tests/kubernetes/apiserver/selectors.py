"""Label selectors (equality- and set-based) and field selectors, parsed and matched as the API
server does; a selector it cannot parse, or a field the resource does not index, is a 400."""

from __future__ import annotations

import re
from typing import Any

from .resources import RESOURCES, ApiError, Obj

_TERMS = re.compile(r"\s*([^,(]+(?:\([^)]*\))?)\s*(?:,|$)")
_SET_TERM = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_TERM = re.compile(r"^(!?)([\w./-]+)\s*(?:(==|!=|=)\s*([\w.-]*))?$")


def label_terms(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parse a label selector into (key, operator, values): equality (`a=b`, `a==b`, `a!=b`),
    set-based (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`); a 400 otherwise.
    https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"""
    if selector.count("(") != selector.count(")"):
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {selector!r}")
    terms = []
    for raw in (m.group(1).strip() for m in _TERMS.finditer(selector.strip()) if m.group(1).strip()):
        if match := _SET_TERM.match(raw):
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            terms.append((match.group(1), match.group(2), values))
        elif match := _TERM.match(raw):
            bang, key, op, value = match.groups()
            if bang and op:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
            terms.append((key, {"==": "=", None: "!" if bang else "exists"}.get(op, op), {value or ""}))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
    return terms


def label_match(selector: str, labels: dict[str, str]) -> bool:
    for key, op, values in label_terms(selector):
        present, value = key in labels, labels.get(key)
        ok = {
            "=": value in values,
            "!=": value not in values,
            "in": present and value in values,
            "notin": value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


# Field selectors each resource supports; anything else is a 400, as from a real API server.
FIELDS: dict[str, set[str]] = {
    "jobs": {"status.successful"},
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
}


def field_terms(resource: str, selector: str) -> list[tuple[str, bool, str]]:
    """(path, negated, value) per term of a field selector; unsupported fields are a 400."""
    terms = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        path = path.strip()
        if path not in FIELDS.get(resource, set()) | {"metadata.name", "metadata.namespace"}:
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        terms.append((path, negate, value.lstrip("=").strip()))
    return terms


def field_match(selector: str, obj: Obj, resource: str = "") -> bool:
    """Field selectors on dotted paths (`involvedObject.name=x,metadata.name=y`)."""
    for path, negate, value in field_terms(resource or _resource_of(obj), selector):
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == value) == negate:
            return False
    return True


def _resource_of(obj: Obj) -> str:
    return next((r for r, (_, _, kind) in RESOURCES.items() if kind == obj.get("kind")), "")
