// windows.cuh: the rows of x that one block of sliding windows reads, staged in shared
// memory. Included by im2col.cu and pool.cu (tinyalex/kernels/cupy/loader.py inlines it).
//
// Geometry. x holds planes (n*C + c) of H x W. Output (plane, oh, ow), flat index
// t = plane*OH*OW + oh*OW + ow, has the taps (i, j), i < kh, j < kw, at the padded pixel
// (hp, wp) = (oh*sh + i*dh, ow*sw + j*dw): x's pixel (hp - ph, wp - pw), or padding.
//
// Staging. The outputs [t0, t1] of a block read the rows of x from (plane of t0, top row of
// t0's window) to (plane of t1, bottom row of t1's window): a contiguous range of x. The
// block copies it into shared memory, every thread the elements blockDim.x apart, from the
// 32-element line of x that holds its first element: coalesced requests that start on a
// line (x is taken to start on one, as CuPy's allocations do). Every tap then reads shared
// memory: x moves from global memory about once per block, not kh*kw/(sh*sw) times. The
// stage opens with 32 pad words holding the kernel's padding value (0, or -inf for max
// pooling), one per bank: a tap in the padding reads the one in the bank its pixel would
// have, so every lane reads at every tap, and `tap` needs no branch on the padding. Where
// the range does not fit the stage (rows wider, or windows taller, than it holds), `fits`
// is false and `tap` reads x directly.
//
// Layout, so that the reads of a warp hit 32 different banks (no bank conflicts):
//   - a row's columns are de-interleaved by the stride: wp lies at (wp % sw)*phase_words
//     + wp / sw, so lanes on consecutive ow read consecutive words;
//   - staged row R starts at a word congruent to plane*OH*OW + (hp / sh)*OW modulo 32, so
//     the word that tap (i, j) of output t reads is (a constant + t) modulo 32, across the
//     end of an output row or of a plane too.
// A row takes row_words = sw*phase_words + 31 words, the 31 leaving room for that offset.
// The copy's stores hit consecutive words where sw = 1 and each output row has W outputs
// (stride 1, 'same' padding, as AlexNet's conv2-5); otherwise a copied line's runs of
// words may share banks: replays on stores, once per pixel, not on the kh*kw/(sh*sw) reads.

inline constexpr int STAGE_PAD_WORDS = 32;

struct WindowGeometry {
    int H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
};

struct StagedRows {
    long long first;                                      // flat index in x of the first staged element
    long long last;                                       // ... and of the last
    long long plane0;                                     // the plane and row of `first`
    int row0;
    int phase_words;
    int row_words;
    bool fits;                                            // false: read x directly

    // The word of the stage that holds x's pixel (h, w) of `plane`.
    __device__ long long word(const WindowGeometry& g, long long plane, int h, int w) const
    {
        const long long R = (plane - plane0) * g.H + h - row0;
        const long long start = R * row_words;
        const long long target = plane * g.OH * g.OW + (long long)((h + g.ph) / g.sh) * g.OW;
        const int wp = w + g.pw;
        return start + ((target - start) & 31) + (wp % g.sw) * phase_words + wp / g.sw;
    }

    // The index in the stage of padded pixel (hp, wp) of `plane`: its word after the pad
    // words, or for padding the pad word in the bank that word would have.
    __device__ long long index(const WindowGeometry& g, long long plane, int hp, int wp) const
    {
        const int h = hp - g.ph;
        const int w = wp - g.pw;
        const long long at = STAGE_PAD_WORDS + word(g, plane, h, w);
        return h >= 0 && h < g.H && w >= 0 && w < g.W ? at : at & 31;
    }
};

// Which range of x the outputs [t0, t1] read, and whether it fits `capacity` words.
__device__ inline StagedRows plan_stage(const WindowGeometry& g, long long t0, long long t1,
                                        int capacity)
{
    const long long L = (long long)g.OH * g.OW;
    const long long HW = (long long)g.H * g.W;
    const long long plane_first = t0 / L;
    const long long plane_last = t1 / L;
    const int top = (int)((t0 - plane_first * L) / g.OW) * g.sh - g.ph;
    const int bottom = (int)((t1 - plane_last * L) / g.OW) * g.sh - g.ph + (g.kh - 1) * g.dh;
    StagedRows s;
    s.first = (plane_first * HW + (long long)min(max(top, 0), g.H - 1) * g.W) & ~31LL;
    s.last = plane_last * HW + (long long)min(max(bottom, 0), g.H - 1) * g.W + g.W - 1;
    s.plane0 = s.first / HW;
    s.row0 = (int)((s.first - s.plane0 * HW) / g.W);
    const long long rows = (plane_last - s.plane0) * g.H + (s.last - plane_last * HW) / g.W - s.row0 + 1;
    s.phase_words = (g.pw + g.W + g.sw - 1) / g.sw;
    s.row_words = g.sw * s.phase_words + 31;
    s.fits = STAGE_PAD_WORDS + rows * s.row_words <= capacity;
    return s;
}

// Copies the staged range of x into `stage`, after the pad words set to `pad` (when it
// fits); every thread of the block calls it, and the block synchronises before reading.
template <typename T>
__device__ void stage_rows(const T* x, const WindowGeometry& g, const StagedRows& s, T pad,
                           T* stage)
{
    if (!s.fits) {
        return;
    }
    if (threadIdx.x < STAGE_PAD_WORDS) {
        stage[threadIdx.x] = pad;
    }
    const long long HW = (long long)g.H * g.W;
    for (long long r = s.first + threadIdx.x; r <= s.last; r += blockDim.x) {
        const long long plane = r / HW;
        const int hw = (int)(r - plane * HW);
        const int h = hw / g.W;
        stage[STAGE_PAD_WORDS + s.word(g, plane, h, hw - h * g.W)] = x[r];
    }
}

// The value of padded pixel (hp, wp) of `plane`: x's pixel, or `pad`.
template <typename T>
__device__ T tap(const T* x, const T* stage, const WindowGeometry& g, const StagedRows& s,
                 long long plane, int hp, int wp, T pad)
{
    if (s.fits) {
        return stage[s.index(g, plane, hp, wp)];
    }
    const int h = hp - g.ph;
    const int w = wp - g.pw;
    return h >= 0 && h < g.H && w >= 0 && w < g.W ? x[(plane * g.H + h) * g.W + w] : pad;
}
