"""fpga/ICD.md agrees with the code it documents (so the two cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

from orbithil.hal.codec import frame_format as ff
from orbithil.hal.codec.hmatrix import SecdedStatus

ICD = (Path(__file__).resolve().parent.parent / "fpga" / "ICD.md").read_text()


def table_after(heading: str) -> dict[int, str]:
    section = ICD.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|", section, re.M)
    return {int(code): name for code, name in rows}


def test_frame_status_table_matches_the_enum():
    assert table_after("## Frame status codes") == {s.value: s.name for s in ff.FrameStatus}


def test_secded_status_table_matches_the_enum():
    assert table_after("## SECDED") == {s.value: s.name for s in SecdedStatus}


def test_constants_quoted_in_the_icd():
    assert f"`FRAME_VERSION` = {ff.FRAME_VERSION}" in ICD
    assert f"0..`MAX_PAYLOAD` ({ff.MAX_PAYLOAD})" in ICD
    assert f"`MAX_ENCODED` = {ff.MAX_ENCODED} bytes" in ICD
    assert f"more than {ff.MAX_ENCODED} bytes without a delimiter" in ICD
    assert f"polynomial 0x{ff.CRC16_POLY:04X}, initial value 0x{ff.CRC16_INIT:04X}" in ICD
    assert f"is 0x{ff.CRC16_CHECK:04X}" in ICD


def test_generated_verilog_and_icd_tables_are_current():
    from orbithil.tools.fpga import gen

    assert gen.stale() == [], "run `orbithil fpga gen` and commit the result"


def test_every_command_and_register_is_in_the_icd():
    from orbithil.hal import icd

    for cmd in icd.Cmd:
        assert f"| 0x{cmd.value:02X} | {cmd.name} |" in ICD
    for reg in icd.REGISTERS:
        assert f"| 0x{reg.addr:02X} | {reg.name} |" in ICD
