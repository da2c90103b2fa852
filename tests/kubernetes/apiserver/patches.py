"""PATCH as the API server applies it: a JSON merge patch (RFC 7386), a strategic merge patch
(what the python client sends for a dict body; for the scalar and map fields patched here it
merges as a merge patch does), or a JSON patch (RFC 6902, what it sends for a list body); any
other content type is a 415. A Job's spec is immutable except the fields the Job API lets change.
https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/"""

from __future__ import annotations

import copy
from typing import Any

from .resources import ApiError, Obj

MERGE = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (*MERGE, JSON_PATCH)

# batch/v1 JobSpec fields an update may change (completions only as an elastic Job does:
# together with parallelism, equal to it before and after).
# https://kubernetes.io/docs/concepts/workloads/controllers/job/#elastic-indexed-jobs
MUTABLE_JOB_SPEC = {"parallelism", "completions", "activeDeadlineSeconds", "suspend", "backoffLimit",
                    "ttlSecondsAfterFinished", "maxFailedIndexes", "managedBy"}


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f'the server rejected our request: invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(obj: Obj, ops: list[Any]) -> Obj:
    """RFC 6902's add, replace, remove and test (enough for the fields a Job may change)."""
    obj = copy.deepcopy(obj)
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove", "test"):
            raise ApiError(422, "Invalid", f"the server rejected our request: unsupported operation {op!r}")
        *parents, last = _pointer(str(op.get("path", "")))
        node = obj
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ApiError(422, "Invalid", f"the server rejected our request: missing path {op['path']}")
            node = node[part]
        if op["op"] == "test" and node.get(last) != op.get("value"):
            raise ApiError(422, "Invalid", f"the server rejected our request: test failed at {op['path']}")
        if op["op"] in ("replace", "remove") and last not in node:
            raise ApiError(422, "Invalid", f"the server rejected our request: missing path {op['path']}")
        if op["op"] == "remove":
            del node[last]
        elif op["op"] != "test":
            node[last] = copy.deepcopy(op.get("value"))
    return obj


def apply(obj: Obj, content_type: str, body: Any) -> Obj:
    """The object with the patch applied (not stored); a 415 for a content type PATCH does not take."""
    kind = content_type.split(";")[0].strip()
    if kind not in PATCH_TYPES:
        raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                       f'accepted media types include: {", ".join(PATCH_TYPES)}')
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "json: cannot unmarshal object into jsonpatch.Patch")
        return _json_patch(obj, body)
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "couldn't get version/kind; json parse error: not an object")
    return _merge(obj, body)


def check_job_update(old: Obj, new: Obj) -> None:
    """What the Job API refuses in an update: a change to an immutable spec field (the pod
    template, completionMode, the selector...), a negative parallelism, and completions
    changed other than as an elastic Job."""
    name = old["metadata"]["name"]
    before, after = old["spec"], new.get("spec") or {}

    def invalid(field: str, value: Any, why: str) -> ApiError:
        return ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: spec.{field}: Invalid value: '
                        f"{value!r}: {why}", {"name": name, "group": "batch", "kind": "Job"})

    for field in sorted(set(before) | set(after)):
        if field not in MUTABLE_JOB_SPEC and before.get(field) != after.get(field):
            raise invalid(field, after.get(field), "field is immutable")
    parallelism = after.get("parallelism")
    if not isinstance(parallelism, int) or parallelism < 0:
        raise invalid("parallelism", parallelism, "must be greater than or equal to 0")
    if after.get("completions") != before.get("completions") and not (
        before.get("completions") == before.get("parallelism") and after.get("completions") == parallelism
        and before.get("completionMode") == "Indexed"
    ):
        raise invalid("completions", after.get("completions"),
                      "field is immutable (except with parallelism, both equal, in an Indexed Job)")
    for key in ("name", "namespace", "uid"):
        if new["metadata"].get(key) != old["metadata"].get(key):
            raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: metadata.{key}: immutable')
