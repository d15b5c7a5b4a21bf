"""Telecommand security against oracles written here, not with the module that checks:
the MAC recomputed with the standard library's hmac over literal bytes, the replay
window at its exact boundary, and oversized and truncated telecommands refused and
counted (UDP and TCP)."""

from __future__ import annotations

import hashlib
import hmac
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
