"""``python -m dpoclaims.runs.cell PARENT_PID PYTEST_ARGS...``: pytest that dies with its parent.

A sweep cell runs the claims suite in a subprocess. When the process that started it is killed
outright (a Ray worker lost or force-cancelled, SIGKILL), nothing forwards a signal to the child,
and an orphaned claims run would go on writing into a cell another attempt is running again. A
daemon thread here watches the parent and ends this process when the parent is gone. The cache
stays consistent either way: entries are built in temporary directories and renamed into place.
"""

from __future__ import annotations

import os
import sys
import threading
import time

#: Exit status when the parent is gone (128 + SIGKILL, as if killed with it).
ORPHANED_EXIT = 137


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    while True:
        if os.getppid() != parent_pid:  # re-parented: the parent has died
            os._exit(ORPHANED_EXIT)
        time.sleep(interval_s)


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: python -m dpoclaims.runs.cell PARENT_PID [pytest arguments]", file=sys.stderr)
        return 2
    threading.Thread(target=_watch_parent, args=(int(argv[0]),), daemon=True).start()
    import pytest

    return int(pytest.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
