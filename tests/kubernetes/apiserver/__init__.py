"""A Kubernetes API server double that the real `kubernetes` client talks to over HTTP, and that
fails the way a real cluster fails wherever that could hide a bug in the client's user.

What it serves (namespaced): batch/v1 jobs (create/get/list/watch/delete with propagationPolicy,
patch as merge, strategic merge or JSON patch), core/v1 pods (get/list/watch/delete) and pods/log,
events (list/watch), configmaps and secrets (for the pods' envFrom), and authorization.k8s.io/v1
selfsubjectaccessreviews. Lists carry a resourceVersion; watches stream chunked JSON lines
(ADDED/MODIFIED/DELETED/BOOKMARK/ERROR) from a resourceVersion and end after timeoutSeconds or
earlier, at random. An expired resourceVersion is a 410 Gone, as the HTTP status of a list or
watch or as an ERROR event inside a stream; one the watch cache has not reached is a 504 "Too
large resource version". Label selectors are equality- and set-based (`a in (x,y)`, `!a`); a field
selector on a field the resource does not index is a 400. Errors are real Status objects.

Every request is authorised by bearer token: the service account's token through the RoleBinding
of serviceaccount/rolebinding.yaml (its subjects decide who gets the Role of role.yaml, as in a
cluster: a verb the code needs but the Role lacks is a 403, and so is every verb for an account
the binding does not name), an admin token for everything. SelfSubjectAccessReview is open to
every authenticated user (system:basic-user grants it in a real cluster).

It also plays the Job controller and the kubelet: a created Job gets a Pod whose container command
runs here as a process (`python` mapped to this interpreter), as PID 1 of its own PID namespace
when it can (root: `unshare`), with the pod's resolved environment (env + envFrom
ConfigMaps/Secrets); pod and Job status move Pending -> Running -> Succeeded/Failed as a cluster's
would (conditions, reasons, termination message from the log's tail under FallbackToLogsOnError),
honouring backoffLimit and activeDeadlineSeconds. FailureTarget comes before Failed and
SuccessCriteriaMet before Complete, in updates of their own (1.31's Job controller). Indexed Jobs
run as 1.33's controller runs them: one pod per index (its annotation, label and
JOB_COMPLETION_INDEX), `parallelism` bounding the pods (PATCH it), a failed index retried with a
new pod of the same index within `backoffLimitPerIndex`, `maxFailedIndexes`, `podFailurePolicy`
(FailJob, FailIndex, Ignore, Count), and `completedIndexes`/`failedIndexes`. Deletion is graceful:
a deleted pod gets a deletionTimestamp and is Terminating, its PID 1 gets SIGTERM (ignored without
a handler, as in a container) and SIGKILL after the grace period, and only then does the pod
disappear; a Job deleted with Background propagation goes at once and its pods terminate
afterwards; past activeDeadlineSeconds its pods are deleted gracefully and Failed follows once
they are gone.

Fault knobs: `evict(pod)` (DisruptionTarget, then graceful deletion), `faults[job_id]` =
"image_pull" | "oom" | "unschedulable"; a GPU limit is Unschedulable (Insufficient nvidia.com/gpu)
while the node's `node_gpus` are taken by other pods, and scheduled once they free; ResourceQuota
objects (create them in the store) are enforced as quota admission does (a pod over a `hard` is
refused: FailedCreate on the Job until there is room) and their `status.used` kept current as the
quota controller does; `pod_quota` = N plays a quota `pods: N` the same way; `down()`/`up()`
refuse connections and cut open streams; `expire_watches()` ends open watches with a 410 ERROR and
forgets the history; `watch_cache_lag` = N answers 504 to watches from the last N versions;
`watch_early_end`, `default_grace_seconds`, `rng` (seed it to replay a run).

The package, one job a module: `resources` (what is served; Status errors), `selectors`, `store`
(objects, resourceVersions, the watch history), `rbac`, `handler` (HTTP: routing, lists, watches),
`patches` (PATCH bodies, a Job's mutable fields), `events`, `jobs` (the Job controller), `indexed`
(its Indexed Jobs), `kubelet` (pods' lifecycle and the node's GPU fit), `containers` (the
processes, their environment and logs), `quota` (ResourceQuota admission and controller), and
`server` (FakeApiServer, which wires them and holds the knobs)."""

from .rbac import load_binding, load_rules
from .resources import ApiError, Obj
from .server import FakeApiServer
from .store import Store

__all__ = ["ApiError", "FakeApiServer", "Obj", "Store", "load_binding", "load_rules"]
