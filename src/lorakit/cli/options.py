"""Options shared by every command that takes a layered config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def layered_config_options(fn: F | None = None, *, required: bool = True) -> Any:
    """CONFIG, then --add overlays and --set overrides, in the order they are applied.

    Use bare (``@layered_config_options``) or with ``required=False`` for a command where
    another option can stand in for CONFIG.
    """

    def decorate(f: F) -> F:
        f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override one value, e.g. --set lora.r=8. Repeatable; applied last.")(f)
        f = click.option("--add", "overlays", multiple=True, metavar="OVERLAY",
                         help="Overlay file merged after CONFIG, in order; its stem is appended to the run name.")(f)
        return click.argument("config_file", metavar="CONFIG", required=required)(f)

    return decorate(fn) if fn is not None else decorate
