"""Hand-written C kernels the cpu target's generated module always carries:
im2col for convolutions through SGEMM, direct depthwise convolution (bias
and clamp fused), and 2-D max/average pooling.  Layout: NCHW, float32,
contiguous.  Each runs its outer loop as tasks on Heli's thread pool
(``heli_parallel``, declared by the C prelude), in chunks fixed by the
problem's size (:c:func:`heli_tasks`).  The convolution kernels of
``kernels/conv.c`` (see ``_convs.py``) follow them."""

from pathlib import Path

TEMPLATES = r"""
#define HELI_EXPORT __attribute__((visibility("default")))

static inline long heli_min_l(long a, long b) { return a < b ? a : b; }
static inline long heli_max_l(long a, long b) { return a > b ? a : b; }

/* How many tasks a loop of n iterations runs as: at most 64, one chunk of
 * ceil(n / tasks) iterations each; 1 when the work is too small to share. */
static inline long heli_tasks(long n, long work, long min_work) {
    if (work <= min_work) return 1;
    return n < 64 ? n : 64;
}

#define HELI_CHUNK(n, tasks, task, lo, hi)                                          \
    const long heli_grain_ = ((n) + (tasks) - 1) / (tasks);                         \
    const long lo = (task) * heli_grain_;                                           \
    const long hi = heli_min_l((n), lo + heli_grain_)

struct heli_im2col_args {
    const float *x;
    float *col;
    long C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, rows, tasks;
};

static void heli_im2col_task(void *arg, long task) {
    const struct heli_im2col_args *a = arg;
    const long H = a->H, W = a->W, KH = a->KH, KW = a->KW, SH = a->SH, SW = a->SW;
    const long PH = a->PH, PW = a->PW, DH = a->DH, DW = a->DW, OH = a->OH, OW = a->OW;
    HELI_CHUNK(a->rows, a->tasks, task, r0, r1);
    for (long r = r0; r < r1; ++r) {
        const long c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        float *dst = a->col + r * OH * OW;
        const float *src = a->x + c * H * W;
        for (long oh = 0; oh < OH; ++oh) {
            const long ih = oh * SH - PH + kh * DH;
            float *d = dst + oh * OW;
            if (ih < 0 || ih >= H) {
                memset(d, 0, (size_t)OW * sizeof(float));
                continue;
            }
            const float *s = src + ih * W;
            if (SW == 1) {
                const long off = kw * DW - PW;
                const long lo = heli_max_l(0, -off), hi = heli_min_l(OW, W - off);
                for (long ow = 0; ow < heli_min_l(lo, OW); ++ow) d[ow] = 0.0f;
                if (hi > lo) memcpy(d + lo, s + lo + off, (size_t)(hi - lo) * sizeof(float));
                for (long ow = heli_max_l(hi, lo); ow < OW; ++ow) d[ow] = 0.0f;
            } else {
                for (long ow = 0; ow < OW; ++ow) {
                    const long iw = ow * SW - PW + kw * DW;
                    d[ow] = (iw >= 0 && iw < W) ? s[iw] : 0.0f;
                }
            }
        }
    }
}

/* The columns of window position w of output pixel p: col[w][p], w over
 * (c, kh, kw), p over (oh, ow); zero outside the input. */
HELI_EXPORT void heli_im2col(const float *restrict x, float *restrict col, long C, long H, long W,
                             long KH, long KW, long SH, long SW, long PH, long PW, long DH,
                             long DW, long OH, long OW, int nthreads) {
    const long rows = C * KH * KW;
    struct heli_im2col_args a = {x, col, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, rows,
                                 heli_tasks(rows, rows * OH * OW, 32768)};
    heli_parallel(a.tasks, heli_im2col_task, &a, nthreads);
}

/* Output columns ow whose input column ow*S - P + k*D lies in [0, W). */
static inline void heli_valid_range(long S, long P, long k, long D, long W, long O,
                                    long *lo, long *hi) {
    const long off = k * D - P;              /* iw = ow * S + off */
    long first = off >= 0 ? 0 : (-off + S - 1) / S;
    long last = (W - 1 - off) >= 0 ? (W - 1 - off) / S + 1 : 0;
    *lo = heli_min_l(first, O);
    *hi = heli_max_l(*lo, heli_min_l(last, O));
}

struct heli_dwconv_args {
    const float *x, *w, *bias;
    float *y;
    long C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, planes, tasks;
    int act;
    float lo, hi;
};

static void heli_dwconv_task(void *arg, long task) {
    const struct heli_dwconv_args *a = arg;
    const long C = a->C, H = a->H, W = a->W, KH = a->KH, KW = a->KW, SH = a->SH, SW = a->SW;
    const long PH = a->PH, PW = a->PW, DH = a->DH, DW = a->DW, OH = a->OH, OW = a->OW;
    const float lo = a->lo, hi = a->hi;
    HELI_CHUNK(a->planes, a->tasks, task, nc0, nc1);
    for (long nc = nc0; nc < nc1; ++nc) {
        const long c = nc % C;
        const float *restrict xp = a->x + nc * H * W;
        float *restrict yp = a->y + nc * OH * OW;
        const float *wp = a->w + c * KH * KW;
        const float b = a->bias ? a->bias[c] : 0.0f;
        for (long i = 0; i < OH * OW; ++i) yp[i] = b;
        for (long kh = 0; kh < KH; ++kh) {
            for (long kw = 0; kw < KW; ++kw) {
                const float wv = wp[kh * KW + kw];
                long ow0, ow1;
                heli_valid_range(SW, PW, kw, DW, W, OW, &ow0, &ow1);
                for (long oh = 0; oh < OH; ++oh) {
                    const long ih = oh * SH - PH + kh * DH;
                    if (ih < 0 || ih >= H) continue;
                    const float *s = xp + ih * W + kw * DW - PW;
                    float *d = yp + oh * OW;
                    if (SW == 1) {
                        #pragma omp simd
                        for (long ow = ow0; ow < ow1; ++ow) d[ow] += wv * s[ow];
                    } else {
                        for (long ow = ow0; ow < ow1; ++ow) d[ow] += wv * s[ow * SW];
                    }
                }
            }
        }
        if (a->act) {
            #pragma omp simd
            for (long i = 0; i < OH * OW; ++i) {
                float v = yp[i];
                v = v < lo ? lo : v;
                yp[i] = v > hi ? hi : v;
            }
        }
    }
}

/* Depthwise convolution (one filter per channel), then bias and an
 * optional clamp to [lo, hi]. */
HELI_EXPORT void heli_dwconv2d(const float *restrict x, const float *restrict w,
                               const float *restrict bias, float *restrict y, long N, long C,
                               long H, long W, long KH, long KW, long SH, long SW, long PH,
                               long PW, long DH, long DW, long OH, long OW, int act, float lo,
                               float hi, int nthreads) {
    struct heli_dwconv_args a = {x, w, bias, y, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH,
                                 OW, N * C, heli_tasks(N * C, 1, 0), act, lo, hi};
    heli_parallel(a.tasks, heli_dwconv_task, &a, nthreads);
}

struct heli_pool_args {
    const float *x;
    float *y;
    long H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, planes, tasks;
    int is_max, count_include_pad;
};

/* One output row at a time: each valid tap (kh, kw) updates the whole run
 * of outputs it reaches, a loop without branches that vectorizes (the
 * per-pixel, per-tap bounds checks of a plain loop cost ~10x). */
static void heli_pool_task(void *arg, long task) {
    const struct heli_pool_args *a = arg;
    const long H = a->H, W = a->W, KH = a->KH, KW = a->KW, SH = a->SH, SW = a->SW;
    const long PH = a->PH, PW = a->PW, DH = a->DH, DW = a->DW, OH = a->OH, OW = a->OW;
    const int is_max = a->is_max;
    HELI_CHUNK(a->planes, a->tasks, task, nc0, nc1);
    for (long nc = nc0; nc < nc1; ++nc) {
        const float *xp = a->x + nc * H * W;
        float *yp = a->y + nc * OH * OW;
        for (long oh = 0; oh < OH; ++oh) {
            float *restrict yr = yp + oh * OW;
            const float init = is_max ? -INFINITY : 0.0f;
            for (long ow = 0; ow < OW; ++ow) yr[ow] = init;
            long rows = 0;
            for (long kh = 0; kh < KH; ++kh) {
                const long ih = oh * SH - PH + kh * DH;
                if (ih < 0 || ih >= H) continue;
                ++rows;
                const float *restrict xr = xp + ih * W;
                for (long kw = 0; kw < KW; ++kw) {
                    const long off = kw * DW - PW;
                    long lo, hi;
                    heli_valid_range(SW, PW, kw, DW, W, OW, &lo, &hi);
                    if (is_max) {
                        #pragma omp simd
                        for (long ow = lo; ow < hi; ++ow) {
                            const float v = xr[ow * SW + off], m = yr[ow];
                            yr[ow] = (m < v || v != v) ? v : m;
                        }
                    } else {
                        #pragma omp simd
                        for (long ow = lo; ow < hi; ++ow) yr[ow] += xr[ow * SW + off];
                    }
                }
            }
            if (is_max) continue;
            for (long ow = 0; ow < OW; ++ow) {
                long taps = KH * KW;
                if (!a->count_include_pad) {
                    long cols = 0;
                    for (long kw = 0; kw < KW; ++kw) {
                        const long iw = ow * SW + kw * DW - PW;
                        cols += iw >= 0 && iw < W;
                    }
                    taps = rows * cols;
                }
                yr[ow] /= (float)(taps ? taps : 1);
            }
        }
    }
}

/* Max (is_max) or average pooling over NC planes; an average divides by
 * the whole window (count_include_pad) or by its taps inside the input. */
HELI_EXPORT void heli_pool2d(const float *restrict x, float *restrict y, long NC, long H, long W,
                             long KH, long KW, long SH, long SW, long PH, long PW, long DH,
                             long DW, long OH, long OW, int is_max, int count_include_pad,
                             int nthreads) {
    struct heli_pool_args a = {x, y, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, NC,
                               heli_tasks(NC, NC * OH * OW, 16384), is_max, count_include_pad};
    heli_parallel(a.tasks, heli_pool_task, &a, nthreads);
}
"""

TEMPLATES += (Path(__file__).with_name("kernels") / "conv.c").read_text()
