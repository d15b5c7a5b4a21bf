"""Mutation testing (cosmic-ray) of the codec, the telecommand authenticator, the campaign
store and the outcome classifier, each against its fast unit tests (no simulator).

cosmic-ray changes the source file in place, one mutant at a time, so this never runs on
the checkout: it copies the checkout's tracked files (and a built C codec, if one sits in
``hal/codec``) to ``build/mutation/src`` and links the copy's top-level folders into its
``orbithil/`` (one symlink per ``[tool.setuptools.package-dir]`` entry of pyproject.toml).
The tests run in the copy with ``PYTHONPATH`` on it, so Python finds ``orbithil`` there
before the editable install's finder and the tests import the mutated copy (checked
before any mutant runs).

Each target is one cosmic-ray session (``build/mutation/<target>.sqlite``). A second run
carries on with the mutants a session has not yet tested (the copy is refreshed first, so a
killed run's half-applied mutant is gone); ``--fresh`` starts over. The report goes to
``build/mutation/report.md`` and ``report.json``: per target the mutants, killed,
survived, timeouts, incompetent and the score, and every survivor with its diff.

    make mutation                                  # every target
    make mutation MUTATION_ARGS="--targets classifier --fresh"
    .venv/bin/python scripts/mutation.py --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("mutation")


@dataclass(frozen=True)
class Target:
    """Source files to mutate and the fast unit tests (pytest arguments) that cover them."""

    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    timeout_s: float  # per mutant; a mutant whose tests take longer counts as killed


TARGETS = (
    Target(
        "classifier",
        ("payload/classify.py",),
        (
            "tests/test_faults_classify.py::test_outcome_table",
            "tests/test_faults_classify.py::test_every_outcome_is_reachable",
            "tests/test_faults_classify.py::test_fewer_errors_than_the_golden_run_are_not_a_detection",
            "tests/test_faults_classify.py::test_fewer_corrections_than_the_golden_run_are_not_a_correction",
            "tests/test_faults_classify.py::test_a_link_or_buffer_recovery_is_a_correction",
            "tests/test_faults_classify.py::test_an_observation_survives_the_stores_json",
            "tests/test_misclassified.py",
        ),
        120,
    ),
    Target(
        "authenticator",
        ("flight/ccsds.py",),
        (
            "tests/test_tc_security.py",
            "-k",
            "not refused_and_counted",  # that one starts a flight stack
            "tests/test_flight.py::test_replay_window",
            "tests/test_flight.py::test_keys_come_from_a_file_or_the_environment",
            "tests/test_flight.py::test_a_short_or_bad_telemetry_field_is_a_packet_error",
            "tests/test_flight.py::test_command_arguments_are_checked_against_the_dictionary",
        ),
        120,
    ),
    Target(
        "store",
        ("tools/campaign/store.py",),
        (
            "tests/test_campaign_store.py",
            "-k",
            "not dask_scheduler",  # waits 2 s for a scheduler; does not touch the store
        ),
        180,
    ),
    Target(
        "codec",
        ("hal/codec/frame_format.py", "hal/codec/deframer.py", "hal/codec/fec.py"),
        (
            "tests/test_codec_frames.py",
            "tests/test_codec_fec.py",
            "tests/test_codec_cobs_crc.py",
            "tests/test_codec_oracles.py",
        ),
        180,
    ),
)
BY_NAME = {t.name: t for t in TARGETS}


def run(cmd: list[str], *, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """A subprocess with a deadline; its output is returned, a failure raises."""
    log.debug("running %s", " ".join(cmd))
    return subprocess.run(
        cmd, cwd=cwd, env=env, timeout=timeout, check=True, capture_output=True, text=True
    )


def copy_checkout(src: Path) -> None:
    """The checkout's tracked files (as they are in the work tree) into ``src``, fresh."""
    if src.exists():
        shutil.rmtree(src)
    files = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "hal" / "codec").glob("_ccodec*.so")]
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the work tree but not yet in the index
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)


def link_packages(src: Path) -> None:
    """Make the copy's ``orbithil/`` the whole package: a link per package-dir entry
    (``orbithil/hal -> ../hal``, ...). The tests run from the copy, so its ``orbithil``
    comes first on sys.path whichever way it is found (the current directory, pytest's
    rootdir, PYTHONPATH), and the editable install's finder is never asked."""
    config = tomllib.loads((src / "pyproject.toml").read_text())
    for name, folder in config["tool"]["setuptools"]["package-dir"].items():
        if name == "orbithil":
            continue
        sub = name.removeprefix("orbithil.")
        if "." in sub:
            raise SystemExit(f"package-dir entry {name!r}: only orbithil.<name> is handled")
        (src / "orbithil" / sub).symlink_to(Path("..") / folder)


def environment(src: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant must never be hidden by a stale .pyc
    return env


def check_imports_copy(src: Path, env: dict) -> None:
    probe = "import orbithil.hal.codec.frame_format as f, orbithil.flight.ccsds as c; "
    probe += "print(f.__file__); print(c.__file__)"
    out = run([sys.executable, "-c", probe], cwd=src, env=env, timeout=120).stdout.split()
    want = [src / "hal/codec/frame_format.py", src / "flight/ccsds.py"]
    if [Path(p).resolve() for p in out] != [p.resolve() for p in want]:
        raise SystemExit(f"the tests would import {out}, not the copy in {src}; not running")


def test_command(target: Target) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "0",
        "--timeout",
        str(int(target.timeout_s)),
        *target.tests,
    ]


def write_config(target: Target, path: Path) -> None:
    modules = ", ".join(json.dumps(m) for m in target.modules)
    command = " ".join(json.dumps(a) if " " in a else a for a in test_command(target))
    path.write_text(
        "[cosmic-ray]\n"
        f"module-path = [{modules}]\n"
        f"timeout = {target.timeout_s}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def cosmic_ray(*args: str, cwd: Path, env: dict, timeout: float) -> None:
    exe = Path(sys.executable).with_name("cosmic-ray")
    run([str(exe), *args], cwd=cwd, env=env, timeout=timeout)


def run_target(
    target: Target, out: Path, src: Path, env: dict, *, fresh: bool, retest: bool, deadline: float
) -> None:
    config, session = out / f"{target.name}.toml", out / f"{target.name}.sqlite"
    write_config(target, config)
    if fresh and session.exists():
        session.unlink()
    if not session.exists():
        baseline = time.monotonic()
        try:
            run(test_command(target), cwd=src, env=env, timeout=target.timeout_s * 2)
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"{target.name}: the tests fail unmutated:\n{exc.stdout}") from None
        log.info("%s: unmutated tests pass in %.1f s", target.name, time.monotonic() - baseline)
        cosmic_ray("init", str(config), str(session), cwd=src, env=env, timeout=600)
    elif retest:
        retest_survivors(target, session, src, env, deadline=deadline)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        log.warning("%s: no time left; run again to test its mutants", target.name)
        return
    log.info("%s: %d mutants to test", target.name, len(pending(session)))
    try:
        cosmic_ray("exec", str(config), str(session), cwd=src, env=env, timeout=left)
    except subprocess.TimeoutExpired:
        # cosmic-ray was stopped inside a mutant: put the target's files back as they are
        # in the checkout, so the next target tests unmutated code
        for module in target.modules:
            shutil.copy2(ROOT / module, src / module)
        log.warning(
            "%s: stopped at the time budget (%d of %d mutants left, a random sample tested);"
            " run again to test the rest",
            target.name,
            len(pending(session)),
            total(session),
        )


def total(session: Path) -> int:
    with sqlite3.connect(session) as db:
        return db.execute("SELECT count(*) FROM work_items").fetchone()[0]


def survivors(session: Path) -> list[str]:
    with sqlite3.connect(session) as db:
        return [
            r[0]
            for r in db.execute("SELECT job_id FROM work_results WHERE test_outcome = 'SURVIVED'")
        ]


def retest_survivors(
    target: Target, session: Path, src: Path, env: dict, *, deadline: float
) -> None:
    """Test a session's survivors again (after new tests), each result replacing the old
    one; the mutants not yet tested stay untested, so the score compares like with like."""
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db

    jobs = survivors(session)
    log.info("%s: testing its %d survivors again", target.name, len(jobs))
    command = " ".join(json.dumps(a) if " " in a else a for a in test_command(target))
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)  # cosmic-ray runs the tests with this process's environment
    os.chdir(src)  # the sessions name their modules relative to the copy
    try:
        with use_db(str(session), WorkDB.Mode.open) as db:
            items = {item.job_id: item for item, _ in db.completed_work_items}
            for n, job in enumerate(jobs, 1):
                if time.monotonic() > deadline:
                    log.warning(
                        "%s: stopped at the time budget after %d of %d survivors; "
                        "run again to test the rest",
                        target.name,
                        n - 1,
                        len(jobs),
                    )
                    break
                result = mutate_and_test(items[job].mutations, command, target.timeout_s)
                db.set_result(job, result)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def pending(session: Path) -> list[str]:
    with sqlite3.connect(session) as db:
        return [
            r[0]
            for r in db.execute(
                "SELECT job_id FROM work_items"
                " WHERE job_id NOT IN (SELECT job_id FROM work_results)"
            )
        ]


def summarize(target: Target, session: Path, src: Path) -> dict:
    """Counts and survivors of one session, read from its SQLite file."""
    with sqlite3.connect(session) as db:
        total = db.execute("SELECT count(*) FROM work_items").fetchone()[0]
        rows = db.execute(
            "SELECT r.worker_outcome, r.test_outcome, r.output, r.diff, m.module_path,"
            " m.operator_name, m.occurrence, m.start_pos_row"
            " FROM work_results r JOIN mutation_specs m ON m.job_id = r.job_id"
        ).fetchall()
    counts = {"killed": 0, "survived": 0, "timeout": 0, "incompetent": 0, "error": 0}
    survivors = []
    for worker, outcome, output, diff, module, operator, occurrence, line in rows:
        worker, outcome = (worker or "").lower(), (outcome or "").lower()  # enum names
        if worker != "normal":
            counts["error"] += 1
        elif outcome == "survived":
            counts["survived"] += 1
            path = Path(module)
            path = path.relative_to(src) if path.is_absolute() else path
            survivors.append(
                {
                    "where": f"{path}:{line}",
                    "operator": operator,
                    "occurrence": occurrence,
                    "diff": diff or "",
                }
            )
        elif outcome == "incompetent":
            counts["incompetent"] += 1
        elif output == "timeout":
            counts["timeout"] += 1
        else:
            counts["killed"] += 1
    tested = sum(counts.values())
    competent = tested - counts["incompetent"] - counts["error"]
    score = (counts["killed"] + counts["timeout"]) / competent if competent else None
    survivors.sort(key=lambda s: (s["where"].split(":")[0], int(s["where"].split(":")[1])))
    return {
        "target": target.name,
        "modules": list(target.modules),
        "mutants": total,
        "tested": tested,
        **counts,
        "score": score,
        "survivors": survivors,
    }


def write_report(out: Path, summaries: list[dict]) -> None:
    (out / "report.json").write_text(json.dumps(summaries, indent=2) + "\n")
    lines = [
        "# Mutation testing (cosmic-ray)",
        "",
        "| target | mutants | tested | killed | timeout | survived | incompetent | error | score |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        score = "-" if s["score"] is None else f"{100 * s['score']:.1f}%"
        lines.append(
            f"| {s['target']} | {s['mutants']} | {s['tested']} | {s['killed']} | "
            f"{s['timeout']} | {s['survived']} | {s['incompetent']} | {s['error']} | "
            f"{score} |"
        )
    for s in summaries:
        lines += ["", f"## {s['target']}: {len(s['survivors'])} survivors", ""]
        for v in s["survivors"]:
            lines += [
                f"### {v['where']} {v['operator']} #{v['occurrence']}",
                "",
                "```diff",
                v["diff"].strip(),
                "```",
                "",
            ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets",
        default=",".join(BY_NAME),
        help=f"comma-separated, of {', '.join(BY_NAME)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--fresh", action="store_true", help="start the sessions over")
    parser.add_argument(
        "--budget",
        type=float,
        default=6 * 3600,
        help="stop after this many seconds (run again to go on); default 6 h",
    )
    parser.add_argument(
        "--target-budget",
        type=float,
        default=None,
        help="stop each target after this many seconds (cosmic-ray tests mutants in random "
        "order, so what ran is a random sample; run again to go on)",
    )
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="test the survivors of the sessions again (after adding tests)",
    )
    parser.add_argument("--report-only", action="store_true", help="only write the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[mutation] %(message)s")
    logging.getLogger("cosmic_ray").setLevel(logging.WARNING)  # a line per mutant otherwise
    unknown = set(args.targets.split(",")) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(BY_NAME)}")
    targets = [BY_NAME[n] for n in args.targets.split(",")]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = out / "src"
    deadline = time.monotonic() + args.budget
    if args.retest_survivors and not (out / "report-before.json").exists():
        for suffix in (".json", ".md"):  # the scores before the first retest, kept
            shutil.copy2(out / f"report{suffix}", out / f"report-before{suffix}")
    if not args.report_only:
        copy_checkout(src)
        link_packages(src)
        env = environment(src)
        check_imports_copy(src, env)
        for target in targets:
            started = time.monotonic()
            ends = deadline
            if args.target_budget is not None:
                ends = min(deadline, started + args.target_budget)
            run_target(
                target, out, src, env, fresh=args.fresh, retest=args.retest_survivors, deadline=ends
            )
            log.info("%s: %.0f s", target.name, time.monotonic() - started)
    summaries = [
        summarize(t, out / f"{t.name}.sqlite", src)
        for t in TARGETS
        if (out / f"{t.name}.sqlite").exists()
    ]
    write_report(out, summaries)
    for s in summaries:
        score = "-" if s["score"] is None else f"{100 * s['score']:.1f}%"
        print(
            f"{s['target']}: {s['tested']}/{s['mutants']} tested, {s['killed']} killed, "
            f"{s['timeout']} timeouts, {s['survived']} survived, {s['incompetent']} "
            f"incompetent, score {score}"
        )
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
