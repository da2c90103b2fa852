/* AVX2 STAND-IN for shared/reference/mandel_ref.c, for CPUs without AVX-512 only.
 *
 * shared/reference/mandel_ref.c is the yardstick: hand-vectorised AVX-512, which does not
 * compile on an AVX2-only CPU. This is a line-by-line port of it to AVX2 so that
 * benchmarks/kernel.py can still print a ratio there, labelled as against this stand-in:
 * the same brute-force loop, the same operations (mul, mul, compare <= 4, masked count,
 * fmadd(2, zr*zi, ci), (r - q) + cr), the same OpenMP schedule(dynamic, 2) over rows, two
 * vectors in flight, the same command line and output. What AVX2 lacks is emulated the
 * usual way: compare masks are all-ones lanes (the count subtracts them), and the loop's
 * "any lane active" test is a movemask. Vectors are half as wide (8 floats / 4 doubles), so
 * one loop covers 16 floats / 8 doubles instead of 32 / 16.
 *
 * One addition, used for the julia frame: two optional trailing arguments JULIA_RE JULIA_IM
 * iterate z -> z^2 + (JULIA_RE + i JULIA_IM) from z0 = the pixel (same loop, other start).
 *
 *   gcc -O3 -march=native -fopenmp mandel_ref_avx2.c -o mandel_ref_avx2
 *   ./mandel_ref_avx2 WIDTH HEIGHT CENTER_X CENTER_Y ZOOM MAX_ITER [f32|f64] [REPS] [JULIA_RE JULIA_IM]
 * prints one line per rep: seconds, total_iterations, G iterations/s; the last line is
 * the best rep as JSON.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void rows_f32(uint32_t *out, int W, int H, double cx, double cy, double s, int maxit,
                     int julia, double jre, double jim) {
#pragma omp parallel for schedule(dynamic, 2)
    for (int py = 0; py < H; py++) {
        __m256 y = _mm256_set1_ps((float)(cy - (py + 0.5 - H / 2.0) * s));
        for (int px = 0; px < W; px += 16) {
            float xs[16];
            for (int k = 0; k < 16; k++) xs[k] = (float)(cx + (px + k + 0.5 - W / 2.0) * s);
            __m256 x0 = _mm256_loadu_ps(xs), x1 = _mm256_loadu_ps(xs + 8);
            __m256 zr0, zi0, zr1, zi1, cr0, cr1, ci0, ci1;
            if (julia) {
                zr0 = x0, zr1 = x1, zi0 = y, zi1 = y;
                cr0 = cr1 = _mm256_set1_ps((float)jre);
                ci0 = ci1 = _mm256_set1_ps((float)jim);
            } else {
                zr0 = zi0 = zr1 = zi1 = _mm256_setzero_ps();
                cr0 = x0, cr1 = x1, ci0 = y, ci1 = y;
            }
            __m256i n0 = _mm256_setzero_si256(), n1 = n0;
            __m256 four = _mm256_set1_ps(4.0f), two = _mm256_set1_ps(2.0f);
            __m256 a0 = _mm256_castsi256_ps(_mm256_set1_epi32(-1)), a1 = a0;
            for (int i = 0; i < maxit && _mm256_movemask_ps(_mm256_or_ps(a0, a1)); i++) {
                __m256 r0 = _mm256_mul_ps(zr0, zr0), q0 = _mm256_mul_ps(zi0, zi0);
                __m256 r1 = _mm256_mul_ps(zr1, zr1), q1 = _mm256_mul_ps(zi1, zi1);
                a0 = _mm256_and_ps(a0, _mm256_cmp_ps(_mm256_add_ps(r0, q0), four, _CMP_LE_OQ));
                a1 = _mm256_and_ps(a1, _mm256_cmp_ps(_mm256_add_ps(r1, q1), four, _CMP_LE_OQ));
                n0 = _mm256_sub_epi32(n0, _mm256_castps_si256(a0));
                n1 = _mm256_sub_epi32(n1, _mm256_castps_si256(a1));
                zi0 = _mm256_fmadd_ps(two, _mm256_mul_ps(zr0, zi0), ci0);
                zi1 = _mm256_fmadd_ps(two, _mm256_mul_ps(zr1, zi1), ci1);
                zr0 = _mm256_add_ps(_mm256_sub_ps(r0, q0), cr0);
                zr1 = _mm256_add_ps(_mm256_sub_ps(r1, q1), cr1);
            }
            uint32_t tmp[16];
            _mm256_storeu_si256((__m256i *)tmp, n0);
            _mm256_storeu_si256((__m256i *)(tmp + 8), n1);
            int m = W - px < 16 ? W - px : 16;
            memcpy(out + (size_t)py * W + px, tmp, 4 * m);
        }
    }
}

static void rows_f64(uint32_t *out, int W, int H, double cx, double cy, double s, int maxit,
                     int julia, double jre, double jim) {
#pragma omp parallel for schedule(dynamic, 2)
    for (int py = 0; py < H; py++) {
        __m256d y = _mm256_set1_pd(cy - (py + 0.5 - H / 2.0) * s);
        for (int px = 0; px < W; px += 8) {
            double xs[8];
            for (int k = 0; k < 8; k++) xs[k] = cx + (px + k + 0.5 - W / 2.0) * s;
            __m256d x0 = _mm256_loadu_pd(xs), x1 = _mm256_loadu_pd(xs + 4);
            __m256d zr0, zi0, zr1, zi1, cr0, cr1, ci0, ci1;
            if (julia) {
                zr0 = x0, zr1 = x1, zi0 = y, zi1 = y;
                cr0 = cr1 = _mm256_set1_pd(jre);
                ci0 = ci1 = _mm256_set1_pd(jim);
            } else {
                zr0 = zi0 = zr1 = zi1 = _mm256_setzero_pd();
                cr0 = x0, cr1 = x1, ci0 = y, ci1 = y;
            }
            /* 64-bit counts: the lanes of a double compare mask are 64 bits wide */
            __m256i n0 = _mm256_setzero_si256(), n1 = n0;
            __m256d four = _mm256_set1_pd(4.0), two = _mm256_set1_pd(2.0);
            __m256d a0 = _mm256_castsi256_pd(_mm256_set1_epi64x(-1)), a1 = a0;
            for (int i = 0; i < maxit && _mm256_movemask_pd(_mm256_or_pd(a0, a1)); i++) {
                __m256d r0 = _mm256_mul_pd(zr0, zr0), q0 = _mm256_mul_pd(zi0, zi0);
                __m256d r1 = _mm256_mul_pd(zr1, zr1), q1 = _mm256_mul_pd(zi1, zi1);
                a0 = _mm256_and_pd(a0, _mm256_cmp_pd(_mm256_add_pd(r0, q0), four, _CMP_LE_OQ));
                a1 = _mm256_and_pd(a1, _mm256_cmp_pd(_mm256_add_pd(r1, q1), four, _CMP_LE_OQ));
                n0 = _mm256_sub_epi64(n0, _mm256_castpd_si256(a0));
                n1 = _mm256_sub_epi64(n1, _mm256_castpd_si256(a1));
                zi0 = _mm256_fmadd_pd(two, _mm256_mul_pd(zr0, zi0), ci0);
                zi1 = _mm256_fmadd_pd(two, _mm256_mul_pd(zr1, zi1), ci1);
                zr0 = _mm256_add_pd(_mm256_sub_pd(r0, q0), cr0);
                zr1 = _mm256_add_pd(_mm256_sub_pd(r1, q1), cr1);
            }
            uint64_t tmp[8];
            _mm256_storeu_si256((__m256i *)tmp, n0);
            _mm256_storeu_si256((__m256i *)(tmp + 4), n1);
            int m = W - px < 8 ? W - px : 8;
            for (int k = 0; k < m; k++) out[(size_t)py * W + px + k] = (uint32_t)tmp[k];
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 7 || argc == 10) {
        fprintf(stderr, "usage: %s WIDTH HEIGHT CENTER_X CENTER_Y ZOOM MAX_ITER [f32|f64] [REPS] [JULIA_RE JULIA_IM]\n",
                argv[0]);
        return 2;
    }
    int W = atoi(argv[1]), H = atoi(argv[2]), maxit = atoi(argv[6]);
    double cx = atof(argv[3]), cy = atof(argv[4]), zoom = atof(argv[5]);
    int f64 = argc > 7 && strcmp(argv[7], "f64") == 0;
    int reps = argc > 8 ? atoi(argv[8]) : 3;
    int julia = argc > 10;
    double jre = julia ? atof(argv[9]) : 0, jim = julia ? atof(argv[10]) : 0;
    double s = 3.0 / zoom / W;
    uint32_t *out = malloc(sizeof(uint32_t) * (size_t)W * H);
    double best = 1e30;
    unsigned long long total = 0;
    for (int r = 0; r < reps; r++) {
        double t = now();
        if (f64) rows_f64(out, W, H, cx, cy, s, maxit, julia, jre, jim);
        else rows_f32(out, W, H, cx, cy, s, maxit, julia, jre, jim);
        double dt = now() - t;
        total = 0;
        for (size_t k = 0; k < (size_t)W * H; k++) total += out[k];
        printf("%.4f s  %llu iterations  %.2f G iter/s\n", dt, total, total / dt / 1e9);
        if (dt < best) best = dt;
    }
    printf("{\"precision\": \"%s\", \"seconds\": %.6f, \"total_iterations\": %llu, \"giter_per_s\": %.3f, \"threads\": %d}\n",
           f64 ? "float64" : "float32", best, total, total / best / 1e9, omp_get_max_threads());
    free(out);
    return 0;
}
