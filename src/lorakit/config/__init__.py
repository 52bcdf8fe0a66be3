"""Layered run configuration: schema, loading, merging and hashing (no torch imports)."""

from lorakit.config.describe import describe_fields
from lorakit.config.load import LoadedConfig, config_sha256, load_config
from lorakit.config.schema import RunConfig

__all__ = ["LoadedConfig", "RunConfig", "config_sha256", "describe_fields", "load_config"]
