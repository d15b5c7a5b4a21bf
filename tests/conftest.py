"""Shared pytest setup: deterministic hypothesis, codec backends, the board device."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from orbithil.hal import codec
from orbithil.settings import Settings

# Deterministic property tests: the same examples on every run and every machine.
settings.register_profile(
    "orbithil",
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # no .hypothesis/ in the checkout: derandomized examples need no store
)
# tests/test_fuzz.py with 10,000 derandomized examples per target (make fuzz)
settings.register_profile("fuzz", parent=settings.get_profile("orbithil"), max_examples=10_000)
# A longer, random fuzz (tests/test_fuzz.py): --hypothesis-profile=fuzz-long
settings.register_profile(
    "fuzz-long",
    derandomize=False,
    deadline=None,
    max_examples=200_000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("orbithil")


ROOT = Path(__file__).resolve().parent.parent
# written by the tools that run the tests themselves, never by a test
TOOL_CACHES = {".pytest_cache", ".ruff_cache", ".hypothesis", "__pycache__", ".venv", ".git"}


def checkout_outputs(root: Path = ROOT) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``/build (where `make demo` puts the
    user's results) and of every other entry at the top of ``root``: what a test must
    never create, change or remove."""
    seen = {}
    for entry in root.iterdir():
        if entry.name not in TOOL_CACHES:
            st = entry.lstat()
            seen[entry.name] = (st.st_size if entry.is_file() else 0, st.st_mtime_ns)
    build = root / "build"
    if build.is_dir():
        for path in build.rglob("*"):
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                seen[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    seen.pop("build", None)  # the folder's own mtime moves with any file in it
    return seen


def changed_outputs(before: dict, after: dict) -> list[str]:
    """What differs between two ``checkout_outputs``: added, removed or changed names."""
    return sorted(
        [f"added {k}" for k in after.keys() - before.keys()]
        + [f"removed {k}" for k in before.keys() - after.keys()]
        + [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    )


_CHECKOUT = pytest.StashKey[dict]()


def pytest_collection_modifyitems(config, items):
    """The longest tests first: ``slow`` ones, then those that run a simulator, then the
    rest, each in collection order. pytest-xdist's workers then start on the long tests
    and end on short ones, instead of one worker finishing a place-and-route run alone
    while the other waits (longest-first is the classic rule for parallel jobs)."""

    def weight(item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.get_closest_marker("sim") else 2

    items.sort(key=weight)  # stable: collection order within each weight


def pytest_sessionstart(session):
    session.stash[_CHECKOUT] = checkout_outputs()


def pytest_sessionfinish(session, exitstatus):
    """`make test` after `make demo` must leave build/demo (and the checkout) as it was:
    a test that writes there fails the run."""
    if _CHECKOUT not in session.stash:
        return
    changed = changed_outputs(session.stash[_CHECKOUT], checkout_outputs())
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests wrote into the checkout (only pytest's tmp dirs are theirs): "
        if reporter is not None:
            reporter.write_line("\n" + message + ", ".join(changed), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory):
    """The ground's telecommand sequence counters (orbithil.settings state_dir) of this
    run, in a temporary directory: tests never write into the user's state directory."""
    previous = os.environ.get("ORBITHIL_STATE_DIR")
    os.environ["ORBITHIL_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("ORBITHIL_STATE_DIR", None)
    else:
        os.environ["ORBITHIL_STATE_DIR"] = previous


@pytest.fixture(params=["python", "c"])
def codec_backend(request):
    """Each codec backend. The C one must be built: `make setup` builds it, so a missing
    C backend is a failure, not a skip."""
    backends = codec.available_backends()
    if request.param not in backends:
        pytest.fail(f"the C codec is {codec.c_status()}")
    return backends[request.param]


SERVE_START_S = 600.0  # a first Verilator build of the chip, on a loaded 2-core machine


@pytest.fixture(scope="module")
def board_device(tmp_path_factory):
    """The serial device of the board tests: a real board (ORBITHIL_BOARD=/dev/ttyUSBx), or
    else the simulated chip (Verilator, HARDEN=1) behind a pseudo-terminal served by
    ``orbithil sim serve --pty``, so the board code path (a device path opened by
    pyserial's Serial, termios, chunked reads) runs in CI too.

    One server per module that uses it, stopped when the module ends: a served chip nobody
    talks to still simulates its idle clock (~5 % of a core, sim.bridge), which a
    session-wide server spent for the rest of the run; starting one again costs a process
    start, as the build is cached."""
    device = Settings.from_env().board
    if device:
        yield device
        return
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orbithil.tools.cli", "sim", "serve", "--pty", "--json"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], SERVE_START_S)
        line = proc.stdout.readline() if ready else b""
        if not line:
            pytest.fail(f"orbithil sim serve did not start:\n{log.read_text()[-3000:]}")
        yield json.loads(line)["device"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
