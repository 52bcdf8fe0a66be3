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
