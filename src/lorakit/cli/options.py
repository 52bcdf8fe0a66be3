"""Options shared by every command that takes a layered config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def layered_config_options(fn: F) -> F:
    """CONFIG, then --add overlays and --set overrides, in the order they are applied."""
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one value, e.g. --set lora.r=8. Repeatable; applied last.")(fn)
    fn = click.option("--add", "overlays", multiple=True, metavar="OVERLAY",
                      help="Overlay file merged after CONFIG, in order; its stem is appended to the run name.")(fn)
    return click.argument("config_file", metavar="CONFIG")(fn)
