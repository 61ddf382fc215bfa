"""Fleet config: one TOML file per fleet, read into frozen values (see config/example-fleet.toml).

``load_config(path)`` returns a validated ``FleetConfig`` or raises ``ConfigError`` listing every
problem with its file and key path. Secrets appear in the file only as references (``SecretRef``),
resolved when a session needs them.
"""
from gateway.config.errors import ConfigError, ConfigIssue, SecretUnavailable
from gateway.config.load import load_config, parse_config
from gateway.config.model import (
    KNOWN_PROFILES,
    ConcentratorConfig,
    ConnectionConfig,
    CosmosStoreConfig,
    FleetConfig,
    Limits,
    LoggingConfig,
    MeterConfig,
    OpticalPortConfig,
    Schedule,
    Schedules,
    SecurityConfig,
    SqliteStoreConfig,
    StoreConfig,
    Timeouts,
)
from gateway.config.secrets import Secret, SecretRef, read_env_file

__all__ = [
    "KNOWN_PROFILES", "ConcentratorConfig", "ConfigError", "ConfigIssue", "ConnectionConfig",
    "CosmosStoreConfig", "FleetConfig", "Limits", "LoggingConfig", "MeterConfig", "OpticalPortConfig",
    "Schedule", "Schedules", "Secret", "SecretRef", "SecretUnavailable", "SecurityConfig",
    "SqliteStoreConfig", "StoreConfig", "Timeouts", "load_config", "parse_config", "read_env_file",
]
