"""SIGTERM stops the job within a second, exit 143, writing nothing further (docs/design.md).

A Python signal handler is not enough: it runs only between bytecodes of the main thread, and the
main thread spends most of a render inside one OpenCL call (a band can take many seconds). And as
PID 1 of a container, a process without a handler never sees SIGTERM at all, so a cancelled pod
would render on through its whole grace period. So SIGTERM is blocked in every thread (threads
the OpenCL driver starts later inherit the mask) and one thread waits for it with sigwait, then
ends the process at once: no result is uploaded, no exit handler runs.
"""

from __future__ import annotations

import os
import signal
import threading

EXIT_CODE = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
MESSAGE = b"error: stopped by SIGTERM\n"
_unsaid = b""  # the log's first line while it is not printed yet: a stop before it says it then


def first_line_pending(line: str) -> None:
    """`line` is printed once known in full (cli.py); stopped before that, the job says this."""
    global _unsaid
    _unsaid = f"{line}\n".encode()


def first_line_said() -> None:
    global _unsaid
    _unsaid = b""


def stop_on_sigterm() -> None:
    """Call first, in the main thread, before any other thread exists."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_wait_and_exit, name="sigterm", daemon=True).start()


def _wait_and_exit() -> None:
    signal.sigwait({signal.SIGTERM})
    os.write(2, _unsaid + MESSAGE)  # MESSAGE last: the scheduler shows the last stderr line as the error
    os._exit(EXIT_CODE)
