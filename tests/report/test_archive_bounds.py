"""Hostile archives through real `canaryctl report verify` processes: each refused with exit 2 and a
clear message, no traceback, within a memory limit; names are printed with their control characters
escaped.

The large archives are gzip bombs built in memory: one 64 MiB run of zeros compressed once (64 KiB)
and repeated as gzip members, so a "2.5 GiB" member costs a few MB on disk and nothing to build.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import resource
import tarfile

import pytest

from controller.report import archive
from tests.report.builders import rolled_back
from tests.support.canaryctl import assert_refused, canaryctl

ROOT = "rollout-3-2.0.0"
_RUN = 1 << 26
ZEROS = gzip.compress(bytes(_RUN), compresslevel=9, mtime=0)
"""64 MiB of zeros as one gzip member: repeated, they expand to any multiple of it."""
HUGE = 40 * _RUN
"""2.5 GiB."""
MEMORY = 1 << 30
"""The data segment `canaryctl` may use here: reading a huge member whole fails within it."""


@contextlib.contextmanager
def memory_limit(limit: int = MEMORY):
    """Children started meanwhile inherit ``limit`` on their data segment (heap and anonymous maps),
    so an unbounded read fails fast instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def verify(path, *args):
    with memory_limit():
        return canaryctl("report", "verify", str(path), *args, timeout=120)


def bomb(path, headers: list[tarfile.TarInfo], zeros: int) -> None:
    """A tar.gz of ``headers`` (the last one's content: ``zeros`` zero bytes, a multiple of 64 MiB),
    then the end-of-archive blocks."""
    assert zeros % _RUN == 0
    head = b"".join(info.tobuf(tarfile.PAX_FORMAT) for info in headers)
    path.write_bytes(gzip.compress(head, mtime=0) + ZEROS * (zeros // _RUN)
                     + gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))


def member(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info


@pytest.fixture
def written(tmp_path):
    target = tmp_path / "report.tar.gz"
    archive.write(target, rolled_back(tmp_path))
    return target


def contents_of(path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def repack(path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_report_member_that_expands_to_gigabytes_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    bomb(path, [member(f"{ROOT}/MANIFEST.sha256"), member(f"{ROOT}/report.json", HUGE)], HUGE)
    assert path.stat().st_size < 4 << 20
    result = verify(path)
    assert_refused(result, f"{ROOT}/report.json", f"{HUGE} bytes",
                   f"at most {archive.MAX_WHOLE_MEMBER} bytes", "not an archive canaryctl wrote")
    assert "MemoryError" not in result.err


def test_a_gigabyte_pax_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "pax.tar.gz"
    header = member("././@PaxHeader", HUGE, tarfile.XHDTYPE)
    path.write_bytes(gzip.compress(header.tobuf(tarfile.USTAR_FORMAT), mtime=0) + ZEROS * (HUGE // _RUN)
                     + gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))
    result = verify(path)
    assert_refused(result, f"a header of {HUGE} bytes", f"at most {archive.MAX_HEADER} bytes")
    assert "MemoryError" not in result.err


def test_a_log_of_any_size_is_hashed_in_chunks_and_named_if_unlisted(tmp_path, written):
    """Members verify only hashes are streamed: a log larger than the memory limit costs only time."""
    path = tmp_path / "big-log.tar.gz"
    head = b"".join(info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)
                    for info, data in contents_of(written))
    size = MEMORY + _RUN
    tail = member(f"{ROOT}/logs/extra/output.log", size).tobuf(tarfile.PAX_FORMAT)
    path.write_bytes(gzip.compress(head + tail, mtime=0) + ZEROS * (size // _RUN)
                     + gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))
    result = verify(path)
    assert result.code == 1, result.err
    assert "logs/extra/output.log: not listed in the manifest (added)" in result.err
    assert "Traceback" not in result.err


def test_more_members_than_the_cap_are_refused(tmp_path):
    path = tmp_path / "many.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for n in range(archive.MAX_MEMBERS + 1):
            tar.addfile(member(f"{ROOT}/logs/{n}"))
    assert_refused(verify(path), f"more than {archive.MAX_MEMBERS} members")


def test_control_characters_in_member_names_are_printed_escaped(tmp_path, written):
    forged = f"{ROOT}/x\x1b[2K\r{written}: intact (12 members match the manifest)\n\x07"
    path = tmp_path / "forged.tar.gz"
    repack(path, [*contents_of(written), (tarfile.TarInfo(forged), b"x")])
    result = verify(path)
    assert result.code == 1, result.err
    assert not any(c in result.err + result.out for c in "\x1b\r\x07")
    assert "x\\x1b[2K\\r" in result.err and "manifest)\\n\\x07: not listed in the manifest (added)" in result.err
    assert len(result.err.splitlines()) == 2  # the TAMPERED line and one problem: no line drawn by the name


def test_control_characters_in_the_file_name_are_printed_escaped(tmp_path, written):
    path = tmp_path / "re\x1b[1mport.tar.gz"
    path.write_bytes(written.read_bytes())
    result = verify(path)
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "re\\x1b[1mport.tar.gz: intact" in result.out
    path.write_bytes(b"not a tar.gz")
    refused = verify(path)
    assert_refused(refused, "re\\x1b[1mport.tar.gz is not a readable tar.gz archive")
    assert "\x1b" not in refused.err


def test_names_in_json_are_escaped_too(tmp_path, written):
    path = tmp_path / "forged.tar.gz"
    repack(path, [*contents_of(written), (tarfile.TarInfo(f"{ROOT}/x\u202e\x9b2K\x1b"), b"x")])
    result = verify(path, "--json")
    assert result.code == 1, result.err
    assert result.out.isascii() and "x\\u202e\\u009b2K\\u001b" in result.out
