void heli_softmax_4x8(const float *restrict x, float *restrict y, int nthreads) {
    for (long r = 0; r < 4; ++r) {
        float m = (-INFINITY);
        #pragma omp simd reduction(max:m)
        for (long i = 0; i < 8; ++i) {
            m = (m < x[((r * 8) + i)] ? x[((r * 8) + i)] : m);
        }
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (long j = 0; j < 8; ++j) {
            float e = heli_expf((x[((r * 8) + j)] - m));
            y[((r * 8) + j)] = e;
            s = (s + e);
        }
        float inv = (1.0f / s);
        #pragma omp simd
        for (long k = 0; k < 8; ++k) {
            y[((r * 8) + k)] = (y[((r * 8) + k)] * inv);
        }
    }
}
