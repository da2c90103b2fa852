"""`python -m job_image` (see cli.py).

SIGTERM ends the job at once with 143, writing nothing further (docs/design.md; job_image/sigterm.py):
in a pod the job is its container's PID 1, where a signal without a handler is ignored. It is set
up before the heavy imports, before any other thread exists.
"""

import sys

from .sigterm import stop_on_sigterm

stop_on_sigterm()

from .cli import main  # noqa: E402

sys.exit(main())
