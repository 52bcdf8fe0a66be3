"""What a failed rclone call means, from rclone's own words (its stderr, as recorded from rclone 1.60 here)."""

from lorakit.errors import DiskFullError, RemoteError, RemoteFullError
from lorakit.remote.rclone import classify

PREALLOCATE = ("2026/12/07 08:33:37 ERROR : big.bin: Failed to copy: preallocate: file too big for remaining disk "
               "space\n2026/12/07 08:33:37 Failed to copy: preallocate: file too big for remaining disk space\n")
WRITE = "2026/12/07 08:34:22 ERROR : Attempt 3/3 failed with 1 errors and: write /data/x: no space left on device\n"


def test_a_full_local_disk_being_written_is_this_machine_s_to_free(tmp_path):
    for stderr in (PREALLOCATE, WRITE):
        error = classify(stderr, f"copy srv:training/huge -> {tmp_path}/huge", target=f"{tmp_path}/huge")
        assert isinstance(error, DiskFullError) and not isinstance(error, RemoteError)
        assert f"no space left on the disk of {tmp_path}/huge" in str(error) and "free now" in str(error)


def test_a_full_remote_being_written_is_the_remote_s():
    error = classify(WRITE, "copy /runs/a -> srv:output/a", target="srv:output/a")
    assert isinstance(error, RemoteFullError)
    assert "the remote refused the write" in str(error)
    assert type(classify(WRITE, "lsjson srv:output")) is RemoteFullError  # no copy target: as before
