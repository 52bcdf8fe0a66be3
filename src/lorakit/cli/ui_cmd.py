"""lorakit ui: the local web dashboard."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from lorakit.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("ui")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback "
              "needs a token.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, help="Required on every request (generated and printed once when binding "
              "beyond loopback without one).")
def ui_cmd(paths: tuple[Path, ...], host: str, port: int, token: str | None) -> None:
    """A dashboard of runs, queue workspaces (their .toml) and sweeps (their folder); default ./runs and ./sweeps.

    \b
        lorakit ui
        lorakit ui runs/ outputs/ sweeps/lr-rank/ ws.toml
    """
    try:
        from lorakit.ui.app import serve
    except ImportError as e:
        raise ConfigError(f"lorakit ui needs its extra ({e.name} is missing): pip install 'lorakit[ui]'") from None
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"lorakit ui: no such folder or file: {', '.join(missing)}")
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(18)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"lorakit ui on http://{shown}:{port}/" + (f"?token={token}" if token else "") + "  (Ctrl+C stops it)")
    serve(list(paths), host, port, token)
