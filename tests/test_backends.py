"""Backends as plug-ins: the registry, each backend's own options, fault:// wrapping, and a
backend added from a user's own package through an entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal import backends
from orbithil.hal.fault import FaultPort, split_fault_url


def test_orbithils_own_schemes_are_registered_through_entry_points():
    assert {"model", "sim", "fault", "serial", "socket", "loop", "rfc2217"} <= set(
        backends.backends()
    )
    for scheme, backend in backends.backends().items():
        assert backend.scheme == scheme and backend.description
        for option in backend.options.values():
            assert option.help and option.valid()


@pytest.mark.parametrize("url", ["model://?harden=2", "sim://verilator?harden=2"])
def test_harden_2_is_refused_with_the_valid_values(url):
    # sim:// checks its options before it builds or starts anything
    with pytest.raises(hal.HalError, match=r"harden='2'.*use one of 0, 1"):
        hal.open(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("model://?mem_words=-5", r"mem_words='-5'.*power of two int >= 64 and <= 32768"),
        ("model://?mem_words=99999999999", r"mem_words='99999999999'.*<= 32768"),
        ("model://?mem_words=100", r"mem_words='100'.*power of two"),
        ("model://?clks_per_bit=1", r"clks_per_bit='1'.*>= 4"),
        ("model://?fec=yes", r"fec='yes'.*one of 0, 1"),
        ("model://?harden=1&harden=0", r"'harden' is given twice"),
        ("model://somewhere", r"model:// takes no host or path"),
        ("sim://modelsim", r"unknown simulator 'modelsim'; use sim://icarus or sim://verilator"),
        ("sim://icarus?start_timeout=0", r"start_timeout='0'.*> 0"),
        ("sim://icarus?start_timeout=nan", r"start_timeout='nan'.*finite"),
        ("fault://model://?flip=2", r"flip='2'.*<= 1"),
        ("fault://model://?delay=-1", r"delay='-1'.*>= 0"),
        ("fault://", r"wraps no URL"),
        ("serial:///dev/ttyS0?baud=12345", r"baud='12345'.*one of 9600"),
        ("loop://?logging=loud", r"cannot open 'loop://\?logging=loud'"),  # pyserial's KeyError
        ("model://[", r"'model://\[' is not a valid URL \(Invalid IPv6 URL\)"),
    ],
)
def test_out_of_range_options_say_what_is_valid(url, message):
    with pytest.raises(hal.HalError, match=message):
        hal.open(url)


def test_fault_options_mix_with_the_inner_urls():
    assert split_fault_url("fault://sim://verilator?harden=1&flip=0.01") == (
        "sim://verilator?harden=1",
        "flip=0.01",
    )
    assert split_fault_url("fault://sim://verilator?flip=0.01&harden=1&seed=3") == (
        "sim://verilator?harden=1",
        "flip=0.01&seed=3",
    )
    # the older form with a second '?' means the same
    assert split_fault_url("fault://sim://verilator?harden=1?flip=0.01") == (
        "sim://verilator?harden=1",
        "flip=0.01",
    )
    assert split_fault_url("fault:///dev/ttyUSB1?flip=0.5") == ("/dev/ttyUSB1", "flip=0.5")
    assert split_fault_url("fault://model://") == ("model://", "")


def test_a_fault_url_reaches_the_inner_chip_with_its_own_options():
    with hal.open("fault://model://?harden=0&mem_words=1024&flip=0.002&seed=3") as chip:
        port = chip.link.port
        assert isinstance(port, FaultPort) and port.flip == 0.002
        ident = chip.identify()
        assert (ident.harden, ident.mem_words) == (False, 1024)
        rng = np.random.default_rng(1)
        w = rng.integers(-128, 128, (16, 16), dtype=np.int8)
        x = rng.integers(-128, 128, 16, dtype=np.int8)
        assert np.array_equal(chip.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))


USER_BACKEND = '''
"""A user's own backend: their board, here a model behind a byte counter."""
from dataclasses import dataclass, field

from orbithil.hal.backends import Opened, Option, parse_options
from orbithil.hal.model import ChipModel, ModelPort


class CountingPort(ModelPort):
    written = 0

    def write(self, data):
        CountingPort.written += len(data)
        return super().write(data)


@dataclass(frozen=True)
class MyBoard:
    scheme: str = "myboard"
    description: str = "the lab's board"
    options: dict = field(default_factory=lambda: {"slot": Option(int, "rack slot", min=0, max=3)})

    def open(self, url):
        parse_options(url.partition("?")[2], self.options, url)
        return Opened(CountingPort(ChipModel(harden=True)))


BACKEND = MyBoard()
'''


def test_a_users_package_adds_a_backend_through_an_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "myboard"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(USER_BACKEND))
    dist = tmp_path / "site" / "myboard-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myboard\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[orbithil.backends]\nmyboard = myboard:BACKEND\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    backends.forget()
    try:
        assert "myboard" in backends.backends()
        with hal.open("myboard://?slot=2") as chip:
            assert chip.identify().harden is True
            chip.write_reg("SCRUB_PERIOD", 7)
            assert chip.read_reg("SCRUB_PERIOD") == 7
        import myboard  # type: ignore[import-not-found]

        assert myboard.CountingPort.written > 0  # the frames went through the user's port
        with pytest.raises(hal.HalError, match=r"slot='9'.*<= 3"):
            hal.open("myboard://?slot=9")
    finally:
        backends.forget()


def test_a_broken_plugin_is_named_in_the_error(tmp_path, monkeypatch):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[orbithil.backends]\nbroken = no_such_module:B\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends.forget()
    try:
        hal.open("model://").close()  # the broken plug-in is not loaded unless asked for
        with pytest.raises(hal.HalError, match=r"broken:// backend of package 'broken'"):
            hal.open("broken://")
    finally:
        backends.forget()


def test_the_hal_imports_no_simulator_flight_or_tools_code():
    code = (
        "import sys; from orbithil import hal\n"
        "with hal.open('fault://model://?flip=0.0') as chip: chip.identify()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['orbithil', 'sim'], ['orbithil', 'flight'], ['orbithil', 'tools']))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
