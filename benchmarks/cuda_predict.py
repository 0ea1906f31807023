"""Predicted H100 time of every CUDA kernel at the 2012 AlexNet's shapes, from counted traffic.

No GPU: each case of benchmarks/bench_cuda.py (its alexnet_cases, batch 128) runs
tinyalex's side, the cupy kernel set in float32, on the CUDA emulator's counting mode
(tests/cuda_emulator, docs/cuda-emulator.md). Emulating batch 128 on a CPU would take
hours, so every case is counted at batch 1 and at batch 2 (sgd_update: on 2^15 and 2^16
elements) and each count is extrapolated along the line through those two points:

    q(128) = q(2) + (128 - 2) * (q(2) - q(1))

Every count here is such a line in the batch: per-sample work adds the same amount per
sample, including the warps that straddle two samples, and what does not grow with the
batch (weights, grid tails) is the intercept. SCALING_CHECKS count two cases at a
larger batch and compare.

Per kernel launch: bytes moved (32 x the sectors of every warp-level request, no cache
hits), sectors per request, bank-conflict replays; ideal bytes (each input read once, each
output written once); FLOPs; and the predicted time max(bytes / 3.35 TB/s, FLOPs / 67
TFLOP/s), beside the ideal kernel's. The work handed to cuBLAS and CuPy, which the
emulator does not run, is modelled at its ideal bytes and FLOPs. Registers, spills and
occupancy come from NVRTC's ptxas report (tests/cuda_resources.py).

    PYTHONPATH=. python benchmarks/cuda_predict.py --out benchmarks/results    # cuda-predicted.md and .json
    PYTHONPATH=. python benchmarks/cuda_predict.py --only lrn pool             # some cases, printed

benchmarks/gpu_check.py puts the committed cuda-predicted.json beside what a GPU measures.
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for folder in (HERE, os.path.join(ROOT, "tests")):       # bench_cuda's cases; the emulator, cuda_resources
    if folder not in sys.path:
        sys.path.insert(0, folder)

import bench_cuda  # noqa: E402

H100_BYTES_PER_S = 3.35e12          # HBM3 of the H100 SXM
H100_FLOP_PER_S = 67e12             # its fp32 peak without tensor cores
SAMPLE_BATCHES = (1, 2)             # every case is counted at these batches, then extrapolated
SGD_SAMPLES = (2**15, 2**16)        # sgd_update's elements counted, extrapolated to all parameters
#: Cases also counted at a larger batch, to check the extrapolation: one kernel pair at 8x the
#: larger sample, and the cross-entropy (cheap to emulate) at the full batch 128.
SCALING_CHECKS = (("lrn2", 16), ("cross-entropy", 128))
#: Issue 24's thresholds: a kernel over one is rewritten, or docs/ says why it cannot be.
MOVED_OVER_IDEAL_LIMIT = 1.5
SECTORS_PER_REQUEST_LIMIT = 4       # of 4-byte elements: 32 lanes x 4 bytes fill 4 sectors
#: Arrays a kernel reads and writes in place: an ideal kernel reads them once and writes them once.
IN_PLACE = {"sgd_update": ("param", "buf")}
ELEMENT_BYTES = 4                   # float32, as bench_cuda.py runs every case


def _lrn_size(case):
    return case.params[0]


def _pool_window(case):
    (kh, kw), (sh, sw), _ = case.params
    return kh, kw, sh, sw


def _col2im_taps(case):
    """The column entries summed per pixel, on average: kh*kw / (sh*sw)."""
    if case.op == "conv":
        (_, _, kh, kw), s = case.params[0], case.params[1]
        return kh * kw / (s * s)
    (kh, kw), (sh, sw), _ = case.params
    return kh * kw / (sh * sw)


#: Arithmetic per element of a kernel's first output array, read off its source (+, *, a
#: compare, and exp, log or pow counted as one each; integer work not counted). None comes
#: near the 20 flop/byte where an H100 stops being memory-bound, so the bytes decide.
FLOPS_PER_ITEM = {
    "relu_forward": lambda case: 1,
    "relu_backward": lambda case: 1,
    "dropout": lambda case: 3,
    "lrn_forward": lambda case: 2 * _lrn_size(case) + 5,
    "lrn_backward": lambda case: 3 * _lrn_size(case) + 6,
    "max_pool2d_forward": lambda case: _pool_window(case)[0] * _pool_window(case)[1],
    "max_pool2d_backward": lambda case: 2 * math.ceil(_pool_window(case)[0] / _pool_window(case)[2])
    * math.ceil(_pool_window(case)[1] / _pool_window(case)[3]),
    "im2col": lambda case: 0,
    "col2im": _col2im_taps,
    "cross_entropy_forward": lambda case: 4 * case.shape[1] + 10,      # per row: max, exp, sum over C
    "cross_entropy_backward": lambda case: 9,
    "sgd_update": lambda case: 7,
}

#: The counts of a row, every one a line in the batch (see the module's docstring).
QUANTITIES = ("flops", "ideal_bytes", "moved_bytes", "load_requests", "load_sectors", "store_requests",
              "store_sectors", "replays", "launches")


# --- counting one case ------------------------------------------------------------------------

def tinyalex_calls(case, cp, rng):
    """{direction: call} of tinyalex's side of bench_cuda's `case` (what its runner times), on
    `cp`: the emulator's CuPy stand-in here."""
    import tinyalex.kernels.cupy as ours
    from tinyalex.kernels.cupy.loader import matmul

    def array(shape, scale=1.0):
        return cp.asarray((rng.standard_normal(shape) * scale).astype(np.float32))
    x = array(case.shape)
    if case.op == "conv":
        w_shape, s, p, g, need_gx = case.params
        w, b = array(w_shape, 1 / math.sqrt(math.prod(w_shape[1:]))), array(w_shape[:1])
        y, cache = ours.conv2d_forward(x, w, b, (s, s), (p, p), g)
        gy = array(y.shape)
        return {"forward": lambda: ours.conv2d_forward(x, w, b, (s, s), (p, p), g),
                "backward": lambda: ours.conv2d_backward(gy, cache, need_gx)}
    if case.op == "linear":
        (M, K), (out,) = case.shape, case.params
        w, b, gy = array((out, K), 1 / math.sqrt(K)), array((out,)), array((M, out))

        def forward():                       # tinyalex.ops.linear on the GPU: one GEMM, then the bias
            y = matmul(x, w.T)
            y += b
            return y
        return {"forward": forward, "backward": lambda: (matmul(gy, w), matmul(gy.T, x), gy.sum(axis=0))}
    if case.op == "im2col":
        k, s, p = case.params
        cols = array(ours.im2col(x, k, s, p).shape)
        return {"im2col": lambda: ours.im2col(x, k, s, p), "col2im": lambda: ours.col2im(cols, x.shape, k, s, p)}
    if case.op == "sgd":
        lr, momentum, weight_decay = case.params
        grad, buf = array(case.shape, 0.01), array(case.shape, 0.01)
        return {"step": lambda: ours.sgd_update(x, grad, buf, lr, momentum, weight_decay, False, False)}
    if case.op == "cross_entropy":
        N, C = case.shape
        target = cp.asarray(rng.integers(0, C, N))
        loss, cache = ours.cross_entropy_forward(x, target, "mean")
        gloss = cp.asarray(np.float32(1.0))
        return {"forward": lambda: ours.cross_entropy_forward(x, target, "mean"),
                "backward": lambda: ours.cross_entropy_backward(gloss, cache)}
    forward = {"relu": ours.relu_forward,
               "lrn": lambda x: ours.lrn_forward(x, *case.params),
               "pool": lambda x: ours.max_pool2d_forward(x, *case.params),
               "dropout": lambda x: ours.dropout_forward(x, case.params[0], 12345)}[case.op]
    backward = {"relu": ours.relu_backward, "lrn": ours.lrn_backward, "pool": ours.max_pool2d_backward,
                "dropout": ours.dropout_backward}[case.op]
    y, cache = forward(x)
    gy = array(y.shape)
    return {"forward": lambda: forward(x), "backward": lambda: backward(gy, cache)}


def count_case(case):
    """{direction: Counted} (cuda_emulator.traffic) of `case`, run on the emulator."""
    from cuda_emulator import count_traffic, fake_cupy
    results = {}
    with fake_cupy.installed() as cp:
        for direction, call in tinyalex_calls(case, cp, np.random.default_rng(0)).items():
            with count_traffic() as counted:
                call()
            results[direction] = counted
    return results


def ideal_bytes(traffic):
    """Each array the kernel reads, read once, and each it writes, written once: a `const T*`
    argument is an input, any other an output, and IN_PLACE's arrays are both."""
    in_place = IN_PLACE.get(traffic.kernel.split("<")[0], ())
    return sum(a.nbytes * ((a.const or a.name in in_place) + (not a.const))
               for a in traffic.arrays if not a.shared)


def quantities(case, counted):
    """{kernel: (ours, {quantity: value}, threads per block)} of one counted call: each of our
    kernels (its launches summed), then each kind of CuPy's and cuBLAS's work."""
    from cuda_emulator.traffic import combine
    found = {}
    for name in dict.fromkeys(launch.kernel.split("<")[0] for launch in counted):
        t = combine(launch for launch in counted if launch.kernel.split("<")[0] == name)
        items = next(a.nbytes // ELEMENT_BYTES for a in t.arrays if not a.const and not a.shared)
        found[name] = (True, {"flops": FLOPS_PER_ITEM[name](case) * items, "ideal_bytes": ideal_bytes(t),
                              "moved_bytes": t.bytes_moved, "load_requests": t.requests("global load"),
                              "load_sectors": t.sectors("global load"), "store_requests": t.requests("global store"),
                              "store_sectors": t.sectors("global store"), "replays": t.bank_conflict_replays,
                              "launches": t.launches}, math.prod(t.block))
    for what in dict.fromkeys(call.what for call in counted.library_calls):
        calls = [call for call in counted.library_calls if call.what == what]
        nbytes = sum(call.bytes for call in calls)
        q = dict.fromkeys(QUANTITIES, 0)
        q.update(flops=sum(call.flops for call in calls), ideal_bytes=nbytes, moved_bytes=nbytes, launches=len(calls))
        found[what] = (False, q, 0)
    return found


# --- the prediction ---------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    """One kernel of ours (or one kind of CuPy's or cuBLAS's work) in one case and direction."""
    case: object                    # bench_cuda.Case, at the full batch
    direction: str
    kernel: str                     # 'lrn_forward', or 'cuBLAS GEMM', 'CuPy elementwise', ...
    ours: bool                      # counted on the emulator (else modelled from its operands)
    q: dict                         # QUANTITIES at the full batch
    sample: dict                    # QUANTITIES as counted at the largest sample
    block: int = 0                  # threads per block of its launches (ours)

    def sectors_per_request(self, kind):
        """As counted at the largest sample: a ratio needs no extrapolation, and one of two
        extrapolated counts would carry the rounding of the last, partial warp."""
        requests = self.sample[f"{kind}_requests"]
        return self.sample[f"{kind}_sectors"] / requests if requests else 0.0

    @property
    def moved_over_ideal(self):
        return self.q["moved_bytes"] / self.q["ideal_bytes"] if self.q["ideal_bytes"] else 0.0

    @property
    def predicted_s(self):
        return max(self.q["moved_bytes"] / H100_BYTES_PER_S, self.q["flops"] / H100_FLOP_PER_S)

    @property
    def ideal_s(self):
        return max(self.q["ideal_bytes"] / H100_BYTES_PER_S, self.q["flops"] / H100_FLOP_PER_S)

    def flags(self):
        """Which of issue 24's thresholds this kernel is over (float32)."""
        if not self.ours:
            return []
        found = []
        if self.moved_over_ideal > MOVED_OVER_IDEAL_LIMIT:
            found.append(f"moved > {MOVED_OVER_IDEAL_LIMIT}x ideal")
        if max(self.sectors_per_request("load"), self.sectors_per_request("store")) > SECTORS_PER_REQUEST_LIMIT:
            found.append(f"> {SECTORS_PER_REQUEST_LIMIT} sectors/request")
        if self.q["replays"] > 0:
            found.append("bank conflicts")
        return found


def cases_at(batch):
    return {c.name: c for c in bench_cuda.alexnet_cases(batch)}


def samples(case):
    """[(the case at a sample size, that size)] and the full size, in the unit the case grows in."""
    if case.op == "sgd":
        return [(dataclasses.replace(case, shape=(n,)), n) for n in SGD_SAMPLES], case.shape[0]
    return [(cases_at(b)[case.name], b) for b in SAMPLE_BATCHES], case.shape[0]


def extrapolate(points, size):
    """The value at `size` on the line through the two (size, value) points."""
    (s1, v1), (s2, v2) = points
    return v2 + (size - s2) * (v2 - v1) / (s2 - s1)


def predict_case(case):
    """The rows of `case` at its full size, extrapolated from its counted samples."""
    sampled, size = samples(case)
    counts = [({d: quantities(small, c) for d, c in count_case(small).items()}, n) for small, n in sampled]
    rows = []
    for direction, kernels in counts[-1][0].items():
        for kernel, (ours, sample, block) in kernels.items():
            q = {name: max(0.0, extrapolate([(n, found[direction][kernel][1][name]) for found, n in counts], size))
                 for name in QUANTITIES}
            rows.append(Row(case, direction, kernel, ours, q, sample, block))
    return rows


def scaling_check(case_name, batch):
    """[(case name, batch, kernel, direction, quantity, extrapolated, counted)]: `case_name`
    counted at `batch` against its extrapolation from SAMPLE_BATCHES."""
    case = cases_at(batch)[case_name]
    predicted = {(r.kernel, r.direction): r for r in predict_case(case)}
    lines = []
    for direction, counted in count_case(case).items():
        for kernel, (ours, q, _) in quantities(case, counted).items():
            if ours:
                lines += [(case_name, batch, kernel, direction, name, predicted[(kernel, direction)].q[name], q[name])
                          for name in ("moved_bytes", "ideal_bytes", "load_sectors", "store_sectors")]
    return lines


def case_totals(rows):
    """{(case name, direction): (ideal s, predicted s)}: the sum of the kernels each call runs."""
    totals = {}
    for r in rows:
        ideal, predicted = totals.get((r.case.name, r.direction), (0.0, 0.0))
        totals[(r.case.name, r.direction)] = (ideal + r.ideal_s, predicted + r.predicted_s)
    return totals


# --- the report -------------------------------------------------------------------------------

def kernel_lines(rows, resources):
    import cuda_resources
    lines = ["| case | direction | kernel | ideal MB | moved MB | moved / ideal | load sectors/req | store"
             " sectors/req | bank replays | GFLOP | ideal µs | predicted µs | registers | spills B | occupancy |"
             " over issue 24's thresholds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.ours:
            res = resources[f"{r.kernel}<float>"]
            occupancy = cuda_resources.occupancy(res, r.block)
            counted = (f" {r.moved_over_ideal:.2f} | {r.sectors_per_request('load'):.2f} |"
                       f" {r.sectors_per_request('store'):.2f} | {r.q['replays']:,.0f} |")
            resource = f" {res.registers} | {res.spills} | {occupancy.fraction:.0%} |"
        else:
            counted, resource = " | | | |", " | | |"
        lines.append(f"| {r.case.name} | {r.direction} | {r.kernel if r.ours else f'*{r.kernel}*'} |"
                     f" {r.q['ideal_bytes'] / 1e6:.1f} | {r.q['moved_bytes'] / 1e6:.1f} |{counted}"
                     f" {r.q['flops'] / 1e9:.2f} | {r.ideal_s * 1e6:.1f} | {r.predicted_s * 1e6:.1f} |{resource}"
                     f" {'; '.join(f'**{f}**' for f in r.flags())} |")
    return lines


def report(rows, resources, scaling, batch, command):
    """cuda-predicted.md: method, the scaling check, every kernel, every case's total."""
    flagged = sorted({r.kernel for r in rows if r.flags()})
    (b1, b2), (n1, n2) = SAMPLE_BATCHES, SGD_SAMPLES
    lines = [f"# Predicted H100 time of tinyalex's CUDA kernels at the 2012 AlexNet's shapes, batch {batch}", "",
             f"Made without a GPU by `{command}` on {datetime.date.today().isoformat()}, on the CUDA emulator."
             " No number here was measured on a GPU: `benchmarks/gpu_check.py` puts these beside a GPU's.", "",
             "## Method and assumptions", "",
             "- **Counted, not timed.** Each case of `benchmarks/bench_cuda.py` runs tinyalex's side (the cupy"
             " kernel set, float32) on the CUDA emulator's counting mode (docs/cuda-emulator.md) at batch"
             f" {b1} and at batch {b2} (sgd_update: on {n1:,} and {n2:,} elements). Each count q is then"
             f" extrapolated along the line through the two: q({batch}) = q({b2}) + {batch - b2} (q({b2}) - q({b1}))"
             f" (sgd_update: to all {bench_cuda.alexnet_parameter_count():,} parameters). Per-sample work adds"
             " the same per sample, and what does not grow with the batch (weights, grid tails) is the"
             f" intercept. The check below counts two cases again at larger batches. Sectors per request"
             f" are those counted at batch {b2}: a ratio needs no extrapolation.",
             f"- **Predicted** = max(bytes moved / {H100_BYTES_PER_S / 1e12:.2f} TB/s, FLOPs /"
             f" {H100_FLOP_PER_S / 1e12:.0f} TFLOP/s), the H100 SXM's HBM3 bandwidth and its fp32 peak without"
             " tensor cores. **Ideal** is the same with the ideal bytes.",
             "- **Bytes moved** = 32 bytes x the distinct sectors of every warp-level request, loads and stores."
             " **L1 and L2 hits are not modelled**: a kernel that rereads what a cache would hold is charged"
             " every reread, so its prediction is an upper bound of DRAM traffic. **Latency is not modelled**"
             " (nor launch overhead, tail effects, or occupancy's effect on bandwidth): small kernels will take"
             " longer than predicted.",
             "- **Ideal bytes**: each input array read once and each output written once (a `const T*` argument"
             " is an input, any other an output; sgd_update's param and buf are both).",
             "- *Italic rows*: the work the cupy set hands to cuBLAS and CuPy, which the emulator does not run,"
             " at its ideal bytes and FLOPs (GEMMs at the strict-fp32 peak: no TF32).",
             "- FLOPs of tinyalex's kernels are read off their source (`FLOPS_PER_ITEM` in"
             " `benchmarks/cuda_predict.py`); none nears the 20 flop/byte where an H100 stops being memory-bound.",
             "- Registers, spills, occupancy: NVRTC 13's ptxas for sm_90 with the loader's options"
             " (`tests/cuda_resources.py`), float instantiation; theoretical occupancy at the launch's block size.",
             f"- Issue 24's thresholds: moved > {MOVED_OVER_IDEAL_LIMIT}x ideal, > {SECTORS_PER_REQUEST_LIMIT}"
             " sectors per request on a 4-byte type, any bank-conflict replay. Over one now: "
             + (", ".join(f"`{k}`" for k in flagged) or "none") + ".",
             "- Not at AlexNet's shapes, so not here: avg_pool2d_forward/backward and"
             " soft_cross_entropy_forward/backward (`tests/kernels/test_kernel_resources.py` prints their resources).",
             ""]
    if scaling:
        lines += ["## Scaling check: extrapolated against counted", "",
                  f"Cases counted again at a larger batch, against their extrapolation from batch {b1} and {b2}.", "",
                  "| case | batch | kernel | direction | quantity | extrapolated | counted | difference |",
                  "|---|---:|---|---|---|---:|---:|---:|"]
        lines += [f"| {case_name} | {batch} | {kernel} | {direction} | {name} | {extrapolated:,.0f} | {counted:,.0f} |"
                  f" {(extrapolated - counted) / counted:+.3%} |"
                  for case_name, batch, kernel, direction, name, extrapolated, counted in scaling]
        lines.append("")
    lines += ["## Every kernel", ""] + kernel_lines(rows, resources) + [""]
    lines += ["## Every case, as bench_cuda.py times it (the sum of its rows)", "",
              "| case | direction | ideal µs | predicted µs |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {direction} | {ideal * 1e6:.1f} | {predicted * 1e6:.1f} |"
              for (name, direction), (ideal, predicted) in case_totals(rows).items()]
    return "\n".join(lines) + "\n"


def as_json(rows, batch):
    """What gpu_check.py sets beside its measurements: per case and direction, then per kernel."""
    cases = {f"{name} {direction}": {"ideal_us": ideal * 1e6, "predicted_us": predicted * 1e6, "kernels": {}}
             for (name, direction), (ideal, predicted) in case_totals(rows).items()}
    for r in rows:
        entry = {"ours": r.ours, "ideal_us": r.ideal_s * 1e6, "predicted_us": r.predicted_s * 1e6,
                 **{name: r.q[name] for name in QUANTITIES}}
        if r.ours:
            entry.update(load_sectors_per_request=r.sectors_per_request("load"),
                         store_sectors_per_request=r.sectors_per_request("store"))
        cases[f"{r.case.name} {r.direction}"]["kernels"][r.kernel] = entry
    return {"batch": batch, "bytes_per_s": H100_BYTES_PER_S, "flop_per_s": H100_FLOP_PER_S, "cases": cases}


def write_atomically(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="the batch predicted (default 128, the paper's)")
    parser.add_argument("--only", nargs="*", default=[], help="cases whose name contains one of these words")
    parser.add_argument("--out", help="write cuda-predicted.md and cuda-predicted.json into this folder")
    args = parser.parse_args(argv)
    if args.batch <= max(SAMPLE_BATCHES):
        parser.error(f"--batch: expected more than {max(SAMPLE_BATCHES)}, the largest batch counted,"
                     f" got {args.batch}")
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import cuda_resources
    cases = [c for c in bench_cuda.alexnet_cases(args.batch) if not args.only or any(w in c.name for w in args.only)]
    rows = []
    for case in cases:
        rows += predict_case(case)
        print(f"counted {case.name}", file=sys.stderr, flush=True)
    scaling = [] if args.only else [line for check in SCALING_CHECKS for line in scaling_check(*check)]
    text = report(rows, cuda_resources.kernel_resources(), scaling, args.batch,
                  "PYTHONPATH=. python benchmarks/cuda_predict.py " + " ".join(argv))
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_atomically(os.path.join(args.out, "cuda-predicted.md"), text)
        write_atomically(os.path.join(args.out, "cuda-predicted.json"),
                         json.dumps(as_json(rows, args.batch), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
