"""``orbithil demo``: the README's main job.

Until the fault-injection campaign lands (issue 7), the demo checks the machine
(``orbithil doctor``) and the codec (``orbithil selftest``).
"""

from __future__ import annotations

import argparse

from tools import doctor, selftest


def main(args) -> int:
    rc_doctor = doctor.main(argparse.Namespace(json=False))
    rc_selftest = selftest.main(argparse.Namespace(seed=args.seed))
    print(
        "\nThe SEU campaign demo (hardened vs unhardened chip, table and HTML report) "
        "replaces this once the campaign work lands."
    )
    return rc_doctor or rc_selftest


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the built-in demo (README's first command)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=main)
