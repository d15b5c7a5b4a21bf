"""A self-test of the installed codec: both backends, random frames in garbage, SECDED errors.

Not a unit test: a check a user runs on a new machine (``orbithil selftest``, and part of
``orbithil demo``) to see that the built C codec agrees with the reference here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from orbithil.hal import codec
from orbithil.hal.codec import SECDED_39_32, SECDED_72_64, Deframer, Frame, SecdedStatus
from orbithil.tools.console import console as make_console


@dataclass
class SelfTestLine:
    backend: str
    check: str
    ok: bool
    detail: str


def _frames_through_garbage(impl, rng: np.random.Generator, count: int) -> tuple[bool, str]:
    sent, stream = [], bytearray()
    for i in range(count):
        stream += rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        frame = Frame(i & 0xFF, int(rng.integers(0, 256)), rng.bytes(int(rng.integers(0, 256))))
        sent.append(frame)
        stream += impl.frame_encode(1, frame.seq, frame.cmd, frame.payload)
    deframer, got = Deframer(impl.deframe_segments), []
    position = 0
    while position < len(stream):
        step = int(rng.integers(1, 512))
        got += deframer.feed(bytes(stream[position : position + step])).frames
        position += step
    it = iter(got)
    recovered = sum(any(s == g for g in it) for s in sent)
    return (
        recovered == count,
        f"{recovered}/{count} frames recovered, "
        f"{sum(deframer.discards.values())} runs of garbage dropped",
    )


def _secded(impl, code, rng: np.random.Generator, n: int) -> tuple[bool, str]:
    dtype = np.uint32 if code.k == 32 else np.uint64
    words = rng.integers(0, 2**63, n, dtype=np.uint64).astype(dtype)
    check = impl.secded_encode_array(code, words)
    a = rng.integers(0, code.k, n).astype(dtype)
    b = (a + dtype(1) + rng.integers(0, code.k - 1, n).astype(dtype)) % dtype(code.k)
    one = words ^ (dtype(1) << a)
    two = one ^ (dtype(1) << b)
    out1, st1 = impl.secded_decode_array(code, one, check)
    _, st2 = impl.secded_decode_array(code, two, check)
    ok = (
        np.array_equal(out1, words)
        and np.all(st1 == SecdedStatus.CORRECTED)
        and np.all(st2 == SecdedStatus.UNCORRECTABLE)
    )
    return bool(ok), f"{n} single flips corrected, {n} double flips flagged"


def run(seed: int = 1) -> list[SelfTestLine]:
    lines = []
    for name, impl in codec.available_backends().items():
        rng = np.random.default_rng(seed)
        ok, detail = _frames_through_garbage(impl, rng, 2000)
        lines.append(SelfTestLine(name, "frames in garbage", ok, detail))
        for code in (SECDED_39_32, SECDED_72_64):
            ok, detail = _secded(impl, code, rng, 100_000)
            lines.append(SelfTestLine(name, f"SECDED ({code.n},{code.k})", ok, detail))
    if len(codec.available_backends()) == 2:
        rng = np.random.default_rng(seed)
        payloads = [rng.bytes(int(n)) for n in rng.integers(0, 256, 2000)]
        c, py = codec.available_backends()["c"], codec.available_backends()["python"]
        same = all(c.frame_encode(1, 2, 3, p) == py.frame_encode(1, 2, 3, p) for p in payloads)
        lines.append(SelfTestLine("c = python", "identical frames", same, "2000 random payloads"))
    return lines


def main(args) -> int:
    from rich.table import Table

    if not args.json:
        print(f"codec self-test (seed {args.seed}); C codec: {codec.c_status()}")
    lines = run(args.seed)
    ok = all(line.ok for line in lines)
    if args.json:
        print(json.dumps({"ok": ok, "c_codec": codec.c_status(), "seed": args.seed,
                          "checks": [asdict(line) for line in lines]}))  # fmt: skip
        return 0 if ok else 1
    table = Table(title="codec self-test")
    for column in ("backend", "check", "result", "detail"):
        table.add_column(column)
    for line in lines:
        table.add_row(
            line.backend, line.check, "[green]ok[/]" if line.ok else "[red]FAIL[/]", line.detail
        )
    make_console().print(table)
    return 0 if all(line.ok for line in lines) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("selftest", help="check the installed codec on both backends")
    p.add_argument("--seed", type=int, default=1, help="seed of the random frames and words")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=main)
