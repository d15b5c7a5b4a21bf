"""Telecommand security against oracles written here, not with the module that checks:
the MAC recomputed with the standard library's hmac over literal bytes, the replay
window at its exact boundary, and oversized and truncated telecommands refused and
counted (UDP and TCP)."""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import struct

import pytest

from orbithil.flight import ccsds

KEY = bytes(range(32))  # fixed test key: 00 01 .. 1f
# key id 7, auth sequence 0x01020304, opcode 5, one argument byte 0x01, packet sequence 9
HEADER = bytes.fromhex("1020c0090027")  # TC, APID 0x020; seq flags 11, count 9; 40-1
BODY = bytes.fromhex("0701020304000501")


def test_published_hmac_sha256_vector_holds_for_the_oracle():
    # RFC 4231, test case 2: the standard library's hmac is the reference used below
    mac = hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest()
    assert mac == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_a_telecommand_is_header_body_and_hmac_sha256_of_both():
    mac = hmac.new(KEY, HEADER + BODY, hashlib.sha256).digest()
    assert ccsds.telecommand(7, KEY, 0x01020304, 5, b"\x01", packet_seq=9) == HEADER + BODY + mac


def test_the_authenticator_accepts_the_literal_packet_and_refuses_any_changed_byte():
    packet = HEADER + BODY + hmac.new(KEY, HEADER + BODY, hashlib.sha256).digest()
    tc = ccsds.Authenticator({7: KEY}).check(packet)
    assert (tc.key_id, tc.auth_seq, tc.opcode, tc.args) == (7, 0x01020304, 5, b"\x01")
    for i in (0, 3, 5, 6, 12, len(packet) - 1):  # header, body and MAC bytes
        changed = bytearray(packet)
        changed[i] ^= 0x01
        with pytest.raises(ccsds.TcRejected):
            ccsds.Authenticator({7: KEY}).check(bytes(changed))
    other = hmac.new(bytes(32), HEADER + BODY, hashlib.sha256).digest()  # another key
    with pytest.raises(ccsds.TcRejected, match="bad MAC") as info:
        ccsds.Authenticator({7: KEY}).check(HEADER + BODY + other)
    assert info.value.kind == "auth"


def _signed(seq: int) -> bytes:
    return ccsds.telecommand(7, KEY, seq, 1, b"")


def test_the_replay_window_is_exactly_64_behind_the_highest():
    assert ccsds.REPLAY_WINDOW == 64
    auth = ccsds.Authenticator({7: KEY})
    auth.check(_signed(100))
    with pytest.raises(ccsds.TcRejected, match="older than the replay window") as info:
        auth.check(_signed(100 - 64))  # exactly 64 behind: outside
    assert info.value.kind == "replay"
    auth.check(_signed(100 - 63))  # 63 behind: inside, once
    with pytest.raises(ccsds.TcRejected, match="already used"):
        auth.check(_signed(100 - 63))
    # a jump of more than the window forgets everything below it
    auth.check(_signed(300))
    with pytest.raises(ccsds.TcRejected, match="older than the replay window"):
        auth.check(_signed(236))
    auth.check(_signed(237))
    with pytest.raises(ccsds.TcRejected, match="already used"):
        auth.check(_signed(300))


def test_an_oversized_telecommand_is_malformed_before_its_mac_is_checked():
    longest = ccsds.MAX_TC
    body = BODY + b"\x00" * (longest - len(HEADER) - len(BODY) - ccsds.MAC_LEN + 1)
    header = HEADER[:4] + struct.pack(">H", len(body) + ccsds.MAC_LEN - 1)
    packet = header + body + hmac.new(KEY, header + body, hashlib.sha256).digest()
    assert len(packet) == longest + 1
    with pytest.raises(ccsds.TcRejected, match=f"longer than the longest telecommand "
                       rf"\({longest} bytes\)") as info:  # fmt: skip
        ccsds.Authenticator({7: KEY}).check(packet)
    assert info.value.kind == "malformed"


def test_oversized_and_truncated_telecommands_are_refused_and_counted(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=20, tcp_port=0)
    g = fs.ground
    g.wait_telemetry("MODE", timeout=5)
    good = ccsds.telecommand(1, g.key, g.next_sequence(), 0, b"")
    # UDP: an oversized datagram with a consistent header, and a truncated one
    g.send_raw(ccsds.pack(ccsds.PacketType.TC, ccsds.APID_TC, 0, b"\x01" + bytes(3000)))
    g.send_raw(good[:-5])
    # TCP: a header announcing 60,000 bytes (refused unread, the connection closed) ...
    with socket.create_connection(fs.stack.link.tcp_address, timeout=5) as big:
        big.sendall(good[:4] + struct.pack(">H", 60_000 - 7) + good[6:])
        big.settimeout(5)
        assert big.recv(100) == b""  # closed by the stack
    # ... and half a telecommand, then the connection closes
    with socket.create_connection(fs.stack.link.tcp_address, timeout=5) as cut:
        cut.sendall(good[:20])
    g.wait_telemetry("TC_REJECTED_MALFORMED", lambda v: v == 4, timeout=10)
    g.wait_event("TC_REJECTED", lambda e: "truncated: 20 bytes of a" in e.text, timeout=5)
    texts = [e.text for e in g.events if e.name == "TC_REJECTED"]
    assert sum("longer than the longest telecommand" in t for t in texts) == 2, texts
    assert g.telemetry["TC_REJECTED_AUTH"] == 0 and g.telemetry["CMD_ACCEPTED"] == 0


# --- the parser, the key loader and the telemetry fields at their edges (mutants of
# flight/ccsds.py that the tests above let through: make mutation, docs/reliability.md) --
def _signed_packet(header: bytes, body: bytes, key: bytes = KEY) -> bytes:
    return header + body + hmac.new(key, header + body, hashlib.sha256).digest()


def test_a_space_packet_is_six_literal_header_bytes_and_its_data():
    from spacepackets.ccsds.spacepacket import PacketType

    assert ccsds.pack(PacketType.TM, 0x7FF, 0x4001, b"\xaa\xbb") == bytes.fromhex(
        "07ffc0010001aabb"
    )  # TM, APID 0x7FF, unsegmented, count wraps at 14 bits, 2 data bytes
    assert ccsds.pack(PacketType.TC, 0, 5, b"\x01") == bytes.fromhex("1000c005000001")
    assert ccsds.pack(PacketType.TC, 0x20, 0, b"abc") == bytes.fromhex("1020c0000002") + b"abc"
    with pytest.raises(ccsds.PacketError, match="at least one data byte"):
        ccsds.pack(PacketType.TM, 1, 0, b"")
    for apid in (-1, 0x800):
        with pytest.raises(ccsds.PacketError, match=rf"APID {apid} is outside 0\.\.2047"):
            ccsds.pack(PacketType.TM, apid, 0, b"\x00")


def test_unpack_reads_every_header_field_and_refuses_a_wrong_length_or_version():
    from spacepackets.ccsds.spacepacket import PacketType

    header, data = ccsds.unpack(bytes.fromhex("1820 8005 0001 aabb"))
    assert header == ccsds.Primary(0, PacketType.TC, True, 0x020, 2, 5, 1)
    assert data == b"\xaa\xbb"
    header, data = ccsds.unpack(bytes.fromhex("0010c000000007"))  # the shortest: 7 bytes
    assert header == ccsds.Primary(0, PacketType.TM, False, 0x010, 3, 0, 0)
    assert data == b"\x07"
    header, _ = ccsds.unpack(bytes.fromhex("1020c000000007"))  # a TC without secondary header
    assert (header.packet_type, header.sec_header_flag) == (PacketType.TC, False)
    with pytest.raises(ccsds.PacketError, match="6 bytes is shorter than a space packet"):
        ccsds.unpack(bytes(6))
    with pytest.raises(ccsds.PacketError, match="length field says 8 bytes, the packet has 9"):
        ccsds.unpack(bytes.fromhex("0010c0000001aabbcc"))
    with pytest.raises(ccsds.PacketError, match="packet version 1; only version 0"):
        ccsds.unpack(bytes.fromhex("2010c000000007"))
    assert ccsds.packet_length(bytes.fromhex("0010c00001")) is None  # 5 of 6 header bytes
    assert ccsds.packet_length(bytes.fromhex("0010c0000102")) == 6 + 0x0102 + 1


def test_a_telecommand_refused_before_its_mac_says_why():
    auth = ccsds.Authenticator({7: KEY})
    tm = _signed_packet(b"\x00" + HEADER[1:], BODY)  # the type bit says telemetry
    with pytest.raises(ccsds.TcRejected, match="not a telecommand") as info:
        auth.check(tm)
    assert info.value.kind == "malformed"
    other_apid = _signed_packet(b"\x10\x21" + HEADER[2:], BODY)
    with pytest.raises(ccsds.TcRejected, match=r"not a telecommand \(APID 0x021\)"):
        auth.check(other_apid)
    # the shortest accepted: key id, sequence, opcode and MAC, no arguments
    fixed = BODY[:7]
    short_header = HEADER[:4] + struct.pack(">H", len(fixed) + ccsds.MAC_LEN - 1)
    assert auth.check(_signed_packet(short_header, fixed)).args == b""
    one_less = HEADER[:4] + struct.pack(">H", len(fixed) - 1 + ccsds.MAC_LEN - 1)
    with pytest.raises(ccsds.TcRejected, match="too short for key id") as info:
        auth.check(_signed_packet(one_less, fixed[:-1]))
    assert info.value.kind == "malformed"
    with pytest.raises(ccsds.TcRejected, match="unknown key id 8") as info:
        auth.check(_signed_packet(HEADER, b"\x08" + BODY[1:]))
    assert info.value.kind == "auth"


def test_a_new_key_starts_its_own_window_and_a_small_step_keeps_the_seen_bits():
    other = bytes(range(1, 33))
    auth = ccsds.Authenticator({7: KEY, 8: other})
    auth.check(_signed(100))
    auth.check(_signed_packet(HEADER, b"\x08" + BODY[1:], other))  # key 8, sequence 0x01020304
    auth.check(_signed(99))  # key 7's window is its own
    auth.check(_signed(102))  # two ahead: 100 and 99 are now 2 and 3 behind, still seen
    for seq in (100, 99):
        with pytest.raises(ccsds.TcRejected, match="already used"):
            auth.check(_signed(seq))
    auth.check(_signed(101))
    auth.check(_signed(102 - 63))  # the oldest the window holds
    with pytest.raises(ccsds.TcRejected, match="already used"):
        auth.check(_signed(102 - 63))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1 {k16} extra\n", "line 1: write each key as 'id hexkey'"),
        ("# c\n\nx {k16}\n", "line 3: the key id is not a number 0..255"),
        ("2 {k16}zz\n", "line 1: key 2 is not hexadecimal"),
        ("256 {k16}\n", "line 1: key id 256 is not in 0..255"),
        ("-1 {k16}\n", "line 1: key id -1 is not in 0..255"),
        ("1 {k15}\n", "line 1: key 1 has 15 bytes; keys are 16..64 bytes"),
        ("1 {k65}\n", "line 1: key 1 has 65 bytes; keys are 16..64 bytes"),
        ("1 {k16}\n1 {k64}\n", "line 2: key id 1 is given twice"),
        ("# only a comment\n", "no telecommand keys in key file"),
    ],
)
def test_a_bad_key_file_line_says_which_and_why(tmp_path, text, says):
    path = tmp_path / "keys"
    path.write_text(text.format(k15="ab" * 15, k16="ab" * 16, k64="cd" * 64, k65="ab" * 65))
    with pytest.raises(ccsds.KeyFileError, match=re.escape(says)) as info:
        ccsds.load_keys(path)
    assert f"key file {path}" in str(info.value)
    assert "abab" not in str(info.value) and "cdcd" not in str(info.value)


def test_keys_of_16_and_64_bytes_load_from_a_file_with_comments_and_from_the_environment(
    tmp_path, monkeypatch
):
    path = tmp_path / "keys"
    path.write_text(f"0 {'ab' * 16}  # the first\n\n255 {'cd' * 64}\n")
    assert ccsds.load_keys(path) == {0: b"\xab" * 16, 255: b"\xcd" * 64}
    monkeypatch.setenv("ORBITHIL_TC_KEYS", f" 1:{'ab' * 16} , ,2: {'cd' * 16}")
    assert ccsds.load_keys() == {1: b"\xab" * 16, 2: b"\xcd" * 16}
    monkeypatch.setenv("ORBITHIL_TC_KEYS", f"1:{'ab' * 16},1={'ab' * 16}")
    with pytest.raises(ccsds.KeyFileError, match="ORBITHIL_TC_KEYS, entry 2: write each key"):
        ccsds.load_keys()
    monkeypatch.delenv("ORBITHIL_TC_KEYS")
    with pytest.raises(ccsds.KeyFileError, match="or pass --keys FILE"):
        ccsds.load_keys()
    with pytest.raises(ccsds.KeyFileError, match="does not exist"):
        ccsds.load_keys(tmp_path / "missing")


def test_telemetry_fields_round_trip_and_long_texts_are_cut():
    values = [(1, 2.5), (7, -1.0)]
    data = ccsds.hk_data(123, 0xDEADBEEF, values)
    assert data == struct.pack(">QIH", 123, 0xDEADBEEF, 2) + struct.pack(">Hd", 1, 2.5) \
        + struct.pack(">Hd", 7, -1.0)  # fmt: skip
    assert ccsds.parse_hk(data) == (123, 0xDEADBEEF, {1: 2.5, 7: -1.0})
    with pytest.raises(ccsds.PacketError, match="says 2 channels, holds 33 bytes"):
        ccsds.parse_hk(data[:-1])
    event = ccsds.event_data(5, 9, 2, "x" * 1200)
    assert len(event) == ccsds.EV_HEAD.size + 1000
    assert ccsds.parse_event(event) == (5, 9, 2, "x" * 1000)
    verify = ccsds.verify_data(6, 0x01020304, 5, ccsds.Stage.FAILED, "y" * 600)
    assert len(verify) == ccsds.VF_HEAD.size + 500
    assert ccsds.parse_verify(verify) == (6, 0x01020304, 5, ccsds.Stage.FAILED, "y" * 500)
    assert ccsds.parse_verify(ccsds.verify_data(6, 1, 5, ccsds.Stage.ACCEPTED))[3] is (
        ccsds.Stage.ACCEPTED
    )


def test_a_telecommand_of_exactly_the_longest_length_is_accepted():
    args = bytes(ccsds.MAX_TC - len(HEADER) - len(BODY) - ccsds.MAC_LEN + 1)
    body = BODY[:-1] + args
    header = HEADER[:4] + struct.pack(">H", len(body) + ccsds.MAC_LEN - 1)
    packet = _signed_packet(header, body)
    assert len(packet) == ccsds.MAX_TC
    assert ccsds.Authenticator({7: KEY}).check(packet).args == args


def test_verification_stages_are_the_icd_numbers():
    assert [int(s) for s in ccsds.Stage] == [1, 2, 3, 4]
    field = ccsds.verify_data(1, 2, 3, ccsds.Stage.FAILED, "no")
    assert field == bytes.fromhex("000000000000000100000002000304") + b"no"


def test_the_longest_telecommand_is_51_bytes():
    # header 6, key id + sequence + opcode 7, the longest arguments (CHIP_INJECT,
    # LEDGER_RESEND: 6), MAC 32
    assert ccsds.MAX_TC == 6 + 7 + 6 + 32


def test_the_replay_state_of_a_key_stays_one_window_wide():
    auth = ccsds.Authenticator({7: KEY})
    for seq in range(1, 300, 3):
        auth.check(_signed(seq))
    assert auth._seen[7].bit_length() <= ccsds.REPLAY_WINDOW  # memory bounded over a mission
