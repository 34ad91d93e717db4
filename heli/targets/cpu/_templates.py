"""Hand-written C kernels the cpu target's generated module always carries:
im2col for convolutions through SGEMM, direct depthwise convolution (bias
and clamp fused), and 2-D max/average pooling.  Layout: NCHW, float32,
contiguous."""

TEMPLATES = r"""
#define HELI_EXPORT __attribute__((visibility("default")))

static inline long heli_min_l(long a, long b) { return a < b ? a : b; }
static inline long heli_max_l(long a, long b) { return a > b ? a : b; }

/* The columns of window position w of output pixel p: col[w][p], w over
 * (c, kh, kw), p over (oh, ow); zero outside the input. */
HELI_EXPORT void heli_im2col(const float *restrict x, float *restrict col, long C, long H, long W,
                             long KH, long KW, long SH, long SW, long PH, long PW, long DH,
                             long DW, long OH, long OW, int nthreads) {
    const long rows = C * KH * KW;
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1) if (rows * OH * OW > 32768)
    for (long r = 0; r < rows; ++r) {
        const long c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        float *dst = col + r * OH * OW;
        const float *src = x + c * H * W;
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

/* Output columns ow whose input column ow*S - P + k*D lies in [0, W). */
static inline void heli_valid_range(long S, long P, long k, long D, long W, long O,
                                    long *lo, long *hi) {
    const long off = k * D - P;              /* iw = ow * S + off */
    long first = off >= 0 ? 0 : (-off + S - 1) / S;
    long last = (W - 1 - off) >= 0 ? (W - 1 - off) / S + 1 : 0;
    *lo = heli_min_l(first, O);
    *hi = heli_max_l(*lo, heli_min_l(last, O));
}

/* Depthwise convolution (one filter per channel), then bias and an
 * optional clamp to [lo, hi]. */
HELI_EXPORT void heli_dwconv2d(const float *restrict x, const float *restrict w,
                               const float *restrict bias, float *restrict y, long N, long C,
                               long H, long W, long KH, long KW, long SH, long SW, long PH,
                               long PW, long DH, long DW, long OH, long OW, int act, float lo,
                               float hi, int nthreads) {
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (long nc = 0; nc < N * C; ++nc) {
        const long c = nc % C;
        const float *xp = x + nc * H * W;
        float *yp = y + nc * OH * OW;
        const float *wp = w + c * KH * KW;
        const float b = bias ? bias[c] : 0.0f;
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
        if (act) {
            #pragma omp simd
            for (long i = 0; i < OH * OW; ++i) {
                float v = yp[i];
                v = v < lo ? lo : v;
                yp[i] = v > hi ? hi : v;
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
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1) if (NC * OH * OW > 16384)
    for (long nc = 0; nc < NC; ++nc) {
        const float *xp = x + nc * H * W;
        float *yp = y + nc * OH * OW;
        for (long oh = 0; oh < OH; ++oh) {
            for (long ow = 0; ow < OW; ++ow) {
                float acc = is_max ? -INFINITY : 0.0f;
                long count = 0;
                for (long kh = 0; kh < KH; ++kh) {
                    const long ih = oh * SH - PH + kh * DH;
                    if (ih < 0 || ih >= H) continue;
                    for (long kw = 0; kw < KW; ++kw) {
                        const long iw = ow * SW - PW + kw * DW;
                        if (iw < 0 || iw >= W) continue;
                        const float v = xp[ih * W + iw];
                        if (is_max) acc = (acc < v || v != v) ? v : acc;
                        else acc += v;
                        ++count;
                    }
                }
                if (!is_max) acc /= (float)(count_include_pad ? KH * KW : (count ? count : 1));
                yp[oh * OW + ow] = acc;
            }
        }
    }
}
"""
