"""Place a release as a plain process of this host, outside any service manager.

Each instance has a folder ``STATE_DIR/instances/INSTANCE/`` (mode 0700):

- ``config.json``: the config snapshot the bot runs with;
- ``exchange.json``: where the exchange is and the account's API key (0600; removed at stop);
- ``output.log``: the bot's standard output and error, appended run after run;
- ``placement.json``: what runs (release, config hash, pid and start time, metrics URL);
- ``bot.lock``: locked (flock) before the bot is spawned, and inherited by it, so it stays locked
  exactly as long as a bot of this instance lives, recorded or not.

The bot runs in a session of its own, so it outlives the controller (a crash, a restart) and
a new controller finds it again through ``placement.json``: a pid counts as the bot only while
its start time (from /proc) is the recorded one, since Linux reuses pids.

``placement.json`` can only be written once the pid is known, after the spawn: a controller
killed in between leaves a bot no record names. The lock closes that window: before it spawns,
and when it stops an instance, the deployer kills every process holding the instance's lock
that ``placement.json`` does not name, so that never two bots trade one account.

With a `Supervision`, the process started is the bot's supervisor (`controller.deploy.supervisor`),
which starts the bot as its child and passes the lock on to it; its pid is the placement's. A stop
then also moves the instance's placement epoch on, so that a copy another host started dies too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from controller import failpoints
from controller.clock import Clock
from controller.deploy.base import (
    READY_POLL,
    KILL_WAIT,
    DeployError,
    Placement,
    Running,
    Supervision,
    check_instance,
    metrics_port,
    metrics_url,
    private_dir,
    supersede,
    tail,
    wait_ready,
    write_private,
)
from controller.logs import get_logger
from controller.procfs import read_stat

log = get_logger(__name__)

EXIT_POLL = 0.05
"""Real seconds between two looks at /proc when the kernel cannot notify an exit (no pidfd)."""
INHERITED_ENV = ("PATH", "HOME", "LANG", "PYTHONPATH")
"""All the bot inherits from the controller's environment: nothing of the controller's own secrets."""
OUTPUT_LOG = "output.log"
LOCK_FILE = "bot.lock"


def instance_folder(state_dir: Path, instance: str) -> Path:
    """Where a placement's files live: ``STATE_DIR/instances/INSTANCE``."""
    return Path(state_dir) / "instances" / instance


class ProcessDeployer:
    """Starts, finds and stops bots as processes of this host (the simulator, development)."""

    def __init__(self, state_dir: Path, clock: Clock, python: str = sys.executable, *,
                 ready_timeout: float = 30.0, supervision: Supervision | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.python = python
        self.ready_timeout = ready_timeout
        self.supervision = supervision
        """None: bots run directly, fenced by this host alone; else each runs under its supervisor."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # bots started here: to reap
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self, placement: Placement) -> Running:
        async with self._lock(placement.instance):
            current = await self.status(placement.instance)
            await self._kill_strays(placement.instance, current)
            if current is not None:
                if current.runs(placement):
                    return current
                raise DeployError(f"instance {placement.instance} runs release {current.release} "
                                  f"(config {current.config_sha256[:12]}): stop it before starting "
                                  f"{placement.release}")
            return await self._spawn(placement)

    async def stop(self, instance: str, *, grace: float = 10.0) -> Running | None:
        check_instance(instance)
        async with self._lock(instance):
            running = await self.status(instance)
            if running is not None:
                await self._terminate(running, grace)
                log.info("deploy_stopped", instance=instance, release=running.release, pid=running.pid)
            await self._kill_strays(instance, None)
            self._forget(instance)
            await supersede(self.supervision, instance)
            return running

    async def kill_strays(self, instance: str) -> list[int]:
        """Kill every bot of the instance that ``placement.json`` does not name; their pids."""
        async with self._lock(instance):
            return await self._kill_strays(instance, await self.status(instance))

    async def status(self, instance: str) -> Running | None:
        check_instance(instance)
        record = self._read_record(instance)
        if record is None or record.get("stopped"):
            return None
        pid, start_ticks = record["pid"], record["start_ticks"]
        if not _alive(pid, start_ticks):
            self._reap(pid)
            return None
        return self._running(instance, record)

    # --- start ------------------------------------------------------------------------------------------

    async def _spawn(self, placement: Placement) -> Running:
        folder = private_dir(self._folder(placement.instance))
        config, exchange, output = folder / "config.json", folder / "exchange.json", folder / OUTPUT_LOG
        write_private(config, placement.config_text)
        write_private(exchange, placement.exchange_json())
        port = metrics_port(placement.manifest)
        argv = placement.manifest.argv(python=self.python, config=str(config), metrics_port=port,
                                       exchange_file=str(exchange))
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update(placement.environment())
        lock_fd = self._take_lock(placement.instance)  # start() killed the strays: nobody holds it
        if self.supervision is not None:  # the supervisor's pid is the placement's; the bot is its child
            argv = self.supervision.argv(self.python, placement.instance, argv, pass_fds=(lock_fd,))
            env.update(self.supervision.environment)
        log_fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            offset = os.fstat(log_fd).st_size
            # Not asyncio's subprocess: its transport kills the child when it is closed or collected,
            # and the bot must outlive this controller. A new session: our signals are not its own.
            # The bot inherits the locked descriptor: the lock is its own from now on, ours closes.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, env=env,
                                       cwd=folder, start_new_session=True, pass_fds=(lock_fd,))
        except OSError as exc:
            exchange.unlink(missing_ok=True)
            raise DeployError(f"instance {placement.instance}: cannot run {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
            os.close(lock_fd)
        failpoints.hit("deploy.process.spawned")  # a controller dying here leaves a bot no record names
        self._children[process.pid] = process
        stat = read_stat(process.pid)
        record = {"instance": placement.instance, "release": placement.release,
                  "config_sha256": placement.config_sha256, "pid": process.pid,
                  "start_ticks": stat.start_ticks if stat else 0, "metrics_port": port,
                  "metrics_url": metrics_url(placement.manifest, port), "started_at": self.clock.time(),
                  "log_offset": offset, "stopped": False}
        self._write_record(placement.instance, record)  # before waiting: a controller killed now finds it
        running = self._running(placement.instance, record)
        log.info("deploy_starting", instance=placement.instance, release=placement.release, pid=process.pid,
                 metrics_url=running.metrics_url)
        try:
            await self._wait_ready(running, record["start_ticks"], output, placement)
        except BaseException:
            await self._terminate(running, grace=1.0)
            self._forget(placement.instance)
            raise
        log.info("deploy_started", instance=placement.instance, release=placement.release, pid=process.pid)
        return running

    async def _wait_ready(self, running: Running, start_ticks: int, output: Path, placement: Placement) -> None:
        assert running.pid is not None
        exited = asyncio.create_task(wait_exit(running.pid, start_ticks, None), name=f"deploy-exit-{running.pid}")

        async def gone() -> str | None:
            await asyncio.wait({exited}, timeout=READY_POLL)
            if not exited.done():
                return None
            status = self._reap(running.pid)
            with open(output, "rb") as file:
                file.seek(running.log_offset)
                text = file.read().decode("utf-8", "replace")
            how = f" with status {status}" if status is not None else ""
            return f"ended during start-up{how}; its last output:\n{tail(text, placement.secrets())}"

        try:
            await wait_ready(running.metrics_url, timeout=self.ready_timeout, gone=gone,
                             what=f"instance {running.instance}: release {running.release}")
        finally:
            exited.cancel()

    # --- bots no record names --------------------------------------------------------------------------

    def _take_lock(self, instance: str) -> int:
        """The instance's lock file, opened and locked; a DeployError when a process holds it."""
        fd = os.open(self._folder(instance) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holders = lock_holders(self._folder(instance) / LOCK_FILE)
            raise DeployError(f"instance {instance}: pid {', '.join(map(str, holders)) or 'unknown'} still holds "
                              f"{LOCK_FILE}: a bot of this instance runs that this controller did not start") from None
        return fd

    async def _kill_strays(self, instance: str, running: Running | None) -> list[int]:
        """SIGKILL the process group of every holder of the instance's lock but ``running``'s bot.

        A stray is a bot whose controller died before recording it: it trades an account that a
        new bot is about to be given (or that a rollback is making safe), so it gets no grace.
        """
        path = self._folder(instance) / LOCK_FILE
        if not path.exists() or not _locked(path):
            return []
        strays = [pid for pid in lock_holders(path) if running is None or pid != running.pid]
        for pid in strays:
            stat = read_stat(pid)
            if stat is None:
                continue
            log.warning("deploy_stray_killed", instance=instance, pid=pid,
                        reason="holds the instance's lock and no placement record names it")
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == pid:  # a session leader, as we start bots: it and what it started
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            if not await wait_exit(pid, stat.start_ticks, KILL_WAIT):
                raise DeployError(f"instance {instance}: stray bot pid {pid} is still there "
                                  f"{KILL_WAIT:g} s after SIGKILL")
            self._reap(pid)
        return strays

    # --- stop ------------------------------------------------------------------------------------------

    async def _terminate(self, running: Running, grace: float) -> None:
        """SIGTERM to the bot's process group, SIGKILL after ``grace`` seconds (at once when it is 0);
        return once it is gone."""
        pid = running.pid
        assert pid is not None
        start_ticks = self._read_record(running.instance)["start_ticks"]
        signals = ((signal.SIGTERM, grace),) if grace > 0 else ()
        for signum, wait in (*signals, (signal.SIGKILL, KILL_WAIT)):
            if not _alive(pid, start_ticks):
                break
            if signum == signal.SIGKILL and signals:
                log.warning("deploy_kill", instance=running.instance, pid=pid, grace=grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)  # its own session: the group is the bot and what it started
            if await wait_exit(pid, start_ticks, wait):
                break
        else:
            raise DeployError(f"instance {running.instance}: pid {pid} is still there {KILL_WAIT:g} s after SIGKILL")
        self._reap(pid)

    def _forget(self, instance: str) -> None:
        """No bot runs: remove its credentials and mark the placement stopped."""
        folder = self._folder(instance)
        (folder / "exchange.json").unlink(missing_ok=True)
        record = self._read_record(instance)
        if record is not None and not record.get("stopped"):
            self._write_record(instance, {**record, "stopped": True, "stopped_at": self.clock.time()})

    def _reap(self, pid: int) -> int | None:
        """Collect a bot we started that has ended (no zombie left); its exit status, if it was ours."""
        process = self._children.get(pid)
        if process is None or process.poll() is None:
            return None
        del self._children[pid]
        return process.returncode

    # --- files ------------------------------------------------------------------------------------------

    def _lock(self, instance: str) -> asyncio.Lock:
        check_instance(instance)
        return self._locks.setdefault(instance, asyncio.Lock())

    def _folder(self, instance: str) -> Path:
        return instance_folder(self.state_dir, instance)

    def _read_record(self, instance: str) -> dict | None:
        try:
            return json.loads((self._folder(instance) / "placement.json").read_text())
        except FileNotFoundError:
            return None

    def _write_record(self, instance: str, record: dict) -> None:
        write_private(self._folder(instance) / "placement.json", json.dumps(record, indent=2, sort_keys=True))

    def _running(self, instance: str, record: dict) -> Running:
        return Running(instance=instance, release=record["release"], config_sha256=record["config_sha256"],
                       pid=record["pid"], metrics_url=record["metrics_url"],
                       log_file=self._folder(instance) / OUTPUT_LOG, journal_unit=None,
                       started_at=record["started_at"], log_offset=record["log_offset"])


def _locked(path: Path) -> bool:
    """Whether a process holds the flock of ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if this test took it
    return False


def lock_holders(path: Path, proc: Path = Path("/proc")) -> list[int]:
    """The pids (other than this process) with a descriptor open on ``path``, found through /proc.

    /proc/locks would name the process that took the lock, which is the controller that spawned
    the bot (perhaps dead), not the bot holding it now: the open descriptors tell who holds it.
    """
    target = os.stat(path)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for descriptor in descriptors:
            try:
                opened = os.stat(descriptor)
            except OSError:
                continue
            if (opened.st_dev, opened.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry.name))
                break
    return sorted(found)


def _alive(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start_ticks``, and not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.alive and stat.start_ticks == start_ticks


async def wait_exit(pid: int, start_ticks: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` real seconds (None: no bound) for the process to end; whether it did.

    Linux notifies through a pidfd (5.3 and later), for any process, ours or not; elsewhere /proc
    is read every `EXIT_POLL` seconds.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        fd = None
    try:
        async with asyncio.timeout(timeout):
            if fd is None or not _alive(pid, start_ticks):  # checked after opening: the fd is the bot's
                while _alive(pid, start_ticks):
                    await asyncio.sleep(EXIT_POLL)
                return True
            loop = asyncio.get_running_loop()
            ended = loop.create_future()
            loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
            try:
                await ended
            finally:
                loop.remove_reader(fd)
            return True
    except TimeoutError:
        return False
    finally:
        if fd is not None:
            os.close(fd)
