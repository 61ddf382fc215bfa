"""systemd's notify protocol (sd_notify(3)) in a few lines: one datagram to $NOTIFY_SOCKET.

``gateway run`` sends READY=1 once the store is open, WATCHDOG=1 whenever the scheduler finishes a poll
(progress, not a timer: a wedged loop stops petting the watchdog and systemd restarts it) and a one-line
STATUS=. Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
"""
from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket name is given with a leading '@' and sent with a leading NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        # sd_watchdog_enabled(3): pet at half the period; WATCHDOG_PID, if set, must be us.
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 2e6 if enabled else None
        self._last_pet = float("-inf")

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(fields).encode(), self.address)
            except OSError:
                pass  # systemd gone or socket not there: monitoring must never stop the polls

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def progress(self, status: str) -> None:
        """A poll finished: pet the watchdog (at most every half period) and update STATUS=."""
        self.send(*(["WATCHDOG=1"] if self._pet_due() else []), f"STATUS={status}")

    def alive(self) -> None:
        """The poll loop moved (a slot passed, polled or skipped by backoff): pet the watchdog."""
        if self._pet_due():
            self.send("WATCHDOG=1")

    def _pet_due(self) -> bool:
        # At most every quarter period: one lost or late datagram never lets the watchdog fire.
        now = time.monotonic()
        if self.watchdog_interval_s is None or now - self._last_pet < self.watchdog_interval_s / 2:
            return False
        self._last_pet = now
        return True

    def stopping(self) -> None:
        self.send("STOPPING=1")
