"""Process and port helpers shared by the background services and the Label Studio server."""

from __future__ import annotations

import socket

import psutil

LOOPBACK = "127.0.0.1"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (one owned by another user counts; a killed one not yet reaped not)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def free_port(preferred: int | None = None, host: str = LOOPBACK) -> int:
    """`preferred` when nothing listens there, else a free port the OS picks."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
