"""A stateful random test of the queue: seeded random walks of what users and machines do (upload datasets, change
their files, edit a file in place with the same size and date, remove a result, lose or corrupt the state file, kill
the queue anywhere, change remote.flags, run with and without --test), the queue's promise checked after every step:

    every dataset content ever uploaded still exists (on the remote or in the work folder), or a result trained on
    exactly that content (by its manifest's fingerprint) is on the output remote with its model file; and no
    result on the output remote is ever replaced.

A content the user destroys himself (changing its only copy) is no longer owed. A failing walk is cut down to the
steps that still break the promise and printed as a short script that replays it. Walks: LORAKIT_STATEFUL_EXAMPLES
(default 200, on a local remote with a stand-in trainer; an eighth of that on WebDAV and a sixteenth with lorakit's
own trainer on a tiny model), from LORAKIT_STATEFUL_SEED (default 0).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml

from lorakit import faults
from lorakit.errors import LorakitError
from lorakit.queue.runner import QueueOptions, run_queue
from lorakit.queue.workspace import load_workspace
from tests.conftest import ALPACA_ROWS
from tests.integration.queue.conftest import CUT_SHORT, cut_short, remote_section, start_webdav

EXAMPLES = int(os.environ.get("LORAKIT_STATEFUL_EXAMPLES", "200"))
SEED = int(os.environ.get("LORAKIT_STATEFUL_SEED", "0"))
STEPS = 8  # after the first upload; half of them users acting, half the queue running
USER_ACTIONS = ("upload", "upload", "upload", "replace a file", "edit in place", "lose the state file",
                "lose the state file", "corrupt the state file", "remove a result", "change the flags")
NAMES = ("cats", "my set")
FLAGS = ([], ["--exclude", "*.safetensors"], ["--size-only"], ["--timeout", "30s"], ["--exclude", "*.jsonl"])
KILL_POINTS = ("during-upload", "before-delete:remote-data", "during-delete:remote-data", "before-delete:local-data",
               "delete:local-data:2", "before-delete:local-run")
MODEL = b"\x02\x00\x00\x00\x00\x00\x00\x00{}"  # a whole safetensors file (no tensors), written in milliseconds
STANDIN = "#!/bin/sh\nprintf '\\002\\000\\000\\000\\000\\000\\000\\000{}' > \"$LORAKIT_OUTPUT_DIR/lora.safetensors\"\n"


class Killed(BaseException):
    """The queue process dying (kill -9) at a kill point: nothing after it runs, no handler, no clean-up."""


def content_of(folder: Path) -> str | None:
    """A dataset's identity as manifests record it, computed here independently; None for no folder."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}\t"
                    f"{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def data(seed: int, length: int = 0) -> bytes:
    rows = ALPACA_ROWS[seed % 24:] + ALPACA_ROWS[: seed % 24]
    return "".join(json.dumps(r) + "\n" for r in rows[: 4 + length]).encode()


def edit_in_place(path: Path) -> None:
    """The same rows in another order: the same size, and the modification time put back."""
    before = path.stat()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[1:] + lines[:1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


class QueueMachine:
    """One walk: a fresh workspace, a remote (a local folder, or a folder served over WebDAV)."""

    served: Path | None = None  # the WebDAV server's folder (None: a local remote, with hashes)
    port: int = 0
    base_config: dict | None = None  # lorakit's own trainer on a tiny model (None: the stand-in command)

    def __init__(self) -> None:
        parent = self.served if self.served is not None else Path(tempfile.gettempdir())
        self.root = Path(tempfile.mkdtemp(prefix="stateful-", dir=parent))
        self.remote = self.root  # on the remote's side: training/ and output/
        self.local = Path(tempfile.mkdtemp(prefix="stateful-local-"))
        (self.remote / "training").mkdir()
        conf = self.local / "rclone.conf"
        if self.served is not None:
            conf.write_text(remote_section("store", self.port))
            self.path = f"store:{self.root.relative_to(self.served).as_posix()}"
        else:
            conf.write_text("[store]\ntype = local\n")
            self.path = f"store:{self.root}"
        (self.local / "train.sh").write_text(STANDIN)
        (self.local / "train.sh").chmod(0o755)
        self.flags: list[str] = []
        self.keep_runs = False
        self.owed: set[str] = set()  # contents that must exist somewhere, or have their result
        self.settled: dict[str, dict[str, bytes]] = {}  # result folder -> its files once verified

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.local, ignore_errors=True)

    # -- the world as it is ------------------------------------------------------------------------------------
    def workspace(self) -> Path:
        ws = self.local / "workspace.toml"
        top = 'work_dir = "work"\noutput_dir = "outputs"\n'
        trainer = f'[trainer]\nkind = "command"\ncommand = "{self.local / "train.sh"}"\n'
        if self.base_config is not None:  # lorakit's own trainer
            (self.local / "base.yaml").write_text(yaml.safe_dump(self.base_config))
            top, trainer = top + f'config = "{self.local / "base.yaml"}"\n', ""
        ws.write_text(f'{top}[remote]\ntraining = "{self.path}/training"\noutput = "{self.path}/output"\n'
                      f'config = "rclone.conf"\nflags = {json.dumps(self.flags)}\n'
                      f'[cleanup]\nlocal_output = {str(not self.keep_runs).lower()}\n{trainer}')
        return ws

    def results(self) -> dict[str, dict[str, bytes]]:
        out = self.remote / "output"
        return {d.name: {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}
                for d in sorted(out.iterdir())} if out.is_dir() else {}

    def where(self, content: str) -> list[str]:
        """Where a content exists now: remote folders, local folders, results trained on it."""
        places = [f"remote {d.name}" for d in (self.remote / "training").iterdir() if content_of(d) == content]
        work = self.local / "work"
        places += [f"local {d.name}" for d in (work.iterdir() if work.is_dir() else [])
                   if d.is_dir() and not d.name.startswith(".") and content_of(d) == content]
        for name, files in self.results().items():
            try:
                manifest = json.loads(files.get("manifest.json", b"{}") or b"{}")
            except json.JSONDecodeError:  # half a manifest: an upload cut short, no result
                continue
            models = [f for f, b in files.items() if f.endswith(".safetensors") and b
                      and (self.base_config is not None or b == MODEL)]  # the stand-in's model: exactly its bytes
            if (manifest.get("dataset") or {}).get("sha256") == content and models:
                places.append(f"result {name}")
        return places

    def user_changes(self, folder: Path, change) -> None:
        """The user changes a remote dataset: its content before is no longer owed if this was its last copy."""
        before = content_of(folder)
        change()
        if before is not None and before in self.owed and not self.where(before):
            self.owed.discard(before)
        if (after := content_of(folder)) is not None:
            self.owed.add(after)

    # -- steps: what users do -----------------------------------------------------------------------------------
    def first_upload(self, name, seed, files, keep_runs):
        self.keep_runs = keep_runs  # cleanup.local_output = false: trained runs stay beside new data
        self.upload(name, seed, files)

    def user(self, action, name, seed):
        folder = self.remote / "training" / name
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        state = self.local / "work" / ".lorakit-queue.json"
        if action == "upload":
            self.upload(name, seed, 1 + seed % 2)
        elif action == "replace a file" and files:
            self.user_changes(folder, lambda: files[seed % len(files)].write_bytes(data(seed + 7, seed % 3 + 1)))
        elif action == "edit in place" and files:
            self.user_changes(folder, lambda: edit_in_place(files[seed % len(files)]))
        elif action == "remove a result":
            self.remove_a_result(seed)
        elif action == "lose the state file":
            state.unlink(missing_ok=True)
        elif action == "corrupt the state file" and state.is_file():
            state.write_text(state.read_text()[: len(state.read_text()) // 2])
        elif action == "change the flags":
            self.flags = list(FLAGS[seed % len(FLAGS)])

    def upload(self, name, seed, files):
        folder = self.remote / "training" / name

        def write():
            folder.mkdir(exist_ok=True)
            for i in range(files):
                (folder / f"rows-{seed}-{i}.jsonl").write_bytes(data(seed + i, i))

        self.user_changes(folder, write)

    def remove_a_result(self, pick):
        names = sorted(self.results())
        if not names:
            return
        name = names[pick % len(names)]
        owed_only_here = [c for c in self.owed if self.where(c) == [f"result {name}"]]
        shutil.rmtree(self.remote / "output" / name)
        self.owed.difference_update(owed_only_here)  # the user removed the only trace of these
        self.settled.pop(name, None)

    # -- steps: the queue, whole or killed ------------------------------------------------------------------------
    def run_the_queue(self, test, kill):
        env = faults.arm(f"transition:{kill}" if isinstance(kill, int) else CUT_SHORT.get(kill, kill)) if kill else {}
        faults.reset()
        ws = self.workspace()
        real_kill, real_cwd = os.kill, os.getcwd()

        def kill_self(pid, signum):
            if pid == os.getpid() and signum == signal.SIGKILL:
                raise Killed
            real_kill(pid, signum)

        os.environ.update(env)
        os.kill = kill_self
        os.chdir(self.local)
        try:
            result = run_queue(load_workspace(ws), QueueOptions(test=test))
        except Killed:
            result = None
            if kill in CUT_SHORT:
                cut_short(kill, self.local / "work", self.remote)
        except LorakitError:
            result = None
        finally:
            os.kill = real_kill
            os.chdir(real_cwd)
            for key in env:
                del os.environ[key]
        results = self.results()
        for job in result.jobs if result else []:  # a result verified and recorded is settled: never to change
            name = (job.remote_output or "").rsplit("/", 1)[-1]
            if job.state in ("uploaded", "cleaned") and name in results:
                self.settled.setdefault(name, results[name])

    # -- the promise ---------------------------------------------------------------------------------------------
    def check(self) -> None:
        self.every_content_exists_or_has_its_result()
        self.no_result_is_replaced()

    def every_content_exists_or_has_its_result(self) -> None:
        for content in self.owed:
            if not self.where(content):
                raise AssertionError(f"content {content[:12]} is gone, with no result trained on it")

    def no_result_is_replaced(self) -> None:
        now = self.results()
        for name, files in self.settled.items():
            if now.get(name, files) != files:
                raise AssertionError(f"the result {name} was replaced")


Step = tuple[str, dict]


def random_walk(rng: random.Random) -> list[Step]:
    """The first upload, then users acting and the queue running (whole, under --test, or killed), in turn at
    random."""
    steps: list[Step] = [("first_upload", {"name": rng.choice(NAMES), "seed": rng.randrange(6),
                                           "files": rng.randint(1, 2), "keep_runs": rng.random() < 0.5})]
    for _ in range(STEPS):
        if rng.random() < 0.5:
            steps.append(("user", {"action": rng.choice(USER_ACTIONS), "name": rng.choice(NAMES),
                                   "seed": rng.randrange(6)}))
        else:
            kill = None if rng.random() < 0.5 else rng.choice((2, 4, 6, 8, 11, 14, *KILL_POINTS))
            steps.append(("run_the_queue", {"test": rng.random() < 1 / 3, "kill": kill}))
    return steps


def play(machine: type[QueueMachine], steps: list[Step]) -> str | None:
    """Replay ``steps`` on a fresh machine, checking the promise after each; what broke it, or None."""
    m = machine()
    try:
        m.check()
        for name, kwargs in steps:
            getattr(m, name)(**kwargs)
            m.check()
    except AssertionError as e:
        return f"{e} (after {name})"
    except Exception as e:  # a bug of the queue's, not a broken promise: reported the same way
        return f"{type(e).__name__}: {e} (in {name})"
    finally:
        m.teardown()
    return None


def shortest(machine: type[QueueMachine], steps: list[Step]) -> list[Step]:
    """The walk with every step it can do without (the first upload kept) left out, while it still fails."""
    i = len(steps) - 1
    while i >= 1:
        trial = steps[:i] + steps[i + 1:]
        if play(machine, trial) is not None:
            steps = trial
        i -= 1
    return steps


def script(machine: type[QueueMachine], steps: list[Step]) -> str:
    calls = [f"m.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}); m.check()" for name, kwargs in steps]
    return "\n".join([f"m = {machine.__name__}()  # tests/integration/queue/test_queue_stateful.py", *calls])


def walk_of(n: int) -> list[Step]:
    return random_walk(random.Random(f"{SEED}-{n}"))  # each walk its own seed: the same walks in any order


def walk(machine: type[QueueMachine], count: int) -> None:
    """``count`` walks, on every core (each walk is a queue of its own: folders, state, remote paths)."""
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=multiprocessing.get_context("fork")) as pool:
        failures = pool.map(play, [machine] * count, [walk_of(n) for n in range(count)])
        first = next(((n, f) for n, f in enumerate(failures) if f is not None), None)
    if first is not None:
        n, failure = first
        short = shortest(machine, walk_of(n))
        pytest.fail(f"walk {n} (seed {SEED}) broke the queue's promise: {play(machine, short) or failure}; "
                    f"replay:\n{script(machine, short)}", pytrace=False)


class OnWebdav(QueueMachine):
    """The remote is a folder served over WebDAV by a real ``rclone serve`` (no hashes: bytes are compared)."""


class WithLorakit(QueueMachine):
    """lorakit's own trainer on a tiny model instead of the stand-in."""


def test_the_queue_loses_nothing_in_random_sequences_on_a_remote_with_hashes():
    walk(QueueMachine, EXAMPLES)


def test_the_queue_loses_nothing_in_random_sequences_on_webdav(tmp_path, monkeypatch):
    server = start_webdav(tmp_path / "served", "--dir-cache-time", "0s")  # files written into it show at once
    monkeypatch.setattr(OnWebdav, "served", server.root)
    monkeypatch.setattr(OnWebdav, "port", server.port)
    try:
        walk(OnWebdav, max(4, EXAMPLES // 8))
    finally:
        server.stop()


def test_the_queue_loses_nothing_in_random_sequences_with_lorakits_own_trainer(tiny_model_dir, monkeypatch):
    base = {"model": {"name_or_path": str(tiny_model_dir)}, "data": {"train": "unused.jsonl", "max_length": 64},
            "train": {"max_steps": 1, "micro_batch_size": 2, "grad_accum": 1, "log_every": 1}}
    monkeypatch.setattr(WithLorakit, "base_config", base)
    walk(WithLorakit, max(2, EXAMPLES // 16))
