"""How many threads a training takes: its share of the physical cores, or what a scheduler reserved for it."""

import torch

from lorakit.train.host import THREADS_ENV, _count_cpu_list, physical_cores, tune_host


def test_cpu_lists_are_counted():
    assert _count_cpu_list("0-3,8") == 5
    assert _count_cpu_list("7") == 1
    assert physical_cores() >= 1


def test_threads_are_the_reserved_cpus_else_a_share_of_the_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        tune_host()
        assert torch.get_num_threads() == physical_cores()
        monkeypatch.setenv(THREADS_ENV, "1")  # a Ray task that reserved one CPU on a node it shares
        tune_host()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv(THREADS_ENV, "")  # unset by the scheduler: the share again
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(physical_cores() * 2))
        tune_host()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
