"""Throwaway PostgreSQL and Redis servers on loopback, from the installed Debian binaries.

Used by the tests in tests/servers/ (each class starts its own, stopped in a class cleanup) and by
.ci/run (`python -m tests.servers.real serve`, for the suite's PostgreSQL + Redis run).
Standard library only: .ci/run calls it with any Python 3.11+.

Each server gets a fresh temporary directory, a free loopback port, no durability (PostgreSQL
with fsync off; Redis with no snapshot and no append-only file), and is stopped, its directory
deleted, by `stop()`, which is safe to call twice and is also registered with atexit.

    python -m tests.servers.real serve --env-file F [--only postgres|redis]  # until SIGTERM / parent exit
    python -m tests.servers.real which                                       # what is installed
"""

from __future__ import annotations

import argparse
import atexit
import functools
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.processes import free_port

PG_DATABASE = "smtest"
PG_USER = "postgres"
START_TIMEOUT = 30.0
# Debian's package names, for the skip reason and for .ci/run.
PACKAGES = {"postgres": "postgresql", "redis": "redis-server"}


class ServerUnavailable(RuntimeError):
    """The server's binaries are not installed here (not: it failed to start, which is an error)."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path)) or (0,)


def postgres_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`: SMTEST_PG_BINDIR, else Debian's
    /usr/lib/postgresql/<newest>/bin, else wherever `initdb` is on PATH."""
    candidates = [os.environ.get("SMTEST_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        if candidate and all(
            os.access(Path(candidate) / name, os.X_OK) for name in ("initdb", "postgres", "pg_ctl")
        ):
            return Path(candidate)
    return None


def redis_binary() -> Path | None:
    found = os.environ.get("SMTEST_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    return Path(found) if os.access(found, os.X_OK) else None


def missing(kind: str) -> str | None:
    """Why `kind` ("postgres" or "redis") cannot run here, or None when it can."""
    found = postgres_bindir() if kind == "postgres" else redis_binary()
    if found is None:
        what = "initdb/postgres (e.g. /usr/lib/postgresql/15/bin)" if kind == "postgres" else "redis-server"
        return f"{what} is not installed: `apt-get install {PACKAGES[kind]}` (.ci/run installs it)"
    return None


def _installed(kind: str) -> Path:
    """`postgres_bindir()` or `redis_binary()`; ServerUnavailable when it is not installed."""
    found = postgres_bindir() if kind == "postgres" else redis_binary()
    if found is None:
        raise ServerUnavailable(missing(kind))
    return found


@contextmanager
def _new_directory(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, deleted if what is built in it fails (or is interrupted)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def _run_as() -> tuple[str | None, int, int]:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (Debian's package creates
    that user), else `nobody`. Returns (user name or None for ourselves, uid, gid)."""
    if os.geteuid() != 0:
        return None, os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL"
    )


def _spawn(command: list[str], base: Path, log: Path, **options) -> subprocess.Popen:
    """`command` in `base`, in a session of its own (a signal to the suite's process group does
    not reach it), its output appended to `log`; `options` go to Popen (the user to run it as)."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            cwd=base,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **options,
        )


def _wait(ready, process: subprocess.Popen, log: Path, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout}s:\n{_tail(log)}")


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def _stop_pid(pid: int, signals: tuple[int, ...], wait: float = 15.0) -> None:
    """Signal `pid` with each of `signals` in turn until it is gone (a zombie counts as gone:
    its parent reaps it)."""
    for signum in signals:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


class Server:
    kind = ""

    def __init__(self, base: Path, port: int, pid: int, process: subprocess.Popen | None = None):
        self.base, self.port, self.pid, self.process = base, port, pid, process
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _alive(self.pid)

    def kill(self) -> None:
        """Stop the server at once, as a crash would (the directory stays until stop())."""
        _stop_pid(self.pid, (signal.SIGKILL,))
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call again."""
        try:
            _stop_pid(self.pid, self.stop_signals)
            if self.process is not None:
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    stop_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL)

    @classmethod
    def _launch(
        cls,
        base: Path,
        attempts: int,
        spawn: Callable[[int, Path], subprocess.Popen],
        ready: Callable[[Server], bool],
    ) -> Server:
        """Start the server on a free port until it answers `ready`, at most `attempts` times
        (another process may take the port between choosing and binding it). `spawn(port, log)`
        starts the process, its output into `log`."""
        last_error: Exception | None = None
        for _ in range(attempts):
            port = free_port()
            log = base / f"{cls.kind}-{port}.log"
            process = spawn(port, log)
            server = cls(base, port, process.pid, process)
            try:
                _wait(functools.partial(ready, server), process, log, cls.kind)
            except RuntimeError as err:
                last_error = err
                _stop_pid(process.pid, cls.stop_signals)
                process.wait(timeout=10)
                atexit.unregister(server.stop)
                continue
            return server
        raise RuntimeError(f"{cls.kind} did not start in {attempts} attempts: {last_error}")


class PostgresServer(Server):
    """`initdb` into a fresh directory (trust authentication on loopback), `postgres` on a free
    port, a `smtest` database created; `url` is a DATABASE_URL for it."""

    kind = "postgres"
    # SIGINT: PostgreSQL's fast shutdown; SIGQUIT: immediate; SIGKILL as the last resort.
    stop_signals = (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def database_url(self, name: str) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, database: str = PG_DATABASE) -> str:
        bindir = postgres_bindir()
        psql = bindir / "psql" if bindir and (bindir / "psql").exists() else shutil.which("psql")
        result = subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        if result.returncode:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def restart(self, *, timeout: float = START_TIMEOUT) -> float:
        """`pg_ctl restart -m fast` on the same data directory, port and options, as an operator
        restarts the server: sessions are terminated ("terminating connection due to
        administrator command"), connections are refused until it is back. Returns once it
        accepts connections again, with the seconds it took.

        The new postmaster is pg_ctl's child, not this process's: `pid` follows it (from
        postmaster.pid), so stop() and kill() still reach the running server."""
        bindir = _installed("postgres")
        user, uid, gid = _run_as()
        as_user = {"user": uid, "group": gid, "extra_groups": []} if user else {}
        data = self.base / "data"
        log = self.base / f"postgres-{self.port}-restart.log"
        log.touch()
        os.chown(log, uid, gid)
        started = time.monotonic()
        # -l: the new server's output goes to a file, not to pg_ctl's pipes, which it would hold open.
        result = subprocess.run(
            [
                str(bindir / "pg_ctl"),
                "restart",
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(log),
            ],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            **as_user,
        )
        if result.returncode:
            raise RuntimeError(f"pg_ctl restart failed:\n{result.stdout}\n{result.stderr}\n{_tail(log)}")
        took = time.monotonic() - started
        if self.process is not None:
            self.process.wait(timeout=10)  # the first postmaster has exited: reap it
            self.process = None
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        return took

    @classmethod
    def start(cls, *, attempts: int = 3) -> PostgresServer:
        bindir = _installed("postgres")
        user, uid, gid = _run_as()
        with _new_directory("smtest-pg-") as base:
            os.chown(base, uid, gid)
            data = base / "data"
            as_user = {"user": uid, "group": gid, "extra_groups": []} if user else {}
            initdb = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                cwd=base,
                capture_output=True,
                text=True,
                timeout=120,
                **as_user,
            )
            if initdb.returncode:
                raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")

            def spawn(port: int, log: Path) -> subprocess.Popen:
                log.touch()
                os.chown(log, uid, gid)
                return _spawn(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-h",
                        "127.0.0.1",
                        "-k",
                        str(base),
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ],
                    base,
                    log,
                    **as_user,
                )

            server = cls._launch(base, attempts, spawn, lambda server: _pg_ready(bindir, server.port))
            server.psql(f"CREATE DATABASE {PG_DATABASE}", database="postgres")
            return server


def _pg_ready(bindir: Path, port: int) -> bool:
    isready = bindir / "pg_isready"
    if not isready.exists():
        return _connects(port)
    return (
        subprocess.run(
            [str(isready), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-t", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer(Server):
    """`redis-server` on a free loopback port, nothing persisted; `url(db)` is a redis:// URL."""

    kind = "redis"

    def url_for(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def url(self) -> str:
        return self.url_for(0)

    def command(self, *words: str) -> str:
        """One command over the wire (no client library needed); the raw first reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall((f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)).encode())
            return sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]

    def pause(self) -> None:
        """Stop the server as `systemctl stop redis-server` would (SIGTERM), keeping its port and
        directory for resume(); nothing was persisted, so it comes back empty."""
        _stop_pid(self.pid, self.stop_signals)
        if self.process is not None:
            self.process.wait(timeout=10)

    def resume(self) -> None:
        """Start the server again on the same port after pause() (or kill()), once it answers."""
        if self.alive():
            return
        binary = _installed("redis")
        log = self.base / f"{self.kind}-{self.port}.log"
        self.process = _spawn_redis(binary, self.base, self.port, log)
        self.pid = self.process.pid
        _wait(self._answers, self.process, log, self.kind)

    def _answers(self) -> bool:
        try:
            return self.command("PING") == "+PONG"
        except OSError:
            return False

    @classmethod
    def start(cls, *, attempts: int = 3) -> RedisServer:
        binary = _installed("redis")
        with _new_directory("smtest-redis-") as base:
            return cls._launch(
                base, attempts, lambda port, log: _spawn_redis(binary, base, port, log), cls._answers
            )


def _spawn_redis(binary: Path, base: Path, port: int, log: Path) -> subprocess.Popen:
    return _spawn(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
            "--daemonize",
            "no",
            "--databases",
            "16",
        ],
        base,
        log,
    )


# The command line (.ci/run) ---------------------------------------------------------------


def serve(env_file: Path, only: str | None) -> int:
    """Start the servers, write their NAME=value lines to `env_file` (complete once it exists),
    and keep them until SIGTERM/SIGINT or until the parent process (the CI script) is gone;
    then stop them and delete their directories."""
    parent = os.getppid()
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.append(True))
    started: list[Server] = []
    try:
        if only in (None, "postgres") and not stopping:
            started.append(PostgresServer.start())
        if only in (None, "redis") and not stopping:
            started.append(RedisServer.start())
        lines = []
        for server in started:
            if isinstance(server, PostgresServer):
                lines.append(f"DATABASE_URL={server.url}")
            else:
                lines += [f"CACHE_URL={server.url_for(0)}", f"REDIS_URL={server.url_for(1)}"]
            print(
                f"started {server.kind} (pid {server.pid}) on 127.0.0.1:{server.port}",
                file=sys.stderr,
                flush=True,
            )
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text("".join(line + "\n" for line in lines))
        partial.rename(env_file)
        while not stopping and os.getppid() == parent:
            time.sleep(0.2)
    finally:
        for server in started:
            server.stop()
            print(f"stopped {server.kind} (pid {server.pid})", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.real", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "serve",
        help="start the servers, write DATABASE_URL, CACHE_URL, REDIS_URL to --env-file, "
        "stop them on SIGTERM or when the parent exits",
    )
    run.add_argument("--env-file", type=Path, required=True)
    run.add_argument("--only", choices=("postgres", "redis"))
    sub.add_parser("which", help="say which servers can run here (exit 1 if one cannot)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.env_file, args.only)
    for kind in ("postgres", "redis"):
        print(f"{kind}: {missing(kind) or 'installed'}")
    return 0 if not (missing("postgres") or missing("redis")) else 1


if __name__ == "__main__":
    sys.exit(main())
