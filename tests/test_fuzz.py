"""Fuzzing every parser a user or a link feeds: each input ends in a result or in the
module's own clear error, never another exception, a hang or unbounded memory.

Derandomized (the same examples on every run: tests/conftest.py's profiles) and marked
``slow``. ``make test`` gives each target 2,000 examples, which keeps the suite inside its
20 minutes on CI's two cores; ``make fuzz`` gives each 10,000 (``--hypothesis-profile=fuzz``).
For a longer, random search:

    .venv/bin/python -m pytest -m slow tests/test_fuzz.py --hypothesis-profile=fuzz-long

(``fuzz-long``: 200,000 examples each, a new seed every run; a failure prints the
``@reproduce_failure`` line and the seed to replay it).
"""

from __future__ import annotations

import random
import string
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orbithil import hal
from orbithil.errors import ConfigError
from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_EVENT, APID_HK, APID_TC, APID_VERIFY
from orbithil.flight.stack import Config
from orbithil.hal import backends
from orbithil.hal.codec import available_backends, fec
from orbithil.hal.codec.deframer import Deframer
from orbithil.hal.codec.frame_format import MAX_ENCODED, Frame
from orbithil.tools.campaign import spec as spec_mod

pytestmark = pytest.mark.slow

EXAMPLES = max(2_000, settings.default.max_examples)  # the fuzz profiles raise it
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

frames = st.builds(
    lambda seq, cmd, payload: Frame(seq, cmd, payload),
    st.integers(0, 255), st.integers(0, 255), st.binary(max_size=255),
)  # fmt: skip


def _wire(impl, frame: Frame) -> bytes:
    return impl.frame_encode(1, frame.seq, frame.cmd, frame.payload)


# --- the host's streaming deframer (both codec backends, FEC repair on) -----------------
@pytest.mark.parametrize("name", ["python", "c"])
@FUZZ
@given(
    chunks=st.lists(st.binary(max_size=600), max_size=8),
    last=frames,
    seed=st.integers(0, 2**32 - 1),
)
def test_host_deframer_takes_any_bytes_and_then_the_next_good_frame(name, chunks, last, seed):
    impl = available_backends()[name]

    def repair(encoded: bytes):
        return fec.repair(encoded, impl.cobs_decode, impl.crc16)

    deframer = Deframer(impl.deframe_segments, repair=repair)
    rng = random.Random(seed)
    for chunk in chunks:
        i = 0
        while i < len(chunk):
            step = rng.randint(1, 300)
            result = deframer.feed(chunk[i : i + step])
            i += step
            assert len(result.leftover) <= MAX_ENCODED  # memory stays bounded
            for d in result.discarded:
                assert d.start <= d.end <= deframer.offset
    # whatever came before, a delimiter and a good frame get through
    got = deframer.feed(b"\x00" + _wire(impl, last)).frames
    assert got and got[-1] == last


# --- the chip's deframer (the model, the conformance reference) ---------------------------
@pytest.fixture(scope="module")
def model_chip():
    chip = hal.open("model://", timeout=1.0)
    yield chip
    chip.close()


@FUZZ
@given(garbage=st.binary(max_size=700))
def test_chip_deframer_takes_any_bytes_and_still_answers(model_chip, garbage):
    model_chip.link.port.write(garbage)  # whatever arrives on the chip's UART
    assert model_chip.identify().mem_words > 0  # the link resynchronises; the chip answers


# --- telecommands: the parser and the authenticator --------------------------------------
KEY = bytes(range(32))
good_tcs = st.builds(
    lambda seq, opcode, args: ccsds.telecommand(1, KEY, seq, opcode, args),
    st.integers(1, 2**32 - 1), st.integers(0, 0xFFFF), st.binary(max_size=12),
)  # fmt: skip


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), good_tcs), flips=st.lists(st.integers(0, 4000)))
def test_telecommand_parser_refuses_or_accepts_never_crashes(raw, flips):
    changed = bytearray(raw)
    for flip in flips:
        if changed:
            changed[flip % len(changed)] ^= 1 << (flip % 8)
    auth = ccsds.Authenticator({1: KEY})
    try:
        tc = auth.check(bytes(changed))
    except ccsds.TcRejected as exc:
        assert exc.kind in ("auth", "replay", "malformed") and str(exc)
        return
    assert bytes(changed) == raw or tc.key_id == 1  # only a well-signed packet is taken
    assert len(raw) <= ccsds.MAX_TC


# --- the ground's space-packet parser ---------------------------------------------------
PARSERS = {APID_HK: ccsds.parse_hk, APID_EVENT: ccsds.parse_event, APID_VERIFY: ccsds.parse_verify}


@FUZZ
@given(apid=st.sampled_from([*PARSERS, APID_TC, 0x7FF]), data=st.binary(max_size=300),
       header=st.binary(min_size=6, max_size=6), use_header=st.booleans())  # fmt: skip
def test_ground_packet_parser_gives_values_or_a_packet_error(apid, data, header, use_header):
    raw = (
        header + data
        if use_header
        else struct.pack(">HHH", apid, 0xC000, max(len(data) - 1, 0)) + data
    )
    try:
        primary, field = ccsds.unpack(raw)
        parse = PARSERS.get(primary.apid)
        if parse is not None:
            parse(field)
    except ccsds.PacketError as exc:
        assert str(exc)


# --- the campaign spec and the flight config loaders -----------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["leo", "flip", "verilator", "inference", "tcp://h:1"]),
)  # fmt: skip
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
spec_keys = st.sampled_from(
    ["name", "seed", "workload", "chip", "targets", "fault", "size", "run", "orbit", "x"]
)
inner_keys = st.sampled_from(
    ["name", "seed", "harden", "simulator", "blocks", "glob", "model", "mbu_bits",
     "stuck_cycles", "injections", "margin", "confidence", "executor", "workers",
     "scheduler", "chunk", "rate", "bogus"]
)  # fmt: skip
spec_dicts = st.dictionaries(
    spec_keys, st.one_of(values, st.dictionaries(inner_keys, values, max_size=5)), max_size=6
)


@FUZZ
@given(data=spec_dicts)
@example(data={"fault": {"model": []}})  # was a TypeError (unhashable list)
@example(data={"workload": {"name": {}}, "run": {"executor": []}})
def test_campaign_spec_loader_gives_a_spec_or_a_spec_error(data):
    try:
        spec = spec_mod.parse(data, source="fuzz.toml")
    except spec_mod.SpecError as exc:
        assert str(exc).startswith("fuzz.toml")
        return
    assert spec.injections is None or 1 <= spec.injections <= spec_mod.MAX_INJECTIONS


toml_text = st.text(alphabet=string.printable, max_size=200)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=toml_text)
def test_campaign_spec_and_flight_config_files_of_any_text(fuzz_dir, text):
    path = fuzz_dir / "f.toml"
    path.write_text(text)
    for load in (spec_mod.load, Config.load):
        try:
            load(path)
        except ConfigError as exc:
            assert str(path) in str(exc) or "unknown keys" in str(exc) or str(exc)


config_keys = st.sampled_from(sorted(f for f in Config.__dataclass_fields__))


@FUZZ
@given(settings_=st.dictionaries(config_keys, st.one_of(values, st.dictionaries(
    st.text(max_size=6), scalars, max_size=3)), max_size=6))  # fmt: skip
def test_flight_config_gives_a_config_or_a_config_error(settings_):
    try:
        config = Config(**settings_)
    except ConfigError as exc:
        assert " is not allowed; use " in str(exc)
        return
    assert 1 <= config.chip_poll_ms <= 60_000 and 1 <= config.hk_period_ms <= 60_000


# --- HAL URLs ----------------------------------------------------------------------------
option_keys = st.sampled_from(["harden", "mem_words", "fec", "flip", "drop", "delay", "seed",
                               "clks_per_bit", "baud", "logging", "x", ""])  # fmt: skip
option_values = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "nan", "inf", "1e309", "64", "0.5", "", "on"]),
    st.text(alphabet=string.printable, max_size=10),
)
queries = st.lists(st.tuples(option_keys, option_values), max_size=4).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)


@FUZZ
@given(scheme=st.sampled_from(["model://", "fault://model://", "loop://"]), query=queries)
def test_hal_url_options_open_a_chip_or_give_a_hal_error(scheme, query):
    url = f"{scheme}?{query}" if query else scheme
    try:
        chip = hal.open(url, timeout=0.2, retries=0)
    except hal.HalError as exc:
        assert str(exc)
        return
    chip.close()


@FUZZ
@given(url=st.builds("{}://{}".format, st.text(max_size=10), st.text(max_size=30)))
def test_any_text_as_a_url_is_a_backend_or_a_hal_error(url):
    try:  # (a device path without "://" would open a serial port: not tried here)
        backends.backend_for(url)
    except hal.HalError as exc:
        assert str(exc)


# --- the key-file loader ---------------------------------------------------------------
hexes = st.binary(min_size=8, max_size=80).map(bytes.hex)
key_lines = st.one_of(
    st.tuples(st.integers(-5, 300), hexes).map(lambda t: f"{t[0]} {t[1]}"),
    st.tuples(st.integers(0, 9), hexes, st.text(max_size=8)).map(lambda t: f"{t[0]} {t[1]}{t[2]}"),
    st.tuples(hexes, st.sampled_from([" ", ":", "=", "#", " # c"])).map("".join),
    st.text(alphabet=string.printable, max_size=40),
)  # fmt: skip


@FUZZ
@given(lines=st.lists(key_lines, max_size=5))
def test_key_file_loader_gives_keys_or_an_error_without_key_material(fuzz_dir, lines):
    path = fuzz_dir / "keys"
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    try:
        keys = ccsds.load_keys(path)
    except ccsds.KeyFileError as exc:
        message = str(exc).replace(str(path), "")
        for token in text.replace("#", " ").replace(":", " ").replace("=", " ").split():
            if len(token) >= 16:  # 8 bytes of hex: part of a key
                assert token[:16] not in message, (token, message)
        return
    assert keys and all(0 <= k <= 255 and 16 <= len(v) <= 64 for k, v in keys.items())
