"""Hostile review of the front door: `scripts/test` when it is interrupted, and the service guard.

`scripts/test` runs here as a copy in a temp folder with stand-ins for ``.venv/bin/{python,mypy,mkdocs,ruff}``,
``scripts/setup`` and ``dpkg`` (real processes that record their pid and the signals they get), so a test takes
seconds and installs nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import alive

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for pytest / mypy / mkdocs: records its pid and arguments, sleeps FD_SLEEP_<name> seconds, exits
# FD_RC_<name>. Only the pytest stand-in handles SIGINT (as pytest does: KeyboardInterrupt, a teardown, exit 2);
# mypy and mkdocs keep Python's default, as the real ones do.
STUB = """
import os, signal, sys, time
log, name = os.environ["FD_LOG"], os.path.basename(sys.argv[0])
def note(line):
    with open(os.path.join(log, name + ".log"), "a") as f:
        f.write(line + "\\n")
note("pid %d %s" % (os.getpid(), " ".join(sys.argv[1:])))
if name == "python":
    def interrupted(sig, frame):
        note("signal %d" % sig)
        time.sleep(0.5)  # the teardown
        sys.exit(2)
    signal.signal(signal.SIGINT, interrupted)
time.sleep(float(os.environ.get("FD_SLEEP_" + name, "0")))
sys.exit(int(os.environ.get("FD_RC_" + name, "0")))
"""


def _tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo, stubs, log, tmp = (tmp_path / d for d in ("repo", "stubs", "log", "tmp"))
    for folder in (repo / "scripts", repo / ".venv" / "bin", stubs, log, tmp):
        folder.mkdir(parents=True)
    (repo / "scripts" / "test").write_text((ROOT / "scripts" / "test").read_text())
    for path in (repo / "scripts" / "setup", repo / ".venv" / "bin" / "ruff", stubs / "dpkg"):
        path.write_text("#!/bin/sh\nexit 0\n")
    for name in ("python", "mypy", "mkdocs"):
        (repo / ".venv" / "bin" / name).write_text(f"#!{sys.executable}\n{STUB}")
    for path in [*(repo / "scripts").iterdir(), *(repo / ".venv" / "bin").iterdir(), *stubs.iterdir()]:
        path.chmod(0o755)
    env = os.environ | {"FD_LOG": str(log), "TMPDIR": str(tmp), "PATH": f"{stubs}:{os.environ['PATH']}"}
    return repo, env


def _start(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    # Its own process group, as a shell gives a command it runs; SIGINT at its default (a test runner's may not be).
    default_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
    return subprocess.Popen([sys.executable, "-c", default_sigint, str(repo / "scripts" / "test"), *args], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _pids(log: Path) -> dict[str, int]:
    return {f.stem: int(f.read_text().split()[1]) for f in log.glob("*.log")}


def _wait_started(log: Path) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while len(pids := _pids(log)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 3, pids
    return pids


def _assert_all_stopped(pids: dict[str, int], tmp: Path) -> None:
    deadline = time.monotonic() + 5
    while any(map(alive, pids.values())) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left running after scripts/test exited: {left}"
    assert not list(tmp.iterdir()), f"temp folder left: {list(tmp.iterdir())}"


def test_sigterm_to_the_script_alone_stops_the_tests_types_and_docs(tmp_path: Path) -> None:
    """`docker stop` sends SIGTERM to the container's main process only (Docker docs, "docker container stop"),
    as does `kill PID` from a CI job's cancel; bash runs a trap only after the foreground command ends (bash
    manual, "Signals"). Before: the script exited 143 at once and left pytest, mypy and mkdocs running (mkdocs
    writing into the temp folder the script had just removed)."""
    repo, env = _tree(tmp_path)
    env |= {"FD_SLEEP_python": "60", "FD_SLEEP_mypy": "60", "FD_SLEEP_mkdocs": "60"}
    script = _start(repo, env, "-k", "x")
    pids = _wait_started(tmp_path / "log")
    script.send_signal(signal.SIGTERM)
    rc = script.wait(20)
    _assert_all_stopped(pids, tmp_path / "tmp")
    assert rc in (128 + signal.SIGTERM, -signal.SIGTERM), rc


def test_ctrl_c_stops_at_once_and_pytest_gets_one_sigint(tmp_path: Path) -> None:
    """Ctrl-C: the terminal sends SIGINT to its foreground process group (POSIX, "General Terminal Interface",
    INTR). Before, mypy and mkdocs died of it and the script reported them as failures ("cat: .../mypy.rc: No such
    file", a KeyboardInterrupt traceback, "scripts/test: mypy failed", the same for docs) and exited 2, pytest's
    "tests failed" code, so CI could not tell a cancel from a failure. Now: 130 (128 + SIGINT), no check reported
    as failed, and pytest gets exactly one SIGINT (a second one cuts its teardown short)."""
    repo, env = _tree(tmp_path)
    env |= {"FD_SLEEP_python": "60", "FD_SLEEP_mypy": "60", "FD_SLEEP_mkdocs": "60"}
    script = _start(repo, env)
    pids = _wait_started(tmp_path / "log")
    started = time.monotonic()
    os.killpg(script.pid, signal.SIGINT)
    try:
        rc = script.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    waited = time.monotonic() - started
    _assert_all_stopped(pids, tmp_path / "tmp")
    assert rc == 128 + signal.SIGINT, rc
    assert waited < 10, f"scripts/test took {waited:.0f} s to stop after Ctrl-C"
    assert script.stdout is not None
    out = script.stdout.read()
    assert "failed" not in out and "No such file" not in out, out
    received = (tmp_path / "log" / "python.log").read_text().count(f"signal {int(signal.SIGINT)}")
    assert received == 1, f"pytest got SIGINT {received} times"


@pytest.mark.parametrize("workers", ["0", "auto"])
def test_failing_tests_and_types_are_both_reported_and_args_reach_pytest(tmp_path: Path, workers: str) -> None:
    """A run where pytest fails (exit 1) and mypy fails: both show, the exit code is pytest's; `-k x` reaches
    pytest; AI_ASSETS_TEST_WORKERS=0 is pytest-xdist's "no workers" (-n 0)."""
    repo, env = _tree(tmp_path)
    env |= {"FD_RC_python": "1", "FD_RC_mypy": "1", "AI_ASSETS_TEST_WORKERS": workers}
    script = _start(repo, env, "-k", "x and not y")
    out, _ = script.communicate(timeout=30)
    assert script.returncode == 1, out
    assert "scripts/test: mypy failed" in out and "docs: ok" in out, out
    assert f"-n {workers} " in (tmp_path / "log" / "python.log").read_text()
    assert (tmp_path / "log" / "python.log").read_text().rstrip().endswith("-k x and not y")
    assert not list((tmp_path / "tmp").iterdir())


# --- the service guard (tests/services.py guard()) ------------------------------------------------------------------

def test_a_guarded_group_is_stopped_when_its_leader_exits_but_a_child_ignores_sigterm(tmp_path: Path) -> None:
    """POSIX kill(2) with a negative pid signals the whole process group; the leader may die of SIGTERM (Python's
    default) while a child that ignores it (`dagster dev`'s code server while it shuts down) lives on. Before, the
    guard watched the leader only: once it was gone it stopped watching, and the child ran on for good."""
    from tests.services import guard

    owner = subprocess.Popen(["sleep", "600"])
    code = ("import signal, subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import signal, "
            "time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)'], "
            "stdout=sys.stdout); print(c.pid, flush=True); time.sleep(600)")
    leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    assert leader.stdout.readline().strip() == "1"  # the child ignores SIGTERM now
    guard(leader.pid, owner=owner.pid, group=True)
    time.sleep(1)  # the guard has started (it polls every 0.5 s)
    owner.kill()
    owner.wait()
    try:
        leader.wait(10)  # reaped here, as its parent (a test process) would
        deadline = time.monotonic() + 25  # SIGTERM, 15 s, SIGKILL
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(child), "the child that ignores SIGTERM outlived the guard"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)


# Run as PID 1 of a new PID namespace (unshare(1)), where /proc/sys/kernel/ns_last_pid sets the next pid
# (proc(5); how CRIU restores a process's pid): the pid of a process that died goes to a new one, as it does on a
# busy machine once pids wrap (pid_max). The guard's watcher is stopped (SIGSTOP) over the swap so its 0.5 s poll
# cannot miss it.
REUSE = """
import os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
from tests.services import guard
def spawn_at(pid):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    p = subprocess.Popen(["sleep", "600"])
    assert p.pid == pid, (p.pid, pid)
    return p
def watcher():
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) != os.getpid():
            try:
                cmd = open("/proc/%s/cmdline" % e, "rb").read()
            except OSError:
                continue
            if b"def alive(pid" in cmd:
                return int(e)
    raise SystemExit("no watcher")
owner, target = subprocess.Popen(["sleep", "600"]), subprocess.Popen(["sleep", "600"])
guard(target.pid, owner=owner.pid)
time.sleep(1)
w = watcher()
os.kill(w, signal.SIGSTOP)
if sys.argv[1] == "target":  # the service died and a stranger got its pid; then the owner dies
    target.kill(); target.wait()
    stranger = spawn_at(target.pid)
    owner.kill(); owner.wait()
    os.kill(w, signal.SIGCONT)
    time.sleep(3)
    print("stranger alive" if stranger.poll() is None else "stranger killed", flush=True)
else:  # the owner died and a stranger got its pid: the service must still be stopped
    owner.kill(); owner.wait()
    stranger = spawn_at(owner.pid)
    os.kill(w, signal.SIGCONT)
    time.sleep(3)
    print("service stopped" if target.poll() is not None else "service left running", flush=True)
"""


@pytest.mark.parametrize(("reused", "expected"), [("target", "stranger alive"), ("owner", "service stopped")])
def test_the_guard_is_not_fooled_by_a_reused_pid(reused: str, expected: str) -> None:
    """Linux reuses a dead process's pid (proc(5), pid_max). Before, the guard knew a process by its pid only:
    a stranger given the dead service's pid was killed when the owner died, and a stranger given the dead
    owner's pid kept the service running for good. Now the guard also checks the start time (/proc/PID/stat
    field 22)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a PID namespace")
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REUSE, reused,
                           str(ROOT)], capture_output=True, text=True, timeout=60, check=False)
    if done.stderr.startswith("unshare:"):
        pytest.skip(f"no PID namespace here: {done.stderr[-300:]}")
    assert done.stdout.strip() == expected, done.stdout + done.stderr[-2000:]


def test_stop_pid_of_a_group_waits_for_the_child_that_ignores_sigterm() -> None:
    """The same group for the teardown's stop_pid (deploy/cluster/local.py down, the UI and daemon tests): before,
    it returned once the leader was dead and never sent SIGKILL, so the child that ignores SIGTERM ran on."""
    from tests.services import stop_pid

    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)'], "
            "stdout=sys.stdout); print(c.pid, flush=True); time.sleep(600)")
    leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    assert leader.stdout.readline().strip() == "1"
    try:
        stop_pid(leader.pid, group=True, timeout_s=2)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "stop_pid left the group's child that ignores SIGTERM running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)
