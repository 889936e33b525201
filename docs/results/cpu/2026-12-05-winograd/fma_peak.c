// The machine's f32 FMA peak for one core: 12 independent chains of AVX-512 FMAs.
// gcc -O2 -mavx512f fma_peak.c -o fma_peak && ./fma_peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#define F(x) x=_mm512_fmadd_ps(x,b,c);
int main(){
  __m512 a0=_mm512_set1_ps(1e-3f),a1=_mm512_set1_ps(2e-3f),a2=_mm512_set1_ps(3e-3f),a3=_mm512_set1_ps(4e-3f),a4=_mm512_set1_ps(5e-3f),a5=_mm512_set1_ps(6e-3f),a6=_mm512_set1_ps(7e-3f),a7=_mm512_set1_ps(8e-3f),a8=_mm512_set1_ps(9e-3f),a9=_mm512_set1_ps(1e-2f),a10=_mm512_set1_ps(1.1e-2f),a11=_mm512_set1_ps(1.2e-2f);
  __m512 b=_mm512_set1_ps(0.999f), c=_mm512_set1_ps(1e-4f);
  long n=400000000; struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0);
  for(long i=0;i<n;i++){ F(a0)F(a1)F(a2)F(a3)F(a4)F(a5)F(a6)F(a7)F(a8)F(a9)F(a10)F(a11) __asm__ volatile(""); }
  clock_gettime(CLOCK_MONOTONIC,&t1);
  double s=(t1.tv_sec-t0.tv_sec)+1e-9*(t1.tv_nsec-t0.tv_nsec);
  __m512 r=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)));
  r=_mm512_add_ps(r,_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)));
  printf("%.1f GFLOP/s one thread (%f)\n", n*12*32.0/s/1e9, _mm512_reduce_add_ps(r));
}
