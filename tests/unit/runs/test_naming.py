from concurrent.futures import ThreadPoolExecutor

from lorakit.runs.naming import allocate_run_dir, next_run_dir


def test_versions_count_up_and_ignore_other_names(tmp_path):
    (tmp_path / "typst-lowmem-v007").mkdir(parents=True)
    assert next_run_dir(tmp_path, "typst").name == "typst-v001"
    assert allocate_run_dir(tmp_path, "typst").name == "typst-v001"
    assert allocate_run_dir(tmp_path, "typst").name == "typst-v002"
    assert allocate_run_dir(tmp_path, "typst-lowmem").name == "typst-lowmem-v008"


def test_runs_started_at_once_never_share_a_folder(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: allocate_run_dir(tmp_path, "x"), range(32)))
    assert len({d.name for d in dirs}) == 32


def _allocate_after(barrier, root, queue):
    barrier.wait()  # both processes reach mkdir at the same moment
    queue.put(allocate_run_dir(root, "x").name)


def test_two_processes_started_at_once_get_different_versions(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for _ in range(10):
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_allocate_after, args=(barrier, tmp_path, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        names = [queue.get(timeout=30), queue.get(timeout=30)]
        for p in procs:
            p.join()
        assert names[0] != names[1]
    assert len(list(tmp_path.iterdir())) == 20
