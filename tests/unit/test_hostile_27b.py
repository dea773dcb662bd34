"""Issue 28 items 1-2, read as a hostile user: the lazy public names and the scripts that set up and run the suite,
given a missing extra, the wrong interpreter, a typo in a setting.

Documented behaviour modelled: PEP 562 (a module ``__getattr__`` is called for a name not found, and its errors
propagate to the caller); Daft's ``ProviderImportError`` and our ``MissingExtraError`` (an optional backend that
is not installed is named with the extra that installs it); pytest-xdist's ``-n`` ("numprocesses": a number,
``auto`` or ``logical``); Python's ``venv`` (a venv is bound to the interpreter that made it: ``pyvenv.cfg``
``home`` / ``version``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


def test_a_missing_dagster_extra_is_named_at_first_use_not_at_import() -> None:
    """``dagster`` is the ``dagster`` extra: without it ``import ai_assets.dagster`` still works (nothing is
    imported until a name is used) and the first name used raises ``MissingExtraError`` naming
    ``ai_assets[dagster]``, the same on every use. Before: a bare ``ModuleNotFoundError: import of dagster
    halted`` from deep inside ``ai_assets.dagster.common``."""
    code = ("import sys\n"
            "sys.modules['dagster'] = None  # as if the extra were not installed\n"
            "import ai_assets, ai_assets.dagster\n"
            "from ai_assets.runtime.errors import MissingExtraError\n"
            "for attempt in range(2):\n"
            "    try:\n"
            "        ai_assets.dagster.prompt_asset\n"
            "    except MissingExtraError as exc:\n"
            "        print('missing:', exc)\n"
            "try:\n"
            "    ai_assets.dagster.no_such_name\n"
            "except AttributeError as exc:\n"
            "    print('attribute:', exc)\n"
            "print('plain layer:', ai_assets.RunOptions().concurrency > 0)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines.count("missing: dagster is not installed: pip install 'ai_assets[dagster]'") == 2, lines
    assert any(line.startswith("attribute:") and "no_such_name" in line for line in lines)
    assert "plain layer: True" in lines


def test_every_public_class_and_function_pickles_by_reference_to_the_same_object() -> None:
    """pickle stores a class or function as ``__module__`` + ``__qualname__`` and loads it by importing that
    module (the pickle docs, "What can be pickled"): a generated factory must be found where it says it is, or
    Dagster's multiprocess executor and ``multiprocessing`` cannot ship it."""
    import ai_assets
    import ai_assets.dagster

    for package in (ai_assets, ai_assets.dagster):
        for name in package.__all__:
            value = getattr(package, name)
            if isinstance(value, type) or callable(value):
                assert pickle.loads(pickle.dumps(value)) is value, name


def test_star_import_dir_and_reload_keep_every_public_name() -> None:
    code = ("import importlib, ai_assets, ai_assets.dagster\n"
            "ns = {}\n"
            "exec('from ai_assets import *', ns)\n"
            "exec('from ai_assets.dagster import *', ns)\n"
            "assert set(ai_assets.__all__) | set(ai_assets.dagster.__all__) <= set(ns)\n"
            "before = ai_assets.prompt\n"
            "importlib.reload(ai_assets)\n"
            "assert ai_assets.prompt is before and set(ai_assets.__all__) <= set(dir(ai_assets))\n"
            "print('ok')\n")
    out = _python(code)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_two_threads_using_public_names_first_at_once_both_get_them() -> None:
    code = ("import threading, ai_assets, ai_assets.dagster\n"
            "names = [(ai_assets, n) for n in ai_assets.__all__] + [(ai_assets.dagster, n) for n in "
            "ai_assets.dagster.__all__]\n"
            "barrier, errors = threading.Barrier(8), []\n"
            "def use(k):\n"
            "    barrier.wait()\n"
            "    for module, name in names[k::8] + names[::-1]:\n"
            "        try:\n"
            "            getattr(module, name)\n"
            "        except Exception as exc:\n"
            "            errors.append(f'{name}: {exc!r}')\n"
            "threads = [threading.Thread(target=use, args=(k,)) for k in range(8)]\n"
            "[t.start() for t in threads]; [t.join(60) for t in threads]\n"
            "print(errors or 'ok')\n")
    out = _python(code)
    assert out.stdout.strip() == "ok", (out.stdout[-2000:], out.stderr[-2000:])


# -- scripts/test and scripts/setup -----------------------------------------------------------------------------
def _run_script(argv: list[str], env: dict[str, str], cwd: Path, limit_s: float) -> tuple[int | None, str]:
    """Run a script in its own process group; kill the whole group past ``limit_s`` (None: it was killed)."""
    process = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit_s)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


@pytest.mark.parametrize("workers", ["garbage", "-1", "4 --pdb", "2.5"])
def test_a_worker_count_that_is_not_one_is_refused_at_once_naming_the_setting(workers: str) -> None:
    """pytest-xdist's ``-n`` takes a number, ``auto`` or ``logical``. Before: ``scripts/test`` ran setup, ruff,
    mypy and the docs build (minutes) and only then failed in pytest's argument parsing."""
    started = time.monotonic()
    code, output = _run_script(["bash", "scripts/test"], {"AI_ASSETS_TEST_WORKERS": workers}, ROOT, 20)
    assert code == 2, output[-2000:]
    assert "AI_ASSETS_TEST_WORKERS" in output and time.monotonic() - started < 20


def test_setup_refuses_to_install_into_a_venv_of_another_python_than_the_one_asked_for(tmp_path: Path) -> None:
    """A venv belongs to the interpreter that made it (``pyvenv.cfg``): ``PYTHON=python3.12 ./scripts/setup`` on
    a ``.venv`` of 3.11 used to say nothing and keep 3.11 (the stamp matched), so the user believed they tested
    on 3.12."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.optional-dependencies]\ndev = []\n')
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes()).hexdigest()
    (tmp_path / ".venv" / ".ai_assets-installed").write_text(f"{digest} dev\n")
    other = tmp_path / "python3.99"
    other.write_text('#!/bin/sh\necho 3.99\n')
    other.chmod(0o755)
    code, output = _run_script(["bash", "scripts/setup"], {"PYTHON": str(other)}, tmp_path, 60)
    assert code == 2, output[-2000:]
    assert "3.99" in output and "remove .venv" in output
    same, output = _run_script(["bash", "scripts/setup"], {"PYTHON": sys.executable}, tmp_path, 60)
    assert same == 0, output[-2000:]  # the interpreter it was made with: nothing to do


def test_setup_names_an_extra_that_does_not_exist_before_installing_anything(tmp_path: Path) -> None:
    """``./scripts/setup dmo`` (a typo of ``demo``): uv only warns that the package has no such extra and
    installs the rest, and the stamp then recorded ``dmo`` as installed. Now it stops first, naming the extras.
    The venv's python here refuses ``-m`` (pip, uv), so nothing is ever installed by this test."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.optional-dependencies]\n'
                                             'dev = []\ndemo = []\n')
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    guard = tmp_path / ".venv" / "bin" / "python"
    guard.write_text(f'#!/bin/sh\ncase "$1" in -m) echo "refused: $*"; exit 97;; esac\nexec {sys.executable} "$@"\n')
    guard.chmod(0o755)
    code, output = _run_script(["bash", "scripts/setup", "dmo"], {}, tmp_path, 60)
    assert code not in (0, 97, None), output[-2000:]
    assert "no extra 'dmo'" in output and "demo, dev" in output and "refused" not in output
