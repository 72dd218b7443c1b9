"""The report archive: the report and its evidence in one deterministic tar.gz, with SHA-256 sums.

Every member sits under one folder, ``rollout-ID-RELEASE/``:

    MANIFEST.sha256        every other member's SHA-256, in ``sha256sum -c`` format
    report.md, report.json the report (the Markdown links the plots)
    audit/excerpt.jsonl    the audit chain from the rollout's first event to its last, hashes included
    metrics/verdicts.jsonl every verdict change of the rollout, with its measured value
    configs/SHA256.json    the config snapshot of each release involved, named by its own hash
    releases/VERSION.json  those releases as recorded (manifest, artifact and config digests)
    logs/INSTANCE/output.log  the bot's output, where it exists on disk
    plots/NAME.svg         the figures that have data

A prune's archive (`controller/report/retention.py`) is written by the same `write_members` and
checked by the same `verify`: a manifest, the archived audit events as an excerpt, rows as JSON lines.

The same evidence gives the same bytes: members sorted, fixed owner, mode and mtime (the
evidence's own newest instant), gzip without a timestamp. Credentials files never go in.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from controller.canonical import canonical_json
from controller.errors import InputError
from controller.report import document, markdown, plots
from controller.report.document import AUDIT_EXCERPT, MANIFEST, REPORT_JSON, REPORT_MD, VERDICTS
from controller.deploy.process import OUTPUT_LOG
from controller.report.evidence import CREDENTIAL_FILES, Evidence

_CHUNK = 1 << 20
MAX_MEMBERS = 10_000
"""The members `verify` reads at most: an archive it wrote has a few dozen (a log per bot, a plot per figure)."""
MAX_HEADER = 64 << 10
"""The largest extended header (pax, GNU long name) `verify` reads: names and attributes, never content."""
MAX_WHOLE_MEMBER = 32 << 20
"""The largest member `verify` reads whole (the manifest, report.json, the audit excerpt); every other
member is hashed in chunks, whatever its size."""
_KEPT = (AUDIT_EXCERPT, REPORT_JSON)  # members verify reads besides hashing them
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class ArchiveUnreadable(InputError):
    """The file is not a tar.gz archive that can be read to its end."""


class ArchiveTooLarge(InputError):
    """The archive goes past a bound `verify` reads within (members, header size, a member read whole)."""


class ArchiveExists(InputError):
    """The target exists and --force was not given."""


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None = None
    source: Path | None = None
    size: int = 0
    """For a file member: the bytes to take (a live bot's log grows while we read it)."""

    def chunks(self):
        if self.data is not None:
            yield self.data
            return
        left = self.size
        with open(self.source, "rb") as file:
            while left > 0:
                chunk = file.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{self.source} shrank while it was archived")
                left -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class Written:
    path: Path
    members: int
    bytes: int
    sha256: str


def root_folder(doc: dict[str, Any]) -> str:
    return document.safe_name(f"rollout-{doc['rollout']['id']}-{doc['rollout']['release']}")


def members(ev: Evidence, doc: dict[str, Any], progress: Callable[[str], None]) -> list[Member]:
    """Every member but the manifest, each with its content or where to read it."""
    out = [Member(REPORT_JSON, json_bytes(doc)),
           Member(REPORT_MD, markdown.render(doc, plots_linked=True).encode()),
           Member(AUDIT_EXCERPT, jsonl(document.audit_line(a) for a in ev.audit)),
           Member(VERDICTS, jsonl(v for p in doc["policies"] for v in p["history"]))]
    for release in ev.releases:
        out.append(Member(document.config_member(release.info.config_sha256), release.config_text.encode()))
        out.append(Member(document.release_member(release.info.version),
                          json_bytes({**release.info.to_json(), "roles": list(release.roles)})))
    for log in ev.logs:
        if log.size is not None:
            out.append(Member(document.log_member(log.instance), source=log.path, size=log.size))
    drawn = [p for p in doc["plots"] if p["file"]]
    for n, plot in enumerate(drawn, 1):
        progress(f"drawing plot {n}/{len(drawn)}: {plot['title']}")
        out.append(Member(plot["file"], plots.draw(plot)))
    unique = {m.name: m for m in out}  # two releases may share one config snapshot
    return sorted(unique.values(), key=lambda m: m.name)


def write(target: Path, ev: Evidence, *, force: bool = False,
          progress: Callable[[str], None] = lambda text: None) -> Written:
    """Write the report's archive to ``target`` (see `write_members`)."""
    target = Path(target)
    if target.exists() and not force:
        raise ArchiveExists(f"{target} exists; choose another name, or add --force to replace it")
    doc = document.build(ev, archived=True)
    return write_members(target, root_folder(doc), members(ev, doc, progress), mtime=int(ev.as_of.timestamp()),
                         force=force, progress=progress)


def write_members(target: Path, root: str, content: list[Member], *, mtime: int, force: bool = False,
                  progress: Callable[[str], None] = lambda text: None) -> Written:
    """Write ``content`` and its manifest under ``root/`` to ``target`` through a temporary file in its
    folder, renamed at the end: an error leaves nothing half-written, and an existing file is kept
    unless ``force``. Any archive written here is one `verify` checks (the report's, a prune's)."""
    target = Path(target)
    if target.exists() and not force:
        raise ArchiveExists(f"{target} exists; choose another name, or add --force to replace it")
    sums = []
    for member in content:
        _refuse_credentials(member)
        if member.source is not None:
            progress(f"hashing {member.name} ({member.size} bytes)")
        digest = hashlib.sha256()
        for chunk in member.chunks():
            digest.update(chunk)
        sums.append((member, digest.hexdigest()))
    manifest = "".join(f"{sha}  {m.name}\n" for m, sha in sums).encode()
    progress(f"writing {target} ({len(content) + 1} members)")
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for member in [Member(MANIFEST, manifest), *content]:
                    size = len(member.data) if member.data is not None else member.size
                    tar.addfile(_info(f"{root}/{member.name}", size, mtime), _Reader(member.chunks()))
            raw.flush()
            os.fsync(raw.fileno())
        _publish(Path(temp), target, force)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    with open(target, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    return Written(target, len(content) + 1, target.stat().st_size, digest)


def _refuse_credentials(member: Member) -> None:
    name = PurePosixPath(member.name).name
    source = member.source.name if member.source else None
    if any(n in CREDENTIAL_FILES or n.endswith(".exchange.json") for n in (name, source) if n) or \
            (member.source is not None and source != OUTPUT_LOG):
        raise RuntimeError(f"refusing to archive {member.source or member.name}: only bot logs are read from "
                           "a placement's folder, never its credentials")


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Reader:
    """A file object over an iterator of chunks (tarfile reads members through ``read``)."""

    def __init__(self, chunks) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0:
            n = len(self._buffer)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def _publish(temp: Path, target: Path, force: bool) -> None:
    os.chmod(temp, 0o600)  # bot logs are private to the daemon's user on disk; they stay so here
    if force:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile: never overwritten by accident
    except FileExistsError:
        raise ArchiveExists(f"{target} exists; choose another name, or add --force to replace it") from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise ArchiveExists(f"{target} exists; choose another name, or add --force to replace it") from None
        os.rename(temp, target)
        return
    temp.unlink()


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def jsonl(values) -> bytes:
    return "".join(canonical_json(v) + "\n" for v in values).encode()


# ---------------------------------------------------------------- verify

@dataclass(frozen=True)
class Problem:
    member: str
    how: str


@dataclass(frozen=True)
class ArchiveCheck:
    root: str | None
    members: int
    audit_events: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: Path) -> ArchiveCheck:
    """Check an archive: every member the manifest lists is there with its SHA-256, nothing else is,
    the audit excerpt's hash chain holds, and each config snapshot matches the hash in its name."""
    seen, kept, problems = _read(Path(path))
    manifests = [n for n in seen if re.fullmatch(r"[^/]+/" + re.escape(MANIFEST), n)]
    if len(manifests) != 1:
        problems.append(Problem(MANIFEST, "missing: the archive has no manifest" if not manifests
                                else f"there are {len(manifests)} manifests"))
        return ArchiveCheck(None, len(seen), 0, tuple(problems))
    root = manifests[0].split("/", 1)[0]
    listed, bad_lines = _manifest(kept.get(manifests[0], b""))
    problems += [Problem(MANIFEST, how) for how in bad_lines]
    for name, sha in sorted(listed.items()):
        found = seen.get(f"{root}/{name}")
        if found is None:
            problems.append(Problem(name, "listed in the manifest but missing from the archive (removed)"))
        elif found != sha:
            problems.append(Problem(name, f"its SHA-256 is {found}, the manifest says {sha} (changed)"))
    for full in sorted(seen):
        name = full[len(root) + 1:] if full.startswith(f"{root}/") else None
        if full == manifests[0]:
            continue
        if name is None:
            problems.append(Problem(full, f"outside the archive's folder {root}/ (added)"))
        elif name not in listed:
            problems.append(Problem(name, "not listed in the manifest (added)"))
    events = 0
    excerpt = kept.get(f"{root}/{AUDIT_EXCERPT}")
    if excerpt is not None:
        events, how = _check_excerpt(excerpt)
        if how:
            problems.append(Problem(AUDIT_EXCERPT, how))
        problems += _check_report(kept.get(f"{root}/{REPORT_JSON}"), excerpt)
    for full, sha in sorted(seen.items()):
        match = re.fullmatch(re.escape(root) + r"/configs/([0-9a-f]{64})\.json", full)
        if match and sha != match.group(1):
            problems.append(Problem(full[len(root) + 1:], "its content does not match the SHA-256 in its name "
                                                          "(the snapshot was edited)"))
    return ArchiveCheck(root, len(seen), events, tuple(problems))


def check_of(path: Path, rollout_id: int, release: str) -> dict[str, Any]:
    """Whether ``path`` exists and verifies as this rollout's archive, for the report's completion section;
    an unreadable file is said so, never raised (the report is still rendered)."""
    path = Path(path)
    out: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "verifies": False, "problems": []}
    if not out["exists"]:
        out["problems"] = [f"{path} does not exist"]
        return out
    try:
        result = verify(path)
    except InputError as exc:
        out["problems"] = [str(exc)]
        return out
    expected = document.safe_name(f"rollout-{rollout_id}-{release}")
    problems = [f"{p.member}: {p.how}" for p in result.problems]
    if result.root is not None and result.root != expected:
        problems.append(f"it is the archive of {result.root}, not of {expected}")
    out.update(verifies=not problems, problems=problems, members=result.members, audit_events=result.audit_events)
    return out


def printable(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\x1b``, ``\\n``, ``\\u202e``): a name
    read from an archive is printed as itself, and cannot move the cursor or draw a line of its own."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
"""C0 and C1 controls, DEL, line and paragraph separators, bidirectional marks and overrides, and
the lone surrogates a name that is no UTF-8 decodes to."""


class _TooLarge(Exception):
    """A header past a bound; raised inside tarfile, which passes it through (it is no HeaderError)."""


class _BoundedInfo(tarfile.TarInfo):
    """Tar headers read within bounds. tarfile reads an extended header whole and a sparse member's
    map for as long as its header says: both are refused from the header, before anything is read.
    (These are tarfile's private hooks; `tarfile.open(tarinfo=...)` is the public way in.)"""

    _EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                 tarfile.GNUTYPE_LONGLINK)

    def _proc_member(self, tar):
        if self.type in self._EXTENDED and self.size > MAX_HEADER:
            raise _TooLarge(f"a header of {self.size} bytes (at most {MAX_HEADER} bytes are read)")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _TooLarge("a sparse member")
        return super()._proc_member(tar)

    def _sparse(self, *args):
        raise _TooLarge("a sparse member")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _sparse


def _read(path: Path) -> tuple[dict[str, str], dict[str, bytes], list[Problem]]:
    """Hash every member in chunks (and keep the few verify reads whole); a file that is no tar.gz
    is refused, and so is one past the bounds (`MAX_MEMBERS`, `MAX_HEADER`, `MAX_WHOLE_MEMBER`)."""
    seen: dict[str, str] = {}
    kept: dict[str, bytes] = {}
    problems: list[Problem] = []
    shown = printable(str(path))
    try:
        with tarfile.open(path, "r:gz", tarinfo=_BoundedInfo) as tar:
            for count, info in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise ArchiveTooLarge(f"{shown} has more than {MAX_MEMBERS} members: not an archive canaryctl "
                                          "wrote (it writes a few dozen)")
                if info.name in seen:
                    problems.append(Problem(info.name, "appears twice in the archive"))
                if not info.isreg():
                    problems.append(Problem(info.name, "is not a regular file (added)"))
                    seen.setdefault(info.name, "")
                    continue
                digest, keep = hashlib.sha256(), info.name.endswith((MANIFEST, *_KEPT))
                if keep and info.size > MAX_WHOLE_MEMBER:
                    raise ArchiveTooLarge(f"{shown}: {printable(info.name)} is {info.size} bytes; verify reads it "
                                          f"whole, at most {MAX_WHOLE_MEMBER} bytes: not an archive canaryctl wrote")
                body = bytearray()
                with tar.extractfile(info) as file:
                    while chunk := file.read(_CHUNK):
                        digest.update(chunk)
                        if keep:
                            body += chunk
                seen[info.name] = digest.hexdigest()
                if keep:
                    kept[info.name] = bytes(body)
    except _TooLarge as exc:
        raise ArchiveTooLarge(f"{shown} holds {exc}: not an archive canaryctl wrote") from None
    except RecursionError:  # tarfile reads a chain of extended headers recursively
        raise ArchiveTooLarge(f"{shown} chains more extended headers than can be read: not an archive "
                              "canaryctl wrote") from None
    except FileNotFoundError:
        raise ArchiveUnreadable(f"{shown}: no such file") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveUnreadable(f"{shown} is not a readable tar.gz archive ({printable(str(exc))}); "
                                "give the file `canaryctl report ROLLOUT --archive` wrote") from None
    return seen, kept, problems


def _manifest(text: bytes) -> tuple[dict[str, str], list[str]]:
    listed: dict[str, str] = {}
    bad = []
    for n, line in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
        match = _MANIFEST_LINE.match(line)
        if not match or match.group(2).startswith("/") or ".." in PurePosixPath(match.group(2)).parts:
            bad.append(f"line {n} is not `SHA256  PATH` with a relative path: {line[:80]!r}")
            continue
        listed[match.group(2)] = match.group(1)
    return listed, bad


def _check_excerpt(data: bytes) -> tuple[int, str | None]:
    events = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            return n - 1, f"line {n} is not JSON"
        if not isinstance(event, dict):
            return n - 1, f"line {n} is not an audit event"
        events.append(event)
    count, problem = document.check_chain(events)
    return count, (f"hash chain broken at {problem}" if problem else None)


def _check_report(report: bytes | None, excerpt: bytes) -> list[Problem]:
    """The report names the excerpt's last hash: a rewritten excerpt disagrees with it."""
    if report is None:
        return []
    try:
        named = json.loads(report)["evidence"]["audit_excerpt"]["last_hash"]
    except (ValueError, KeyError, TypeError):
        return [Problem(REPORT_JSON, "is not a report document")]
    lines = excerpt.decode("utf-8", "replace").splitlines()
    try:
        last = json.loads(lines[-1])["hash"] if lines else None
    except (ValueError, KeyError, TypeError):
        return []  # the chain check already names that line
    if named != last:
        return [Problem(AUDIT_EXCERPT, f"ends at hash {last}, but the report names {named} (rewritten)")]
    return []
