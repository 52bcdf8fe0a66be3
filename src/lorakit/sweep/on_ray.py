"""``lorakit sweep --executor ray --workers N``: each trial a Ray task on whichever node has the resources, all
sharing the sweep's one Optuna study.

The study stays in the sweep's journal on this machine; this process serves it to the nodes through Optuna's gRPC
storage proxy (so nodes share nothing with it but that port), asks the study for each trial, and keeps N trials
in flight. A trial's task runs exactly the local worker's ``run_trial`` (pruning through the study, memory
pre-pruning, a tracked run) and tells the study itself. A node that dies: Ray runs the trial again on another node,
resuming its run where the node's disk is shared, else afresh, under the same trial number. A killed driver takes
its tasks with it (Ray's owner rule); the same command again finds their trials still running in the study and
runs them again first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lorakit.config.schema import RaySection
from lorakit.errors import LaunchError
from lorakit.launch.ray import connect, task_options
from lorakit.sweep.space import SweepSpace
from lorakit.sweep.study import Sweep, open_study, suggest
from lorakit.sweep.worker import FINISHED, Job, run_trial, worker_alive

log = logging.getLogger(__name__)

DRIVER_LOCK = ".ray-driver.lock"


@contextmanager
def _one_driver(sweep: Sweep) -> Iterator[None]:
    with (sweep.path / DRIVER_LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchError(f"sweep {sweep.name}: another lorakit sweep drives it on Ray already") from None
        yield


def _serve(storage: Any, host: str) -> int:
    """Serve the study's storage to the nodes on ``host``; the port."""
    from optuna.storages import run_grpc_proxy_server

    from lorakit.launch.ray import free_port

    port = free_port(host)
    threading.Thread(target=run_grpc_proxy_server, args=(storage,), kwargs={"host": host, "port": port},
                     daemon=True, name="optuna-grpc-proxy").start()
    return port


def trial_on_node(sweep: Sweep, host: str, port: int, trial_id: int, params: dict[str, Any],
                  recovered: bool) -> dict[str, Any]:
    """The Ray task: one trial, as a local worker runs it, with the study reached through the driver's proxy."""
    import optuna
    from optuna.storages import GrpcStorageProxy

    from lorakit.launch.ray import keep_to_reserved_cpus, this_node
    from lorakit.sweep.study import _pruner, _sampler

    node = this_node()
    keep_to_reserved_cpus()
    os.chdir(sweep.working_directory)  # where the sweep's relative paths (data, output.dir) were resolved
    base = sweep.base_config()
    space = sweep.space(base.config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the proxy, said once here
    study = optuna.load_study(study_name=sweep.name, storage=GrpcStorageProxy(host=host, port=port),
                              sampler=_sampler(space), pruner=_pruner(space))
    trial = optuna.trial.Trial(study, trial_id)
    print(f"trial {trial.number}: running on {node.describe()}", flush=True)  # Ray shows it in the driver's output
    trial.set_user_attr("node", node.describe())
    told = run_trial(study, sweep, space, Job(trial, params, recovered))
    return {"node": node.describe(), "number": trial.number, "told": told}


def _next(study: Any, sweep: Sweep, space: SweepSpace, stale: list[Any], in_flight: int) -> Job | None:
    """A trial left running by a driver that is gone, else a new one while the count is not reached."""
    import optuna

    if stale:
        frozen = stale.pop(0)
        return Job(optuna.trial.Trial(study, frozen._trial_id), dict(frozen.params), True)
    done = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    if done + in_flight >= sweep.trials:
        return None
    trial = study.ask()
    trial.set_user_attr("worker", {"ray": True})
    return Job(trial, suggest(trial, space), False)


def run_ray_sweep(sweep: Sweep, section: RaySection) -> int:
    """Run the sweep's trials on the Ray cluster, ``sweep.workers`` at a time, until it has its count; how many
    trials ran here.

    Raises:
        LaunchError: Ray is missing, the cluster cannot be reached, or another driver runs this sweep.
    """
    import optuna
    from ray.util import get_node_ip_address

    ray = connect(section)
    base = sweep.base_config()
    space = sweep.space(base.config)
    with _one_driver(sweep):
        study = open_study(sweep, space)
        host = get_node_ip_address()
        port = _serve(study._storage, host)
        task = ray.remote(trial_on_node).options(**task_options(section))
        # Running trials no live process holds: their driver (and so their tasks) died, or their local worker did.
        stale = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                 and ((t.user_attrs.get("worker") or {}).get("ray") or not worker_alive(t.user_attrs.get("worker")))]
        in_flight: dict[Any, Job] = {}
        ran = 0
        while True:
            while len(in_flight) < sweep.workers and (job := _next(study, sweep, space, stale, len(in_flight))):
                log.info("trial %d: sent to the Ray cluster (%s)", job.trial.number,
                         ", ".join(f"{k}={v}" for k, v in job.params.items()))
                in_flight[task.remote(sweep, host, port, job.trial._trial_id, job.params, job.recovered)] = job
            if not in_flight:
                return ran
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # lost more often than max_retries, or a bug of ours
                    reason = f"its Ray task failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    if study._storage.get_trial(job.trial._trial_id).state.name == "RUNNING":
                        study._storage.set_trial_user_attr(job.trial._trial_id, "reason", reason)
                        study.tell(job.trial, state=optuna.trial.TrialState.FAIL)
                    log.error("trial %d: %s", job.trial.number, reason)
                    continue
                ran += 1
                log.info("trial %d: ran on %s", result["number"], result["node"])
                if not result["told"]:  # stopped on its node by a signal: still running in the study, to resume
                    stale.append(study._storage.get_trial(job.trial._trial_id))
