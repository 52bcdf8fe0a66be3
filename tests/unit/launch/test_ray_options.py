"""What each Ray task reserves, from [queue.ray] / launch.ray; and the address check that makes a dead cluster one
line."""

import pytest

from lorakit.config.schema import RaySection
from lorakit.errors import LaunchError
from lorakit.launch.ray import _probe, free_port, task_options


def test_a_task_reserves_what_the_section_says_and_is_retried_only_for_a_lost_node():
    options = task_options(RaySection(num_cpus=4, num_gpus=1, memory="16GiB", resources={"a100": 1}, max_retries=2))
    assert options == {"num_cpus": 4, "num_gpus": 1, "memory": 16 * 2**30, "resources": {"a100": 1},
                       "max_retries": 2, "retry_exceptions": False}
    assert "memory" not in task_options(RaySection()) and "resources" not in task_options(RaySection())


def test_a_host_port_nobody_answers_is_one_line_and_other_forms_are_left_to_ray():
    port = free_port("127.0.0.1")  # nothing listens there
    with pytest.raises(LaunchError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _probe(f"127.0.0.1:{port}")
    _probe("auto")
    _probe("ray://head:10001")
