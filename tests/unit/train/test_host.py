from lorakit.train.host import _count_cpu_list, physical_cores


def test_cpu_lists_are_counted():
    assert _count_cpu_list("0-3,8") == 5
    assert _count_cpu_list("7") == 1
    assert physical_cores() >= 1
