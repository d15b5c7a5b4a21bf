"""``orbithil soak``: the flight stack under load for minutes, watched for leaks and loss.

Runs ``orbithil fly`` as a child process on one chip with housekeeping at the link's full
rate (every 10 ms) and authenticated commands flowing the whole time (NOOP, POOL_STATUS
and small SUBMIT_JOBs in COMPUTE mode, from ``flight.ground.Ground``; a new job only while
fewer than ``--jobs-in-flight`` are unfinished, so the chip is kept busy at its own speed
rather than offered more than it can do). Every few seconds
it samples the child's resident memory (``/proc/PID/status`` VmRSS) and the stack's queue
telemetry; at the end (or on Ctrl-C) it waits for the submitted jobs to finish, stops the
stack and judges each criterion:

- RSS flat: the least-squares slope of RSS over the samples after the warm-up is under
  ``--rss-slope-max`` MiB/min;
- queues flat: JOBS_QUEUED never above ``--queue-max``, no bus drops, no telemetry stored
  or lost on board, and every submitted job done by the end;
- no slips: RG_SLIPS stays 0, and RG_JITTER_P99_US within its dictionary limit;
- the stack up throughout: ``orbithil fly`` did not exit before it was stopped;
- every command completed: each one sent got its COMPLETED verification.

The pure parts (``rss_slope``, ``judge``) are separate from the process handling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.tools.bench import Steal

log = logging.getLogger(__name__)

DEFAULT_CHIP = "sim://verilator?harden=1"
HK_PERIOD_MS = 10  # the downlink rate group's period: housekeeping at its full rate
START_TIMEOUT_S = 900.0  # a first Verilator build of the chip takes minutes on a busy machine
COMMAND_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 120.0  # after the last command, for the submitted jobs to finish
STOP_TIMEOUT_S = 30.0
# the channels sampled with RSS (flight/dictionary.py)
SAMPLED = (
    "JOBS_QUEUED", "JOBS_DEFERRED", "JOBS_SUBMITTED", "JOBS_DONE", "ITEMS_DONE",
    "ITEMS_FAILED", "BUS_DROPS", "TM_STORED", "TM_LOST", "RG_SLIPS", "RG_JITTER_P99_US",
    "RG_JITTER_P50_US", "EVENTS_THROTTLED", "CMD_COMPLETED", "CMD_FAILED",
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What the soak judges against."""

    rss_slope_mib_per_min: float = 1.0
    queue_max: int = 64  # inferences waiting for a chip
    jitter_p99_us: float = 1000.0  # RG_JITTER_P99_US's own limit in the dictionary


@dataclass
class Sample:
    t_s: float  # since the commands started
    rss_kib: int
    telemetry: dict[str, float] = field(default_factory=dict)
    cpu_steal_share: float = 0.0  # since the sample before: the hypervisor's share of the CPUs


def read_rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def rss_slope(samples: list[Sample], warmup_s: float) -> float | None:
    """Least-squares growth of RSS in MiB per minute over the samples after ``warmup_s``
    (None with fewer than 3 of them)."""
    points = [(s.t_s / 60.0, s.rss_kib / 1024.0) for s in samples if s.t_s >= warmup_s]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var


def _max(samples: list[Sample], name: str) -> float:
    values = [s.telemetry[name] for s in samples if name in s.telemetry]
    return max(values) if values else math.nan


def judge(summary: dict, limits: Limits) -> list[dict]:
    """One verdict per criterion: name, ok, what was measured and against what."""
    rss, queues, rg, cmd, jobs = (summary[k] for k in ("rss", "queues", "rate_groups",
                                                        "commands", "jobs"))  # fmt: skip
    slope = rss["slope_mib_per_min"]
    criteria = [
        {
            "name": "rss_flat",
            "ok": slope is not None and slope < limits.rss_slope_mib_per_min,
            "measured": (f"{slope:+.3f} MiB/min over {rss['samples_after_warmup']} samples "
                         "after the warm-up") if slope is not None else
                        f"too few samples after the warm-up ({rss['samples_after_warmup']})",
            "limit": f"< {limits.rss_slope_mib_per_min:g} MiB/min",
        },
        {
            "name": "queues_flat",
            "ok": queues["jobs_queued_max"] <= limits.queue_max
            and queues["bus_drops"] == 0 and queues["tm_stored_max"] == 0
            and queues["tm_lost"] == 0 and jobs["done"] == jobs["submitted"]
            and jobs["items_failed"] == 0,
            "measured": (f"JOBS_QUEUED max {queues['jobs_queued_max']:g}, BUS_DROPS "
                         f"{queues['bus_drops']:g}, TM_STORED max {queues['tm_stored_max']:g}, "
                         f"TM_LOST {queues['tm_lost']:g}, jobs done {jobs['done']}/"
                         f"{jobs['submitted']}, items failed {jobs['items_failed']:g}"),
            "limit": (f"JOBS_QUEUED <= {limits.queue_max}, no drops, nothing stored or lost, "
                      "every job done"),
        },
        {
            "name": "no_slips",
            "ok": rg["slips"] == 0 and rg["jitter_p99_us_max"] <= limits.jitter_p99_us,
            "measured": f"RG_SLIPS {rg['slips']:g}, RG_JITTER_P99_US max "
                        f"{rg['jitter_p99_us_max']:.0f} us",
            "limit": f"0 slips, p99 jitter <= {limits.jitter_p99_us:g} us",
        },
        {
            "name": "stack_up_throughout",
            "ok": not summary["fly_exited_early"],
            "measured": "orbithil fly " + ("exited during the soak" if summary["fly_exited_early"]
                                           else "ran until stopped"),
            "limit": "up until the end",
        },
        {
            "name": "every_command_completed",
            "ok": cmd["sent"] > 0 and cmd["completed"] == cmd["sent"],
            "measured": f"{cmd['completed']}/{cmd['sent']} completed, {cmd['failed']} failed, "
                        f"{cmd['timed_out']} without an answer",
            "limit": "all",
        },
    ]  # fmt: skip
    return criteria


# --- the run ----------------------------------------------------------------------------------
class _Fly:
    """``orbithil fly`` as a child process in its own session, with a fresh key."""

    def __init__(self, chip: str, workdir: Path, realtime: str) -> None:
        self.key = secrets.token_bytes(32)
        self.key_id = 1
        keys = workdir / "keys"
        keys.write_text(f"{self.key_id} {self.key.hex()}\n")
        keys.chmod(0o600)
        config = workdir / "fly.toml"
        config.write_text(f'hk_period_ms = {HK_PERIOD_MS}\nrealtime = "{realtime}"\n')
        self.ready = workdir / "fly.json"
        self.log = workdir / "fly.log"
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orbithil.tools.cli", "fly", "--chip", chip,
                 "--config", str(config), "--keys", str(keys), "--port", "0",
                 "--ready-file", str(self.ready)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=workdir,
            )  # fmt: skip

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, timeout_s: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise ConfigError(f"orbithil fly exited with code {code} before it was up; "
                                  f"its log ends:\n{self.log_tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise ConfigError(f"orbithil fly was not up within {timeout_s:g} s; its log "
                                  f"ends:\n{self.log_tail()}")  # fmt: skip
            time.sleep(0.1)
        host, port = json.loads(self.ready.read_text())["udp"]
        return host, port

    def stop(self) -> int | None:
        """SIGTERM (fly stops its stack), then SIGKILL to the group past the deadline."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        return self.proc.returncode


def run_soak(*, chip: str = DEFAULT_CHIP, minutes: float = 10.0, sample_s: float = 5.0,
             warmup_s: float = 60.0, command_period_s: float = 0.2, job_images: int = 2,
             jobs_in_flight: int = 2,
             realtime: str = "auto", limits: Limits = Limits(),
             progress=None) -> dict:  # fmt: skip
    """Run the soak and return its summary (``judge``'s criteria under ``criteria``).
    Ctrl-C ends the load early; the summary still comes, marked ``interrupted``."""
    from orbithil.flight.ground import CommandRejected, Ground, MemorySequence

    say = progress or (lambda text: None)
    with tempfile.TemporaryDirectory(prefix="orbithil-soak-") as tmp:
        fly = _Fly(chip, Path(tmp), realtime)
        try:
            say(f"starting orbithil fly on {chip}")
            address = fly.wait_ready(START_TIMEOUT_S)
            with Ground(address, key_id=fly.key_id, key=fly.key,
                        sequence=MemorySequence(1)) as g:  # fmt: skip
                summary = _drive(g, fly, chip, minutes, sample_s, warmup_s, command_period_s,
                                 job_images, jobs_in_flight, CommandRejected, say)  # fmt: skip
        finally:
            code = fly.stop()
            tail = fly.log_tail(40)
    summary["fly_exit_code"] = code
    summary["realtime"] = {
        "mode": realtime,
        "active": realtime != "off" and "without real-time priority" not in tail,
    }
    summary["criteria"] = judge(summary, limits)
    summary["ok"] = all(c["ok"] for c in summary["criteria"])
    return summary


def _drive(g, fly: _Fly, chip: str, minutes: float, sample_s: float, warmup_s: float,
           command_period_s: float, job_images: int, jobs_in_flight: int, rejected,
           say) -> dict:  # fmt: skip
    counts = {"sent": 0, "completed": 0, "failed": 0, "timed_out": 0}
    by_name: dict[str, int] = {}
    completed_by_name: dict[str, int] = {}
    problems: list[str] = []

    def completed(name: str) -> None:
        counts["completed"] += 1
        completed_by_name[name] = completed_by_name.get(name, 0) + 1

    def command(name: str, **args) -> bool:
        """Send, wait for the verdict, count it; whether it completed."""
        seq = g.send(name, **args)
        counts["sent"] += 1
        by_name[name] = by_name.get(name, 0) + 1
        try:
            try:
                stage, reason = g.wait_verification(seq, timeout=COMMAND_TIMEOUT_S)
            except KeyboardInterrupt:  # Ctrl-C: what was sent is still seen through
                stage, reason = g.wait_verification(seq, timeout=COMMAND_TIMEOUT_S)
                if stage.name == "FAILED":
                    counts["failed"] += 1
                else:
                    completed(name)
                raise
            if stage.name == "FAILED":
                raise rejected(name, reason)
            completed(name)
            return True
        except rejected as exc:
            counts["failed"] += 1
            problems.append(str(exc))
        except TimeoutError as exc:
            counts["timed_out"] += 1
            problems.append(str(exc))
        finally:  # the ground keeps every verification: forget the finished ones
            g.verify.pop(seq, None)
            g.sent.pop(seq, None)
        return False

    cycle = (("NOOP", {}), ("POOL_STATUS", {}), ("SUBMIT_JOB", None))
    samples: list[Sample] = []
    started = time.monotonic()
    steal = interval = Steal()
    end = started + minutes * 60.0
    next_sample = started
    next_command = started
    interrupted = False
    i = first = held_back = 0
    try:
        for name, args in (("NOOP", {}), ("SET_MODE", {"mode": "NOMINAL"}),
                           ("SET_MODE", {"mode": "COMPUTE"})):  # fmt: skip
            command(name, **args)
        say(f"soaking for {minutes:g} min: a command every {command_period_s:g} s, samples "
            f"every {sample_s:g} s")  # fmt: skip
        while (now := time.monotonic()) < end:
            if fly.proc.poll() is not None:
                problems.append(f"orbithil fly exited with code {fly.proc.returncode} during "
                                f"the soak; its log ends:\n{fly.log_tail()}")  # fmt: skip
                break
            if now >= next_sample:
                samples.append(_sample(g, fly, now - started, interval))
                interval = Steal()
                next_sample += sample_s
            if now >= next_command:
                name, args = cycle[i % len(cycle)]
                i += 1
                if args is None:  # a new job while fewer than jobs_in_flight are unfinished
                    submitted = completed_by_name.get("SUBMIT_JOB", 0)
                    if submitted - g.telemetry.get("JOBS_DONE", 0) >= jobs_in_flight:
                        name, args = "NOOP", {}
                        held_back += 1
                    else:
                        args = {"first": first, "count": job_images}
                        first = (first + job_images) % 60000
                command(name, **args)
                next_command += command_period_s
                next_command = max(next_command, time.monotonic() - command_period_s)
            time.sleep(max(0.0, min(next_sample, next_command) - time.monotonic()))
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: finishing the summary")
    load_s = time.monotonic() - started
    exited_early = fly.proc.poll() is not None
    # the jobs submitted still run: wait for them (with a deadline), then a last sample
    submitted = completed_by_name.get("SUBMIT_JOB", 0)
    with contextlib.suppress(TimeoutError, KeyboardInterrupt):
        if fly.proc.poll() is None and submitted:
            g.wait_telemetry("JOBS_DONE", lambda v: v >= submitted,
                             timeout=DRAIN_TIMEOUT_S)  # fmt: skip
    if fly.proc.poll() is None:
        samples.append(_sample(g, fly, time.monotonic() - started, interval))
    tm = dict(g.telemetry)
    rss = [s.rss_kib for s in samples if s.rss_kib]
    slope = rss_slope([s for s in samples if s.rss_kib], warmup_s)
    summary = {
        "chip": chip,
        "minutes": minutes,
        "duration_s": round(load_s, 1),
        "interrupted": interrupted,
        "fly_exited_early": exited_early,
        "commands": {**counts, "by_name": by_name, "problems": problems[:20]},
        "jobs": {
            "submitted": submitted,
            "in_flight_max": jobs_in_flight,
            "held_back": held_back,
            "done": int(tm.get("JOBS_DONE", 0)),
            "items_done": int(tm.get("ITEMS_DONE", 0)),
            "items_failed": tm.get("ITEMS_FAILED", 0),
        },
        "telemetry_packets": {k: g.packets[k] for k in ("hk", "event", "verify", "malformed")},
        "rss": {
            "first_mib": round(rss[0] / 1024, 2) if rss else None,
            "last_mib": round(rss[-1] / 1024, 2) if rss else None,
            "max_mib": round(max(rss) / 1024, 2) if rss else None,
            "slope_mib_per_min": None if slope is None else round(slope, 4),
            "warmup_s": warmup_s,
            "samples": len(rss),
            "samples_after_warmup": sum(s.t_s >= warmup_s for s in samples if s.rss_kib),
        },
        "queues": {
            "jobs_queued_max": _max(samples, "JOBS_QUEUED"),
            "jobs_queued_last": tm.get("JOBS_QUEUED", math.nan),
            "bus_drops": tm.get("BUS_DROPS", math.nan),
            "tm_stored_max": _max(samples, "TM_STORED"),
            "tm_lost": tm.get("TM_LOST", math.nan),
        },
        "rate_groups": {
            "slips": tm.get("RG_SLIPS", math.nan),
            "jitter_p99_us_max": _max(samples, "RG_JITTER_P99_US"),
            "jitter_p99_us_last": tm.get("RG_JITTER_P99_US", math.nan),
            "jitter_p50_us_last": tm.get("RG_JITTER_P50_US", math.nan),
            # the hypervisor's share of the CPUs meanwhile: a taken CPU runs nothing
            "cpu_steal_share": steal.share(),
        },
        "samples": [asdict(s) for s in samples],
    }
    return summary


def _sample(g, fly: _Fly, t_s: float, steal: Steal) -> Sample:
    tm = g.telemetry
    return Sample(round(t_s, 2), read_rss_kib(fly.proc.pid) or 0,
                  {k: tm[k] for k in SAMPLED if k in tm}, steal.share())  # fmt: skip


# --- the command ------------------------------------------------------------------------------
def _table(summary: dict) -> str:
    rss, cmd, q, rg = summary["rss"], summary["commands"], summary["queues"], summary["rate_groups"]
    slope = rss["slope_mib_per_min"]
    lines = [
        f"soak of orbithil fly on {summary['chip']}: {summary['duration_s']:.0f} s of load"
        + (" (interrupted)" if summary["interrupted"] else ""),
        f"  commands      {cmd['sent']} sent, {cmd['completed']} completed, {cmd['failed']} "
        f"failed, {cmd['timed_out']} unanswered",
        f"  jobs          {summary['jobs']['done']}/{summary['jobs']['submitted']} done, "
        f"{summary['jobs']['items_done']} images",
        f"  telemetry     {summary['telemetry_packets']['hk']} housekeeping packets, "
        f"{summary['telemetry_packets']['event']} events",
        f"  RSS           first {rss['first_mib']} MiB, last {rss['last_mib']} MiB, max "
        f"{rss['max_mib']} MiB, slope "
        + (f"{slope:+.3f} MiB/min" if slope is not None else "n/a")
        + f" ({rss['samples']} samples, warm-up {rss['warmup_s']:g} s)",
        f"  queues        JOBS_QUEUED max {q['jobs_queued_max']:g}, BUS_DROPS {q['bus_drops']:g}, "
        f"TM_STORED max {q['tm_stored_max']:g}, TM_LOST {q['tm_lost']:g}",
        f"  rate groups   RG_SLIPS {rg['slips']:g}, RG_JITTER_P99_US max "
        f"{rg['jitter_p99_us_max']:.0f} us (real-time priority "
        f"{'on' if summary['realtime']['active'] else 'off'}; CPU time stolen by the "
        f"hypervisor {rg['cpu_steal_share']:.1%})",
        "",
        f"  {'criterion':26} {'verdict':8} measured (limit)",
    ]
    for c in summary["criteria"]:
        verdict = "ok" if c["ok"] else "FAILED"
        lines.append(f"  {c['name']:26} {verdict:8} {c['measured']} ({c['limit']})")
    return "\n".join(lines)


def _finite(value):
    """``value`` with NaN (a channel never received) as None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _positive(option: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} {value}: give a finite number > 0")
    return value


def main(args) -> int:
    minutes = _positive("--minutes", args.minutes)
    sample_s = _positive("--sample-s", args.sample_s)
    period = _positive("--command-period", args.command_period)
    if not math.isfinite(args.warmup_s) or args.warmup_s < 0:
        raise ConfigError(f"--warmup-s {args.warmup_s}: give a finite number of seconds >= 0")
    if not 1 <= args.job_images <= 256:
        raise ConfigError(f"--job-images {args.job_images}: use 1..256")
    if args.jobs_in_flight < 1:
        raise ConfigError(f"--jobs-in-flight {args.jobs_in_flight}: use 1 or more")
    limits = Limits(rss_slope_mib_per_min=_positive("--rss-slope-max", args.rss_slope_max),
                    queue_max=args.queue_max)  # fmt: skip
    summary = run_soak(
        chip=args.chip, minutes=minutes, sample_s=sample_s, warmup_s=args.warmup_s,
        command_period_s=period, job_images=args.job_images,
        jobs_in_flight=args.jobs_in_flight, realtime=args.realtime,
        limits=limits, progress=lambda text: print(text, file=sys.stderr, flush=True),
    )  # fmt: skip
    if args.json:
        print(json.dumps(_finite(summary), indent=2, allow_nan=False))
    else:
        print(_table(summary))
    failed = [c["name"] for c in summary["criteria"] if not c["ok"]]
    if failed:
        print(f"soak failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "soak",
        help="run orbithil fly for minutes under full telemetry and commands; check that "
        "memory and queues stay flat, no slips, every command completed",
    )
    p.add_argument("--chip", default=DEFAULT_CHIP, help=f"HAL URL (default {DEFAULT_CHIP})")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    p.add_argument("--sample-s", type=float, default=5.0,
                   help="seconds between samples of RSS and telemetry (default 5)")  # fmt: skip
    p.add_argument("--warmup-s", type=float, default=60.0,
                   help="samples before this are left out of the RSS slope "
                   "(default 60)")  # fmt: skip
    p.add_argument("--command-period", type=float, default=0.2,
                   help="seconds between commands, cycling NOOP, POOL_STATUS, SUBMIT_JOB "
                   "(default 0.2)")  # fmt: skip
    p.add_argument("--job-images", type=int, default=2, help="images per SUBMIT_JOB (default 2)")
    p.add_argument("--jobs-in-flight", type=int, default=2,
                   help="most unfinished jobs: a SUBMIT_JOB due while this many run is a NOOP "
                   "instead, so the load follows the chip's speed (default 2)")  # fmt: skip
    p.add_argument("--realtime", choices=["auto", "on", "off"], default="auto",
                   help="the stack's realtime setting (default auto)")  # fmt: skip
    p.add_argument("--rss-slope-max", type=float, default=Limits.rss_slope_mib_per_min,
                   help="MiB/min of RSS growth after the warm-up judged a leak (default "
                   f"{Limits.rss_slope_mib_per_min:g})")  # fmt: skip
    p.add_argument("--queue-max", type=int, default=Limits.queue_max,
                   help=f"most JOBS_QUEUED allowed (default {Limits.queue_max})")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=main)
