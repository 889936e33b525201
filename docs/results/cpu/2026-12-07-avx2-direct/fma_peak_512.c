#include <immintrin.h>
#include <stdio.h>
#include <time.h>
// 12 independent 512-bit FMA chains: the core's FMA peak in GFLOP/s (one thread).
#define D(i) __m512 a##i = _mm512_set1_ps((float)i);
#define F(i) a##i = _mm512_fmadd_ps(a##i, x, y);
int main(void) {
    __m512 x = _mm512_set1_ps(0.5f), y = _mm512_set1_ps(0.25f);
    D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11)
    long iters = 300000000;
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long n = 0; n < iters; n++) {
        F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    t = _mm512_add_ps(t, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    float out[8]; _mm512_storeu_ps(out, t);
    printf("%.1f GFLOP/s (12 chains of 512-bit FMAs, one thread; %g)\n", iters * 12.0 * 32 / s / 1e9, out[0]);
    return 0;
}
