/* Heli's single-precision GEMM for the cpu target.
 *
 *     C = act(alpha * op(A) * op(B) + beta * C + bias)
 *
 * with row-major matrices (C is M x N, op(A) is M x K, op(B) is K x N), a
 * bias per column (length N) or per row (length M), and a clamp epilogue
 * (ReLU is a clamp to [0, +inf)), so that conv + bias + activation runs as
 * one pass over C.
 *
 * The structure is the Goto/BLIS one.  op(B) is packed into panels of NR
 * columns, KC deep; an MR x NR micro-kernel multiplies MR rows of op(A) by
 * one B panel with the whole C tile in vector registers, then applies the
 * epilogue as it stores the tile.  K is split into blocks of at most KC, M
 * into blocks of at most MC (their A rows stay in L2), N into blocks of at
 * most NC (the packed B block stays in L2).  A non-transposed A is read in
 * place (MR row pointers, one broadcast per row and k): packing it would
 * cost as much as the few B panels that reuse it, unless N is wide.  A
 * transposed A, or A against a wide N, is packed into panels of MR rows
 * (walking A's rows, kind to the TLB).  Ragged edges run kernels compiled
 * for fewer rows and fewer vectors, with masked loads and stores of the
 * last columns.  Threads (Heli's pool, threadpool.h) take rectangles of C
 * from a grid of tasks, a few per thread, cut along M and N where that costs
 * least; every element of C is summed in the same order (K blocks of
 * kc_of(K), k ascending) whatever the grid, so results do not depend on the
 * thread count.
 *
 * The same file builds for three instruction sets, chosen by the compiler
 * flags the toolchain passes (see _toolchain.py); the tiles were chosen by
 * measurement against OpenBLAS (bench/gemm.py):
 *   AVX-512F        MR x NR = 6 x 64  (24 zmm accumulators, 4 B vectors)
 *   AVX2 + FMA      MR x NR = 6 x 16  (12 ymm accumulators)
 *   portable C      MR x NR = 6 x  8  (GCC/Clang vector extensions)
 *
 * B can be packed once ahead of time (heli_sgemm_pack_b) and reused by
 * heli_sgemm_prepacked: the cpu target packs constant weights at compile
 * time.  The packed layout depends only on N, K and the build (NR, KC).
 *
 * beta == 0 means C is not read (BLAS convention: NaNs in C are ignored).
 * On x86, subnormal inputs and results are flushed to zero (see gemm_rect).
 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h> /* _mm_getcsr / _mm_setcsr: subnormals flushed (gemm_rect) */
#endif

/* threadpool.h (heli_parallel) is put in front of this file by _gemm.py. */

/* ------------------------------------------------------- vector ISA layer */

#if defined(__AVX512F__)
#include <immintrin.h>
#define HELI_ISA_ID 2
#ifndef MR /* -DMR=.. -DNR=.. override the tile for tuning */
#define MR 6
#define NR 64
#endif
#define VW 16
typedef __m512 vf;
static inline __mmask16 lanes(long n) { return (__mmask16)((1u << n) - 1u); }
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VLOADN(p, n) _mm512_maskz_loadu_ps(lanes(n), (p))
#define VSTOREN(p, v, n) _mm512_mask_storeu_ps((p), lanes(n), (v))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VMAX(a, b) _mm512_max_ps((a), (b))
#define VMIN(a, b) _mm512_min_ps((a), (b))

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HELI_ISA_ID 1
#ifndef MR
#define MR 6
#define NR 16
#endif
#define VW 8
typedef __m256 vf;
static inline __m256i lanes(long n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VLOADN(p, n) _mm256_maskload_ps((p), lanes(n))
#define VSTOREN(p, v, n) _mm256_maskstore_ps((p), lanes(n), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMIN(a, b) _mm256_min_ps((a), (b))

#else
/* Portable: 4-wide GCC/Clang vector extensions (SSE2 on x86-64, NEON on
 * AArch64, plain scalar code elsewhere). */
#define HELI_ISA_ID 0
#ifndef MR
#define MR 6
#define NR 8
#endif
#define VW 4
typedef float vf __attribute__((vector_size(16)));
typedef float vf_u __attribute__((vector_size(16), aligned(4), __may_alias__));
typedef int vi __attribute__((vector_size(16)));
static inline vf v_set1(float x) { vf v = {x, x, x, x}; return v; }
static inline vf v_pick(vi mask, vf a, vf b) { /* mask ? a : b, lane-wise */
    return (vf)((mask & (vi)a) | (~mask & (vi)b));
}
static inline vf v_max(vf a, vf b) { return v_pick(a > b, a, b); } /* like maxps: b if NaN */
static inline vf v_min(vf a, vf b) { return v_pick(a < b, a, b); }
static inline vf v_loadn(const float *p, long n) {
    vf v = v_set1(0.0f);
    for (long i = 0; i < n; i++) v[i] = p[i];
    return v;
}
static inline void v_storen(float *p, vf v, long n) {
    for (long i = 0; i < n; i++) p[i] = v[i];
}
#define VZERO() v_set1(0.0f)
#define VSET1(x) v_set1(x)
#define VLOAD(p) ((vf)(*(const vf_u *)(p)))
#define VSTORE(p, v) (*(vf_u *)(p) = (v))
#define VLOADN(p, n) v_loadn((p), (n))
#define VSTOREN(p, v, n) v_storen((p), (v), (n))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VMUL(a, b) ((a) * (b))
#define VADD(a, b) ((a) + (b))
#define VMAX(a, b) v_max((a), (b))
#define VMIN(a, b) v_min((a), (b))
#endif

#define NV (NR / VW) /* vectors per tile row */
#if NR % VW != 0 || MR < 1 || MR > 16
#error "NR must be a multiple of the vector width and MR in 1..16"
#endif

/* --------------------------------------------------------------- blocking */

/* Cache blocking (floats), chosen by measurement (bench/gemm.py).  KC: the
 * depth of one pass over a C tile (the A tile, MR x KC, stays in L1).  MC:
 * the A rows of a block (MC x KC) stay in L2.  NC: the packed B block
 * (KC x NC, about 1 MiB) stays in L2. */
#ifndef KC_MAX
#define KC_MAX 384
#endif
#ifndef MC_MAX
#define MC_MAX (MR * 16)
#endif
#ifndef NC_MAX
#define NC_MAX 768
#endif
#if NC_MAX % NR != 0 || MC_MAX % MR != 0
#error "NC_MAX must be a multiple of NR and MC_MAX of MR"
#endif
/* Up to this many columns per thread, a non-transposed A is read in place. */
#ifndef DIRECT_A_MAX_N
#define DIRECT_A_MAX_N 1024
#endif
/* Below this many multiply-adds per thread, extra threads cost more than
 * they save (a parallel job costs a few microseconds). */
#ifndef MIN_MACS_PER_THREAD
#define MIN_MACS_PER_THREAD (1L << 17)
#endif
/* Tasks per thread to aim for: more than one, so that a worker that starts
 * late (its core busy with another process) still finds work to share. */
#ifndef TASKS_PER_THREAD
#define TASKS_PER_THREAD 4
#endif
/* The fixed cost of one task, in multiply-adds (about a microsecond). */
#ifndef TASK_OVERHEAD_MACS
#define TASK_OVERHEAD_MACS 20000.0
#endif

#define ALIGN 64
#define HELI_EXPORT __attribute__((visibility("default")))

enum { BIAS_NONE = 0, BIAS_COL = 1, BIAS_ROW = 2 };

typedef struct {
    int trans_a, trans_b;
    long M, N, K;
    float alpha, beta;
    const float *A;
    long lda;
    const float *B;
    long ldb;
    const float *Bp; /* pre-packed B, or NULL */
    float *C;
    long ldc;
    const float *bias;
    int bias_kind;
    int act; /* 0: none, 1: clamp to [lo, hi] */
    float lo, hi;
} gemm_args;

static inline long min_l(long a, long b) { return a < b ? a : b; }
static inline long ceil_div(long a, long b) { return (a + b - 1) / b; }

/* K is cut into equal blocks of at most KC_MAX, so the last is no sliver. */
static inline long kc_of(long K) {
    long nb = ceil_div(K, KC_MAX);
    return nb ? ceil_div(K, nb) : 0;
}

/* ---------------------------------------------------------------- packing */

#if HELI_ISA_ID >= 1
/* dst[t * ldd + r] = src[r * lds + t] for an 8 x 8 block (AVX). */
static inline void transpose8x8(const float *src, long lds, float *dst, long ldd) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* dst[k * ldd + r] = src[r * lds + k] for r < rows, k < kc (a transposing
 * copy; 8 x 8 blocks in registers where the ISA has AVX). */
static void transpose_copy(const float *src, long lds, long rows, long kc, float *restrict dst,
                           long ldd) {
    long r0 = 0;
#if HELI_ISA_ID >= 1
    for (; r0 + 8 <= rows; r0 += 8) {
        long k = 0;
        for (; k + 8 <= kc; k += 8) transpose8x8(src + r0 * lds + k, lds, dst + k * ldd + r0, ldd);
        for (; k < kc; k++)
            for (long r = r0; r < r0 + 8; r++) dst[k * ldd + r] = src[r * lds + k];
    }
#endif
    for (long k0 = 0; k0 < kc; k0 += 64) /* 64-deep strips stay in L1 */
        for (long r = r0; r < rows; r++) {
            const float *s = src + r * lds;
            const long k1 = min_l(kc, k0 + 64);
            for (long k = k0; k < k1; k++) dst[k * ldd + r] = s[k];
        }
}

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into panels of MR rows:
 * a panel holds, for each k, MR consecutive floats (zero-padded rows). */
static void pack_a(const gemm_args *g, long i0, long mc, long p0, long kc, float *restrict dst) {
    if (!g->trans_a) {
        for (long ir = 0; ir < mc; ir += MR, dst += MR * kc) {
            const long mr = min_l(MR, mc - ir);
            transpose_copy(g->A + (i0 + ir) * g->lda + p0, g->lda, mr, kc, dst, MR);
            for (long r = mr; r < MR; r++)
                for (long k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
        }
        return;
    }
    /* A is K x M: each k gives MR consecutive floats per panel.  Walk A row
     * by row (one contiguous run per k, kind to the TLB). */
    for (long k = 0; k < kc; k++) {
        const float *s = g->A + (p0 + k) * g->lda + i0;
        for (long ir = 0; ir < mc; ir += MR) {
            const long mr = min_l(MR, mc - ir);
            float *d = dst + ir * kc + k * MR;
#pragma GCC unroll 4
            for (long v = 0; v < MR; v += VW) { /* masked: never past the panel */
                const long n = min_l(VW, mr - v);
                if (n == VW) VSTORE(d + v, VLOAD(s + ir + v));
                else if (n > 0) VSTOREN(d + v, VLOADN(s + ir + v, n), min_l(VW, MR - v));
                else VSTOREN(d + v, VZERO(), min_l(VW, MR - v));
            }
        }
    }
}

/* Pack op(B) rows [p0, p0+kc) x cols [j0, j0+nc) into panels of NR columns
 * (each kc x NR, row-major), zero-padded to a multiple of NR. */
static void pack_b(int trans_b, const float *B, long ldb, long j0, long nc, long p0, long kc,
                   float *restrict dst) {
    for (long jr = 0; jr < nc; jr += NR) {
        const long nr = min_l(NR, nc - jr);
        if (!trans_b) {
            const float *src = B + p0 * ldb + j0 + jr;
            for (long k = 0; k < kc; k++) {
                const float *s = src + k * ldb;
                float *d = dst + k * NR;
                if (nr == NR) {
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) VSTORE(d + v * VW, VLOAD(s + v * VW));
                } else {
                    long c = 0;
                    for (; c < nr; c++) d[c] = s[c];
                    for (; c < NR; c++) d[c] = 0.0f;
                }
            }
        } else { /* B is N x K: column c of the panel is row j0+jr+c of B */
            transpose_copy(B + (j0 + jr) * ldb + p0, ldb, nr, kc, dst, NR);
            for (long k = 0; k < kc; k++)
                for (long c = nr; c < NR; c++) dst[k * NR + c] = 0.0f;
        }
        dst += NR * kc;
    }
}

/* ------------------------------------------------------------ micro-kernel */

/* What happens to a C tile after the multiply. */
typedef struct {
    float alpha, beta;     /* beta of this K block: 1 after the first */
    int last;              /* the last K block: only then bias and clamp apply */
    const float *bias_col; /* the tile's nr column biases, or NULL */
    const float *bias_row; /* the tile's row biases, or NULL */
    int act;
    float lo, hi;
} tile_epi;

static inline __attribute__((always_inline)) vf epilogue(vf acc, vf old, vf bias, int i,
                                                         const tile_epi *e, vf valpha, vf vbeta,
                                                         vf vlo, vf vhi) {
    vf x = VMUL(acc, valpha);
    if (e->beta != 0.0f) x = VFMA(old, vbeta, x);
    if (e->last) {
        if (e->bias_col) x = VADD(x, bias);
        if (e->bias_row) x = VADD(x, VSET1(e->bias_row[i]));
        if (e->act) x = VMIN(VMAX(x, vlo), vhi);
    }
    return x;
}

/* c[0:rows, 0:nr] (row stride ldc) = epilogue(alpha * A_tile * b_panel + beta * c)
 * for rows <= MR and cols <= NV vectors (compile-time constants after
 * inlining) and nr <= cols * VW.  Element (i, k) of the A tile is
 * a[i * ars + k * acs]: a packed panel has ars = 1, acs = MR; rows of a
 * row-major A read in place have ars = lda, acs = 1.  b is a packed panel:
 * NR floats per k, zero-padded past the edge of B. */
static inline __attribute__((always_inline)) void tile_body(
    const int rows, const int cols, long kc, const float *restrict a, long ars, long acs,
    const float *restrict b, float *restrict c, long ldc, long nr, const tile_epi *e) {
    vf acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 8
        for (int v = 0; v < cols; v++) acc[i][v] = VZERO();

#pragma GCC unroll 4
    for (long k = 0; k < kc; k++) {
        vf bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < cols; v++) bv[v] = VLOAD(b + v * VW);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            vf ai = VSET1(a[i * ars]);
#pragma GCC unroll 8
            for (int v = 0; v < cols; v++) acc[i][v] = VFMA(ai, bv[v], acc[i][v]);
        }
        a += acs;
        b += NR;
    }

    const vf valpha = VSET1(e->alpha), vbeta = VSET1(e->beta);
    const vf vlo = VSET1(e->lo), vhi = VSET1(e->hi);
    const int read_c = e->beta != 0.0f;
    vf bias[NV];
#pragma GCC unroll 8
    for (int v = 0; v < cols; v++) bias[v] = VZERO();
    if (nr == cols * VW) {
        if (e->last && e->bias_col) {
#pragma GCC unroll 8
            for (int v = 0; v < cols; v++) bias[v] = VLOAD(e->bias_col + v * VW);
        }
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            float *ci = c + i * ldc;
#pragma GCC unroll 8
            for (int v = 0; v < cols; v++) {
                vf old = read_c ? VLOAD(ci + v * VW) : VZERO();
                VSTORE(ci + v * VW, epilogue(acc[i][v], old, bias[v], i, e, valpha, vbeta,
                                             vlo, vhi));
            }
        }
    } else { /* the last columns of C: masked loads and stores */
        if (e->last && e->bias_col) {
#pragma GCC unroll 8
            for (int v = 0; v < cols; v++) {
                long n = nr - v * VW;
                if (n >= VW) bias[v] = VLOAD(e->bias_col + v * VW);
                else if (n > 0) bias[v] = VLOADN(e->bias_col + v * VW, n);
            }
        }
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            float *ci = c + i * ldc;
#pragma GCC unroll 8
            for (int v = 0; v < cols; v++) {
                long n = nr - v * VW;
                if (n >= VW) {
                    vf old = read_c ? VLOAD(ci + v * VW) : VZERO();
                    VSTORE(ci + v * VW, epilogue(acc[i][v], old, bias[v], i, e, valpha, vbeta,
                                                 vlo, vhi));
                } else if (n > 0) {
                    vf old = read_c ? VLOADN(ci + v * VW, n) : VZERO();
                    VSTOREN(ci + v * VW, epilogue(acc[i][v], old, bias[v], i, e, valpha, vbeta,
                                                  vlo, vhi), n);
                }
            }
        }
    }
}

/* Instances for every (rows, vectors) shape, so ragged edges of C, narrow
 * ones included, cost only what they compute: A packed (ars = 1, acs = MR),
 * and A read in place (ars, acs = lda, 1 for a row-major A). */
typedef void (*tile_fn)(long kc, const float *a, long ars, long acs, const float *b, float *c,
                        long ldc, long nr, const tile_epi *e);

#define DEFINE_TILE(R, V)                                                                     \
    static __attribute__((noinline)) void tile_p_##R##_##V(                                   \
        long kc, const float *a, long ars, long acs, const float *b, float *c, long ldc,      \
        long nr, const tile_epi *e) {                                                         \
        (void)ars;                                                                            \
        (void)acs;                                                                            \
        tile_body(R, V, kc, a, 1, MR, b, c, ldc, nr, e);                                      \
    }                                                                                         \
    static __attribute__((noinline)) void tile_d_##R##_##V(                                   \
        long kc, const float *a, long ars, long acs, const float *b, float *c, long ldc,      \
        long nr, const tile_epi *e) {                                                         \
        tile_body(R, V, kc, a, ars, acs, b, c, ldc, nr, e);                                   \
    }
#define TABLE_P(R, V) [R - 1][V - 1] = tile_p_##R##_##V,
#define TABLE_D(R, V) [R - 1][V - 1] = tile_d_##R##_##V,

/* IF_Vn(x) / IF_Rn(x): x when NV >= n / MR >= n. */
#if NV > 4
#error "NR may be at most 4 vectors"
#endif
#define IF_V1(x) x
#if NV >= 2
#define IF_V2(x) x
#else
#define IF_V2(x)
#endif
#if NV >= 3
#define IF_V3(x) x
#else
#define IF_V3(x)
#endif
#if NV >= 4
#define IF_V4(x) x
#else
#define IF_V4(x)
#endif
#define IF_R1(x) x
#if MR >= 2
#define IF_R2(x) x
#else
#define IF_R2(x)
#endif
#if MR >= 3
#define IF_R3(x) x
#else
#define IF_R3(x)
#endif
#if MR >= 4
#define IF_R4(x) x
#else
#define IF_R4(x)
#endif
#if MR >= 5
#define IF_R5(x) x
#else
#define IF_R5(x)
#endif
#if MR >= 6
#define IF_R6(x) x
#else
#define IF_R6(x)
#endif
#if MR >= 7
#define IF_R7(x) x
#else
#define IF_R7(x)
#endif
#if MR >= 8
#define IF_R8(x) x
#else
#define IF_R8(x)
#endif
#if MR >= 9
#define IF_R9(x) x
#else
#define IF_R9(x)
#endif
#if MR >= 10
#define IF_R10(x) x
#else
#define IF_R10(x)
#endif
#if MR >= 11
#define IF_R11(x) x
#else
#define IF_R11(x)
#endif
#if MR >= 12
#define IF_R12(x) x
#else
#define IF_R12(x)
#endif
#if MR >= 13
#define IF_R13(x) x
#else
#define IF_R13(x)
#endif
#if MR >= 14
#define IF_R14(x) x
#else
#define IF_R14(x)
#endif
#if MR >= 15
#define IF_R15(x) x
#else
#define IF_R15(x)
#endif
#if MR >= 16
#define IF_R16(x) x
#else
#define IF_R16(x)
#endif

#define FOR_V(X, R) IF_V1(X(R, 1)) IF_V2(X(R, 2)) IF_V3(X(R, 3)) IF_V4(X(R, 4))
#define FOR_RV(X)                                                                             \
    IF_R1(FOR_V(X, 1)) IF_R2(FOR_V(X, 2)) IF_R3(FOR_V(X, 3)) IF_R4(FOR_V(X, 4))               \
    IF_R5(FOR_V(X, 5)) IF_R6(FOR_V(X, 6)) IF_R7(FOR_V(X, 7)) IF_R8(FOR_V(X, 8))               \
    IF_R9(FOR_V(X, 9)) IF_R10(FOR_V(X, 10)) IF_R11(FOR_V(X, 11)) IF_R12(FOR_V(X, 12))         \
    IF_R13(FOR_V(X, 13)) IF_R14(FOR_V(X, 14)) IF_R15(FOR_V(X, 15)) IF_R16(FOR_V(X, 16))

FOR_RV(DEFINE_TILE)

static const tile_fn tiles_packed[MR][NV] = {FOR_RV(TABLE_P)};
static const tile_fn tiles_direct[MR][NV] = {FOR_RV(TABLE_D)};

/* The kernel for a rows x nr tile (1 <= rows <= MR, 1 <= nr <= NR). */
static inline tile_fn pick_tile(int direct, long rows, long nr) {
    const long v = (nr + VW - 1) / VW;
    return direct ? tiles_direct[rows - 1][v - 1] : tiles_packed[rows - 1][v - 1];
}

/* --------------------------------------------------------- scratch memory */

/* Packing buffers per thread, kept between calls (pool threads persist). */
static _Thread_local float *tls_buf;
static _Thread_local size_t tls_cap;

static float *scratch(size_t floats) {
    if (floats < ALIGN) floats = ALIGN; /* never NULL for "nothing needed" */
    if (floats > tls_cap) {
        free(tls_buf);
        size_t bytes = (floats * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
        tls_buf = aligned_alloc(ALIGN, bytes);
        tls_cap = tls_buf ? floats : 0;
    }
    return tls_buf;
}

/* ----------------------------------------------------------------- driver */

/* Whether a rectangle n columns wide reads A in place rather than packed. */
#ifndef DIRECT_TRANS_A /* measured slower: a transposed A strides the TLB per k */
#define DIRECT_TRANS_A 0
#endif
static inline int reads_a_in_place(const gemm_args *g, long n) {
    return (DIRECT_TRANS_A || !g->trans_a) && n <= DIRECT_A_MAX_N;
}

/* C[m0:m1, n0:n1] on one thread; n0 is a multiple of NR (for packed B).
 * Returns 0, or -1 when scratch memory could not be allocated. */
static int gemm_rect_body(const gemm_args *g, long m0, long m1, long n0, long n1) {
    const long M = m1 - m0, K = g->K;
    if (M <= 0 || n1 <= n0) return 0;
    const int direct = reads_a_in_place(g, n1 - n0);
    const long kcb = kc_of(K);
    const long n_pad_all = ceil_div(g->N, NR) * NR; /* packed-B row length */
    const long mc_max = min_l(MC_MAX, ceil_div(M, MR) * MR);
    const long nc_max = min_l(NC_MAX, ceil_div(n1 - n0, NR) * NR);
    /* Sizes rounded to 16 floats keep the B block 64-byte aligned. */
    const size_t a_size = direct ? 0 : ((size_t)mc_max * kcb + 15) / 16 * 16;
    const size_t b_size = g->Bp ? 0 : (size_t)nc_max * kcb;
    float *buf = scratch(a_size + b_size);
    if (!buf) return -1;
    float *pa = buf, *pb_own = buf + a_size;

    for (long jc = n0; jc < n1; jc += NC_MAX) {
        const long nc = min_l(NC_MAX, n1 - jc);
        for (long pc = 0; pc < K; pc += kcb) {
            const long kc = min_l(kcb, K - pc);
            tile_epi e = {g->alpha, pc == 0 ? g->beta : 1.0f, pc + kc >= K, NULL, NULL,
                          g->act, g->lo, g->hi};
            const float *pb;
            if (g->Bp) {
                pb = g->Bp + pc * n_pad_all + jc * kc; /* jc is a multiple of NR */
            } else {
                pack_b(g->trans_b, g->B, g->ldb, jc, nc, pc, kc, pb_own);
                pb = pb_own;
            }
            for (long ic = m0; ic < m1; ic += MC_MAX) {
                const long mc = min_l(MC_MAX, m1 - ic);
                if (!direct) pack_a(g, ic, mc, pc, kc, pa);
                for (long jr = 0; jr < nc; jr += NR) {
                    const long nr = min_l(NR, nc - jr), j = jc + jr;
                    const float *bpanel = pb + jr * kc;
                    e.bias_col = g->bias_kind == BIAS_COL ? g->bias + j : NULL;
                    for (long ir = 0; ir < mc; ir += MR) {
                        const long rows = min_l(MR, mc - ir), i = ic + ir;
                        e.bias_row = g->bias_kind == BIAS_ROW ? g->bias + i : NULL;
                        float *c = g->C + i * g->ldc + j;
                        const tile_fn tile = pick_tile(direct, rows, nr);
                        if (!direct)
                            tile(kc, pa + ir * kc, 1, MR, bpanel, c, g->ldc, nr, &e);
                        else if (!g->trans_a)
                            tile(kc, g->A + i * g->lda + pc, g->lda, 1, bpanel, c, g->ldc, nr, &e);
                        else
                            tile(kc, g->A + pc * g->lda + i, 1, g->lda, bpanel, c, g->ldc, nr, &e);
                    }
                }
            }
        }
    }
    return 0;
}

/* gemm_rect_body with subnormal floats flushed to zero (x86: MXCSR's FTZ and
 * DAZ bits, set for this rectangle and restored after).  An operand full of
 * subnormals (the tail of a softmax: exp of -90 and below) otherwise slows
 * every multiply-add that touches one by a microcode assist, about 25x for
 * a whole GEMM; flushing changes results by less than FLT_MIN (1.2e-38)
 * per value.  Every task sets the same mode, so the thread count still does
 * not change any result. */
static int gemm_rect(const gemm_args *g, long m0, long m1, long n0, long n1) {
#if defined(__SSE__) || defined(__x86_64__)
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    const int status = gemm_rect_body(g, m0, m1, n0, n1);
    _mm_setcsr(csr);
    return status;
#else
    return gemm_rect_body(g, m0, m1, n0, n1);
#endif
}

/* K == 0: C = act(beta * C + bias). */
static void gemm_k0(const gemm_args *g) {
    for (long i = 0; i < g->M; i++) {
        float *c = g->C + i * g->ldc;
        for (long j = 0; j < g->N; j++) {
            float x = g->beta != 0.0f ? g->beta * c[j] : 0.0f;
            if (g->bias_kind == BIAS_COL) x += g->bias[j];
            if (g->bias_kind == BIAS_ROW) x += g->bias[i];
            if (g->act) x = fminf(fmaxf(x, g->lo), g->hi);
            c[j] = x;
        }
    }
}

/* The cost of one rectangle of C, m x n, in multiply-adds: the product,
 * plus the packing that each task does for its own rectangle (weighted as a
 * few multiply-adds per float), plus a task's fixed cost. */
static double rect_cost(const gemm_args *g, double m, double n) {
    double cost = m * n * g->K + TASK_OVERHEAD_MACS;
    if (!g->Bp) cost += 4.0 * n * g->K;
    if (!reads_a_in_place(g, (long)n)) cost += 4.0 * m * g->K * ceil_div((long)n, NC_MAX);
    return cost;
}

/* Cut C into a grid of tm x tn rectangles (tasks) for t threads: the grid
 * whose estimated finish time on t threads is least, preferring more tasks
 * (up to TASKS_PER_THREAD * t) when that costs at most an eighth more. */
static void choose_grid(const gemm_args *g, long t, long *tm, long *tn) {
    const long mu = ceil_div(g->M, MR), nu = ceil_div(g->N, NR);
    const long most = min_l(TASKS_PER_THREAD * t, mu * nu);
    double best = -1.0;
    long best_tasks = 0;
    *tm = 1;
    *tn = 1;
    for (int pass = 0; pass < 2; pass++) {
        for (long a = 1; a <= min_l(mu, most); a++) {
            for (long b = 1; b <= min_l(nu, most / a); b++) {
                const long tasks = a * b;
                if (tasks < min_l(t, mu * nu)) continue;
                const double m = (double)min_l(ceil_div(mu, a) * MR, g->M);
                const double n = (double)min_l(ceil_div(nu, b) * NR, g->N);
                const double finish = (double)ceil_div(tasks, t) * rect_cost(g, m, n);
                if (pass == 0) {
                    if (best < 0 || finish < best) best = finish;
                } else if (finish <= best * 1.125 && tasks > best_tasks) {
                    best_tasks = tasks;
                    *tm = a;
                    *tn = b;
                }
            }
        }
    }
}

typedef struct {
    const gemm_args *g;
    long tm, tn, mu, nu;
    _Atomic int status;
} gemm_job;

static void gemm_task(void *p, long task) {
    gemm_job *job = p;
    const gemm_args *g = job->g;
    const long im = task / job->tn, in = task % job->tn;
    const long m0 = job->mu * im / job->tm * MR;
    const long m1 = min_l(g->M, job->mu * (im + 1) / job->tm * MR);
    const long n0 = job->nu * in / job->tn * NR;
    const long n1 = min_l(g->N, job->nu * (in + 1) / job->tn * NR);
    if (gemm_rect(g, m0, m1, n0, n1)) job->status = -1;
}

static int gemm_run(const gemm_args *g, int nthreads) {
    if (g->M <= 0 || g->N <= 0) return 0;
    if (g->K <= 0) {
        gemm_k0(g);
        return 0;
    }
    const long mu = ceil_div(g->M, MR), nu = ceil_div(g->N, NR);
    const double macs = (double)g->M * g->N * g->K;
    long t = nthreads < 1 ? 1 : nthreads;
    if ((double)t * MIN_MACS_PER_THREAD > macs) t = (long)(macs / MIN_MACS_PER_THREAD);
    if (t > mu * nu) t = mu * nu;
    if (t <= 1) return gemm_rect(g, 0, g->M, 0, g->N);
    gemm_job job = {g, 1, 1, mu, nu, 0};
    choose_grid(g, t, &job.tm, &job.tn);
    heli_parallel(job.tm * job.tn, gemm_task, &job, (int)t);
    return job.status;
}

/* ------------------------------------------------------------------- API */

/* out[0..7] = MR, NR, KC_MAX, MC_MAX, NC_MAX, vector width, ISA id
 * (0 portable, 1 avx2, 2 avx512), whether it runs threads (always: on
 * Heli's pool). */
HELI_EXPORT void heli_sgemm_config(long *out) {
    out[0] = MR;
    out[1] = NR;
    out[2] = KC_MAX;
    out[3] = MC_MAX;
    out[4] = NC_MAX;
    out[5] = VW;
    out[6] = HELI_ISA_ID;
    out[7] = 1;
}

/* Floats needed by heli_sgemm_pack_b for a K x N op(B). */
HELI_EXPORT long heli_sgemm_packed_b_size(long N, long K) { return ceil_div(N, NR) * NR * K; }

/* Pack op(B) (K x N) for heli_sgemm_prepacked: for each K block (kc_of(K)
 * deep), the N columns in panels of NR, each kc x NR row-major. */
HELI_EXPORT void heli_sgemm_pack_b(int trans_b, long N, long K, const float *B, long ldb,
                                   float *Bp) {
    const long kcb = kc_of(K), n_pad = ceil_div(N, NR) * NR;
    for (long pc = 0; pc < K; pc += kcb) {
        const long kc = min_l(kcb, K - pc);
        pack_b(trans_b, B, ldb, 0, N, pc, kc, Bp + pc * n_pad);
    }
}

/* C = act(alpha * op(A) * op(B) + beta * C + bias); bias_kind 0 none,
 * 1 per column, 2 per row; act 0 none, 1 clamp to [lo, hi].  Returns 0, or
 * -1 when scratch memory could not be allocated. */
HELI_EXPORT int heli_sgemm(int trans_a, int trans_b, long M, long N, long K, float alpha,
                           const float *A, long lda, const float *B, long ldb, float beta,
                           float *C, long ldc, const float *bias, int bias_kind, int act,
                           float lo, float hi, int nthreads) {
    const gemm_args g = {trans_a, trans_b, M, N, K, alpha, beta, A, lda, B, ldb, NULL,
                         C, ldc, bias, bias_kind, act, lo, hi};
    return gemm_run(&g, nthreads);
}

/* heli_sgemm with op(B) packed by heli_sgemm_pack_b (same N and K). */
HELI_EXPORT int heli_sgemm_prepacked(int trans_a, long M, long N, long K, float alpha,
                                     const float *A, long lda, const float *Bp, float beta,
                                     float *C, long ldc, const float *bias, int bias_kind,
                                     int act, float lo, float hi, int nthreads) {
    const gemm_args g = {trans_a, 0, M, N, K, alpha, beta, A, lda, NULL, 0, Bp,
                         C, ldc, bias, bias_kind, act, lo, hi};
    return gemm_run(&g, nthreads);
}
