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
constexpr int IM2COL_STAGE_BYTES = 40960;

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
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long plane = t / HW;                   // n*C + c
        const int hw = (int)(t - plane * HW);
        const int n = (int)(plane / C);
        const int c = (int)(plane - (long long)n * C);
        const int hp = hw / W + ph;                       // the pixel in padded coordinates
        const int wp = hw % W + pw;
        const T* col_c = cols + n * sample_stride + (long long)c * kh * kw * row_stride;
        // Tap i of window oh reads padded row oh*sh + i*dh, so the taps that read row hp
        // are those i with hp - i*dh = oh*sh for an oh in [0, OH). Likewise for columns.
        T sum = T(0);
        for (int i = 0; i < kh; ++i) {
            const int row_start = hp - i * dh;            // oh*sh, if some window has it
            if (row_start < 0) {
                break;                                    // larger i only go further up
            }
            const int oh = row_start / sh;
            if (oh * sh != row_start || oh >= OH) {
                continue;
            }
            for (int j = 0; j < kw; ++j) {
                const int col_start = wp - j * dw;
                if (col_start < 0) {
                    break;
                }
                const int ow = col_start / sw;
                if (ow * sw != col_start || ow >= OW) {
                    continue;
                }
                sum += col_c[(long long)(i * kw + j) * row_stride + oh * OW + ow];
            }
        }
        x[t] = sum;
    }
}
