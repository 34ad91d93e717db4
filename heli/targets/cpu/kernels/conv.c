/* Convolution kernels of the cpu target (NCHW, float32), appended to the
 * generated module after _templates.py's kernels (heli_min_l, heli_tasks,
 * HELI_CHUNK and heli_parallel are declared there).
 *
 * Direct convolution without im2col.  The input of one image is copied once
 * into a "prepared" buffer: zero-padded, and for a stride S split into S x S
 * phase planes (padded rows i*S+py, columns j*S+px), each Hq x Wq.  Then
 * every tap (c, kh, kw) of output pixel (oh, ow) reads the prepared buffer
 * at off[c, kh, kw] + q with q = oh * Wq + ow: the convolution is a GEMM
 * whose B operand is read in place, row k starting at off[k].  Columns
 * ow in [OW, Wq) of that flat grid are computed and dropped.
 *
 *   heli_dconv2d      groups of 1: an MR x (NV * VL) register tile of
 *                     output channels x flat pixels, weights packed by
 *                     _convs.py as [M / MR][K][MR];
 *   heli_dwconv2d_v2  depthwise: one channel at a time, a row of outputs
 *                     at a time, all taps accumulated in registers;
 *   heli_col2im       ConvTranspose after its GEMM (bias included);
 *   heli_depth_to_space  the same when the stride equals the kernel (an
 *                     interleave: the GEMM applied bias and clamp);
 *   heli_channel_affine  y = x * s[c] + t[c] (inference BatchNormalization);
 *   heli_gather_planes   nearest Resize through a precomputed index map.
 *
 * Every output row then gets the bias, an optional clamp and an optional
 * epilogue function (generated from the fused group's remaining elementwise
 * ops by _convs.py) while it is still in cache. */

#if defined(__AVX512F__)
#define HCV_VL 16
#elif defined(__AVX__)
#define HCV_VL 8
#else
#define HCV_VL 4
#endif
#define HCV_MR 6
#define HCV_NV 4
#define HCV_NT (HCV_VL * HCV_NV)

typedef float hcv_vf __attribute__((vector_size(HCV_VL * 4)));
typedef float hcv_vfu __attribute__((vector_size(HCV_VL * 4), aligned(4)));

/* y[0..n) = epilogue(y[0..n)) for output channel c; res: the same pixels of a
 * tensor of the output's shape (a residual), or NULL. */
typedef void (*heli_row_epi)(float *y, const float *res, long c, long n, const float *params);

static inline void hcv_finish_row(float *restrict y, long n, float b, int act, float lo,
                                  float hi) {
    if (act) {
        #pragma omp simd
        for (long i = 0; i < n; ++i) {
            float v = y[i] + b;
            v = v < lo ? lo : v;
            y[i] = v > hi ? hi : v;
        }
    } else if (b != 0.0f) {
        #pragma omp simd
        for (long i = 0; i < n; ++i) y[i] += b;
    }
}

/* ------------------------------------------------------------ prepare */

struct hcv_prep_args {
    const float *x;
    float *xb;
    long C, H, W, SH, SW, PT, PL, Hq, Wq, tail, tasks;
};

static void hcv_prep_task(void *arg, long task) {
    const struct hcv_prep_args *a = arg;
    const long H = a->H, W = a->W, SH = a->SH, SW = a->SW, PT = a->PT, PL = a->PL;
    const long Hq = a->Hq, Wq = a->Wq, plane = Hq * Wq;
    HELI_CHUNK(a->C * SH * SW, a->tasks, task, p0, p1);
    for (long p = p0; p < p1; ++p) {
        const long c = p / (SH * SW), py = (p / SW) % SH, px = p % SW;
        const float *src = a->x + c * H * W;
        float *dst = a->xb + p * plane;
        for (long i = 0; i < Hq; ++i) {
            float *d = dst + i * Wq;
            const long ih = i * SH + py - PT;
            if (ih < 0 || ih >= H) {
                memset(d, 0, (size_t)Wq * sizeof(float));
                continue;
            }
            /* padded column j * SW + px is input column j * SW + px - PL:
             * zeros, then the columns inside the row (a branch-free loop), zeros */
            long lo, hi;
            heli_valid_range(SW, PL, px, 1, W, Wq, &lo, &hi);
            for (long j = 0; j < lo; ++j) d[j] = 0.0f;
            const float *restrict sp = src + ih * W + px - PL;
            if (SW == 1) {
                memcpy(d + lo, sp + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                #pragma omp simd
                for (long j = lo; j < hi; ++j) d[j] = sp[j * SW];
            }
            for (long j = hi; j < Wq; ++j) d[j] = 0.0f;
        }
    }
    if (task == a->tasks - 1 && a->tail > 0)
        memset(a->xb + a->C * SH * SW * plane, 0, (size_t)a->tail * sizeof(float));
}

/* Copy image x (C x H x W) into xb: C * SH * SW planes of Hq x Wq, then
 * `tail` zeros (the last tile's reads past the planes). */
HELI_EXPORT void heli_conv_prepare(const float *restrict x, float *restrict xb, long C, long H,
                                   long W, long SH, long SW, long PT, long PL, long Hq, long Wq,
                                   long tail, int nthreads) {
    const long planes = C * SH * SW;
    struct hcv_prep_args a = {x, xb, C, H, W, SH, SW, PT, PL, Hq, Wq, tail,
                              heli_tasks(planes, planes * Hq * Wq, 32768)};
    heli_parallel(a.tasks, hcv_prep_task, &a, nthreads);
}

/* ------------------------------------------------------------ direct conv */

struct hcv_dconv_args {
    const float *xb, *wp, *bias, *res, *params;
    const int *off;
    float *y;
    long M, K, OH, OW, Wq, nq, nm, qchunk, mchunk, tasks;
    int act;
    float lo, hi;
    heli_row_epi epi;
};

/* acc[r][v] = sum_k wk[k][r] * xq[off[k] + v * VL ...] for MR rows, NV vectors. */
static inline void hcv_tile(const float *restrict xq, const float *restrict wk,
                            const int *restrict off, long K, float *restrict out) {
    hcv_vf acc[HCV_MR][HCV_NV];
    for (int r = 0; r < HCV_MR; ++r)
        for (int v = 0; v < HCV_NV; ++v) acc[r][v] = (hcv_vf){0};
    for (long k = 0; k < K; ++k) {
        const float *s = xq + off[k];
        hcv_vf b[HCV_NV];
        for (int v = 0; v < HCV_NV; ++v) b[v] = *(const hcv_vfu *)(s + v * HCV_VL);
        const float *w = wk + k * HCV_MR;
        for (int r = 0; r < HCV_MR; ++r) {
            const float wr = w[r];
            for (int v = 0; v < HCV_NV; ++v) acc[r][v] += wr * b[v];
        }
    }
    for (int r = 0; r < HCV_MR; ++r)
        for (int v = 0; v < HCV_NV; ++v)
            *(hcv_vfu *)(out + r * HCV_NT + v * HCV_VL) = acc[r][v];
}

static void hcv_dconv_task(void *arg, long task) {
    const struct hcv_dconv_args *a = arg;
    const long M = a->M, K = a->K, OH = a->OH, OW = a->OW, Wq = a->Wq;
    const long Q = OH * Wq, mchunks = (a->nm + a->mchunk - 1) / a->mchunk;
    const long qc = task / mchunks, mc = task % mchunks;
    const long t0 = qc * a->qchunk, t1 = heli_min_l(a->nq, t0 + a->qchunk);
    const long m0 = mc * a->mchunk, m1 = heli_min_l(a->nm, m0 + a->mchunk);
    float tile[HCV_MR * HCV_NT] __attribute__((aligned(64)));
    for (long t = t0; t < t1; ++t) {
        const long q0 = t * HCV_NT, q1 = heli_min_l(Q, q0 + HCV_NT);
        for (long mb = m0; mb < m1; ++mb) {
            hcv_tile(a->xb + q0, a->wp + mb * K * HCV_MR, a->off, K, tile);
            const long rows = heli_min_l(HCV_MR, M - mb * HCV_MR);
            for (long r = 0; r < rows; ++r) {
                const long co = mb * HCV_MR + r;
                const float b = a->bias ? a->bias[co] : 0.0f;
                /* the tile's pixels, one output row segment at a time */
                long q = q0;
                while (q < q1) {
                    const long oh = q / Wq, ow = q % Wq;
                    const long end = heli_min_l(q1, oh * Wq + OW);
                    if (ow < OW) {
                        const long n = end - q, at = (co * OH + oh) * OW + ow;
                        float *d = a->y + at;
                        memcpy(d, tile + r * HCV_NT + (q - q0), (size_t)n * sizeof(float));
                        hcv_finish_row(d, n, b, a->act, a->lo, a->hi);
                        if (a->epi) a->epi(d, a->res ? a->res + at : NULL, co, n, a->params);
                    }
                    q = (oh + 1) * Wq;
                }
            }
        }
    }
}

/* One image: y (M x OH x OW) = conv of the prepared xb by the packed weights
 * wp, then bias, clamp and epilogue per output row. */
HELI_EXPORT void heli_dconv2d(const float *restrict xb, const float *restrict wp,
                              const int *restrict off, const float *restrict bias,
                              float *restrict y, long M, long K, long OH, long OW, long Wq,
                              int act, float lo, float hi, heli_row_epi epi,
                              const float *res, const float *params, int nthreads) {
    const long Q = OH * Wq;
    const long nq = (Q + HCV_NT - 1) / HCV_NT, nm = (M + HCV_MR - 1) / HCV_MR;
    /* Tasks: a few per thread; each keeps its input columns (K rows of NT
     * floats) in L2 across the output channels it owns. */
    const long macs = M * K * Q;
    const long want = macs < (1L << 18) || nthreads <= 1 ? 1 : heli_min_l(64, 8L * nthreads);
    long qchunk = (nq + want - 1) / want, mchunk = nm;
    if (nq < want) {  /* few pixels: split the output channels too */
        qchunk = 1;
        const long per = (want + nq - 1) / nq;
        mchunk = (nm + per - 1) / per;
    }
    const long qchunks = (nq + qchunk - 1) / qchunk, mchunks = (nm + mchunk - 1) / mchunk;
    struct hcv_dconv_args a = {xb, wp, bias, res, params, off, y, M, K, OH, OW, Wq, nq, nm,
                               qchunk, mchunk, qchunks * mchunks, act, lo, hi, epi};
    heli_parallel(a.tasks, hcv_dconv_task, &a, nthreads);
}

/* ------------------------------------------------------------ depthwise */

struct hcv_dw_args {
    const float *x, *w, *bias, *res, *params;
    const int *off;
    float *y;
    long C, H, W, KK, SH, SW, PT, PL, Hq, Wq, OH, OW, planes, tasks, scratch;
    int act;
    float lo, hi;
    heli_row_epi epi;
};

static void hcv_dw_task(void *arg, long task) {
    const struct hcv_dw_args *a = arg;
    const long C = a->C, H = a->H, W = a->W, KK = a->KK, SH = a->SH, SW = a->SW;
    const long PT = a->PT, PL = a->PL, Hq = a->Hq, Wq = a->Wq, OH = a->OH, OW = a->OW;
    const long plane = Hq * Wq;
    float *buf = malloc((size_t)a->scratch * sizeof(float));
    float tail[HCV_VL] __attribute__((aligned(64)));
    if (!buf) return; /* the caller sees the NaN-filled output (see _convs.py) */
    HELI_CHUNK(a->planes, a->tasks, task, nc0, nc1);
    for (long nc = nc0; nc < nc1; ++nc) {
        const long c = nc % C;
        const float *src = a->x + nc * H * W;
        /* padded, phase-split copy of this channel */
        for (long p = 0; p < SH * SW; ++p) {
            const long py = p / SW, px = p % SW;
            float *dst = buf + p * plane;
            for (long i = 0; i < Hq; ++i) {
                float *d = dst + i * Wq;
                const long ih = i * SH + py - PT;
                if (ih < 0 || ih >= H) {
                    memset(d, 0, (size_t)Wq * sizeof(float));
                    continue;
                }
                const float *s = src + ih * W;
                if (SW == 1) {
                    const long lo = heli_min_l(Wq, heli_max_l(0, PL));
                    const long hi = heli_max_l(lo, heli_min_l(Wq, W + PL));
                    for (long j = 0; j < lo; ++j) d[j] = 0.0f;
                    memcpy(d + lo, s + lo - PL, (size_t)(hi - lo) * sizeof(float));
                    for (long j = hi; j < Wq; ++j) d[j] = 0.0f;
                } else { /* columns j with iw = j * SW + px - PL inside the row */
                    long lo, hi;
                    heli_valid_range(SW, PL, px, 1, W, Wq, &lo, &hi);
                    for (long j = 0; j < lo; ++j) d[j] = 0.0f;
                    const float *restrict sp = s + px - PL;
                    #pragma omp simd
                    for (long j = lo; j < hi; ++j) d[j] = sp[j * SW];
                    for (long j = hi; j < Wq; ++j) d[j] = 0.0f;
                }
            }
        }
        memset(buf + SH * SW * plane, 0, (size_t)(a->scratch - SH * SW * plane) * sizeof(float));
        const float *wc = a->w + c * KK;
        const float b = a->bias ? a->bias[c] : 0.0f;
        float *yp = a->y + nc * OH * OW;
        for (long oh = 0; oh < OH; ++oh) {
            const float *row = buf + oh * Wq;
            float *d = yp + oh * OW;
            long ow = 0;
            for (; ow + 2 * HCV_VL <= OW; ow += 2 * HCV_VL) {
                hcv_vf acc0 = {0}, acc1 = {0};
                for (long t = 0; t < KK; ++t) {
                    const float *s = row + a->off[t] + ow;
                    acc0 += wc[t] * *(const hcv_vfu *)s;
                    acc1 += wc[t] * *(const hcv_vfu *)(s + HCV_VL);
                }
                *(hcv_vfu *)(d + ow) = acc0;
                *(hcv_vfu *)(d + ow + HCV_VL) = acc1;
            }
            for (; ow < OW; ow += HCV_VL) {
                hcv_vf acc = {0};
                for (long t = 0; t < KK; ++t) acc += wc[t] * *(const hcv_vfu *)(row + a->off[t] + ow);
                if (ow + HCV_VL <= OW) {
                    *(hcv_vfu *)(d + ow) = acc;
                } else {
                    *(hcv_vfu *)tail = acc;
                    memcpy(d + ow, tail, (size_t)(OW - ow) * sizeof(float));
                }
            }
            hcv_finish_row(d, OW, b, a->act, a->lo, a->hi);
            if (a->epi) a->epi(d, a->res ? a->res + (d - a->y) : NULL, c, OW, a->params);
        }
    }
    free(buf);
}

/* Depthwise convolution of N*C planes: tap t of output (oh, ow) reads the
 * channel's prepared plane at off[t] + oh * Wq + ow; `scratch` floats of
 * per-task buffer (planes plus the last vector's overrun). */
HELI_EXPORT void heli_dwconv2d_v2(const float *restrict x, const float *restrict w,
                                  const int *restrict off, const float *restrict bias,
                                  float *restrict y, long N, long C, long H, long W, long KK,
                                  long SH, long SW, long PT, long PL, long Hq, long Wq, long OH,
                                  long OW, long scratch, int act, float lo, float hi,
                                  heli_row_epi epi, const float *res, const float *params,
                                  int nthreads) {
    struct hcv_dw_args a = {x, w, bias, res, params, off, y, C, H, W, KK, SH, SW, PT, PL, Hq,
                            Wq, OH, OW, N * C, heli_tasks(N * C, N * C * OH * OW * KK, 65536),
                            scratch, act, lo, hi, epi};
    heli_parallel(a.tasks, hcv_dw_task, &a, nthreads);
}

/* ------------------------------------------------- depthwise, channels last */

struct hcv_dwl_args {
    const float *x, *w, *bias, *res, *params;
    float *y;
    long C, H, W, KH, KW, SH, SW, PT, PL, DH, DW, OH, OW, Hp, Wp, blocks, tasks;
    int act;
    float lo, hi;
    heli_row_epi epi;
};

/* Output pixel p of a channel block: the taps of `x`, a padded image of
 * HCV_VL channels per pixel, times the block's weight vectors. */
#define HCV_DWL_TAPS(acc, p)                                                          \
    for (long kh = 0; kh < KH; ++kh)                                                  \
        for (long kw = 0; kw < KW; ++kw)                                              \
            acc += wv[kh * KW + kw] *                                                 \
                   *(const hcv_vf *)(xt + ((oh * SH + kh * DH) * Wp + (p) * SW + kw * DW) * HCV_VL)

static void hcv_dwl_task(void *arg, long task) {
    const struct hcv_dwl_args *a = arg;
    const long C = a->C, H = a->H, W = a->W, KH = a->KH, KW = a->KW, SH = a->SH, SW = a->SW;
    const long DH = a->DH, DW = a->DW, OH = a->OH, OW = a->OW, Hp = a->Hp, Wp = a->Wp;
    const long nb = (C + HCV_VL - 1) / HCV_VL, KK = KH * KW, P = OH * OW;
    /* sizes rounded up to 64 bytes, as aligned_alloc asks */
    float *xt = aligned_alloc(64, ((size_t)(Hp * Wp + P) * HCV_VL * sizeof(float) + 63) & ~63ul);
    hcv_vf *wv = aligned_alloc(64, ((size_t)KK * sizeof(hcv_vf) + 63) & ~63ul);
    if (!xt || !wv) { /* the caller sees the NaN-filled output (see _convs.py) */
        free(xt);
        free(wv);
        return;
    }
    float *ot = xt + Hp * Wp * HCV_VL;
    HELI_CHUNK(a->blocks, a->tasks, task, b0, b1);
    for (long blk = b0; blk < b1; ++blk) {
        const long n = blk / nb, c0 = (blk % nb) * HCV_VL, cw = heli_min_l(HCV_VL, C - c0);
        /* this block's channels, transposed into a zero-padded image */
        memset(xt, 0, (size_t)Hp * Wp * HCV_VL * sizeof(float));
        for (long j = 0; j < cw; ++j) {
            const float *src = a->x + ((n * C + c0 + j) * H) * W;
            for (long h = 0; h < H; ++h) {
                float *d = xt + ((h + a->PT) * Wp + a->PL) * HCV_VL + j;
                for (long w = 0; w < W; ++w) d[w * HCV_VL] = src[h * W + w];
            }
        }
        hcv_vf bias = {0};
        for (long t = 0; t < KK; ++t) {
            hcv_vf v = {0};
            for (long j = 0; j < cw; ++j) v[j] = a->w[(c0 + j) * KK + t];
            wv[t] = v;
        }
        if (a->bias)
            for (long j = 0; j < cw; ++j) bias[j] = a->bias[c0 + j];
        for (long oh = 0; oh < OH; ++oh) {
            hcv_vf *out = (hcv_vf *)(ot + oh * OW * HCV_VL);
            long ow = 0;
            for (; ow + 4 <= OW; ow += 4) { /* four chains of FMAs in flight */
                hcv_vf s0 = bias, s1 = bias, s2 = bias, s3 = bias;
                HCV_DWL_TAPS(s0, ow);
                HCV_DWL_TAPS(s1, ow + 1);
                HCV_DWL_TAPS(s2, ow + 2);
                HCV_DWL_TAPS(s3, ow + 3);
                out[ow] = s0, out[ow + 1] = s1, out[ow + 2] = s2, out[ow + 3] = s3;
            }
            for (; ow < OW; ++ow) {
                hcv_vf s0 = bias;
                HCV_DWL_TAPS(s0, ow);
                out[ow] = s0;
            }
            if (a->act) {
                float *o = (float *)out;
                const float lo = a->lo, hi = a->hi;
                #pragma omp simd
                for (long i = 0; i < OW * HCV_VL; ++i) {
                    const float v = o[i] < lo ? lo : o[i];
                    o[i] = v > hi ? hi : v;
                }
            }
        }
        /* back to planes, then each channel's epilogue over its whole plane */
        for (long j = 0; j < cw; ++j) {
            float *d = a->y + (n * C + c0 + j) * P;
            for (long p = 0; p < P; ++p) d[p] = ot[p * HCV_VL + j];
            if (a->epi) a->epi(d, a->res ? a->res + (d - a->y) : NULL, c0 + j, P, a->params);
        }
    }
    free(xt);
    free(wv);
}
#undef HCV_DWL_TAPS

/* Depthwise convolution with the channels in vector lanes: each block of
 * HCV_VL channels is transposed into a padded pixels x lanes image, every
 * output pixel is then KH * KW vector FMAs, and the result is transposed
 * back.  Against heli_dwconv2d_v2 (a channel at a time) this wins on small
 * planes, where a row is shorter than a few vectors and the per-channel
 * work dominates (MobileNetV2's 14x14 and 7x7 layers). */
HELI_EXPORT void heli_dwconv2d_lanes(const float *restrict x, const float *restrict w,
                                     const float *restrict bias, float *restrict y, long N,
                                     long C, long H, long W, long KH, long KW, long SH,
                                     long SW, long PT, long PL, long DH, long DW, long OH,
                                     long OW, long Hp, long Wp, int act, float lo, float hi,
                                     heli_row_epi epi, const float *res, const float *params,
                                     int nthreads) {
    const long blocks = N * ((C + HCV_VL - 1) / HCV_VL);
    struct hcv_dwl_args a = {x, w, bias, res, params, y, C, H, W, KH, KW, SH, SW, PT, PL, DH,
                             DW, OH, OW, Hp, Wp, blocks,
                             heli_tasks(blocks, N * C * OH * OW * KH * KW, 65536), act, lo, hi,
                             epi};
    heli_parallel(a.tasks, hcv_dwl_task, &a, nthreads);
}

/* ------------------------------------------------------------ col2im */

struct hcv_col2im_args {
    const float *col, *bias;
    float *y;
    long M, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, tasks;
};

static void hcv_col2im_task(void *arg, long task) {
    const struct hcv_col2im_args *a = arg;
    const long H = a->H, W = a->W, KH = a->KH, KW = a->KW, SH = a->SH, SW = a->SW;
    const long PH = a->PH, PW = a->PW, DH = a->DH, DW = a->DW, OH = a->OH, OW = a->OW;
    HELI_CHUNK(a->M, a->tasks, task, m0, m1);
    for (long m = m0; m < m1; ++m) {
        float *yp = a->y + m * OH * OW;
        const float b = a->bias ? a->bias[m] : 0.0f;
        for (long i = 0; i < OH * OW; ++i) yp[i] = b;
        for (long kh = 0; kh < KH; ++kh) {
            for (long kw = 0; kw < KW; ++kw) {
                const float *cp = a->col + ((m * KH + kh) * KW + kw) * H * W;
                for (long ih = 0; ih < H; ++ih) {
                    const long oh = ih * SH - PH + kh * DH;
                    if (oh < 0 || oh >= OH) continue;
                    float *d = yp + oh * OW;
                    const float *s = cp + ih * W;
                    for (long iw = 0; iw < W; ++iw) {
                        const long ow = iw * SW - PW + kw * DW;
                        if (ow >= 0 && ow < OW) d[ow] += s[iw];
                    }
                }
            }
        }
    }
}

/* ConvTranspose's scatter: y[m, ih*SH - PH + kh*DH, iw*SW - PW + kw*DW] +=
 * col[(m, kh, kw), (ih, iw)], after y = bias[m]. */
HELI_EXPORT void heli_col2im(const float *restrict col, const float *restrict bias,
                             float *restrict y, long M, long H, long W, long KH, long KW,
                             long SH, long SW, long PH, long PW, long DH, long DW, long OH,
                             long OW, int nthreads) {
    struct hcv_col2im_args a = {col, bias, y, M, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW,
                                heli_tasks(M, M * KH * KW * H * W, 32768)};
    heli_parallel(a.tasks, hcv_col2im_task, &a, nthreads);
}

/* ------------------------------------------------------------ depth to space */

struct hcv_d2s_args {
    const float *col;
    float *y;
    long M, H, W, KH, KW, tasks;
};

static void hcv_d2s_task(void *arg, long task) {
    const struct hcv_d2s_args *a = arg;
    const long H = a->H, W = a->W, KH = a->KH, KW = a->KW, OW = W * KW;
    HELI_CHUNK(a->M * H, a->tasks, task, r0, r1);
    for (long r = r0; r < r1; ++r) { /* r = (m, ih): KH output rows */
        const long m = r / H, ih = r % H;
        for (long kh = 0; kh < KH; ++kh) {
            float *restrict d = a->y + (m * H * KH + ih * KH + kh) * OW;
            const float *s = a->col + (m * KH + kh) * KW * H * W + ih * W;
            if (KW == 2) { /* the common 2x upsampling: one interleave */
                const float *restrict s0 = s, *restrict s1 = s + H * W;
                #pragma omp simd
                for (long iw = 0; iw < W; ++iw) {
                    d[2 * iw] = s0[iw];
                    d[2 * iw + 1] = s1[iw];
                }
            } else {
                for (long kw = 0; kw < KW; ++kw) {
                    const float *restrict sk = s + kw * H * W;
                    for (long iw = 0; iw < W; ++iw) d[iw * KW + kw] = sk[iw];
                }
            }
        }
    }
}

/* y[m, ih*KH + kh, iw*KW + kw] = col[(m, kh, kw), (ih, iw)]: the scatter of a
 * ConvTranspose whose stride equals its kernel (no overlap, no padding), where
 * every output pixel gets exactly one tap, so the GEMM's own epilogue already
 * applied the bias and the clamp. */
HELI_EXPORT void heli_depth_to_space(const float *restrict col, float *restrict y, long M,
                                     long H, long W, long KH, long KW, int nthreads) {
    struct hcv_d2s_args a = {col, y, M, H, W, KH, KW,
                             heli_tasks(M * H, M * KH * KW * H * W, 65536)};
    heli_parallel(a.tasks, hcv_d2s_task, &a, nthreads);
}

/* ------------------------------------------------------------ small ops */

struct hcv_affine_args {
    const float *x, *s, *t;
    float *y;
    long C, inner, planes, tasks;
};

static void hcv_affine_task(void *arg, long task) {
    const struct hcv_affine_args *a = arg;
    HELI_CHUNK(a->planes, a->tasks, task, p0, p1);
    for (long p = p0; p < p1; ++p) {
        const float s = a->s[p % a->C], t = a->t[p % a->C];
        const float *restrict x = a->x + p * a->inner;
        float *restrict y = a->y + p * a->inner;
        #pragma omp simd
        for (long i = 0; i < a->inner; ++i) y[i] = x[i] * s + t;
    }
}

/* y = x * s[c] + t[c] over N * C planes of `inner` elements. */
HELI_EXPORT void heli_channel_affine(const float *restrict x, const float *restrict s,
                                     const float *restrict t, float *restrict y, long NC,
                                     long C, long inner, int nthreads) {
    struct hcv_affine_args a = {x, s, t, y, C, inner, NC, heli_tasks(NC, NC * inner, 65536)};
    heli_parallel(a.tasks, hcv_affine_task, &a, nthreads);
}

struct hcv_gather_args {
    const float *x;
    const int *index;
    float *y;
    long in_plane, out_plane, planes, tasks;
};

static void hcv_gather_task(void *arg, long task) {
    const struct hcv_gather_args *a = arg;
    HELI_CHUNK(a->planes, a->tasks, task, p0, p1);
    for (long p = p0; p < p1; ++p) {
        const float *restrict x = a->x + p * a->in_plane;
        float *restrict y = a->y + p * a->out_plane;
        for (long i = 0; i < a->out_plane; ++i) y[i] = x[a->index[i]];
    }
}

/* y[p, i] = x[p, index[i]] for each of `planes` planes (nearest Resize). */
HELI_EXPORT void heli_gather_planes(const float *restrict x, const int *restrict index,
                                    float *restrict y, long planes, long in_plane,
                                    long out_plane, int nthreads) {
    struct hcv_gather_args a = {x, index, y, in_plane, out_plane, planes,
                                heli_tasks(planes, planes * out_plane, 65536)};
    heli_parallel(a.tasks, hcv_gather_task, &a, nthreads);
}
