#include <immintrin.h>
#include <stdio.h>
#include <time.h>
// 12 independent FMA chains: the core's FMA peak in GFLOP/s (one thread).
// gcc -O2 -mavx2 -mfma: 256-bit FMAs; gcc -O2 -mavx512f: 512-bit FMAs.
#ifdef __AVX512F__
typedef __m512 vec;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define STORE _mm512_storeu_ps
#define LANES 16
#else
typedef __m256 vec;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define STORE _mm256_storeu_ps
#define LANES 8
#endif
#define D(i) vec a##i = SET1((float)i);
#define F(i) a##i = FMA(a##i, x, y);
int main(void) {
    vec x = SET1(0.5f), y = SET1(0.25f);
    D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11)
    long iters = 300000000;
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long n = 0; n < iters; n++) {
        F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    vec t = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));
    t = ADD(t, ADD(ADD(a8, a9), ADD(a10, a11)));
    float out[LANES]; STORE(out, t);
    printf("%.1f GFLOP/s (12 chains of %d-bit FMAs, one thread; %g)\n", iters * 12.0 * 2 * LANES / s / 1e9, 32 * LANES, out[0]);
    return 0;
}
