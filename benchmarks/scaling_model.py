"""A small model of a data-parallel AlexNet step on K devices, and its check against the
CPU ranks measured by bench_dist.py.

step(K) = compute(B / K) + allreduce(gradient bytes, K) + update

- compute(b): forward and backward of b images on one device, from a measurement
  (it scales with b once b is large enough to fill the device: we take it linear,
  compute(B / K) = compute(B) / K, which is optimistic for small per-device batches);
- allreduce: a ring (NCCL's algorithm for large messages, and MPICH's for long vectors):
  2 (K - 1) steps, each moving bytes / K over the slowest link and paying one latency,
  t = 2 (K - 1) / K * bytes / bandwidth + 2 (K - 1) * latency. Note the bytes term tends
  to 2 * bytes / bandwidth: a ring never gets cheaper with K, while compute shrinks as 1/K;
- update: the SGD step over the parameters, done redundantly on every rank (memory-bound,
  the same for any K).

Nothing here is a measurement: bench_dist.py measures, this file predicts from what it is
given. Without overlap, the speed-up is step(1) / step(K).

With the allreduce overlapped with backward in buckets (tinyalex/train/parallel/overlap.py),
:func:`overlapped_step_seconds` plays the step's timeline: forward, then backward, during
which each bucket is handed over once its last parameter's gradient is complete and the
buckets behind it have gone (last layers first); the link carries one bucket at a time,
each costing a ring allreduce of its bytes; the step ends when both backward and the last
bucket are done. When each parameter's gradient is complete comes from bench_dist.py's
backward timeline, measured on the CPU, as fractions of backward, scaled to the compute
time given (an assumption: the GPU's backward keeps the CPU's shape; at batch 8 the CPU's
fully connected layers take a larger share of it than a GPU's would at a larger batch,
which hands their buckets over later than a GPU would, so the overlap predicted is, if
anything, too small).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinyalex.train.parallel.distributed import NcclAllreduce, plan_buckets  # noqa: E402
from tinyalex.train.parallel.overlap import CPU_BUCKET_BYTES  # noqa: E402

#: Link bandwidths (bytes/s, per direction) and latencies (s) of common interconnects, as
#: their vendors specify them: inputs to the model, not measurements.
LINKS = {
    "nvlink4 (H100/H200 SXM, 18 links)": (450e9, 5e-6),
    "pcie5 x16": (64e9, 10e-6),
    "infiniband ndr 400G": (50e9, 5e-6),
    "ethernet 100G": (12.5e9, 20e-6),
}

#: AlexNet's trainable parameters (tinyalex.train.models.alexnet2012, 1000 classes), float32.
ALEXNET2012_PARAMETERS = 60_965_224


def ring_allreduce_seconds(nbytes, ranks, bandwidth, latency):
    """Time of a ring allreduce of `nbytes` over `ranks` ranks (0 for one rank)."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def step_seconds(ranks, compute_full_batch, nbytes, bandwidth, latency, update=0.0):
    """Predicted step time on `ranks` devices at a fixed global batch, the allreduce after
    backward."""
    compute = compute_full_batch / ranks
    comm = ring_allreduce_seconds(nbytes, ranks, bandwidth, latency)
    return compute + comm + update


def bucket_handovers(timeline, bucket_bytes):
    """[(fraction of backward done, bytes)] for each bucket of plan_buckets, in the order
    they are handed over (the last bucket first): a bucket goes when its last parameter's
    gradient is complete and the buckets behind it have gone. `timeline`: bench_dist.py's
    backward_timeline (param_bytes and ready_s in model order, backward_s); the EXTRAS'
    few bytes are left out."""
    sizes = [b // 4 for b in timeline["param_bytes"]]
    ends, offset = [], 0
    for size in sizes:
        offset += size
        ends.append(offset)
    handed, out = 0.0, []
    for start, stop in reversed(plan_buckets(sizes, bucket_bytes, 4)):
        ready = max(t for t, end in zip(timeline["ready_s"], ends) if start < end <= stop)
        handed = max(handed, ready / timeline["backward_s"])
        out.append((handed, 4 * (stop - start)))
    return out


def overlapped_step_seconds(ranks, forward, backward, handovers, bandwidth, latency, update=0.0):
    """Predicted step with the allreduce overlapped with backward: `forward` and `backward`
    seconds on one device, `handovers` as bucket_handovers gives them; the link carries one
    bucket at a time."""
    link_free = 0.0
    for fraction, nbytes in handovers:
        start = max(forward + fraction * backward, link_free)
        link_free = start + ring_allreduce_seconds(nbytes, ranks, bandwidth, latency)
    return max(forward + backward, link_free) + update


def break_even_ranks(compute_full_batch, nbytes, bandwidth, latency, update=0.0, max_ranks=1024):
    """The K beyond which adding devices no longer shortens the step (its minimum), and
    the parallel efficiency step(1) / (K * step(K)) at K = 2, 4, 8, ..."""
    times = {k: step_seconds(k, compute_full_batch, nbytes, bandwidth, latency, update)
             for k in range(1, max_ranks + 1)}
    best = min(times, key=times.get)
    efficiency = {k: times[1] / (k * times[k]) for k in (2, 4, 8, 16, 32, 64) if k <= max_ranks}
    return best, efficiency


def check_against_cpu(measured):
    """Predict the measured 2-rank CPU step from its parts: compute and update measured
    per rank, allreduce from the ring model at the bandwidth and latency fitted from the
    two microbenchmark sizes. Returns {model: (predicted s, measured s, relative error)}."""
    out = {}
    for model, runs in measured["models"].items():
        two = runs["2"]
        bandwidth, latency = measured["link"]["bandwidth"], measured["link"]["latency"]
        comm = ring_allreduce_seconds(two["gradient_bytes"], 2, bandwidth, latency)
        predicted = two["compute_s"] + comm + two["update_s"] + two["pack_s"]
        out[model] = (predicted, two["step_s"], predicted / two["step_s"] - 1, comm, two["allreduce_s"])
    return out


def check_overlap_against_cpu(measured):
    """Predict the measured 2-rank training steps (bench_dist.py's training_step: the
    allreduce after backward, and overlapped with it) from measured parts: a rank's compute,
    cut into forward and backward in the 1-rank timeline's proportion; the handovers of
    CPU_BUCKET_BYTES buckets; the link fit; the update and pack. Returns {model: {kind:
    (predicted s, measured s)}}."""
    out = {}
    link = measured["link"]
    for model, runs in measured["models"].items():
        two, timeline = runs["2"], runs["1"]["backward_timeline"]
        share = timeline["forward_s"] / (timeline["forward_s"] + timeline["backward_s"])
        forward, backward = two["compute_s"] * share, two["compute_s"] * (1 - share)
        rest = two["update_s"] + two["pack_s"]
        after = two["compute_s"] + ring_allreduce_seconds(two["gradient_bytes"], 2, link["bandwidth"],
                                                          link["latency"]) + rest
        overlapped = overlapped_step_seconds(2, forward, backward, bucket_handovers(timeline, CPU_BUCKET_BYTES),
                                             link["bandwidth"], link["latency"], rest)
        steps = two["training_step"]
        out[model] = {"after": (after, steps["after"]["wall_s"]),
                      "overlapped": (overlapped, steps["overlapped"]["wall_s"])}
    return out


#: The H100 systems of the prediction: K GPUs of one NVLink node (8 per node), and 64 as 8
#: such nodes, where the ring crosses InfiniBand (one 400G NIC per GPU), its slowest link.
H100_SYSTEMS = {2: "nvlink4 (H100/H200 SXM, 18 links)", 4: "nvlink4 (H100/H200 SXM, 18 links)",
                8: "nvlink4 (H100/H200 SXM, 18 links)", 64: "infiniband ndr 400G"}


def predict_h100(timeline, compute_ms, bucket_bytes=NcclAllreduce.BUCKET_BYTES):
    """{K: (link, step after, step overlapped, efficiency after, efficiency overlapped)} for
    alexnet2012 on K H100s: `compute_ms` the one-device forward+backward of the global batch
    (an input: none was measured on an H100 here), divided by K and cut into forward and
    backward, and the buckets handed over, as the CPU timeline says; NCCL's buckets; no
    update term."""
    compute = compute_ms / 1e3
    share = timeline["forward_s"] / (timeline["forward_s"] + timeline["backward_s"])
    handovers = bucket_handovers(timeline, bucket_bytes)
    nbytes = sum(timeline["param_bytes"])
    out = {}
    for ranks, name in H100_SYSTEMS.items():
        bandwidth, latency = LINKS[name]
        after = step_seconds(ranks, compute, nbytes, bandwidth, latency)
        overlapped = overlapped_step_seconds(ranks, compute * share / ranks, compute * (1 - share) / ranks,
                                             handovers, bandwidth, latency)
        out[ranks] = (name, after, overlapped, compute / (ranks * after), compute / (ranks * overlapped))
    return out


def ranks_at_half_efficiency(compute_full_batch, nbytes, bandwidth):
    """K where the parallel efficiency c / (c + K * allreduce(K)) falls to 50%, latency
    left out: 2 (K - 1) bytes / bandwidth = c, so K = 1 + c * bandwidth / (2 * bytes)."""
    return 1 + compute_full_batch * bandwidth / (2 * nbytes)


def print_overlap(measured, h100_compute_ms):
    print("\ncheck: the 2-rank CPU training step, allreduce after backward and overlapped with it")
    for model, kinds in check_overlap_against_cpu(measured).items():
        print(f"  {model:12s} " + "  ".join(f"{kind} predicted {p * 1e3:7.1f} ms measured {m * 1e3:7.1f} ms"
                                            for kind, (p, m) in kinds.items()))
    timeline = measured["models"]["alexnet2012"]["1"]["backward_timeline"]
    share = timeline["forward_s"] / (timeline["forward_s"] + timeline["backward_s"])
    print(f"\nalexnet2012 on K H100s, overlapped in {NcclAllreduce.BUCKET_BYTES / 2**20:.0f} MiB buckets; "
          f"forward {share:.0%} of compute, and when each bucket goes, from the CPU timeline:")
    print("  " + ", ".join(f"{n / 1e6:.1f} MB at {f:.0%}" for f, n in bucket_handovers(timeline, NcclAllreduce.BUCKET_BYTES)))
    for compute_ms in h100_compute_ms:
        for ranks, (name, after, overlapped, eff_after, eff_overlapped) in predict_h100(timeline, compute_ms).items():
            print(f"  compute {compute_ms:4.0f} ms, K={ranks:2d} ({name.split(' (')[0]}): step after "
                  f"{after * 1e3:6.2f} ms ({eff_after:4.0%}), overlapped {overlapped * 1e3:6.2f} ms "
                  f"({eff_overlapped:4.0%})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", default="benchmarks/results/dist_cpu_overlap.json",
                        help="bench_dist.py's JSON (default: %(default)s; dist_cpu.json, from before "
                             "the overlap, has no training steps or timeline: the overlap's parts are left out)")
    parser.add_argument("--compute-ms", type=float, nargs="+", default=[50, 100, 200, 400],
                        help="assumed one-device forward+backward time of the global batch, ms")
    parser.add_argument("--h100-compute-ms", type=float, nargs="+", default=[10, 25, 50],
                        help="assumed one-H100 forward+backward time of alexnet2012's global batch, "
                             "ms, for the overlap prediction")
    args = parser.parse_args()
    with open(args.measured) as f:
        measured = json.load(f)
    print("check: the model's 2-rank CPU step vs the measured one")
    link = measured["link"]
    print(f"  link fitted from the microbenchmark: {link['bandwidth'] / 1e9:.2f} GB/s, "
          f"latency {link['latency'] * 1e6:.0f} us")
    for model, (predicted, got, error, comm, comm_got) in check_against_cpu(measured).items():
        print(f"  {model:12s} step predicted {predicted * 1e3:8.1f} ms  measured {got * 1e3:8.1f} ms  "
              f"({error:+.0%}); allreduce predicted {comm * 1e3:6.1f} ms  measured {comm_got * 1e3:6.1f} ms")
    if "backward_timeline" in measured["models"]["alexnet2012"]["1"]:
        print_overlap(measured, args.h100_compute_ms)
    nbytes = 4 * ALEXNET2012_PARAMETERS
    for name, (bandwidth, latency) in LINKS.items():
        print(f"\n{name}: allreduce of {nbytes / 1e6:.0f} MB on 2/8 ranks: "
              f"{ring_allreduce_seconds(nbytes, 2, bandwidth, latency) * 1e3:.2f} / "
              f"{ring_allreduce_seconds(nbytes, 8, bandwidth, latency) * 1e3:.2f} ms")
        for compute_ms in args.compute_ms:
            best, eff = break_even_ranks(compute_ms / 1e3, nbytes, bandwidth, latency)
            half = ranks_at_half_efficiency(compute_ms / 1e3, nbytes, bandwidth)
            print(f"  compute {compute_ms:5.0f} ms: 50% efficiency at K={half:5.1f}, fastest at K={best:4d}; "
                  + " ".join(f"K={k}:{e:.0%}" for k, e in eff.items()))


if __name__ == "__main__":
    main()
