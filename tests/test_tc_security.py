"""Telecommand security against oracles written here, not with the module that checks:
the MAC recomputed with the standard library's hmac over literal bytes, the replay
window at its exact boundary."""

from __future__ import annotations

import hashlib
import hmac

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
