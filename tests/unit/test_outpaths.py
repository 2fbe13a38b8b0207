"""orchestrate.outpaths: a bad output path is one paragraph and exit 2, never a traceback.

Tests run as root, so permission bits do not make a folder read-only: an immutable folder
(chattr +i, set here with the same ioctl, no process started) does, and /sys is not writable
even for root; the read-only tests use the first of these that works and skip otherwise.
"""

import fcntl
import os
import struct

import pytest

from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError
from loaderdoctor.orchestrate.outpaths import check_out_dir, check_out_file

FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def _set_immutable(path: str, on: bool) -> bool:
    """chattr +i / -i; False where the file system or the rights do not allow it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
        flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _cannot_create_in(folder: str) -> bool:
    try:
        with open(os.path.join(folder, ".probe"), "w"):
            pass
    except OSError:
        return True
    os.unlink(os.path.join(folder, ".probe"))
    return False


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody, root included, can create files in."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "existing.xml").write_text("old")
    locked = _set_immutable(str(d), True)
    try:
        if locked and _cannot_create_in(str(d)):
            yield str(d)
        elif os.path.isdir("/sys/fs") and _cannot_create_in("/sys/fs"):
            yield "/sys/fs"
        else:
            pytest.skip("no read-only folder here: chattr +i is refused and /sys/fs is writable")
    finally:
        if locked:
            _set_immutable(str(d), False)


def _usage_error(fn, *args) -> str:
    with pytest.raises(LoaderDoctorError) as ei:
        fn(*args)
    e = ei.value
    assert e.exit_code == EXIT_USAGE == 2
    assert "\n" not in e.message and "Traceback" not in e.message  # one paragraph
    e.message.encode("utf-8")
    return e.message


def test_out_dir_is_created_with_parents_and_left_clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = check_out_dir("a/b/report")
    assert got == str(tmp_path / "a" / "b" / "report") and os.path.isabs(got)
    assert os.path.isdir(got) and os.listdir(got) == []  # the write test left nothing
    assert check_out_dir(got) == got  # an existing folder is fine


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "report"
    f.write_text("x")
    msg = _usage_error(check_out_dir, str(f))
    assert str(f) in msg and "existing file" in msg and "--out" in msg


def test_out_dir_whose_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    msg = _usage_error(check_out_dir, str(tmp_path / "file" / "sub"))
    assert "could not be created" in msg and "not a directory" in msg


def test_out_dir_not_writable(readonly_dir):
    msg = _usage_error(check_out_dir, readonly_dir)
    assert "not writable" in msg and readonly_dir in msg


def test_out_dir_cannot_be_created_in_a_readonly_folder(readonly_dir):
    msg = _usage_error(check_out_dir, os.path.join(readonly_dir, "new"))
    assert "could not be created" in msg


def test_hostile_path_in_the_message_is_clean(tmp_path):
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xff\x1b[31m")  # a non-UTF-8, ESC-holding name
    with open(bad, "w"):
        pass
    msg = _usage_error(check_out_dir, bad)
    assert "\x1b" not in msg and "\ufffd" in msg


def test_out_file_ok(tmp_path):
    p = tmp_path / "junit.xml"
    assert check_out_file(str(p)) == str(p) and not p.exists()  # not created by the check
    p.write_text("old")
    assert check_out_file(str(p)) == str(p) and p.read_text() == "old"
    assert os.listdir(tmp_path) == ["junit.xml"]


def test_out_file_is_a_folder(tmp_path):
    msg = _usage_error(check_out_file, str(tmp_path))
    assert "is a folder" in msg and "--junit-xml" in msg


def test_out_file_missing_folder_or_file_as_folder(tmp_path):
    msg = _usage_error(check_out_file, str(tmp_path / "nope" / "j.xml"))
    assert "does not exist" in msg
    (tmp_path / "f").write_text("x")
    msg = _usage_error(check_out_file, str(tmp_path / "f" / "j.xml"), "--out")
    assert "is a file, not a folder" in msg and "--out" in msg


def test_out_file_in_a_readonly_folder(readonly_dir):
    msg = _usage_error(check_out_file, os.path.join(readonly_dir, "junit.xml"))
    assert "not writable" in msg


def test_existing_immutable_file(tmp_path):
    p = tmp_path / "j.xml"
    p.write_text("old")
    if not _set_immutable(str(p), True):
        pytest.skip("chattr +i is refused here")
    try:
        msg = _usage_error(check_out_file, str(p))
        assert "not writable" in msg
    finally:
        _set_immutable(str(p), False)
