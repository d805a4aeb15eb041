"""One process at a time delivers a device's outbox: the device service, or else `steth record --send`.

The broker gives every device connection the device's own client id (``use_username_as_clientid`` on
the device listener, deploy/mosquitto/mosquitto.conf), so that no device can take over another's
session. Two processes of one device connecting at once would therefore take the session from each
other in turn. The device service holds this lock (an advisory ``flock`` beside the outbox, released by
the kernel when the process ends, even on a crash) for as long as it runs; a one-off sender that cannot
take it leaves delivery to the service.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class DeliveryLock:
    def __init__(self, outbox_path: Path) -> None:
        self.path = outbox_path.with_name(outbox_path.name + ".delivery.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person looking: who holds it
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder, or "" if unknown."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> DeliveryLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
