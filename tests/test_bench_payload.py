"""``orbithil bench payload`` at small sizes on the behavioural model only (seconds): its
JSON has every figure, the chips agree with numpy bit for bit, and the failover run loses
and doubles no job."""

from __future__ import annotations

import json

import numpy as np

from orbithil.payload.model import accuracy, default_model
from orbithil.tools.bench import BENCHMARKS
from orbithil.tools.bench import payload as bench

SMALL = bench.Sizes(
    images={"model": 8},
    repeats=1,
    policy_items=2,
    policy_repeats=1,
    failover_jobs=4,
    failover_items=2,
)


def test_bench_payload_on_the_model_reports_every_figure_and_loses_no_job():
    result = bench.run(backends=("model",), sizes=SMALL)
    out = json.loads(json.dumps(result.as_json("payload")))  # what --json prints
    metrics = out["metrics"]
    for key in (
        "inferences_per_s_model_1",
        "inferences_per_s_model_2",
        "inferences_per_s_model_2_pipelined",
        "pipeline_over_shard_model",
        "scaling_2_over_1_model",
        "accuracy_float",
        "accuracy_int8",
        "accuracy_chip",
        "policy_cost_rerun",
        "policy_cost_dmr",
        "policy_cost_tmr",
        "jobs_lost",
        "jobs_duplicated",
        "failover_wrong_classes",
        "logit_mismatches",
    ):
        assert key in metrics, key
    assert metrics["inferences_per_s_model_1"] > 0 and metrics["inferences_per_s_model_2"] > 0
    assert metrics["jobs_lost"] == 0 and metrics["jobs_duplicated"] == 0
    assert metrics["failover_wrong_classes"] == 0 and metrics["logit_mismatches"] == 0
    assert metrics["failover_fences"] >= 1  # the dead line was noticed: a real failover
    # a vote costs its runs: none one per item, rerun and dmr two, tmr three (counted, not
    # timed: the times' ratios are the benchmark's figures, and swing on a busy machine)
    assert metrics["policy_runs_none"] == 1.0
    assert metrics["policy_runs_rerun"] == 2.0 and metrics["policy_runs_dmr"] == 2.0
    assert metrics["policy_runs_tmr"] == 3.0  # the model's chips agree: no tie-breaking run
    assert all(metrics[f"policy_cost_{p}"] > 0 for p in ("rerun", "dmr", "tmr"))

    model = default_model()
    xs, labels = model.test_split(limit=SMALL.images["model"])
    assert metrics["test_images"] == len(xs)
    assert metrics["accuracy_int8"] == round(accuracy(model.logits(xs), labels), 4)
    assert metrics["accuracy_chip"] == metrics["accuracy_int8"]
    assert metrics["accuracy_float"] == round(accuracy(model.float_logits(xs), labels), 4)
    assert "scaling_2_over_1" not in out["targets"]  # a simulated-chip target only
    assert all(out["targets_met"].values())


def test_bench_payload_is_a_named_benchmark():
    assert BENCHMARKS["payload"][0] == "orbithil.tools.bench.payload"


def test_the_bridge_counts_frames_however_the_bytes_are_cut():
    """A simulated chip idles (sleeps) only once it has answered every frame the host
    sent; the bridge counts frames by their closing delimiter."""
    from orbithil.hal import codec
    from orbithil.sim.bridge import FrameCount

    wire = codec.frame_encode(1, 2, b"abc") + b"\0\0" + codec.frame_encode(2, 2, b"")
    rng = np.random.default_rng(3)
    for _ in range(20):
        cuts = sorted(rng.choice(np.arange(1, len(wire)), size=4, replace=False))
        count = FrameCount()
        for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            count.feed(wire[a:b])
        assert count.frames == 2
    half = FrameCount()
    half.feed(wire[:5])
    assert half.frames == 0  # a frame still open is not counted
