"""Configuration read from files: the daemon's, a release's strategy and manifest.

Each file is a frozen pydantic model loaded by `load_model`, which refuses bad input with a
`ConfigError` at ``FILE:LINE: FIELD``. Secrets are never in these files, only `SecretRef`s.
"""

from controller.config.daemon import (
    AccountConfig,
    AdminConfig,
    DaemonConfig,
    DatabaseConfig,
    Endpoints,
    EnvironmentConfig,
    LogConfig,
    load_daemon_config,
)
from controller.config.manifest import PLACEHOLDERS, Artifact, MetricsEndpoint, ReleaseManifest
from controller.config.secrets import SecretError, SecretRef
from controller.config.strategy import BucketConfig, SizingConfig, StrategyConfig, SymbolConfig
from controller.config.model import ConfigModel, Fraction, Int, error_at
from controller.config.yamlfile import load_model, load_model_text

__all__ = [
    "PLACEHOLDERS",
    "AccountConfig",
    "AdminConfig",
    "Artifact",
    "BucketConfig",
    "ConfigModel",
    "DaemonConfig",
    "DatabaseConfig",
    "Endpoints",
    "EnvironmentConfig",
    "Fraction",
    "Int",
    "LogConfig",
    "MetricsEndpoint",
    "ReleaseManifest",
    "SecretError",
    "SecretRef",
    "SizingConfig",
    "StrategyConfig",
    "SymbolConfig",
    "error_at",
    "load_daemon_config",
    "load_model",
    "load_model_text",
]
