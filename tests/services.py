"""Real services for integration tests and the local stand-in cluster: PostgreSQL, Redis and an S3-compatible server
(moto), started as plain processes on 127.0.0.1 and stopped by PID. No systemd, no containers.

PostgreSQL and Redis come from Debian's ``postgresql`` and ``redis-server`` packages; ``install_packages`` installs
them with apt-get when they are missing and this process is root. As root, PostgreSQL runs as the ``postgres`` user
(it refuses to run as root), in a data folder that user owns.

    with postgres_server() as pg, redis_server() as redis, s3_server(buckets=["lake"]) as s3:
        ResultCacheResource(path=pg.url)                      # postgresql+psycopg2://postgres@127.0.0.1:port/ai_assets
        OpenAICompatibleResource(..., rate_limit_store=redis.url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

S3_KEY = "testing"
S3_SECRET = "testing"  # moto accepts any credentials
S3_REGION = "us-east-1"


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached."""


@dataclass
class Service:
    """A started service: its URL, its process id (or process-group leader) and its folder."""

    name: str
    url: str
    pid: int
    folder: Path
    port: int
    extra: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 60.0, *, what: str = "service", log: Path | None = None,
                  pid: int | None = None) -> None:
    """Until 127.0.0.1:``port`` accepts connections; fails at once if process ``pid`` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if pid is not None and not alive(pid):
                break
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    why = "exited" if pid is not None and not alive(pid) else f"did not listen within {timeout_s:g}s"
    raise ServiceError(f"{what} {why} (127.0.0.1:{port})\n{tail}")


def install_packages(packages: Sequence[str]) -> None:
    """apt-get install the Debian packages that are missing (root only; otherwise say what to install)."""
    missing = [p for p in packages
               if subprocess.run(["dpkg", "-s", p], check=False, capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"missing Debian packages {missing}: `apt-get install {' '.join(missing)}` installs them")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                     *missing]):
        done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


_GUARD = """
import os, signal, sys, time
owner, owner_start, target, target_start, sig = sys.argv[1:6]
owner, target, sig, group = int(owner), int(target), int(sig), sys.argv[6] == "group"
def stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
def alive(pid, start):
    # The same process, not one that got its pid after it died: its start time (proc(5), /proc/PID/stat field
    # 22) must match. A zombie is dead. Without /proc (start ""), only whether the pid exists.
    if start:
        fields = stat(pid)
        return fields is not None and fields[19] == start and fields[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
def members():
    # Live members of the process group: the leader may exit on SIGTERM while a child that ignores it lives on.
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(target, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in os.listdir("/proc"):
        fields = stat(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[2] == str(target) and fields[0] != "Z":
            return True
    return False
def running():
    if not group:
        return alive(target, target_start)
    if alive(target, target_start):
        return True
    fields = stat(target)
    if target_start and fields is not None and fields[19] != target_start:
        return False  # the pid is a stranger's, so the group it led is empty (a pid that is a group id is not reused)
    return members()
def send(s):
    try:
        (os.killpg if group else os.kill)(target, s)
    except ProcessLookupError:
        pass
while running():
    if not alive(owner, owner_start):
        send(sig)
        deadline = time.monotonic() + 15
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if running():
            send(signal.SIGKILL)
        break
    time.sleep(0.5)
"""


def _start_time(pid: int) -> str:
    """``pid``'s start time (proc(5): /proc/PID/stat field 22), which tells it from a later process given the same
    pid; "" without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


SELF = -1  # owner: the process that starts the service


def guard(pid: int, sig: int = signal.SIGTERM, owner: int | None = SELF, *, group: bool = False) -> None:
    """Stop the daemon ``pid`` (which outlives whoever started it: pg_ctl and redis-server detach) once ``owner``
    (this process by default) is gone, also when it is killed and no teardown runs (a test run cut by a timeout
    left a PostgreSQL behind). ``owner=None``: nobody, the caller stops it (the cluster's ``down``). The watcher
    sits in its own session, so the signal that kills the owner's process group spares it. ``group``: signal the
    process group ``pid`` leads (``dagster dev`` and ``dagster-daemon``, whose children would outlive them); one
    that ignores ``sig`` gets SIGKILL 15 s later."""
    if owner is None:
        return
    owner = os.getpid() if owner == SELF else owner
    subprocess.Popen([sys.executable, "-c", _GUARD, str(owner), _start_time(owner), str(pid), _start_time(pid),
                      str(int(sig)), "group" if group else "one"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def stop_pid(pid: int, *, group: bool = False, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; ``group`` signals the whole process group led by ``pid``."""
    def send(sig: int) -> bool:
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    if not send(signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not (_group_alive(pid) if group else alive(pid)):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member: its leader may die of SIGTERM while a child that ignores
    it lives on. Without /proc: whether killpg finds any member."""
    proc = Path("/proc")
    if not (proc / "self").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else []
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


# --- PostgreSQL ---------------------------------------------------------------------------------------------------

def _pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise ServiceError(f"PostgreSQL's {tool} was not found: install Debian's postgresql package")
    return versions[-1]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres(folder: Path | None = None, port: int | None = None, databases: Sequence[str] = ("ai_assets",),
                   owner: int | None = SELF) -> Service:
    """initdb + pg_ctl start on 127.0.0.1:``port``; creates ``databases``. The URL names the first one, with the
    psycopg2 driver spelled out (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3). It stops when ``owner``
    dies (see ``guard``)."""
    install_packages(["postgresql"])
    port = port or free_port()
    # The data folder must be reachable by the postgres user: pytest's tmp folders (mode 700, root's) are not.
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="ai_assets-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    log = folder / "postgres.log"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        folder.chmod(0o755)
        for path in (folder, *folder.parents):
            if path == Path("/"):
                break
            if not os.stat(path).st_mode & 0o001:
                raise ServiceError(f"the postgres user cannot reach {folder}: {path} is not searchable by others")
        os.chown(folder, user.pw_uid, user.pw_gid)
    if not (data / "PG_VERSION").exists():
        _run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                           "--no-sync"]), "initdb")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    _run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                       "start"]), "pg_ctl start", log)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    guard(pid, signal.SIGINT, owner)  # PostgreSQL's fast shutdown
    service = Service("postgres", f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{databases[0]}", pid, folder,
                      port, {"data": str(data)})
    for name in databases:
        create_database(service, name)
    return service


def create_database(service: Service, name: str) -> str:
    """Create database ``name`` if missing; its URL."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=service.port, user="postgres", dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:{service.port}/{name}"


def stop_postgres(service: Service) -> None:
    data = service.extra.get("data", str(service.folder / "data"))
    done = subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        stop_pid(service.pid)


@contextlib.contextmanager
def postgres_server(databases: Sequence[str] = ("ai_assets",)) -> Iterator[Service]:
    service = start_postgres(databases=databases)
    try:
        yield service
    finally:
        stop_postgres(service)
        shutil.rmtree(service.folder, ignore_errors=True)


# --- Redis --------------------------------------------------------------------------------------------------------

def start_redis(folder: Path, port: int | None = None, owner: int | None = SELF) -> Service:
    """redis-server on 127.0.0.1:``port``, daemonized, without persistence; it stops when ``owner`` dies (see
    ``guard``)."""
    install_packages(["redis-server"])
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    pidfile, log = folder / "redis.pid", folder / "redis.log"
    _run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile",
          str(pidfile), "--logfile", str(log), "--dir", str(folder), "--save", "", "--appendonly", "no"],
         "redis-server", log)
    try:
        wait_for_port(port, what="redis-server", log=log)
        pid = _pid_from(pidfile, "redis-server")
        guard(pid, owner=owner)
    except BaseException:
        _shutdown_redis(port)  # daemonized: nothing else would stop it
        raise
    return Service("redis", f"redis://127.0.0.1:{port}/0", pid, folder, port)


def _shutdown_redis(port: int) -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"SHUTDOWN NOSAVE\r\n")


def _pid_from(pidfile: Path, what: str, timeout_s: float = 10.0) -> int:
    """The pid a daemon writes to ``pidfile``. The file can exist before its number is in it (redis creates it,
    then writes): seen as ``int('')`` once under load, so it is read until it holds a number."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} wrote no pid to {pidfile} within {timeout_s:g}s (read {text!r})")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server() -> Iterator[Service]:
    folder = Path(tempfile.mkdtemp(prefix="ai_assets-redis-"))
    service = start_redis(folder)
    try:
        yield service
    finally:
        stop_pid(service.pid)
        shutil.rmtree(folder, ignore_errors=True)


# --- S3 (moto) ----------------------------------------------------------------------------------------------------

def start_s3(folder: Path, port: int | None = None, buckets: Sequence[str] = ()) -> Service:
    """moto's S3-compatible server on 127.0.0.1:``port`` (its own process group), with ``buckets`` created."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "s3.log"
    with log.open("ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, what="moto server", log=log)
    service = Service("s3", f"http://127.0.0.1:{port}", process.pid, folder, port)
    for bucket in buckets:
        s3_client(service).create_bucket(Bucket=bucket)
    return service


def s3_client(service: Service):  # type: ignore[no-untyped-def]  # boto3's client has no static type
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3", endpoint_url=service.url, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                        region_name=S3_REGION)


def s3_env(endpoint: str) -> dict[str, str]:
    """The AWS environment variables that point fsspec, delta-rs and Lance at ``endpoint``."""
    return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION,
            "AWS_DEFAULT_REGION": S3_REGION, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ALLOW_HTTP": "true"}


@contextlib.contextmanager
def s3_server(buckets: Sequence[str] = ()) -> Iterator[Service]:
    folder = Path(tempfile.mkdtemp(prefix="ai_assets-s3-"))
    service = start_s3(folder, buckets=buckets)
    try:
        yield service
    finally:
        stop_pid(service.pid, group=True)
        shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout[-1000:]}\n{tail}")
