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
given. Without overlap, the speed-up is step(1) / step(K); with backward overlapping the
allreduce (bucketing), the step is max(compute, allreduce) + the last bucket, which the
`overlap` flag models as max(compute(B / K), allreduce) + update.
"""
import argparse
import json

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


def step_seconds(ranks, compute_full_batch, nbytes, bandwidth, latency, update=0.0, overlap=False):
    """Predicted step time on `ranks` devices at a fixed global batch."""
    compute = compute_full_batch / ranks
    comm = ring_allreduce_seconds(nbytes, ranks, bandwidth, latency)
    return (max(compute, comm) if overlap else compute + comm) + update


def break_even_ranks(compute_full_batch, nbytes, bandwidth, latency, update=0.0, max_ranks=1024,
                     overlap=False):
    """The K beyond which adding devices no longer shortens the step (its minimum), and
    the parallel efficiency step(1) / (K * step(K)) at K = 2, 4, 8, ..."""
    times = {k: step_seconds(k, compute_full_batch, nbytes, bandwidth, latency, update, overlap)
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


def ranks_at_half_efficiency(compute_full_batch, nbytes, bandwidth):
    """K where the parallel efficiency c / (c + K * allreduce(K)) falls to 50%, latency
    left out: 2 (K - 1) bytes / bandwidth = c, so K = 1 + c * bandwidth / (2 * bytes)."""
    return 1 + compute_full_batch * bandwidth / (2 * nbytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", default="benchmarks/results/dist_cpu.json",
                        help="bench_dist.py's JSON (default: %(default)s)")
    parser.add_argument("--compute-ms", type=float, nargs="+", default=[50, 100, 200, 400],
                        help="assumed one-device forward+backward time of the global batch, ms")
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
