"""Remote paths read as rclone reads them: the folder a missing output folder is made in, and the backend's type."""

import pytest

from lorakit.remote.paths import parent, split_remote
from lorakit.remote.rclone import Rclone


@pytest.mark.parametrize("remote, prefix, path", [
    ("gdrive:output", "gdrive:", "output"),
    ("gdrive:", "gdrive:", ""),
    ("/mnt/nas/output", "", "/mnt/nas/output"),
    ("./out:put", "", "./out:put"),             # a "/" before the first colon: a local path
    ("output", "", "output"),
    ("drive,shared_with_me=true:a/b", "drive,shared_with_me=true:", "a/b"),
    (":webdav,url='http://127.0.0.1:8080':out/x", ":webdav,url='http://127.0.0.1:8080':", "out/x"),
    (':local:/srv/out', ":local:", "/srv/out"),
])
def test_a_remote_splits_where_rclone_splits_it(remote, prefix, path):
    assert split_remote(remote) == (prefix, path)


@pytest.mark.parametrize("remote, expected", [
    ("gdrive:output", "gdrive:"),
    ("gdrive:a/b/output/", "gdrive:a/b"),
    ("srv:/output", "srv:/"),
    ("/tmp/w/remote/output", "/tmp/w/remote"),    # was "/tmp/w/remote/output:", which rclone could not find
    ("/output", "/"),
    ("output", "."),
    (":webdav,url='http://127.0.0.1:8080':out/x", ":webdav,url='http://127.0.0.1:8080':out"),
])
def test_the_parent_of_an_output_folder(remote, expected):
    assert parent(remote) == expected


@pytest.mark.parametrize("remote, kind", [
    ("/mnt/nas/out", "local"), ("out", "local"), ("./a:b", "local"),
    (":webdav,url='http://h:1':x", "webdav"), (":s3:bucket/x", "s3"),
])
def test_the_type_of_a_remote_that_needs_no_config(remote, kind):
    assert Rclone(None).remote_type(remote) == kind
