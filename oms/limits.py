"""Risk limits from a TOML file (the format is in docs/risk.md), for the main job and
`python -m oms.status --limits`."""

from __future__ import annotations

import os
import tomllib
from typing import Any

from oms.core.errors import ConfigurationError
from oms.core.risk import Limits, limits_from_mapping

__all__ = ["load_limits", "read_toml"]


def read_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The TOML document at `path` (`what` it is, for the message). Raises
    `ConfigurationError` with one line naming the file and what is wrong."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read the {what} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{where}: not valid TOML: {exc}") from None


def load_limits(path: str | os.PathLike[str]) -> Limits:
    """The risk limits in the TOML file at `path`. Raises `ConfigurationError` with one line
    naming the file and what is wrong."""
    where = os.fspath(path)
    data = read_toml(where, "limits file")
    try:
        return limits_from_mapping(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
