/* Perturbation rendering of the mandelbrot set past float64 (job_image/perturbation.py).
 *
 * Every sample c = C + dc iterates its delta dz from the reference orbit Z (computed in
 * arbitrary precision on the host, rounded to double):
 *     z_n = Z_m + dz,   dz' = 2 Z_m dz + dz^2 + dc = (2 Z_m + dz) dz + dc,   m' = m + 1,
 * counting n as brute force does: the first n with |z_n|^2 > 4, capped at max_iter.
 * - Rebasing (Zhuoran, 2021): when |Z_m + dz| < |dz| the delta has become larger than the
 *   orbit it follows, the situation where a single reference "glitches" (its deltas lose the
 *   digits that matter). Continuing from z itself, dz := Z_m + dz, m := 0 (Z_0 = 0), keeps the
 *   delta small against its reference. Also done when the reference ends (it escaped at N).
 *   With CORRECT off, there is no rebasing on |z| < |dz|: glitches are only detected, by
 *   Pauldelbrot's criterion |z|^2 < 1e-6 |Z_m|^2, and flagged per sample (for tests).
 * - BLA (job_image/bla.py): where |dz| < R of a table entry at m, 2^k steps are one
 *   dz := A dz + B dc. Level k's entry for m exists where 2^k divides m - 1; R shrinks with
 *   the level, so the valid levels at m are 1 .. some k (floatexp deltas go up until one
 *   fails, double deltas search them by halves).
 *
 * Build-time defines:
 *   FLOATEXP  0: deltas are double (zoom to ~1e287). 1: a sample starts with floatexp deltas
 *             (perturb_floatexp: a double mantissa pair with a shared int exponent, for
 *             spacings below double's range), turns to double deltas (perturb) once |dz| >
 *             2^-401 and goes back if |dz| falls below 2^-440. Above 2^-440, dz^2 is a normal
 *             double and dc (below 2^-940) moves no step by more than 2^-500 of dz, so perturb
 *             drops dc (it is 0 in double) and the host marks invalid the BLA entries whose
 *             B dc would matter. The host runs the two kernels in turn until no sample is
 *             left to either: st_status says where each sample is (0 not started, 1 for
 *             perturb, 2 for perturb_floatexp, 3 done), st_dz and st_m where it stopped;
 *             counts, skipped and glitched hold its n, skipped iterations and flag meanwhile.
 *   CORRECT   1: rebase on |z| < |dz|; 0: only detect glitches (Pauldelbrot)
 *   VW, IF    double deltas: samples per vector (1, 2, 4, 8; 1 on GPUs) and vectors in
 *             flight per work-item
 *   TILE      samples per work-item of perturb, a run of the band's rows (1 on GPUs);
 *             FX_TILE the same for perturb_floatexp, one sample at a time
 *
 * Double deltas: each of the VW * IF lanes of a work-item iterates its own sample, with its
 * own reference index m, BLA level and count; the orbit and table entries are gathered per
 * lane. A lane that finishes (escaped, or max_iter) writes its sample and takes the tile's
 * next one, so vectors stay full until the tile runs out. Contraction into FMA is allowed:
 * the deltas only have to be right to float64's rounding, not reproduce a host's bit for bit.
 *
 * Same count semantics and colouring as fractal.cl.
 */
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

#define GLITCH_TOLERANCE 1e-6 /* Pauldelbrot: |z|^2 < tol |Z|^2 */
#define SQRT2 1.4142135623730951

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

/* The offset of sample `s` of the band from the frame's centre, in sample spacings. */
inline double2 sample_offset(int s, int wn, int hn, int row0) {
    const int row = s / wn, col = s - row * wn;
    return (double2)((double)col + 0.5 - 0.5 * (double)wn,
                     -((double)(row0 + row) + 0.5 - 0.5 * (double)hn));
}

inline void store(int s, uint n, double mag, uint skip, uchar glitch, int max_iter, float inv_max_iter,
                  __global uint *counts, __global uchar *shades, __global uint *skipped,
                  __global uchar *glitched) {
    counts[s] = n;
    shades[s] = shade((int)n, mag, max_iter, inv_max_iter);
    skipped[s] = skip;
    glitched[s] = glitch;
}

#define KERNEL_ARGS                                                                              \
    __global const double *ref_r, __global const double *ref_i, /* Z_0 .. Z_N */                 \
    const int ref_n,                                            /* N */                          \
    /* BLA entries: A = a 2^ae, B = b 2^be, entry j's a and b at bla_ab[4j .. 4j+3] (re a,    \
     * im a, re b, im b; the exponents are 0 for double deltas), R as log2 R (floatexp) or R;   \
     * level k is [bla_off[k], bla_off[k+1]) */                                                  \
    __global const double *bla_ab, __global const int *bla_ae, __global const int *bla_be,       \
    __global const double *bla_r, __global const int *bla_off, const int levels,                 \
    const double step_m, const int step_e, /* sample spacing = step_m * 2^step_e */              \
    const int wn, const int hn,            /* samples across / down the whole frame */           \
    const int row0, const int nrows,       /* the band: first frame row, rows */                 \
    const int max_iter, const float inv_max_iter,                                                \
    __global uint *counts,    /* band rows x wn */                                               \
    __global uchar *shades,                                                                      \
    __global uint *skipped,   /* per sample: iterations BLA skipped */                           \
    __global uchar *glitched, /* per sample: Pauldelbrot fired */                                \
    /* FLOATEXP only (see above): per sample dz (re, im), m and where it is */                  \
    __global double *st_dz, __global int *st_m, __global uchar *st_status

#define HANDOFF_EXP (-400) /* floatexp -> double deltas above 2^-401 */
#define HANDBACK 0x1p-440  /* double -> floatexp deltas below */

#if FLOATEXP
#pragma OPENCL FP_CONTRACT OFF

inline double2 cmul(double2 a, double2 b) {
    return (double2)(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

inline double cnorm(double2 a) { return a.x * a.x + a.y * a.y; }

/* A complex number m * 2^e with max(|m.x|, |m.y|) in [0.5, 1), or m = 0. */
typedef struct { double2 m; int e; } D;
#define ZERO_EXP (-0x3fffffff / 2)

/* 2^e, for -1022 <= e <= 1023: scaling by it is ldexp's result, without the library call */
inline double pow2(int e) { return as_double((long)(e + 1023) << 52); }

inline D d_norm(double2 m, int e) {
    D r;
    const double big = fmax(fabs(m.x), fabs(m.y));
    const int biased = (int)(as_long(big) >> 52);  /* big = f 2^(biased - 1023), f in [1, 2) */
    if (biased == 0 || biased > 2000) {  /* 0, subnormal, huge or not finite: rare */
        if (big == 0.0) {
            r.m = (double2)(0.0);
            r.e = ZERO_EXP;
            return r;
        }
        const int k = ilogb(big) + 1;
        r.m = ldexp(m, (int2)(-k));
        r.e = e + k;
        return r;
    }
    const int k = biased - 1022;
    r.m = m * pow2(-k);
    r.e = e + k;
    return r;
}

inline D d_of(double2 m) { return d_norm(m, 0); }

/* a + b, aligned to the larger exponent (the smaller one's bits below 2^-1074 are lost:
 * far below the larger's rounding). */
inline D d_add(D a, D b) {
    if (a.e < b.e) { D t = a; a = b; b = t; }
    const int shift = b.e - a.e;
    const double2 bm = shift >= -1022 ? b.m * pow2(shift) : ldexp(b.m, (int2)(max(shift, -2000)));
    return d_norm(a.m + bm, a.e);
}

inline D d_mul(D a, D b) { return d_norm(cmul(a.m, b.m), a.e + b.e); }

inline D d_mul_c(double2 a, D b) { return d_norm(cmul(a, b.m), b.e); }

inline double2 d_double(D a) {
    return a.e >= -1022 && a.e <= 1023 ? a.m * pow2(a.e) : ldexp(a.m, (int2)(max(a.e, -2000)));
}

/* |a| < |b|: with mantissas of max-norm in [0.5, 1), |a| is in [0.5, 1.42) 2^a.e, so the
 * exponents decide unless they are within 1 (a zero mantissa has the lowest exponent) */
inline bool d_less(D a, D b) {
    const int d = a.e - b.e;
    if (d < -1) return true;
    if (d > 1) return false;
    return cnorm(a.m) * pow2(2 * d) < cnorm(b.m);
}

/* Samples with floatexp deltas, one step (or BLA step) at a time, until they finish or |dz|
 * is large enough for double deltas. */
__kernel void perturb_floatexp(KERNEL_ARGS) {
    const int t0 = get_global_id(0) * FX_TILE, t1 = min(t0 + FX_TILE, nrows * wn);
    for (int s = t0; s < t1; s++) {
        const uchar status = st_status[s];
        if (status == 1 || status == 3) continue;
        const D dc = d_norm(sample_offset(s, wn, hn, row0) * step_m, step_e);
        D dz = d_of((double2)(0.0));
        int n = 0, m = 0;
        uint skip = 0;
        uchar glitch = 0;
        if (status == 2) {
            dz = d_of(vload2(s, st_dz));
            m = st_m[s];
            n = (int)counts[s];
            skip = skipped[s];
            glitch = glitched[s];
        }
        double mag = 0.0;
        bool handed = false;
        while (n < max_iter) {
            /* BLA: the largest level whose entry at m is valid for this |dz| */
            int best = -1, bj = 0;
            if (m > 0) {
                const double lg = (double)dz.e + 0.5; /* an upper bound of log2 |dz| */
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
                /* dz := A dz + B dc */
                const D ad = d_norm(cmul(vload2(2 * bj, bla_ab), dz.m), dz.e + bla_ae[bj]);
                const D bd = d_norm(cmul(vload2(2 * bj + 1, bla_ab), dc.m), dc.e + bla_be[bj]);
                dz = d_add(ad, bd);
                m += 1 << best;
                n += 1 << best;
                skip += 1 << best;
            } else {
                /* dz := 2 Z_m dz + dz^2 + dc */
                const double2 zm = (double2)(ref_r[m], ref_i[m]);
                dz = d_add(d_add(d_mul_c(2.0 * zm, dz), d_mul(dz, dz)), dc);
                m++;
                n++;
            }
            const double2 zm = (double2)(ref_r[m], ref_i[m]);
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
            if (dz.e > HANDOFF_EXP && n < max_iter) {
                handed = true;
                break;
            }
        }
        if (handed) {
            vstore2(d_double(dz), s, st_dz);
            st_m[s] = m;
            counts[s] = (uint)n;
            skipped[s] = skip;
            glitched[s] = glitch;
            st_status[s] = 1;
        } else {
            store(s, (uint)min(n, max_iter), mag, skip, glitch, max_iter, inv_max_iter,
                  counts, shades, skipped, glitched);
            st_status[s] = 3;
        }
    }
}

#endif

/* Double deltas, vectorised */
#pragma OPENCL FP_CONTRACT ON

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* RV: double vector; IV: long vector of the same width (masks, indices, counts). Masks are
 * 0 / -1 per lane. GATHER(T, p, i): p[i] per lane as a T (OpenCL C has no gather; the
 * compiler maps this to the target's). */
#if VW == 1
typedef double RV;
typedef long IV;
#define MASK(c) (-(IV)(c)) /* scalar compares give 1, vector compares give -1 */
#define CONVERT_RV(x) ((double)(x))
#define AS_IV(x) as_long(x)
#define SHR(a, b) ((IV)((ulong)(a) >> (ulong)(b)))
#define OR_LANES(v) (v)
#define LANE_BITS ((IV)1)
#define GATHER(T, p, i) ((T)(p)[i])
#define LOADV(i, p) ((p)[i])
#define STOREV(v, i, p) ((p)[i] = (v))
#else
typedef CAT(double, VW) RV;
typedef CAT(long, VW) IV;
#define MASK(c) (c)
#define CONVERT_RV(x) CAT(convert_double, VW)(x)
#define AS_IV(x) CAT(as_long, VW)(x)
/* a >> b for a >= 0: as unsigned, which AVX2 shifts per lane (not signed 64-bit) */
#define SHR(a, b) AS_IV(CAT(as_ulong, VW)(a) >> CAT(as_ulong, VW)(b))
#define LOADV(i, p) CAT(vload, VW)(i, p)
#define STOREV(v, i, p) CAT(vstore, VW)(v, i, p)
#if VW == 2
#define OR_LANES(v) ((v).s0 | (v).s1)
#define LANE_BITS ((IV)(1, 2))
#define GATHER(T, p, i) ((T)((p)[(i).s0], (p)[(i).s1]))
#elif VW == 4
#define OR_LANES(v) or_tree4(v)
#define LANE_BITS ((IV)(1, 2, 4, 8))
#define GATHER(T, p, i) ((T)((p)[(i).s0], (p)[(i).s1], (p)[(i).s2], (p)[(i).s3]))
#elif VW == 8
#define OR_LANES(v) or_tree4((v).lo | (v).hi)
#define LANE_BITS ((IV)(1, 2, 4, 8, 16, 32, 64, 128))
#define GATHER(T, p, i) ((T)((p)[(i).s0], (p)[(i).s1], (p)[(i).s2], (p)[(i).s3], \
                              (p)[(i).s4], (p)[(i).s5], (p)[(i).s6], (p)[(i).s7]))
#endif
#endif
#define ANY(v) (OR_LANES(v) != 0)

#if VW >= 4
/* OR of all lanes as a tree: PoCL's any() tests lane by lane with a branch each. */
long or_tree4(long4 v) { long2 a = v.lo | v.hi; return a.s0 | a.s1; }
#endif

#define PER_ITEM (VW * IF)
#define FOR_K _Pragma("unroll") for (int k = 0; k < IF; k++)
/* Index of the lowest set bit of a non-zero ulong (popcount is OpenCL 1.2; ctz is 2.0). */
#define LOWEST_BIT(d) ((int)popcount(((d) & (~(d) + 1)) - 1))
/* A 0/-1 lane mask as bits (lane l of vector k is bit k*VW + l), and back. */
#define TO_BITS(mask, k) ((ulong)OR_LANES((mask) & LANE_BITS) << ((k) * VW))
#define FROM_BITS(bits, k) MASK(((IV)(long)((bits) >> ((k) * VW)) & LANE_BITS) != (IV)0)

__kernel void perturb(KERNEL_ARGS) {
    const int t0 = get_global_id(0) * TILE, t1 = min(t0 + TILE, nrows * wn);
    /* per lane: dz, dc, Z_m (the orbit at the lane's m, Z_0 = 0 after a rebase), m, n */
    RV dzr[IF], dzi[IF], dcr[IF], dci[IF], zr[IF], zi[IF];
    IV m[IF], n[IF], skip[IF], glitch[IF];
    /* lanes' state through private memory, for the refill's scalar work */
    double l_mag[PER_ITEM], l_dcr[PER_ITEM], l_dci[PER_ITEM], l_dzr[PER_ITEM], l_dzi[PER_ITEM];
    double l_zr[PER_ITEM], l_zi[PER_ITEM];
    long l_m[PER_ITEM], l_n[PER_ITEM], l_skip[PER_ITEM], l_glitch[PER_ITEM];
    int at[PER_ITEM];  /* each lane's sample */
    ulong back = 0;    /* FLOATEXP: lanes whose |dz| fell below HANDBACK */
    FOR_K {
        dzr[k] = dzi[k] = dcr[k] = dci[k] = zr[k] = zi[k] = (RV)0;
        m[k] = n[k] = skip[k] = glitch[k] = (IV)0;
    }
    int next = t0;
    ulong busy = 0;                                     /* lanes holding a sample */
    ulong fin = ((ulong)1 << (PER_ITEM - 1) << 1) - 1;  /* first pass: every lane takes one */
    for (;;) {
        if (fin) {
            /* Finished lanes write their sample and take the tile's next; lanes left without
             * one iterate dz = dc = 0 (harmless) until the tile is done. */
            FOR_K {
                const RV xr = zr[k] + dzr[k], xi = zi[k] + dzi[k];  /* z_n, |z_n|^2 for the colour */
                STOREV(xr * xr + xi * xi, k, l_mag);
                STOREV(dzr[k], k, l_dzr);
                STOREV(dzi[k], k, l_dzi);
                STOREV(m[k], k, l_m);
                STOREV(n[k], k, l_n);
                STOREV(skip[k], k, l_skip);
                STOREV(glitch[k], k, l_glitch);
            }
            ulong fresh = 0;
            for (ulong d = fin; d; d &= d - 1) {
                const int l = LOWEST_BIT(d);
                if ((back >> l) & 1) {  /* to perturb_floatexp */
                    vstore2((double2)(l_dzr[l], l_dzi[l]), at[l], st_dz);
                    st_m[at[l]] = (int)l_m[l];
                    counts[at[l]] = (uint)l_n[l];
                    skipped[at[l]] = (uint)l_skip[l];
                    glitched[at[l]] = (uchar)(l_glitch[l] != 0);
                    st_status[at[l]] = 2;
                } else if ((busy >> l) & 1) {
                    store(at[l], (uint)min(l_n[l], (long)max_iter), l_mag[l], (uint)l_skip[l],
                          (uchar)(l_glitch[l] != 0), max_iter, inv_max_iter, counts, shades, skipped,
                          glitched);
#if FLOATEXP
                    st_status[at[l]] = 3;
#endif
                }
                double2 dc = (double2)(0.0), dz = (double2)(0.0);
                int ms = 0;
                long ns = 0, skips = 0, glitchs = 0;
#if FLOATEXP
                while (next < t1 && st_status[next] != 1) next++;  /* the samples left to this kernel */
#endif
                if (next < t1) {
                    at[l] = next;
                    dc = ldexp(sample_offset(next, wn, hn, row0) * step_m, (int2)(step_e));
#if FLOATEXP
                    dz = vload2(next, st_dz);
                    ms = st_m[next];
                    ns = counts[next];
                    skips = skipped[next];
                    glitchs = glitched[next];
#endif
                    next++;
                    fresh |= (ulong)1 << l;
                }
                l_dcr[l] = dc.x;
                l_dci[l] = dc.y;
                l_dzr[l] = dz.x;
                l_dzi[l] = dz.y;
                l_zr[l] = ref_r[ms];
                l_zi[l] = ref_i[ms];
                l_m[l] = ms;
                l_n[l] = ns;
                l_skip[l] = skips;
                l_glitch[l] = glitchs;
            }
            busy = (busy & ~fin) | fresh;
            back = 0;
            if (!busy) break;
            FOR_K {
                const IV f = FROM_BITS(fin, k);
                dcr[k] = select(dcr[k], LOADV(k, l_dcr), f);
                dci[k] = select(dci[k], LOADV(k, l_dci), f);
                dzr[k] = select(dzr[k], LOADV(k, l_dzr), f);
                dzi[k] = select(dzi[k], LOADV(k, l_dzi), f);
                zr[k] = select(zr[k], LOADV(k, l_zr), f);
                zi[k] = select(zi[k], LOADV(k, l_zi), f);
                m[k] = select(m[k], LOADV(k, l_m), f);
                n[k] = select(n[k], LOADV(k, l_n), f);
                skip[k] = select(skip[k], LOADV(k, l_skip), f);
                glitch[k] = select(glitch[k], LOADV(k, l_glitch), f);
            }
        }

        /* BLA: per lane the largest level k whose entry at m is valid for this |dz| (0: none).
         * Entries exist where 2^k divides m - 1, m + 2^k <= N, n + 2^k <= max_iter; among
         * those, R shrinks with k (bla.py), so a binary search finds k: a few gathers of R
         * for any mix of lanes. Level k starts at 2P - 2P/2^k (P = bla_off[1], the host pads
         * the levels to powers of two). */
        IV level[IF], entry[IF];
        FOR_K level[k] = entry[k] = (IV)0;
        if (levels > 1) {
            const IV two_p = (IV)(2L * bla_off[1]);
            IV hi[IF], any = (IV)0;
            RV bound[IF];  /* an upper bound of |dz| */
            FOR_K {
                const IV a = m[k] - (IV)1;
                const IV aligned = popcount((a & -a) - (IV)1);  /* 2^aligned divides a */
                const IV room = min((IV)ref_n - m[k], (IV)max_iter - n[k]);
                const IV fits = (AS_IV(CONVERT_RV(max(room, (IV)1))) >> 52) - (IV)1023;  /* log2 */
                hi[k] = select((IV)0, min(min(aligned, fits), (IV)(levels - 1)),
                               MASK(m[k] > (IV)0) & MASK(room > (IV)0));
                bound[k] = fmax(fabs(dzr[k]), fabs(dzi[k])) * SQRT2;
                any |= hi[k];
            }
            while (ANY(any)) {
                any = (IV)0;
                FOR_K {
                    const IV open = MASK(level[k] < hi[k]);
                    const IV mid = (level[k] + hi[k] + (IV)1) >> (IV)1;
                    const IV j = two_p - SHR(two_p, mid) + SHR(m[k] - (IV)1, mid);
                    const IV ok = open & MASK(bound[k] < GATHER(RV, bla_r, select((IV)0, j, open)));
                    level[k] = select(level[k], mid, ok);
                    entry[k] = select(entry[k], j, ok);
                    hi[k] = select(hi[k], mid - (IV)1, open & ~ok);
                    any |= MASK(level[k] < hi[k]);
                }
            }
        }

        IV done[IF], any_done = (IV)0;
        FOR_K {
            /* one step: dz := (2 Z_m + dz) dz + dc */
            const RV tr = (RV)2 * zr[k] + dzr[k], ti = (RV)2 * zi[k] + dzi[k];
            RV nr = tr * dzr[k] - ti * dzi[k] + dcr[k];
            RV ni = tr * dzi[k] + ti * dzr[k] + dci[k];
            IV steps = (IV)1;
            if (levels > 1) {
                /* or 2^level steps: dz := A dz + B dc */
                const IV j = entry[k] * (IV)4, use = MASK(level[k] > (IV)0);
                const RV ar = GATHER(RV, bla_ab, j), ai = GATHER(RV, bla_ab, j + (IV)1);
                const RV br = GATHER(RV, bla_ab, j + (IV)2), bi = GATHER(RV, bla_ab, j + (IV)3);
                nr = select(nr, ar * dzr[k] - ai * dzi[k] + (br * dcr[k] - bi * dci[k]), use);
                ni = select(ni, ar * dzi[k] + ai * dzr[k] + (br * dci[k] + bi * dcr[k]), use);
                steps = (IV)1 << level[k];
                skip[k] += steps & use;
            }
            dzr[k] = nr;
            dzi[k] = ni;
            m[k] += steps;
            n[k] += steps;
            zr[k] = GATHER(RV, ref_r, m[k]);
            zi[k] = GATHER(RV, ref_i, m[k]);
            const RV xr = zr[k] + dzr[k], xi = zi[k] + dzi[k];  /* z_n */
            const RV mag = xr * xr + xi * xi;
            done[k] = MASK(mag > (RV)4) | MASK(n[k] >= (IV)max_iter);
            any_done |= done[k];
#if CORRECT
            const IV rebase = MASK(m[k] == (IV)ref_n) | MASK(mag < dzr[k] * dzr[k] + dzi[k] * dzi[k]);
#else
            glitch[k] |= MASK(mag < (RV)GLITCH_TOLERANCE * (zr[k] * zr[k] + zi[k] * zi[k]));
            const IV rebase = MASK(m[k] == (IV)ref_n);
#endif
            dzr[k] = select(dzr[k], xr, rebase);
            dzi[k] = select(dzi[k], xi, rebase);
            zr[k] = select(zr[k], (RV)0, rebase);
            zi[k] = select(zi[k], (RV)0, rebase);
            m[k] = select(m[k], (IV)0, rebase);
#if FLOATEXP
            any_done |= MASK(fmax(fabs(dzr[k]), fabs(dzi[k])) < (RV)HANDBACK);
#endif
        }
        fin = 0;
        if (ANY(any_done)) {
            FOR_K {
                fin |= TO_BITS(done[k], k);
#if FLOATEXP
                back |= TO_BITS(~done[k] & MASK(fmax(fabs(dzr[k]), fabs(dzi[k])) < (RV)HANDBACK), k);
#endif
            }
            back &= busy;
            fin = (fin | back) & busy;
        }
    }
}
