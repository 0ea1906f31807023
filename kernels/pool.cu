// pool.cu: 2-D max and average pooling, forward and backward (tinyalex/kernels/cupy/pool.py).
//
// Kernels, each templated on T = float or double; NCHW, C-contiguous:
//   max_pool2d_forward<T>   x (N, C, H, W) -> y (N, C, OH, OW) and argmax (N, C, OH, OW)
//                           int32. One thread per output pixel, a grid-stride loop over
//                           N*C*OH*OW; each thread scans its kh x kw window in row-major order,
//                           from the rows its block staged in shared memory (windows.cuh).
//   max_pool2d_backward<T>  gy (N, C, OH, OW), argmax -> gx (N, C, H, W). One thread per
//                           input pixel, a grid-stride loop over N*C*H*W; each thread loops
//                           over the output windows that cover its pixel and adds gy where
//                           that window's argmax is this pixel, reading gy and argmax from
//                           the rows its block staged in shared memory (POOL_GATHER_WORDS).
//                           Overlapping windows (stride < kernel) therefore add in a fixed
//                           order: deterministic, no atomics.
//   avg_pool2d_forward<T>   x (N, C, H, W), divisor (OH, OW) -> y (N, C, OH, OW). One thread
//                           per output pixel, a grid-stride loop over N*C*OH*OW; each thread
//                           sums its window's real pixels, staged as for max pooling, and
//                           divides by its divisor.
//   avg_pool2d_backward<T>  gy (N, C, OH, OW), divisor (OH, OW) -> gx (N, C, H, W). One
//                           thread per input pixel, a grid-stride loop over N*C*H*W, adding
//                           gy / divisor of every window that covers the pixel, staged as
//                           for max pooling: a gather in a fixed order, no atomics.
// Launch: 1-D, 256 threads per block, grid = min(ceil(total / 256), 2^20) blocks.
//
// Semantics (PyTorch's): the launcher computes OH and OW (tinyalex.shapes.pool_output_size,
// floor or ceil mode; either way every window starts inside the image or the top/left
// padding, and padding <= kernel / 2, so every window holds a real pixel). Max pooling
// pads with -inf, so padding never wins. argmax is the flat index h*W + w into the
// unpadded input plane of the FIRST maximum in row-major window order (a later tie does
// not replace it); the scan starts at the first real pixel, so it is never padding, even
// in a window of -inf. A NaN always takes over, as in PyTorch, so a window with a NaN
// gives NaN. Average pooling pads with zeros, so its windows are clipped to the image too;
// the launcher computes torch's divisors (count_include_pad, divisor_override) once, on
// the host (tinyalex.shapes.avg_pool_divisors), and passes them as an (OH, OW) array.

#include "windows.cuh"

// Shared memory for the rows a block of a pooling forward stages (windows.cuh): 8192 floats
// or 4096 doubles, enough for AlexNet's pools (a block of pool5 stages up to 9 planes of 13
// rows of 45 words); beyond it a block reads x directly.
inline constexpr int POOL_STAGE_BYTES = 32768;

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   int* __restrict__ argmax,
                                   int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int OH, int OW)
{
    constexpr int capacity = POOL_STAGE_BYTES / (int)sizeof(T);
    __shared__ T stage[capacity];
    const WindowGeometry g{H, W, kh, kw, sh, sw, ph, pw, 1, 1, OH, OW};
    const T padding = -T(1) / T(0);                       // -inf (NVRTC has no INFINITY)
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * L;
    for (long long t0 = (long long)blockIdx.x * blockDim.x; t0 < total;
         t0 += (long long)gridDim.x * blockDim.x) {
        const StagedRows staged = plan_stage(g, t0, min(t0 + (long long)blockDim.x, total) - 1,
                                             capacity);
        stage_rows(x, g, staged, padding, stage);
        __syncthreads();
        const long long t = t0 + threadIdx.x;
        if (t < total) {
            const long long plane = t / L;                // n*C + c
            const int l = (int)(t - plane * L);
            const int oh = l / OW;
            const int ow = l - oh * OW;
            // The scan starts at the window's first real pixel; -inf padding never wins.
            const int h_first = max(oh * sh - ph, 0);
            const int w_first = max(ow * sw - pw, 0);
            int best_index = h_first * W + w_first;
            T best = tap(x, stage, g, staged, plane, h_first + ph, w_first + pw, padding);
            for (int i = 0; i < kh; ++i) {
                for (int j = 0; j < kw; ++j) {
                    const T v = tap(x, stage, g, staged, plane, oh * sh + i, ow * sw + j, padding);
                    if (v > best || isnan(v)) {           // strict: the first maximum stays
                        best = v;
                        best_index = (oh * sh + i - ph) * W + ow * sw + j - pw;
                    }
                }
            }
            y[t] = best;
            argmax[t] = best_index;
        }
        __syncthreads();                                  // all have read before the next stage
    }
}

// The backward gathers stage, per block, the outputs whose windows cover the block's input
// pixels [t0, t1]: the output rows from (plane of t0, first candidate row of t0) to (plane of
// t1, last candidate row of t1), a contiguous range of gy (and argmax), copied by coalesced
// requests from a 32-element line. A pixel is covered by at most per_row x per_col = ceil(kh/sh) x ceil(kw/sw) windows, among
// the candidates oh in (hp/sh - per_row, hp/sh], ow likewise. Every thread loops over all
// of them in ascending (oh, ow) order, and one that does not cover the pixel adds an exact
// +0: a window's argmax lies inside it, so it never matches; an average's share is dropped;
// a candidate outside the output reads the nearest output, whose value is dropped. So every
// lane reads at every step, lanes read the same or consecutive words (no bank conflicts),
// and the sums add the same terms in the same order as before.
inline constexpr int POOL_GATHER_WORDS = 2048;

struct CoveringOutputs {
    long long base;                                       // the first staged output, flat
    long long last;
    bool fits;                                            // false: read gy directly
};

__device__ inline CoveringOutputs covering_outputs(long long t0, long long t1, int H, int W,
                                                   int per_row, int sh, int ph, int OH, int OW)
{
    const long long HW = (long long)H * W;
    const long long L = (long long)OH * OW;
    const long long plane_first = t0 / HW;
    const long long plane_last = t1 / HW;
    const int hp_first = (int)((t0 - plane_first * HW) / W) + ph;
    const int hp_last = (int)((t1 - plane_last * HW) / W) + ph;
    const int oh_first = max(hp_first / sh - per_row + 1, 0);
    const int oh_last = min(hp_last / sh, OH - 1);
    CoveringOutputs c;
    c.base = (plane_first * L + (long long)oh_first * OW) & ~31LL;
    c.last = plane_last * L + (long long)oh_last * OW + OW - 1;
    c.fits = c.last - c.base < POOL_GATHER_WORDS;
    return c;
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ gy, const int* __restrict__ argmax,
                                    T* __restrict__ gx,
                                    int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, int OH, int OW)
{
    __shared__ T gy_stage[POOL_GATHER_WORDS];
    __shared__ int argmax_stage[POOL_GATHER_WORDS];
    const long long HW = (long long)H * W;
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * HW;
    const int per_row = (kh + sh - 1) / sh;               // windows over one pixel, at most
    const int per_col = (kw + sw - 1) / sw;
    for (long long t0 = (long long)blockIdx.x * blockDim.x; t0 < total;
         t0 += (long long)gridDim.x * blockDim.x) {
        const CoveringOutputs staged = covering_outputs(
            t0, min(t0 + (long long)blockDim.x, total) - 1, H, W, per_row, sh, ph, OH, OW);
        if (staged.fits) {
            for (long long o = staged.base + threadIdx.x; o <= staged.last; o += blockDim.x) {
                gy_stage[o - staged.base] = gy[o];
                argmax_stage[o - staged.base] = argmax[o];
            }
        }
        __syncthreads();
        const long long t = t0 + threadIdx.x;
        if (t < total) {
            const long long plane = t / HW;               // n*C + c
            const int hw = (int)(t - plane * HW);         // this pixel's index in its plane
            const int hp = hw / W + ph;                   // padded coordinates
            const int wp = hw % W + pw;
            // Window oh covers padded rows [oh*sh, oh*sh + kh), so the windows over hp are
            // among the per_row candidates up to hp / sh. Likewise for columns.
            T sum = T(0);
            for (int a = 0; a < per_row; ++a) {
                const int oh = hp / sh - per_row + 1 + a;
                for (int b = 0; b < per_col; ++b) {
                    const int ow = wp / sw - per_col + 1 + b;
                    const bool exists = oh >= 0 && oh < OH && ow >= 0 && ow < OW;
                    const long long o = plane * L + (long long)min(max(oh, 0), OH - 1) * OW
                                        + min(max(ow, 0), OW - 1);
                    const int index = staged.fits ? argmax_stage[o - staged.base] : argmax[o];
                    const T g = staged.fits ? gy_stage[o - staged.base] : gy[o];
                    sum += exists && index == hw ? g : T(0);  // +0 is exact: sum starts at +0
                }
            }
            gx[t] = sum;
        }
        __syncthreads();                                  // all have read before the next stage
    }
}


template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, const T* __restrict__ divisor,
                                   T* __restrict__ y,
                                   int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int OH, int OW)
{
    constexpr int capacity = POOL_STAGE_BYTES / (int)sizeof(T);
    __shared__ T stage[capacity];
    const WindowGeometry g{H, W, kh, kw, sh, sw, ph, pw, 1, 1, OH, OW};
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * L;
    for (long long t0 = (long long)blockIdx.x * blockDim.x; t0 < total;
         t0 += (long long)gridDim.x * blockDim.x) {
        const StagedRows staged = plan_stage(g, t0, min(t0 + (long long)blockDim.x, total) - 1,
                                             capacity);
        stage_rows(x, g, staged, T(0), stage);
        __syncthreads();
        const long long t = t0 + threadIdx.x;
        if (t < total) {
            const long long plane = t / L;                // n*C + c
            const int l = (int)(t - plane * L);           // oh*OW + ow
            const int oh = l / OW;
            const int ow = l - oh * OW;
            T sum = T(0);                                 // zero padding adds +0: no change
            for (int i = 0; i < kh; ++i) {
                for (int j = 0; j < kw; ++j) {
                    sum += tap(x, stage, g, staged, plane, oh * sh + i, ow * sw + j, T(0));
                }
            }
            y[t] = sum / divisor[l];
        }
        __syncthreads();                                  // all have read before the next stage
    }
}

template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ gy, const T* __restrict__ divisor,
                                    T* __restrict__ gx,
                                    int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, int OH, int OW)
{
    __shared__ T share_stage[POOL_GATHER_WORDS];          // gy / divisor, each window's share
    const long long HW = (long long)H * W;
    const long long L = (long long)OH * OW;
    const long long total = (long long)N * C * HW;
    const int per_row = (kh + sh - 1) / sh;
    const int per_col = (kw + sw - 1) / sw;
    for (long long t0 = (long long)blockIdx.x * blockDim.x; t0 < total;
         t0 += (long long)gridDim.x * blockDim.x) {
        const CoveringOutputs staged = covering_outputs(
            t0, min(t0 + (long long)blockDim.x, total) - 1, H, W, per_row, sh, ph, OH, OW);
        if (staged.fits) {
            for (long long o = staged.base + threadIdx.x; o <= staged.last; o += blockDim.x) {
                share_stage[o - staged.base] = gy[o] / divisor[o % L];
            }
        }
        __syncthreads();
        const long long t = t0 + threadIdx.x;
        if (t < total) {
            const long long plane = t / HW;               // n*C + c
            const int hw = (int)(t - plane * HW);
            const int hp = hw / W + ph;                   // padded coordinates
            const int wp = hw % W + pw;
            // The candidate windows, as in max_pool2d_backward.
            T sum = T(0);
            for (int a = 0; a < per_row; ++a) {
                const int oh = hp / sh - per_row + 1 + a;
                for (int b = 0; b < per_col; ++b) {
                    const int ow = wp / sw - per_col + 1 + b;
                    const bool exists = oh >= 0 && oh < OH && ow >= 0 && ow < OW;
                    const bool covers = exists && oh * sh + kh > hp && ow * sw + kw > wp;
                    const int l = min(max(oh, 0), OH - 1) * OW + min(max(ow, 0), OW - 1);
                    const T share = staged.fits ? share_stage[plane * L + l - staged.base]
                                                : gy[plane * L + l] / divisor[l];
                    sum += covers ? share : T(0);         // +0 is exact: sum starts at +0
                }
            }
            gx[t] = sum;
        }
        __syncthreads();                                  // all have read before the next stage
    }
}
