"""Host-state probes shared by the hostile sandbox suites (not tests themselves)."""
from __future__ import annotations

import os


def procs_of(uid: int) -> list[int]:
    """PIDs of every process owned by ``uid`` (a sandbox uid: nothing may be left running after a program)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
            except OSError:
                pass
    return out
