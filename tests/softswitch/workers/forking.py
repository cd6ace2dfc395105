"""Child processes for the shared-memory tests: the real ``fork`` the workers use."""

from __future__ import annotations

import os
from collections.abc import Callable


def forked(body: Callable[[], int]) -> int:
    """Run ``body`` in a child process; its pid (the child exits with body's value)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
