"""Read side: projections of the meter events into views (latest reading, daily consumption, fleet).

``default_projections`` builds the three views of the gateway; ``ProjectionEngine`` runs them over an
event store into a ``ViewStore`` (SQLite file next to the event store by default).
"""
from __future__ import annotations

from typing import Callable, Mapping
from zoneinfo import ZoneInfo

from gateway.projections.engine import (
    ConflictsPersist,
    EngineHooks,
    Lag,
    Projection,
    ProjectionEngine,
    ProjectionError,
    ProjectionStats,
    UnknownProjection,
    events_after,
    projection_lag,
)
from gateway.projections.view_store import (
    Checkpoint,
    SqliteViewStore,
    ViewDoc,
    ViewStore,
    ViewStoreError,
    ViewStoreUnavailable,
    ViewsUnavailable,
    views_path,
)
from gateway.projections.views import (
    DAILY_CONSUMPTION,
    FLEET_OVERVIEW,
    LATEST_READING,
    DailyConsumptionProjection,
    FleetOverviewProjection,
    LatestReadingProjection,
)

VIEW_NAMES = (LATEST_READING, DAILY_CONSUMPTION, FLEET_OVERVIEW)
UTC = ZoneInfo("UTC")


def zone_lookup(zones: Mapping[str, ZoneInfo], default: ZoneInfo = UTC) -> Callable[[str], ZoneInfo]:
    """Time zone of a meter by id; ``default`` for meters no longer (or not yet) in the config."""
    return lambda meter_id: zones.get(meter_id, default)


def default_projections(zone_of: Callable[[str], ZoneInfo]) -> list[Projection]:
    return [LatestReadingProjection(), DailyConsumptionProjection(zone_of), FleetOverviewProjection()]


__all__ = [
    "DAILY_CONSUMPTION", "FLEET_OVERVIEW", "LATEST_READING", "VIEW_NAMES", "Checkpoint",
    "ConflictsPersist", "EngineHooks", "Lag", "Projection", "ProjectionEngine", "ProjectionError",
    "ProjectionStats", "SqliteViewStore", "UnknownProjection", "ViewDoc", "ViewStore",
    "ViewStoreError", "ViewStoreUnavailable", "ViewsUnavailable", "default_projections", "events_after", "projection_lag", "views_path",
    "zone_lookup",
]
