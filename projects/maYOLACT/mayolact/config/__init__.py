"""Config keys (:func:`add_mayolact_config`) and the one loader of the tools
(:func:`load_config`)."""
from .config import (
    ConfigError,
    add_mayolact_config,
    load_config,
    load_rows,
    merge_config_row,
    resolved_num_classes,
    take_overrides,
)

__all__ = [
    "ConfigError",
    "add_mayolact_config",
    "load_config",
    "load_rows",
    "merge_config_row",
    "resolved_num_classes",
    "take_overrides",
]
