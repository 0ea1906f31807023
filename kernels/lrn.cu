// lrn.cu: local response normalisation across channels, forward and backward
// (tinyalex/kernels/cupy/lrn.py), in PyTorch's convention:
//
//   s_c = k + alpha/size * sum_{c' in window(c)} x_{c'}^2,  window(c) = [c - size/2, c + (size-1)/2]
//   y_c = x_c * s_c^(-beta)
//
// clipped to [0, C); for an even size the window is asymmetric, as in PyTorch.
//
// Kernels, each templated on T = float or double; NCHW, C-contiguous:
//   lrn_forward<T>   x -> y and s (the scale, saved for the backward). Each thread sums
//                    the squares of its channel window, read from a shared-memory slab.
//   lrn_backward<T>  gy, x, y, s -> gx. Each thread gathers over the TRANSPOSED window
//                    [j - (size-1)/2, j + size/2], the channels c whose window holds j:
//                      gx_j = gy_j s_j^(-beta) - (2 alpha beta / size) x_j sum_c gy_c y_c / s_c
//                    using y_c / s_c = x_c s_c^(-beta-1), so the loop needs no pow.
//                    Pure gathers: deterministic, no atomics.
//
// Tiles. A tile is LRN_PIXELS consecutive pixels hw of one sample n times LRN_CHANNELS
// consecutive channels. Thread (lane, row) of a block computes pixel hw0 + lane of the
// channels c0 + row + LRN_ROWS * i, i < LRN_CHANNELS / LRN_ROWS. The windows of a tile
// reach the channels [c0 - before, c0 + LRN_CHANNELS - 1 + after], clipped to [0, C); they
// are staged in shared memory LRN_SLAB channels at a time, one warp reading one channel's
// LRN_PIXELS pixels in one coalesced request. So each input is read from global memory
// (LRN_CHANNELS + size - 1) / LRN_CHANNELS times (1.125 at size 5), not size times; the
// backward stages gy_c y_c / s_c and gy_c s_c^(-beta), computed once per staged element.
// Every sum still adds its terms one at a time in ascending channel order, as a loop
// over global memory would: the staging changes where values come from, not the bits.
// Launch: blocks of (LRN_PIXELS, LRN_ROWS) = (32, 8) threads, a grid-stride loop over the
// tiles, N * ceil(C / LRN_CHANNELS) * ceil(H*W / LRN_PIXELS), grid = min(tiles, 2^20).
// The launcher passes alpha_over_size = alpha/size and two_alpha_beta_over_size =
// 2*alpha*beta/size, computed in double and rounded to T once.

inline constexpr int LRN_PIXELS = 32;                            // one warp's lanes
inline constexpr int LRN_ROWS = 8;                               // warps per block
inline constexpr int LRN_CHANNELS = 32;                          // output channels per tile
inline constexpr int LRN_PER_THREAD = LRN_CHANNELS / LRN_ROWS;
inline constexpr int LRN_SLAB = LRN_CHANNELS + 8;                // a tile with its halo, for size <= 9

// The tile `tile` of the grid-stride loop: sample n, first channel c0, this thread's pixel hw.
struct LrnTile {
    int n, c0;
    long long hw;
};

__device__ inline LrnTile lrn_tile(long long tile, int C, long long HW)
{
    const long long pixel_tiles = (HW + LRN_PIXELS - 1) / LRN_PIXELS;
    const int channel_tiles = (C + LRN_CHANNELS - 1) / LRN_CHANNELS;
    const long long rest = tile / pixel_tiles;
    LrnTile t;
    t.hw = (tile - rest * pixel_tiles) * LRN_PIXELS + threadIdx.x;
    t.c0 = (int)(rest % channel_tiles) * LRN_CHANNELS;
    t.n = (int)(rest / channel_tiles);
    return t;
}

template <typename T>
__global__ void lrn_forward(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ s,
                            int N, int C, int H, int W, int size,
                            T alpha_over_size, T beta, T k)
{
    __shared__ T slab[LRN_SLAB][LRN_PIXELS];              // x of the staged channels
    const long long HW = (long long)H * W;
    const long long tiles = (long long)N * ((C + LRN_CHANNELS - 1) / LRN_CHANNELS)
                            * ((HW + LRN_PIXELS - 1) / LRN_PIXELS);
    const int lane = threadIdx.x;
    const int row = threadIdx.y;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const LrnTile t = lrn_tile(tile, C, HW);
        const bool pixel_inside = t.hw < HW;              // else: only the barriers
        const long long first = (long long)t.n * C * HW + t.hw;   // element (n, 0, h, w)
        const int c_first = max(t.c0 - size / 2, 0);
        const int c_last = min(t.c0 + LRN_CHANNELS - 1 + (size - 1) / 2, C - 1);
        T sum[LRN_PER_THREAD];
        T own[LRN_PER_THREAD];                            // x_c of this thread's channels
        for (int i = 0; i < LRN_PER_THREAD; ++i) {
            sum[i] = T(0);
            own[i] = T(0);
        }
        for (int start = c_first; start <= c_last; start += LRN_SLAB) {
            const int end = min(start + LRN_SLAB, c_last + 1);
            if (pixel_inside) {
                for (int cc = start + row; cc < end; cc += LRN_ROWS) {
                    slab[cc - start][lane] = x[first + cc * HW];
                }
            }
            __syncthreads();
            for (int i = 0; i < LRN_PER_THREAD; ++i) {
                const int c = t.c0 + row + LRN_ROWS * i;
                if (!pixel_inside || c >= C) {
                    continue;
                }
                const int lo = max(c - size / 2, start);
                const int hi = min(c + (size - 1) / 2, end - 1);
                for (int cc = lo; cc <= hi; ++cc) {
                    const T v = slab[cc - start][lane];
                    sum[i] += v * v;
                }
                if (c >= start && c < end) {
                    own[i] = slab[c - start][lane];
                }
            }
            __syncthreads();                              // all have read before the next slab
        }
        for (int i = 0; i < LRN_PER_THREAD; ++i) {
            const int c = t.c0 + row + LRN_ROWS * i;
            if (pixel_inside && c < C) {
                const long long e = first + c * HW;
                const T scale = k + alpha_over_size * sum[i];
                s[e] = scale;
                y[e] = own[i] * pow(scale, -beta);
            }
        }
    }
}

template <typename T>
__global__ void lrn_backward(const T* __restrict__ gy, const T* __restrict__ x,
                             const T* __restrict__ y, const T* __restrict__ s,
                             T* __restrict__ gx,
                             int N, int C, int H, int W, int size,
                             T beta, T two_alpha_beta_over_size)
{
    __shared__ T ratio[LRN_SLAB][LRN_PIXELS];             // gy_c y_c / s_c
    __shared__ T direct[LRN_SLAB][LRN_PIXELS];            // gy_c s_c^(-beta)
    const long long HW = (long long)H * W;
    const long long tiles = (long long)N * ((C + LRN_CHANNELS - 1) / LRN_CHANNELS)
                            * ((HW + LRN_PIXELS - 1) / LRN_PIXELS);
    const int lane = threadIdx.x;
    const int row = threadIdx.y;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const LrnTile t = lrn_tile(tile, C, HW);
        const bool pixel_inside = t.hw < HW;
        const long long first = (long long)t.n * C * HW + t.hw;
        // The channels c with j in window(c): c - size/2 <= j <= c + (size-1)/2.
        const int c_first = max(t.c0 - (size - 1) / 2, 0);
        const int c_last = min(t.c0 + LRN_CHANNELS - 1 + size / 2, C - 1);
        T cross[LRN_PER_THREAD];                          // sum_c gy_c x_c s_c^(-beta-1)
        T own[LRN_PER_THREAD];                            // gy_j s_j^(-beta)
        for (int i = 0; i < LRN_PER_THREAD; ++i) {
            cross[i] = T(0);
            own[i] = T(0);
        }
        for (int start = c_first; start <= c_last; start += LRN_SLAB) {
            const int end = min(start + LRN_SLAB, c_last + 1);
            if (pixel_inside) {
                for (int c = start + row; c < end; c += LRN_ROWS) {
                    const long long e = first + c * HW;
                    ratio[c - start][lane] = gy[e] * y[e] / s[e];
                    direct[c - start][lane] = gy[e] * pow(s[e], -beta);
                }
            }
            __syncthreads();
            for (int i = 0; i < LRN_PER_THREAD; ++i) {
                const int j = t.c0 + row + LRN_ROWS * i;
                if (!pixel_inside || j >= C) {
                    continue;
                }
                const int lo = max(j - (size - 1) / 2, start);
                const int hi = min(j + size / 2, end - 1);
                for (int c = lo; c <= hi; ++c) {
                    cross[i] += ratio[c - start][lane];
                }
                if (j >= start && j < end) {
                    own[i] = direct[j - start][lane];
                }
            }
            __syncthreads();
        }
        for (int i = 0; i < LRN_PER_THREAD; ++i) {
            const int j = t.c0 + row + LRN_ROWS * i;
            if (pixel_inside && j < C) {
                const long long e = first + j * HW;
                gx[e] = own[i] - two_alpha_beta_over_size * x[e] * cross[i];
            }
        }
    }
}
