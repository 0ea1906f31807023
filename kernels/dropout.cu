// dropout.cu: inverted dropout with a counter-based RNG (tinyalex/kernels/cupy/dropout.py).
//
//   keep_i = uniform(seed, offset + i) >= p,   y_i = x_i * keep_i * scale,   scale = 1/(1-p) (0 if p == 1)
//
// uniform(seed, i) is tinyalex.kernels.counter_uniform, bit for bit: splitmix64 of
// seed + (i + 1) * 0x9E3779B97F4A7C15 (wrapping uint64 arithmetic), top 24 bits scaled
// to [0, 1). It is a pure function of (seed, i), so the numpy, numba and cupy kernel sets
// draw the same mask for the same seed, and the backward redraws it instead of storing it.
// offset is the flat index of x's first element in the whole batch: 0 in one process; a
// data-parallel rank holding rows [r0, r1) passes r0 * (elements per row), so it draws
// exactly those rows' masks of the one-process run (tinyalex/train/parallel/distributed.py).
//
// Kernels, templated on T = float or double; any shape, C-contiguous, n elements:
//   dropout<T>  x -> y. One thread per element, a grid-stride loop over n. The forward
//               runs it on x; the backward runs it on gy with the same seed, p and scale
//               (gx = gy * keep * scale), which redraws the identical mask.
// Launch: 1-D, 256 threads per block, grid = min(ceil(n / 256), 2^20) blocks.

// uniform(seed, i) in [0, 1) with 24 bits, exactly as float64 in counter_uniform: the
// integer z >> 40 < 2^24 and the scale 2^-24 are both exact in double.
__device__ __forceinline__ double counter_uniform(unsigned long long seed, long long i)
{
    unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (double)(z >> 40) * (1.0 / 16777216.0);
}

template <typename T>
__global__ void dropout(const T* __restrict__ x, T* __restrict__ y, long long n,
                        unsigned long long seed, long long offset, double p, T scale)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T keep = counter_uniform(seed, offset + i) >= p ? T(1) : T(0);
        y[i] = x[i] * keep * scale;                       // the reference's order of rounding
    }
}
