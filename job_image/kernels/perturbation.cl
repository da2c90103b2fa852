/* Perturbation rendering of the mandelbrot set past float64 (job_image/perturbation.py).
 *
 * Every sample c = C + dc iterates its delta dz from the reference orbit Z (computed in
 * arbitrary precision on the host, rounded to double):
 *     z_n = Z_m + dz,   dz' = 2 Z_m dz + dz^2 + dc,   m' = m + 1,
 * counting n as brute force does: the first n with |z_n|^2 > 4, capped at max_iter.
 * - Rebasing (Zhuoran, 2021): when |Z_m + dz| < |dz| the delta has become larger than the
 *   orbit it follows, the situation where a single reference "glitches" (its deltas lose the
 *   digits that matter). Continuing from z itself, dz := Z_m + dz, m := 0 (Z_0 = 0), keeps the
 *   delta small against its reference. Also done when the reference ends (it escaped at N).
 *   With CORRECT off, there is no rebasing on |z| < |dz|: glitches are only detected, by
 *   Pauldelbrot's criterion |z|^2 < 1e-6 |Z_m|^2, and flagged per sample (for tests).
 * - BLA (job_image/bla.py): where |dz| < R of a table entry at m, 2^k steps are one
 *   dz := A dz + B dc.
 *
 * Build-time defines:
 *   FLOATEXP  0: deltas are double (zoom to ~1e287); 1: deltas are a double mantissa pair with
 *             a shared int exponent, for spacings below double's range (zoom past ~1e300)
 *   CORRECT   1: rebase on |z| < |dz|; 0: only detect glitches (Pauldelbrot)
 *
 * One sample per work-item. Same count semantics and colouring as fractal.cl.
 */
#pragma OPENCL FP_CONTRACT OFF
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

#define GLITCH_TOLERANCE 1e-6 /* Pauldelbrot: |z|^2 < tol |Z|^2 */

inline double2 cmul(double2 a, double2 b) {
    return (double2)(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

inline double cnorm(double2 a) { return a.x * a.x + a.y * a.y; }

#if FLOATEXP
/* A complex number m * 2^e with max(|m.x|, |m.y|) in [0.5, 1), or m = 0. */
typedef struct { double2 m; int e; } D;
#define ZERO_EXP (-0x3fffffff / 2)

inline D d_norm(double2 m, int e) {
    D r;
    double big = fmax(fabs(m.x), fabs(m.y));
    if (big == 0.0) {
        r.m = (double2)(0.0);
        r.e = ZERO_EXP;
        return r;
    }
    int k = ilogb(big) + 1;
    r.m = ldexp(m, (int2)(-k));
    r.e = e + k;
    return r;
}

inline D d_of(double2 m) { return d_norm(m, 0); }

/* a + b, aligned to the larger exponent (the smaller one's bits below 2^-1074 are lost:
 * far below the larger's rounding). */
inline D d_add(D a, D b) {
    if (a.e < b.e) { D t = a; a = b; b = t; }
    int shift = max(b.e - a.e, -2000);
    return d_norm(a.m + ldexp(b.m, (int2)(shift)), a.e);
}

inline D d_mul(D a, D b) { return d_norm(cmul(a.m, b.m), a.e + b.e); }

inline D d_mul_c(double2 a, D b) { return d_norm(cmul(a, b.m), b.e); }

inline double2 d_double(D a) { return ldexp(a.m, (int2)(max(a.e, -2000))); }

/* |a| < |b| (a zero mantissa has the lowest exponent) */
inline bool d_less(D a, D b) {
    return ldexp(cnorm(a.m), 2 * clamp(a.e - b.e, -2000, 2000)) < cnorm(b.m);
}

/* an upper bound of log2 |a| */
inline double d_log2_bound(D a) { return (double)a.e + 0.5; }

#else
typedef double2 D;
#define d_of(m) (m)
#define d_add(a, b) ((a) + (b))
#define d_mul(a, b) cmul(a, b)
#define d_mul_c(a, b) cmul(a, b)
#define d_double(a) (a)
#define d_less(a, b) (cnorm(a) < cnorm(b))
#endif

/* log2 for positive normal floats, twin of fractal.cl's fast_log2 (and colour.py's) */
inline float fast_log2(float x) {
    int bits = as_int(x);
    float e = (float)(((bits >> 23) & 0xff) - 127);
    float f = as_float((bits & 0x007fffff) | 0x3f800000) - 1.0f;
    return e + f * (1.4208645f + f * (-0.57725065f + f * 0.15638611f));
}

/* palette index, twin of fractal.cl's shade for one sample */
inline uchar shade(int n, double mag, int max_iter, float inv_max_iter) {
    if (n >= max_iter) return 0;
    float nu = (float)n + 1.0f - fast_log2(fast_log2((float)mag) * 0.5f);
    float t = sqrt(clamp(nu * inv_max_iter, 0.0f, 1.0f));
    return (uchar)((int)(t * 254.0f) + 1);
}

__kernel void perturb(__global const double2 *ref,   /* Z_0 .. Z_N */
                      const int ref_n,               /* N */
                      __global const double2 *bla_a, __global const int *bla_ae,
                      __global const double2 *bla_b, __global const int *bla_be,
                      __global const double *bla_r,  /* log2 R (FLOATEXP) or R */
                      __global const int *bla_off,   /* level k: [bla_off[k], bla_off[k+1]) */
                      const int levels,
                      const double step_m,           /* sample spacing = step_m * 2^step_e */
                      const int step_e,
                      const int wn, const int hn,    /* samples across / down the whole frame */
                      const int row0,                /* first frame row of this band */
                      const int nrows,
                      const int max_iter,
                      const float inv_max_iter,
                      __global uint *counts,         /* band rows x wn */
                      __global uchar *shades,
                      __global uint *skipped,        /* per sample: iterations BLA skipped */
                      __global uchar *glitched)      /* per sample: Pauldelbrot fired */
{
    const int i = get_global_id(0);
    if (i >= nrows * wn) return;
    const int row = i / wn, col = i - row * wn;
    const double2 offset = (double2)((double)col + 0.5 - 0.5 * (double)wn,
                                     -((double)(row0 + row) + 0.5 - 0.5 * (double)hn));
#if FLOATEXP
    const D dc = d_norm(offset * step_m, step_e);
#else
    const D dc = ldexp(offset * step_m, (int2)(step_e));
#endif
    D dz = d_of((double2)(0.0));
    int n = 0, m = 0;
    uint skip = 0;
    uchar glitch = 0;
    double mag = 0.0;
    while (n < max_iter) {
        /* BLA: the largest level whose entry at m is valid for this |dz| */
        int best = -1, bj = 0;
        if (m > 0) {
#if FLOATEXP
            const double lg = d_log2_bound(dz);
#else
            const double lg = fmax(fabs(dz.x), fabs(dz.y)) * 1.4142135623730951;
#endif
            for (int k = 1; k < levels; k++) {
                const int len = 1 << k;
                if (((m - 1) & (len - 1)) != 0 || n + len > max_iter) break;
                const int j = bla_off[k] + ((m - 1) >> k);
                if (j >= bla_off[k + 1] || !(lg < bla_r[j])) break;
                best = k;
                bj = j;
            }
        }
        if (best > 0) {
            /* dz := A dz + B dc, A = a 2^ae, B = b 2^be */
#if FLOATEXP
            D ad = dz, bd = dc;
            ad.m = cmul(bla_a[bj], dz.m);
            ad.e = dz.e + bla_ae[bj];
            bd.m = cmul(bla_b[bj], dc.m);
            bd.e = dc.e + bla_be[bj];
            dz = d_add(d_norm(ad.m, ad.e), d_norm(bd.m, bd.e));
#else
            dz = ldexp(cmul(bla_a[bj], dz), (int2)(bla_ae[bj])) + ldexp(cmul(bla_b[bj], dc), (int2)(bla_be[bj]));
#endif
            m += 1 << best;
            n += 1 << best;
            skip += 1 << best;
        } else {
            /* dz := 2 Z_m dz + dz^2 + dc */
            const double2 zm = ref[m];
            dz = d_add(d_add(d_mul_c(2.0 * zm, dz), d_mul(dz, dz)), dc);
            m++;
            n++;
        }
        const double2 zm = ref[m];
        const D zd = d_add(d_of(zm), dz);
        const double2 z = d_double(zd);
        mag = cnorm(z);
        if (mag > 4.0) break;
#if CORRECT
        if (m == ref_n || d_less(zd, dz)) {
            dz = zd;
            m = 0;
        }
#else
        if (mag < GLITCH_TOLERANCE * cnorm(zm)) glitch = 1;
        if (m == ref_n) {
            dz = zd;
            m = 0;
        }
#endif
    }
    if (n > max_iter) n = max_iter;
    const int at = row * wn + col;
    counts[at] = (uint)n;
    shades[at] = shade(n, mag, max_iter, inv_max_iter);
    skipped[at] = skip;
    glitched[at] = glitch;
}
