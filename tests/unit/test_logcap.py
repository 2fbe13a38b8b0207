"""orchestrate.logcap: cap_log on a finished log, LogCapper on one a child is still writing.

The last test starts one real child process (the only one in tests/unit) that writes 20 MB.
"""

import fcntl
import itertools
import os
import re
import subprocess
import sys
import textwrap

import psutil

from loaderdoctor.orchestrate.logcap import LogCapper, cap_log, open_log

LINE = 50  # bytes per numbered line: 9 digits, a space, 39 x, a newline
NOTE = re.compile(rb"^\[loaderdoctor: (\d+) bytes cut here[^\n]*\]$")


def _lines(first: int, count: int) -> bytes:
    return b"".join(b"%09d %s\n" % (i, b"x" * 39) for i in range(first, first + count))


def _parse(data: bytes) -> tuple[list[int], int, list[int]]:
    """(head line numbers, bytes the note says were cut, tail line numbers); asserts the shape."""
    head, tail, cut = [], [], None
    for raw in data.split(b"\n")[:-1]:
        m = NOTE.match(raw)
        if m:
            assert cut is None, "one note only"
            cut = int(m.group(1))
            continue
        assert re.fullmatch(rb"\d{9} x{39}", raw), raw[:80]
        (tail if cut is not None else head).append(int(raw[:9]))
    assert data.endswith(b"\n") and cut is not None
    return head, cut, tail


def test_small_or_missing_log_is_left_alone(tmp_path):
    p = tmp_path / "stdout.log"
    assert cap_log(str(p)) is None
    p.write_bytes(_lines(0, 100))
    assert cap_log(str(p), head_bytes=2000, tail_bytes=3000) is None
    assert p.read_bytes() == _lines(0, 100)


def test_cap_log_keeps_head_and_tail_at_line_ends(tmp_path):
    p = tmp_path / "stdout.log"
    p.write_bytes(_lines(0, 10_000))  # 500,000 bytes
    r = cap_log(str(p), head_bytes=10_020, tail_bytes=20_030)
    head, cut, tail = _parse(p.read_bytes())
    assert head == list(range(200)) and tail == list(range(10_000 - 400, 10_000))  # whole lines only
    assert r == {"cut_bytes": cut} and cut == 500_000 - (200 + 400) * LINE
    assert cap_log(str(p), head_bytes=10_020, tail_bytes=20_030) is None  # its own output is small enough


def test_a_log_without_newlines_is_cut_at_character_boundaries(tmp_path):
    p = tmp_path / "stderr.log"
    p.write_bytes("\u00e9\u4e2d".encode() * 100_000)  # 2- and 3-byte characters, one line
    r = cap_log(str(p), head_bytes=1001, tail_bytes=2001)
    data = p.read_bytes()
    head, note, tail = data.split(b"\n")
    head.decode("utf-8"), tail.decode("utf-8")  # no character was split
    assert int(NOTE.match(note).group(1)) == r["cut_bytes"] == 500_000 - len(head) - len(tail)
    assert len(head) <= 1001 and len(tail) <= 2001


def test_repeated_cuts_keep_the_first_head_and_count_all_that_was_cut(tmp_path):
    p = tmp_path / "stdout.log"
    capper = LogCapper(str(p), head_bytes=5_000, tail_bytes=5_000, slack=0)
    written = 0
    with open(p, "ab") as f:
        for k in range(5):
            f.write(_lines(k * 1000, 1000))
            f.flush()
            written += 1000 * LINE
            assert capper.check()
    head, cut, tail = _parse(p.read_bytes())
    assert head == list(range(100)) and tail == list(range(4900, 5000))
    assert capper.cut_bytes == cut and capper.cuts == 5
    assert cut + (len(head) + len(tail)) * LINE == written
    assert capper.stop() == {"cut_bytes": cut}  # never started: stop() is the final exact cut


CHILD = textwrap.dedent("""
    import os, sys, time
    CHUNK_LINES, CHUNKS, HIGH, LOW = 10_000, 40, 5_000_000, 4_000_000
    peak = 0
    for c in range(CHUNKS):
        data = b"".join(b"%09d %s\\n" % (i, b"x" * 39) for i in range(c * CHUNK_LINES, (c + 1) * CHUNK_LINES))
        while data:
            data = data[os.write(1, data):]
        size = os.fstat(1).st_size
        peak = max(peak, size)
        if size > HIGH:  # wait (bounded) for the parent's capper to cut: the test's handshake
            deadline = time.monotonic() + 20
            while os.fstat(1).st_size > LOW:
                if time.monotonic() > deadline:
                    sys.stderr.write("capper never cut\\n")
                    sys.exit(3)
                time.sleep(0.005)
    sys.stderr.write(f"peak {peak}\\n")
""")


def test_live_capper_bounds_a_20mb_child_log(tmp_path):
    path = str(tmp_path / "stdout.log")
    total = 40 * 10_000 * LINE  # 20,000,000 bytes
    out = open_log(path)
    assert os.O_APPEND & fcntl.fcntl(out.fileno(), fcntl.F_GETFL)
    capper = LogCapper(path, interval=0.02).start()  # 1 MB head, 1 MB tail
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=out, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    out.close()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        result = capper.stop()
    assert proc.returncode == 0, err.decode()
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    assert not capper._thread.is_alive() and capper.error is None
    peak = int(err.split()[-1])
    assert peak <= 5_000_000 + 10_000 * LINE  # bounded while the child was writing
    assert capper.cuts >= 5  # cut live, not only at the end

    with open(path, "rb") as f:
        data = f.read()
    head, cut, tail = _parse(data)
    assert len(data) <= 2_000_000 + 200
    assert head == list(range(len(head))) and len(head) * LINE > 900_000
    assert tail[-1] == 399_999 and len(tail) * LINE > 900_000
    assert result == {"cut_bytes": cut}
    lost = total - cut - (len(head) + len(tail)) * LINE
    # Bytes appended in the instant between the capper's last read and its truncate are lost
    # (see logcap's docstring); the note's count never claims more than was written.
    assert 0 <= lost <= total // 100, lost
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(tail))
    assert gaps * LINE <= lost
