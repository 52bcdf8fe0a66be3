"""``lorakit ui``: a local web dashboard over run folders, queue workspaces and sweeps (Starlette, Jinja2, uPlot).

The dashboard is a view of the files, never a second store: every page reads them afresh, the run page's curves
come from trainer_log.jsonl (the whole of it on every load, then new lines as server-sent events), so a reload
mid-run loses nothing. It writes only through its two actions, stop and note, which call the CLI's own code.
Bound beyond 127.0.0.1 it needs a token on every request, the live streams included.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lorakit.errors import LorakitError
from lorakit.runs.manifest import MANIFEST_FILE
from lorakit.runs.process import CRASHED
from lorakit.runs.summary import VAL_ANSWERS_DIR, files, log_entries, read_run, samples, size_text
from lorakit.runs.trainer_log import TrainerLog
from lorakit.ui.catalog import Sources, item_id, read_queue, read_sweep, run_rows
from lorakit.ui.compare import compare_runs

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "lorakit_token"
POLL_SECONDS = 0.5  # how often a live stream looks at the log: a new line reaches the page within ~1 s


def create_app(paths: list[Path], token: str | None = None) -> Starlette:
    """The dashboard over ``paths`` (output folders, queue workspaces, sweeps); ``token``: required on every
    request when given."""
    d = Dashboard(Sources.of(paths))
    routes = [
        Route("/", d.runs_page), Route("/run/{run_id}", d.run_page), Route("/api/run/{run_id}/log", d.run_log),
        Route("/api/run/{run_id}/events", d.run_events), Route("/api/run/{run_id}/stop", d.run_stop, methods=["POST"]),
        Route("/api/run/{run_id}/note", d.run_note, methods=["POST"]), Route("/compare", d.compare_page),
        Route("/queue/{item_id}", d.queue_page), Route("/sweep/{item_id}", d.sweep_page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])


class Dashboard:
    """The pages and the API, each reading the files afresh."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.env = Environment(loader=PackageLoader("lorakit.ui", "templates"), autoescape=select_autoescape())
        self.env.filters["size"] = size_text
        self.env.filters["item_id"] = lambda path: item_id(Path(path))
        self.env.filters["num"] = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    def page(self, name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(sources=self.sources, **context))

    def run_dir(self, request: Request) -> Path | Response:
        run_dir = self.sources.find_run(request.path_params["run_id"])
        return run_dir if run_dir is not None else JSONResponse({"error": "no such run here"}, status_code=404)

    async def runs_page(self, request: Request) -> Response:
        return self.page("runs.html", rows=[r.as_dict() for r in run_rows(self.sources)])

    async def run_page(self, request: Request) -> Response:
        run_dir = self.run_dir(request)
        if isinstance(run_dir, Response):
            return run_dir
        view = read_run(run_dir, with_size=False)  # the page lists each file's size instead
        return self.page("run.html", view=view, id=request.path_params["run_id"], files=files(run_dir),
                         samples=_first_best_last(samples(run_dir), view),
                         answers=_first_best_last(samples(run_dir, VAL_ANSWERS_DIR), view),
                         log_tail=_log_tail(run_dir, view.status), config=_read(run_dir / "config.resolved.yaml"),
                         config_sources=_read(run_dir / "config.sources.txt"))

    async def run_log(self, request: Request) -> Response:
        """The whole trainer_log.jsonl so far, and the offset the live stream continues from."""
        run_dir = self.run_dir(request)
        if isinstance(run_dir, Response):
            return run_dir
        train, evaluation = log_entries(run_dir)
        path = TrainerLog.of(run_dir).path
        return JSONResponse({"train": train, "eval": evaluation, "offset": path.stat().st_size if path.is_file() else 0,
                             "status": read_run(run_dir, with_size=False).status})

    async def run_events(self, request: Request) -> Response:
        run_dir = self.run_dir(request)
        if isinstance(run_dir, Response):
            return run_dir
        offset = int(request.query_params.get("offset", "0"))
        return StreamingResponse(_follow(request, run_dir, offset), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def run_stop(self, request: Request) -> Response:
        from lorakit.runs.control import stop_run

        run_dir = self.run_dir(request)
        if isinstance(run_dir, Response):
            return run_dir
        return _action(lambda: f"asked process {stop_run(run_dir)} to stop after its current step")

    async def run_note(self, request: Request) -> Response:
        from lorakit.runs.catalog import add_note

        run_dir = self.run_dir(request)
        if isinstance(run_dir, Response):
            return run_dir
        text = (await request.json()).get("text", "")
        return _action(lambda: f"noted at {add_note(run_dir, str(text))['at']}")

    async def compare_page(self, request: Request) -> Response:
        found = [self.sources.find_run(i) for i in request.query_params.getlist("run")]
        runs = [r for r in found if r is not None]
        if not 2 <= len(runs) <= 4:
            return self.page("message.html", message="Pick 2 to 4 runs to compare (tick them on the runs page).")
        return self.page("compare.html", cmp=compare_runs(runs), ids=[item_id(r) for r in runs])

    async def queue_page(self, request: Request) -> Response:
        queue = next((q for q in self.sources.queues if item_id(q) == request.path_params["item_id"]), None)
        if queue is None:
            return self.page("message.html", message="No such queue workspace here.")
        return self.page("queue.html", queue=read_queue(queue), run_ids=self._run_ids())

    async def sweep_page(self, request: Request) -> Response:
        folder = next((s for s in self.sources.sweeps if item_id(s) == request.path_params["item_id"]), None)
        if folder is None:
            return self.page("message.html", message="No such sweep here.")
        sweep = read_sweep(folder)
        return self.page("sweep.html", sweep=sweep, run_ids=self._run_ids(), curves=_trial_curves(sweep))

    def _run_ids(self) -> dict[str, str]:
        """Run folder (as the queue's state and the study record it) -> its id here."""
        ids = {}
        for run in self.sources.runs():
            ids[str(run)] = ids[str(run.resolve())] = item_id(run)
        return ids


def _first_best_last(by_step: dict[int, list[dict[str, str]]], view: Any) -> dict[int, list[dict[str, str]]]:
    wanted = {*list(by_step)[:1], *list(by_step)[-1:], *([view.best[1]] if view.best else [])}
    return {step: by_step[step] for step in sorted(wanted & set(by_step))}


def _action(act: Any) -> JSONResponse:
    try:
        return JSONResponse({"ok": True, "message": act()})
    except LorakitError as e:
        return JSONResponse({"ok": False, "message": str(e)}, status_code=409)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _log_tail(run_dir: Path, status: str, lines: int = 20) -> list[str]:
    """The last lines a failed or crashed run's trainer or Slurm job wrote (trainer.log, slurm-*.err/out)."""
    if status not in ("failed", CRASHED):
        return []
    for name in ("trainer.log", *sorted(p.name for p in run_dir.glob("slurm-*.err")),
                 *sorted(p.name for p in run_dir.glob("slurm-*.out"))):
        text = [line for line in _read(run_dir / name).splitlines() if line.strip()]
        if text:
            return text[-lines:]
    return []


def _trial_curves(sweep: Any) -> dict[str, list[list[float]]]:
    """Each trial's validation curve (metric by step), for the overlay."""
    curves = {}
    metric = sweep.metric or "eval_loss"
    for trial in sweep.trials:
        if trial.run_dir and Path(trial.run_dir).is_dir():
            _, evaluation = log_entries(Path(trial.run_dir))
            points = [[e["current_steps"], e[metric]] for e in evaluation if isinstance(e.get(metric), (int, float))]
            if points:
                curves[f"trial {trial.number}"] = points
    return curves


async def _follow(request: Request, run_dir: Path, offset: int) -> Any:
    """Server-sent events: each new trainer_log.jsonl line as it is written, and the run's status when it changes."""
    path, manifest = TrainerLog.of(run_dir).path, run_dir / MANIFEST_FILE
    status, seen = None, None
    while not await request.is_disconnected():
        if path.is_file() and path.stat().st_size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
            offset += len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    yield f"event: line\ndata: {line}\n\n"
        changed = manifest.stat().st_mtime_ns if manifest.is_file() else None
        # the manifest is read again when it was written again, or while it says running: a process killed
        # without a word writes nothing, and only a fresh look sees it gone
        if changed != seen or status == "running":
            seen, now = changed, read_run(run_dir, with_size=False).status
            if now != status:
                status = now
                yield f"event: status\ndata: {json.dumps({'status': now, 'offset': offset})}\n\n"
        await asyncio.sleep(POLL_SECONDS)


class Guard(BaseHTTPMiddleware):
    """The token (when one is set) on every request: as ?token=, a bearer header or the cookie the first page
    sets; and actions only from the dashboard's own pages (a same-origin header no other site can send)."""

    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or
                 request.headers.get("authorization", "").removeprefix("Bearer ").strip())
        if self.token and not hmac.compare_digest(given.encode(), self.token.encode()):
            return HTMLResponse("401: this dashboard needs its token (open the address lorakit ui printed)",
                                status_code=401)
        if request.method == "POST" and request.headers.get("x-lorakit") != "1":
            return JSONResponse({"ok": False, "message": "actions come from the dashboard's own pages"},
                                status_code=403)
        response = await call_next(request)
        if self.token and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response


def serve(paths: list[Path], host: str, port: int, token: str | None) -> None:
    """Run the dashboard until Ctrl+C."""
    import uvicorn

    uvicorn.run(create_app(paths, token), host=host, port=port, log_level="warning")


__all__ = ["create_app", "serve"]
