import io
import re
import tarfile
import zipfile

import pytest

from lorakit.errors import DataError
from lorakit.queue.archives import unpack


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as t:
        for member, data in members:
            t.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_zip_with_one_top_folder_is_moved_up_and_the_archive_kept(tmp_path):
    archive = make_zip(tmp_path / "cats.zip", {"cats/a.jsonl": "{}", "cats/sub/b.jsonl": "{}"})
    target = unpack(archive, tmp_path / "cats")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.jsonl")) == ["a.jsonl", "sub/b.jsonl"]
    assert archive.is_file()  # deleting it is the queue's call, once the remote original is verified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cats", "cats.zip"]  # no staging folder left behind


def test_tar_gz_with_loose_files_and_an_inner_link(tmp_path):
    archive = make_tar(tmp_path / "d.tar.gz", [file_member("a.txt"), link_member("b.txt", "a.txt")])
    target = unpack(archive, tmp_path / "d")
    assert (target / "a.txt").read_bytes() == b"x" and (target / "b.txt").is_symlink()


@pytest.mark.parametrize("entry", ["../evil.txt", "/etc/evil.txt", "ok/../../evil.txt"])
def test_zip_entries_outside_the_folder_are_refused_by_name(tmp_path, entry):
    archive = make_zip(tmp_path / "bad.zip", {"fine.txt": "x", entry: "x"})
    with pytest.raises(DataError, match=re.escape(f"entry '{entry}' would be written outside")):
        unpack(archive, tmp_path / "bad")
    assert archive.is_file() and not (tmp_path / "bad").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("member", [link_member("up", "../../etc/passwd"), link_member("abs", "/etc/passwd"),
                                    link_member("hard", "../outside", tarfile.LNKTYPE),
                                    file_member("../x.txt")])
def test_tar_links_and_paths_pointing_out_are_refused(tmp_path, member):
    archive = make_tar(tmp_path / "bad.tar.gz", [file_member("fine.txt"), member])
    with pytest.raises(DataError, match=re.escape(f"entry '{member[0].name}'")):
        unpack(archive, tmp_path / "bad")
    assert archive.is_file() and not (tmp_path / "bad").exists()


def test_a_corrupt_archive_is_a_data_error_and_kept(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot unpack"):
        unpack(archive, tmp_path / "broken")
    assert archive.is_file()


def test_a_zip_symlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("data/escape")
        info.external_attr = 0o120777 << 16  # a symbolic link, as zip -y stores it
        z.writestr(info, "../../../etc/passwd")
    with pytest.raises(DataError, match=re.escape("entry 'data/escape' links to '../../../etc/passwd'")):
        unpack(archive, tmp_path / "link")
