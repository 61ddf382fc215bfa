"""Cross-cycle backoff: a meter that keeps not answering is polled less often, and stops holding its
RS-485 bus at every cycle; it is polled at every cycle again once it answers; a meter with a config
error (a missing secret) is not polled again until the config is loaded again.

Real poller, real simulator, real SQLite file: a meter nobody answers on the HDLC bus (the absent
one), or a simulated meter made silent with a fault and healed later. A cycle (``run_cycle``) is
one slot of every meter. The last test drives the long-running ``run()`` (a slot is a wake of the
meter's job) with a stand-in poller that answers at once, so that many slots take little time.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator, Iterable

import anyio
import pytest

from drivers.simulator import Framing, MeterFaults, MeterSimulator, SimulatorConfig
from drivers.simulator.fleet import fleet
from gateway.config import FleetConfig, parse_config
from gateway.domain.poll_result import PollStep, StepError
from gateway.domain.poll_result import PollSummary
from gateway.polling.poller import Poller
from gateway.polling.scheduler import BACKOFF_AFTER, MAX_BACKOFF_SLOTS, Scheduler
from gateway.wiring import open_poller

from . import ABSENT, SECRETS, fleet_toml

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 2, 3, 10, 0, tzinfo=timezone.utc)
STEP = timedelta(minutes=15)
DEADLINE_S = 0.8
# BACKOFF_AFTER failures polled at every slot, then every 2nd slot, then every 4th, ...
assert (BACKOFF_AFTER, MAX_BACKOFF_SLOTS) == (3, 8), "the expected patterns below assume these"


@asynccontextmanager
async def _fleet(tmp_path: Path, *, absent: bool, environ: dict[str, str] = SECRETS, meters: int = 4,
                 ) -> AsyncIterator[tuple[MeterSimulator, FleetConfig, Poller]]:
    """Four simulated meters (sim-0001 and sim-0003 on the HDLC bus), optionally the absent one;
    with ``meters=7`` also an HLS meter (sim-0006, wrapper)."""
    sim_config = SimulatorConfig(meters=fleet(meters), framing=Framing.BOTH, start=NOW, speed=0.0)
    async with MeterSimulator(sim_config) as simulator:
        # Only the deadline ends a silent meter's poll: it holds the bus for DEADLINE_S.
        text = fleet_toml(simulator, str(tmp_path / "e.db"), absent=absent, deadline_s=DEADLINE_S,
                          response_s=DEADLINE_S - 0.1, connect_s=0.05, retries=1)
        config = parse_config(text, base_dir=tmp_path)
        async with open_poller(config, now=simulator.clock.now, environ=environ) as poller:
            yield simulator, config, poller


async def _cycles(
    scheduler: Scheduler, simulator: MeterSimulator, count: int
) -> list[tuple[dict[str, PollSummary], dict[str, float]]]:
    """``count`` cycles: per cycle the summaries by meter, and when each poll reported (seconds
    after the cycle started, anyio clock)."""
    done = []
    for _ in range(count):
        start = anyio.current_time()
        reported: dict[str, float] = {}
        scheduler.on_poll = lambda summary: reported.__setitem__(summary.meter_id, anyio.current_time() - start)
        summaries = {s.meter_id: s for s in await scheduler.run_cycle()}
        assert set(summaries) == set(reported)
        done.append((summaries, reported))
        simulator.clock.advance(STEP)
    return done


@pytest.mark.slow
async def test_an_absent_meter_backs_off_and_its_bus_neighbours_stop_waiting_for_it(tmp_path: Path) -> None:
    async with _fleet(tmp_path, absent=True) as (simulator, config, poller):
        scheduler = Scheduler(config, poller)
        # The absent meter first in line for the bus: when it is polled, its neighbours wait for it.
        scheduler.meters = (config.meter(ABSENT), *[m for m in config.meters if m.id != ABSENT])
        cycles = await _cycles(scheduler, simulator, 9)
        bus = [m.id for m in config.meters if m.connection == "bus-0" and m.id != ABSENT]

    # Polled at every cycle until the third failure, then at every 2nd, then (4th failure) every 4th.
    polled = [ABSENT in summaries for summaries, _ in cycles]
    assert polled == [True, True, True, False, True, False, False, False, True]
    for summaries, _ in cycles:
        if ABSENT in summaries:
            error = summaries[ABSENT].first_error
            assert error is not None and error.kind == "MeterTimeout"
        # Every other meter is polled, and read, at every cycle.
        others = {m: s for m, s in summaries.items() if m != ABSENT}
        assert set(others) == set(simulator.meters)
        assert all(s.ok for s in others.values()), {m: s.describe_error() for m, s in others.items()}
    assert len(bus) == 2

    # On the bus, the neighbours of the absent meter finish after it when it is polled: it holds
    # the bus until its deadline (an ordering fact of the bus lock, not a speed measurement). In the
    # cycles that skip it, nothing holds them back (checked above: they are all read).
    for summaries, reported in cycles:
        if ABSENT in summaries:
            assert all(reported[m] >= reported[ABSENT] >= DEADLINE_S for m in bus)


@pytest.mark.slow
async def test_a_meter_that_comes_back_is_polled_at_every_cycle_after_its_first_success(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.polling.scheduler")
    async with _fleet(tmp_path, absent=False) as (simulator, config, poller):
        scheduler = Scheduler(config, poller)
        silent = "sim-0001"  # on the HDLC bus
        assert config.meter(silent).connection == "bus-0"
        simulator.set_faults(silent, MeterFaults(no_answer=True))
        failing = await _cycles(scheduler, simulator, 4)
        simulator.set_faults(silent, MeterFaults())
        back = await _cycles(scheduler, simulator, 4)

    assert [silent in summaries for summaries, _ in failing] == [True, True, True, False]
    assert all(not summaries[silent].ok for summaries, _ in failing if silent in summaries)
    # Its next slot was due at the first cycle after healing; from its first success on, every cycle.
    assert [silent in summaries for summaries, _ in back] == [True, True, True, True]
    assert all(summaries[silent].ok for summaries, _ in back), [s[silent].describe_error() for s, _ in back]
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.polling.scheduler"]
    assert any(m.startswith(f"meter {silent}: 3 consecutive failed polls; backoff") for m in messages), messages
    assert any(m.startswith(f"meter {silent}: answered again after 3 failed polls") for m in messages), messages


@pytest.mark.slow
async def test_a_meter_whose_secret_is_missing_is_polled_again_only_after_the_longest_backoff(
    tmp_path: Path,
) -> None:
    environ = {k: v for k, v in SECRETS.items() if k != "PIPELINE_LLS_PASSWORD"}
    async with _fleet(tmp_path, absent=False, environ=environ) as (simulator, config, poller):
        lls = "sim-0003"  # the fleet's one LLS meter
        scheduler = Scheduler(config, poller)
        cycles = await _cycles(scheduler, simulator, MAX_BACKOFF_SLOTS + 1)

    polled = [summaries for summaries, _ in cycles if lls in summaries]
    # Polled at the first slot, then only after the longest backoff: a secret that appears later
    # (mounted late, rotated) is picked up without a restart.
    assert [lls in summaries for summaries, _ in cycles] == [True] + [False] * (MAX_BACKOFF_SLOTS - 1) + [True]
    for summaries in polled:
        error = summaries[lls].first_error
        assert error is not None and error.kind == "SecretUnavailable" and "PIPELINE_LLS_PASSWORD" in error.message
    assert all(len(summaries) >= len(simulator.meters) - 1 for summaries, _ in cycles)


class InstantPoller:
    """Stands in for the real poller in ``run()``: answers at once; ``dead`` meters time out,
    ``misconfigured`` ones fail as a missing secret does."""

    def __init__(self, dead: set[str], misconfigured: set[str]) -> None:
        self.dead = dead
        self.misconfigured = misconfigured
        self.polls: list[str] = []

    def now(self) -> datetime:
        return NOW

    async def poll(self, meter_id: str, steps: Iterable[PollStep], *, deadline: float | None = None) -> PollSummary:
        self.polls.append(meter_id)
        await anyio.sleep(0)
        if meter_id in self.dead:
            error = StepError("identity", "MeterTimeout", "deadline reached while connecting")
            return PollSummary(meter_id, NOW, frozenset(steps), (error,), retryable=True)
        if meter_id in self.misconfigured:
            error = StepError("identity", "SecretUnavailable", "secret env X: not set")
            return PollSummary(meter_id, NOW, frozenset(steps), (error,), retryable=False)
        return PollSummary(meter_id, NOW, frozenset(steps), ())


async def test_run_backs_off_a_dead_meter_and_a_misconfigured_one() -> None:
    lines = ['gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
             "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"',
             "max_sessions = 1", "[limits]", "retries = 0"]
    for name in ("registers", "load_profile", "clock_check", "event_log"):
        lines += [f"[schedules.{name}]", "interval_s = 0.01", "jitter_s = 0"]
    for i, meter_id in enumerate(("alive", "dead", "misconfigured")):
        lines += ["[[meters]]", f'id = "{meter_id}"', 'make = "landis_gyr"', 'profile = "e450"',
                  'connection = "bus"', f"physical_address = {17 + i}", 'security = { level = "none" }',
                  "max_power_w = 10000"]
    config = parse_config("\n".join(lines) + "\n")
    poller = InstantPoller(dead={"dead"}, misconfigured={"misconfigured"})
    scheduler = Scheduler(config, poller)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        while poller.polls.count("alive") < 40:
            await anyio.sleep(0.01)
        scheduler.stop()

    alive, dead = poller.polls.count("alive"), poller.polls.count("dead")
    # Over ~40 slots: 3 polls, then one every 2nd, 4th, then every 8th slot (about 3 + 1 + 1 + 4).
    assert BACKOFF_AFTER + 2 <= dead <= BACKOFF_AFTER + 2 + alive // MAX_BACKOFF_SLOTS + 1, (alive, dead)
    # A config error goes straight to the longest backoff: once, then once every MAX_BACKOFF_SLOTS.
    assert 1 <= poller.polls.count("misconfigured") <= 1 + alive // MAX_BACKOFF_SLOTS + 1


class FailsOnceThenAnswers:
    """The first attempt of each poll waits for ``release``, then fails as a timeout; retries answer."""

    def __init__(self) -> None:
        self.polls: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    def now(self) -> datetime:
        return NOW

    async def poll(self, meter_id: str, steps: Iterable[PollStep], *, deadline: float | None = None) -> PollSummary:
        self.polls.append(meter_id)
        if len(self.polls) == 1:
            self.entered.set()
            await self.release.wait()
            error = StepError("identity", "MeterTimeout", "no answer")
            return PollSummary(meter_id, NOW, frozenset(steps), (error,), retryable=True)
        return PollSummary(meter_id, NOW, frozenset(steps), ())


@pytest.mark.parametrize(("stops", "polls", "ok"), [((True,), 2, True), ((False,), 1, False), ((True, False), 1, False)],
                         ids=["reload", "shutdown", "reload-then-shutdown"])
async def test_a_reload_lets_polls_in_flight_retry_a_shutdown_does_not(
    stops: tuple[bool, ...], polls: int, ok: bool
) -> None:
    lines = ['gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
             "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"',
             "[limits]", "retries = 1", "backoff_initial_s = 0.01", "backoff_max_s = 0.02", "meter_deadline_s = 30",
             "[[meters]]", 'id = "m"', 'make = "landis_gyr"', 'profile = "e450"', 'connection = "bus"',
             "physical_address = 17", 'security = { level = "none" }', "max_power_w = 10000"]
    config = parse_config("\n".join(lines) + "\n")
    poller = FailsOnceThenAnswers()
    scheduler = Scheduler(config, poller)
    result: list[PollSummary] = []
    with anyio.fail_after(30):  # against a hang only
        async with anyio.create_task_group() as tg:
            async def poll() -> None:
                result.append(await scheduler.poll_meter(config.meters[0]))

            tg.start_soon(poll)
            await poller.entered.wait()
            for finish_retries in stops:
                scheduler.stop(finish_retries=finish_retries)
            poller.release.set()
    assert (len(poller.polls), result[0].ok) == (polls, ok)


async def test_run_on_an_earlier_epoch_goes_on_with_that_grid() -> None:
    lines = ['gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
             "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"']
    for name in ("registers", "load_profile", "clock_check", "event_log"):
        lines += [f"[schedules.{name}]", "interval_s = 1000", "jitter_s = 0"]
    for i, meter_id in enumerate(("m0", "m1")):
        lines += ["[[meters]]", f'id = "{meter_id}"', 'make = "landis_gyr"', 'profile = "e450"',
                  'connection = "bus"', f"physical_address = {17 + i}", 'security = { level = "none" }',
                  "max_power_w = 10000"]
    config = parse_config("\n".join(lines) + "\n")

    async def polls_in_a_moment(epoch: float | None) -> list[str]:
        poller = InstantPoller(dead=set(), misconfigured=set())
        scheduler = Scheduler(config, poller)
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run, epoch)
            await anyio.sleep(0.3)
            scheduler.stop()
        if epoch is not None:
            assert scheduler.epoch == epoch  # what `gateway run` hands the next scheduler at a reload
        return poller.polls

    # A fresh grid starts now: m0's slot 0 is due at once.
    assert await polls_in_a_moment(None) == ["m0"]
    # 1,400 s into an earlier grid (a reload): m0's next slot is at 2,000 s, m1's (phase 500 s) at
    # 1,500 s; nobody is polled now.
    assert await polls_in_a_moment(anyio.current_time() - 1400) == []


@pytest.mark.slow
@pytest.mark.parametrize(("secret", "wrong", "kind", "paths"), [
    ("PIPELINE_LLS_PASSWORD", "not-the-password", "AuthenticationFailed", ("security.password",)),
    ("PIPELINE_HLS_EK", "00" * 16, None, ("security.authentication_key", "security.encryption_key")),
], ids=["lls-password", "hls-encryption-key"])
async def test_a_refused_login_is_not_retried_and_goes_straight_to_the_longest_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: str, wrong: str, kind: str | None,
    paths: tuple[str, ...],
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.polling.scheduler")
    environ = {**SECRETS, secret: wrong}
    async with _fleet(tmp_path, absent=False, environ=environ, meters=7) as (simulator, config, poller):
        level = "lls" if "LLS" in secret else "hls_gmac"
        index, meter = next((i, m) for i, m in enumerate(config.meters) if m.security.level == level)
        scheduler = Scheduler(config, poller)
        cycles = await _cycles(scheduler, simulator, MAX_BACKOFF_SLOTS + 1)

    # One failed login, no retry within the poll, then nothing until the longest backoff is over.
    assert [meter.id in summaries for summaries, _ in cycles] == [True] + [False] * (MAX_BACKOFF_SLOTS - 1) + [True]
    first = cycles[0][0][meter.id]
    assert first.attempts == 1
    error = first.first_error
    assert error is not None and error.kind in {"AuthenticationFailed", "DecryptionError", "AssociationRejected"}
    if kind is not None:
        assert error.kind == kind
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.getMessage().startswith(f"meter {meter.id}: login refused")]
    assert warnings and all(f"meters[{index}].{path}" in warnings[0] for path in paths), warnings
    assert f"polled again in {MAX_BACKOFF_SLOTS} slots" in warnings[0]
    assert all(wrong not in r.getMessage() for r in caplog.records)
    # The meters with good secrets are read at every cycle.
    refused = {m.id for m in config.meters if m.security.level == level}
    assert all(set(summaries) >= set(simulator.meters) - refused for summaries, _ in cycles)


class RefusedAtOnce:
    """Every attempt fails at once (a refused TCP connection): only the waits between them take time."""

    def __init__(self) -> None:
        self.polls = 0

    def now(self) -> datetime:
        return NOW

    async def poll(self, meter_id: str, steps: Iterable[PollStep], *, deadline: float | None = None) -> PollSummary:
        self.polls += 1
        error = StepError("identity", "ConnectionLost", "TCP connect to 127.0.0.1:9 failed: Connection refused")
        return PollSummary(meter_id, NOW, frozenset(steps), (error,), duration_s=0.001, retryable=True)


async def test_a_polls_duration_is_its_wall_time_with_the_waits_between_retries() -> None:
    lines = ['gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
             "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"',
             "[limits]", "retries = 2", "backoff_initial_s = 0.1", "backoff_max_s = 0.2", "meter_deadline_s = 30",
             "[[meters]]", 'id = "m"', 'make = "landis_gyr"', 'profile = "e450"', 'connection = "bus"',
             "physical_address = 17", 'security = { level = "none" }', "max_power_w = 10000"]
    config = parse_config("\n".join(lines) + "\n")
    poller = RefusedAtOnce()
    start = anyio.current_time()
    summary = await Scheduler(config, poller).poll_meter(config.meters[0])
    wall = anyio.current_time() - start

    assert (poller.polls, summary.attempts) == (3, 3)
    # Retry waits of at least 0.05 and 0.1 s (equal jitter: half the cap at least), not 3 x 0.001 s.
    assert 0.15 <= summary.duration_s <= wall


def test_which_failures_are_refused_logins() -> None:
    from gateway.polling.fleet_reload import carried_backoff
    from gateway.polling.scheduler import MeterBackoff, login_refused

    lines = ['gateway_id = "t"', 'default_timezone = "UTC"', "[store]", 'kind = "sqlite"', 'path = "unused.db"',
             "[[concentrators]]", 'id = "bus"', 'host = "127.0.0.1"', "port = 4059", 'framing = "hdlc"']
    for i, security in enumerate(('{ level = "none" }', '{ level = "lls", password = { env = "PW" } }')):
        lines += ["[[meters]]", f'id = "m{i}"', 'make = "landis_gyr"', 'profile = "e450"', 'connection = "bus"',
                  f"physical_address = {17 + i}", f"security = {security}", "max_power_w = 10000"]
    config = parse_config("\n".join(lines) + "\n")
    public, lls = config.meters

    def failed(meter_id: str, kind: str) -> PollSummary:
        return PollSummary(meter_id, NOW, frozenset({"identity"}), (StepError("identity", kind, "refused"),),
                           retryable=True)

    assert login_refused(failed("m1", "AuthenticationFailed"), lls)
    assert login_refused(failed("m1", "DecryptionError"), lls)
    assert login_refused(failed("m1", "AssociationRejected"), lls)  # credentials offered: e.g. a changed key
    assert not login_refused(failed("m0", "AssociationRejected"), public)  # no credentials: not a login
    assert not login_refused(failed("m1", "MeterTimeout"), lls)
    # A deciphering failure after a step was read: the association proved the keys right.
    later = PollSummary("m1", NOW, frozenset({"identity", "registers"}),
                        (StepError("registers", "AuthenticationFailed", "could not decipher"),), retryable=True)
    assert not login_refused(later, lls)
    not_read = StepError("registers", "NotAttempted", "not read")
    first = PollSummary("m1", NOW, frozenset({"identity", "registers"}),
                        (StepError("identity", "AuthenticationFailed", "refused"), not_read), retryable=True)
    assert login_refused(first, lls)

    backoff = MeterBackoff()
    backoff.record(failed("m0", "AssociationRejected"), public)
    backoff.record(failed("m1", "AuthenticationFailed"), lls)
    assert (backoff.period("m0"), backoff.period("m1")) == (1, MAX_BACKOFF_SLOTS)
    assert backoff.config_error("m1") == "refused" and backoff.config_error("m0") is None
    # A reload (a new secret, say) polls the refused meter at its next slot.
    assert carried_backoff(backoff, config, config).period("m1") == 1
