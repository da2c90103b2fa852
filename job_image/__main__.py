"""`python -m job_image` (see cli.py).

SIGTERM ends the job at once with 143, writing nothing further (DESIGN.md): in a pod the job is
its container's PID 1, and a PID 1 without a handler ignores SIGTERM, so a cancelled job would
hold its quota for the whole grace period. The handler is set before the heavy imports.
"""

import os
import signal
import sys

signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

from .cli import main  # noqa: E402

sys.exit(main())
