// im2col.cu: im2col and col2im, the column copies behind conv2d (tinyalex/kernels/cupy/conv.py).
//
// Kernels, each templated on T = float or double; x is NCHW and C-contiguous:
//   im2col<T>  x (N, C, H, W) -> cols. One thread per (n, c, oh, ow), a grid-stride loop
//              over N*C*OH*OW, one block's outputs at a time; each thread copies its
//              kh*kw window (zero padding) into the kh*kw rows c*kh*kw + i*kw + j of its
//              column, reading the rows its block staged in shared memory (windows.cuh).
//              Tap (i, j) of window (oh, ow) reads padded pixel (oh*sh + i*dh, ow*sw + j*dw):
//              (dh, dw) is the dilation, 1 for an ordinary convolution.
//   col2im<T>  cols -> x (N, C, H, W), the adjoint. One thread per input pixel, a
//              grid-stride loop over N*C*H*W; each thread SUMS the column entries of the
//              taps (i, j) that read its pixel, in a fixed order: deterministic, no atomics.
//              It loops over the windows that can cover its pixel (ceil(kh/sh) x ceil(kw/sw)
//              at dilation 1), not over all kh*kw taps: at stride 1 a warp reads 32
//              consecutive entries of one column row per step.
// Launch: 1-D, 256 threads per block, grid = min(ceil(total / 256), 2^20) blocks.
//
// Column layout. Entry (n, row, l), with row = c*kh*kw + i*kw + j and l = oh*OW + ow,
// lives at cols[n * sample_stride + row * row_stride + l]:
//   sample_stride = C*kh*kw*L, row_stride = L    -> (N, C*kh*kw, L), the KERNEL_API layout;
//   sample_stride = L,         row_stride = N*L  -> (C*kh*kw, N*L), every sample side by
//                                                   side, so one GEMM covers the batch.
// L = OH*OW. Flat offsets are 64-bit: the columns of a batch can pass 2^31 elements.

#include "windows.cuh"

// Shared memory for the rows a block of im2col stages (windows.cuh): 10240 floats or 5120
// doubles, enough for every block of AlexNet's float layers (conv1's take up to 38 rows of
// 259 words); beyond it a block reads x directly.
inline constexpr int IM2COL_STAGE_BYTES = 40960;

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                       int ph, int pw, int dh, int dw, int OH, int OW,
                       long long sample_stride, long long row_stride)
{
    constexpr int capacity = IM2COL_STAGE_BYTES / (int)sizeof(T);
    __shared__ T stage[capacity];
    const WindowGeometry g{H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW};
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
            const int n = (int)(plane / C);
            const int c = (int)(plane - (long long)n * C);
            const int oh = l / OW;
            const int ow = l - oh * OW;
            T* out = cols + n * sample_stride + (long long)c * kh * kw * row_stride + l;
            for (int i = 0; i < kh; ++i) {
                for (int j = 0; j < kw; ++j) {
                    *out = tap(x, stage, g, staged, plane, oh * sh + i * dh, ow * sw + j * dw, T(0));
                    out += row_stride;                    // next row: (i, j + 1)
                }
            }
        }
        __syncthreads();                                  // all have read before the next stage
    }
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ x,
                       int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                       int ph, int pw, int dh, int dw, int OH, int OW,
                       long long sample_stride, long long row_stride)
{
    const long long HW = (long long)H * W;
    const long long total = (long long)N * C * HW;
    // The windows over one padded row: oh in [(hp - (kh-1)*dh) / sh, hp / sh], at most
    // per_row of them (likewise columns).
    const int per_row = ((kh - 1) * dh + sh) / sh;
    const int per_col = ((kw - 1) * dw + sw) / sw;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + c
        const int hw = (int)(t - plane * HW);
        const int n = (int)(plane / C);
        const int c = (int)(plane - (long long)n * C);
        const int hp = hw / W + ph;                       // the pixel in padded coordinates
        const int wp = hw % W + pw;
        const T* col_c = cols + n * sample_stride + (long long)c * kh * kw * row_stride;
        // Every candidate window (oh, ow), from hp / sh down, so that taps (i, j) come in
        // ascending order: tap i of window oh reads row oh*sh + i*dh, so i = (hp - oh*sh) / dh
        // when that divides and lies in [0, kh). A candidate that is no tap reads the entry
        // of the nearest one and adds an exact +0 (sum starts at +0): every lane reads at
        // every step, and the sum adds the same terms in the same order as a loop over taps.
        T sum = T(0);
        for (int a = 0; a < per_row; ++a) {
            const int oh = hp / sh - a;
            const int di = hp - oh * sh;                  // i*dh
            const bool row_tap = oh >= 0 && oh < OH && di % dh == 0 && di / dh < kh;
            const int i = min(di / dh, kh - 1);
            for (int b = 0; b < per_col; ++b) {
                const int ow = wp / sw - b;
                const int dj = wp - ow * sw;
                const bool tap = row_tap && ow >= 0 && ow < OW && dj % dw == 0 && dj / dw < kw;
                const int j = min(dj / dw, kw - 1);
                const T v = col_c[(long long)(i * kw + j) * row_stride
                                  + min(max(oh, 0), OH - 1) * OW + min(max(ow, 0), OW - 1)];
                sum += tap ? v : T(0);
            }
        }
        x[t] = sum;
    }
}
