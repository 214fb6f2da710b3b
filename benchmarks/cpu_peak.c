/* Arithmetic ceilings of one x86-64 core with AVX2, measured.
 *
 * Each loop issues only independent arithmetic instructions on registers
 * (no loads, no stores), so it runs at the rate the core can retire them:
 * an upper bound for any float32 or int8 matrix multiply on this core.
 *
 *   fma_f32      vfmadd231ps: 8 float32 multiply-adds per instruction
 *                (float32 GEMMs: XNNPACK, OpenBLAS, oneDNN).
 *   madd_s16     vpmaddwd + vpaddd: int8 values widened to int16, 16
 *                multiply-adds per vpmaddwd (XNNPACK's AVX2 int8 kernels).
 *   maddubs_u8s8 vpmaddubsw + vpmaddwd(ones) + vpaddd: 32 multiply-adds of
 *                uint8 x int8 per vpmaddubsw (fbgemm's AVX2 int8 kernels),
 *                the densest int8 multiply AVX2 has without VNNI.
 *
 * Prints one JSON object of multiply-adds per second (best of 5 runs).
 * Built and run by benchmarks/cpu_peak.py:
 *     cc -O2 cpu_peak.c -o cpu_peak && ./cpu_peak
 */
#include <stdio.h>
#include <time.h>

#define ITERATIONS 50000000L
#define REPEATS 5

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* 12 independent accumulators: 4-cycle latency x 2 FMA pipes, with room. */
static double fma_f32(void) {
  double start = seconds();
  __asm__ volatile("vxorps %%ymm14, %%ymm14, %%ymm14\n\t"
                   "vxorps %%ymm15, %%ymm15, %%ymm15" ::: "xmm14", "xmm15");
  for (long i = 0; i < ITERATIONS; i++) {
    __asm__ volatile(
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm0\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm1\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm2\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm3\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm4\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm5\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm6\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm7\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm8\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm9\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm10\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %%ymm11\n\t"
        ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
        "xmm8", "xmm9", "xmm10", "xmm11");
  }
  return ITERATIONS * 12.0 * 8 / (seconds() - start);
}

static double madd_s16(void) {
  double start = seconds();
  for (long i = 0; i < ITERATIONS; i++) {
    __asm__ volatile(
        "vpmaddwd %%ymm14, %%ymm15, %%ymm0\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm1\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm2\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm3\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm4\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm5\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm6\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm7\n\t"
        "vpaddd %%ymm0, %%ymm8, %%ymm8\n\t"
        "vpaddd %%ymm1, %%ymm9, %%ymm9\n\t"
        "vpaddd %%ymm2, %%ymm10, %%ymm10\n\t"
        "vpaddd %%ymm3, %%ymm11, %%ymm11\n\t"
        "vpaddd %%ymm4, %%ymm8, %%ymm8\n\t"
        "vpaddd %%ymm5, %%ymm9, %%ymm9\n\t"
        "vpaddd %%ymm6, %%ymm10, %%ymm10\n\t"
        "vpaddd %%ymm7, %%ymm11, %%ymm11\n\t"
        ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
        "xmm8", "xmm9", "xmm10", "xmm11");
  }
  return ITERATIONS * 8.0 * 16 / (seconds() - start);
}

static double maddubs_u8s8(void) {
  double start = seconds();
  for (long i = 0; i < ITERATIONS; i++) {
    __asm__ volatile(
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm0\n\t"
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm1\n\t"
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm2\n\t"
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm3\n\t"
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm4\n\t"
        "vpmaddubsw %%ymm14, %%ymm15, %%ymm5\n\t"
        "vpmaddwd %%ymm0, %%ymm13, %%ymm0\n\t"
        "vpmaddwd %%ymm1, %%ymm13, %%ymm1\n\t"
        "vpmaddwd %%ymm2, %%ymm13, %%ymm2\n\t"
        "vpmaddwd %%ymm3, %%ymm13, %%ymm3\n\t"
        "vpmaddwd %%ymm4, %%ymm13, %%ymm4\n\t"
        "vpmaddwd %%ymm5, %%ymm13, %%ymm5\n\t"
        "vpaddd %%ymm0, %%ymm8, %%ymm8\n\t"
        "vpaddd %%ymm1, %%ymm9, %%ymm9\n\t"
        "vpaddd %%ymm2, %%ymm10, %%ymm10\n\t"
        "vpaddd %%ymm3, %%ymm11, %%ymm11\n\t"
        "vpaddd %%ymm4, %%ymm8, %%ymm8\n\t"
        "vpaddd %%ymm5, %%ymm9, %%ymm9\n\t"
        ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm8", "xmm9",
        "xmm10", "xmm11");
  }
  return ITERATIONS * 6.0 * 32 / (seconds() - start);
}

static double best(double (*kernel)(void)) {
  double top = 0.0;
  for (int r = 0; r < REPEATS; r++) {
    double rate = kernel();
    if (rate > top) top = rate;
  }
  return top;
}

int main(void) {
  double f = best(fma_f32), m = best(madd_s16), u = best(maddubs_u8s8);
  printf("{\"fma_f32\": %.6g, \"madd_s16\": %.6g, \"maddubs_u8s8\": %.6g}\n",
         f, m, u);
  return 0;
}
