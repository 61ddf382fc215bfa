"""gateway.ops.sd_notify against a fake $NOTIFY_SOCKET: the datagrams systemd would receive."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from gateway.ops.sd_notify import Notifier


def _receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_ready_status_and_watchdog_at_most_every_half_period(tmp_path: Path) -> None:
    with _receiver(tmp_path / "n.sock") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "60000000",
                             "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval_s == 30
        notifier.ready("0 meters ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=0 meters ok"
        notifier.progress("1 meters ok")
        assert sock.recv(100) == b"WATCHDOG=1\nSTATUS=1 meters ok"
        notifier.progress("2 meters ok")  # too soon to pet again
        assert sock.recv(100) == b"STATUS=2 meters ok"


def test_abstract_socket_and_no_socket() -> None:
    name = f"meter-gateway-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
    quiet = Notifier({})
    quiet.ready("up")  # not under systemd: nothing to do, no error
    assert quiet.watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None  # not ours


def test_a_slot_without_a_poll_still_pets_the_watchdog(tmp_path: Path) -> None:
    with _receiver(tmp_path / "n.sock") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "60000000"})
        notifier.alive()
        assert sock.recv(100) == b"WATCHDOG=1"
