"""A stand-in cluster on this machine, every piece a real process: PostgreSQL (the Dagster instance and the answer
journal), Redis (Celery's broker and results, and the account's shared rate limit), an S3-compatible server
(moto: input files, Delta and LanceDB tables), the user-code gRPC server, the dagster daemon, the webserver and
Celery workers. The same pieces as deploy/compose.yaml and the Helm values, without containers.

    scripts/cluster up [--dir .cluster] [--workers 2]   # prints the webserver URL; writes DIR/env.sh
    scripts/cluster status | down

Environment variables given to ``up`` (OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL, AI_ASSETS_START, ...) pass to
every process. State (PIDs, ports, URLs) is in DIR/state.json; ``down`` stops everything by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the service starters are in tests/
from tests.services import (
    Service,
    ServiceError,
    create_database,
    free_port,
    s3_env,
    start_postgres,
    start_redis,
    start_s3,
    stop_pid,
    stop_postgres,
    wait_for_port,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUCKET = "lake"
LOCATION = "ai_assets_cluster"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _spawn(name: str, command: list[str], env: dict[str, str], logs: Path) -> int:
    with (logs / f"{name}.log").open("ab") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return process.pid


def _wait_http(url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise ServiceError(f"{url} did not answer within {timeout_s:g}s\n{log.read_text(errors='replace')[-3000:]}")


def up(folder: Path, workers: int, webserver: bool, owner: int | None = None) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / "state.json"
    if state_file.exists():
        raise ServiceError(f"a cluster is already up in {folder} (scripts/cluster down --dir {folder})")
    logs, home = folder / "logs", folder / "home"
    logs.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    state: dict[str, Any] = {"folder": str(folder), "processes": {}, "services": {}}
    try:
        _start(folder, logs, home, workers, webserver, state, owner)
    except BaseException:
        state_file.write_text(json.dumps(state, indent=2))
        down(folder)
        raise
    state_file.write_text(json.dumps(state, indent=2))
    return state


def _start(folder: Path, logs: Path, home: Path, workers: int, webserver: bool, state: dict[str, Any],
           owner: int | None) -> None:
    postgres = start_postgres(owner=owner)  # in a folder of its own under /tmp: the postgres user can reach it
    state["services"]["postgres"] = _service(postgres)
    journal = create_database(postgres, "ai_assets")
    dagster_db = create_database(postgres, "dagster")
    redis = start_redis(folder / "redis", owner=owner)
    state["services"]["redis"] = _service(redis)
    s3 = start_s3(folder / "s3", buckets=[BUCKET])
    state["services"]["s3"] = _service(s3)
    redis_base = redis.url.rsplit("/", 1)[0]
    grpc_port = free_port()
    env = {
        **os.environ,
        **s3_env(s3.url),
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": dagster_db,
        "DAGSTER_CELERY_BROKER_URL": f"{redis_base}/0",
        "DAGSTER_CELERY_BACKEND_URL": f"{redis_base}/1",
        "AI_ASSETS_RATE_LIMIT_STORE": f"{redis_base}/2",
        "AI_ASSETS_JOURNAL": journal,
        "AI_ASSETS_INPUT": os.environ.get("AI_ASSETS_INPUT", f"s3://{BUCKET}/reviews/{{partition}}.jsonl"),
        "AI_ASSETS_TABLES": os.environ.get("AI_ASSETS_TABLES", f"s3://{BUCKET}/tables"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
        "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "sk-local-cluster"),
    }
    shutil.copy(HERE / "dagster.yaml", home / "dagster.yaml")
    workspace = folder / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
                         f"      location_name: {LOCATION}\n")
    state["env"] = {k: env[k] for k in sorted(env) if k.startswith(("DAGSTER_", "AI_ASSETS_", "AWS_"))
                    or k in ("PYTHONPATH", "OPENAI_BASE_URL", "OPENAI_MODEL")}
    processes = state["processes"]
    processes["code_server"] = _spawn("code_server", [
        sys.executable, "-m", "dagster", "api", "grpc", "-h", "127.0.0.1", "-p", str(grpc_port), "-f",
        str(HERE / "code_location.py"), "-d", str(ROOT), "--location-name", LOCATION], env, logs)
    wait_for_port(grpc_port, 120, what="user-code server", log=logs / "code_server.log",
                  pid=processes["code_server"])
    processes["daemon"] = _spawn("daemon", [_bin("dagster-daemon"), "run", "-w", str(workspace)], env, logs)
    for i in range(workers):
        processes[f"worker{i + 1}"] = _spawn(f"worker{i + 1}", [
            _bin("celery"), "-A", "dagster_celery.app", "worker", "-Q", "dagster", "-c", "1",
            "--prefetch-multiplier=1", "-n", f"worker{i + 1}@%h", "-l", "INFO"], env, logs)
    if webserver:
        port = int(os.environ.get("AI_ASSETS_CLUSTER_UI_PORT") or free_port())
        processes["webserver"] = _spawn("webserver", [
            _bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)], env, logs)
        state["webserver"] = f"http://127.0.0.1:{port}"
        _wait_http(f"{state['webserver']}/server_info", 120, logs / "webserver.log")
    (folder / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in state["env"].items()))


def _service(service: Service) -> dict[str, Any]:
    return {"url": service.url, "pid": service.pid, "folder": str(service.folder), "port": service.port,
            "extra": service.extra}


def down(folder: Path) -> None:
    state_file = folder / "state.json"
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    for name in ("webserver", "daemon", *sorted(k for k in state["processes"] if k.startswith("worker")),
                 "code_server"):
        if name in state["processes"]:
            stop_pid(state["processes"][name], group=True)
    services = state["services"]
    if "s3" in services:
        stop_pid(services["s3"]["pid"], group=True)
    if "redis" in services:
        stop_pid(services["redis"]["pid"])
    if "postgres" in services:
        pg = services["postgres"]
        stop_postgres(Service("postgres", pg["url"], pg["pid"], Path(pg["folder"]), pg["port"], pg["extra"]))
        shutil.rmtree(pg["folder"], ignore_errors=True)
    state_file.unlink()


def status(folder: Path) -> dict[str, bool]:
    state_file = folder / "state.json"
    if not state_file.exists():
        return {}
    state = json.loads(state_file.read_text())
    pids = {**state["processes"], **{k: v["pid"] for k, v in state["services"].items()}}
    return {name: Path(f"/proc/{pid}").exists() for name, pid in pids.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=str(ROOT / ".cluster"), help="state, logs and DAGSTER_HOME")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--no-webserver", action="store_true")
    parser.add_argument("--owner", type=int, default=None,
                        help="stop PostgreSQL and Redis when this process dies (a test run); default: at `down`")
    args = parser.parse_args(argv)
    folder = Path(args.dir).resolve()
    if args.command == "up":
        state = up(folder, args.workers, not args.no_webserver, args.owner)
        print(f"cluster up in {folder}: {', '.join(state['processes'])}, {', '.join(state['services'])}")
        if "webserver" in state:
            print(f"webserver: {state['webserver']}")
        print(f"environment: source {folder / 'env.sh'}")
    elif args.command == "down":
        down(folder)
        print(f"cluster in {folder} stopped")
    else:
        alive = status(folder)
        if not alive:
            print(f"no cluster in {folder}")
            return 1
        for name, running in alive.items():
            print(f"{name:12} {'running' if running else 'STOPPED'}")
        return 0 if all(alive.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
