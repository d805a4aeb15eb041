"""systemd's notification protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET, no dependency.

``READY=1`` once started (Type=notify), ``WATCHDOG=1`` at least every WatchdogSec (the daemon only sends
it while all of its parts are making progress, so a hung part gets the service restarted),
``STOPPING=1`` at shutdown, ``STATUS=...`` for `systemctl status`. Outside systemd it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify_socket() -> str | None:
    """$NOTIFY_SOCKET when run by systemd with Type=notify."""
    return os.environ.get("NOTIFY_SOCKET") or None


def notify(message: str) -> bool:
    """Send ``message`` (e.g. 'READY=1') to systemd; False when not run by systemd or it failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract socket namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects (WatchdogSec), or None when it expects none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
