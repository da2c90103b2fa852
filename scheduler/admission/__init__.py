"""Admission: which queued job runs next, and where (docs/design.md, "Scheduling").

Kueue's split, one job per module, all pure:
- `cost`: a request's estimated iterations, from a cheap probe of its frame;
- `throughput`: seconds per job of each device class, learned from finished jobs;
- `capacity`: the snapshot of what each class may still take (local devices, ResourceQuota);
- `queue`: fair share between users, priority within one user;
- `assign`: the plan: who starts now, and an estimate with its reason for everyone waiting.
"""
