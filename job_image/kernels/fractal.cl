/* Escape-time fractals (mandelbrot, julia, burning_ship) for float and double.
 *
 * Build-time defines (chosen per device by job_image/render.py):
 *   REAL      float | double
 *   ITYPE     int | long        integer of REAL's width (vector compares yield it)
 *   VW        1, 2, 4, 8, 16    samples per vector: wide on CPUs (one AVX register),
 *                               1 on GPUs (the hardware vectorises across work-items)
 *   IF        1..4              vectors in flight per work-item (hides FP latency on CPUs)
 *   CHECK     iterations per block between escape tests (see the loop in escape())
 *   KIND      0 mandelbrot, 1 julia, 2 burning_ship
 *   PERIODIC  1: detect orbits that repeat exactly (see the loop in escape()); 0: don't
 *
 * Each work-item renders VW*IF consecutive samples of one row. Per sample it writes the
 * escape count (iterations done before |z|^2 > 4, capped at max_iter) and a palette index
 * (smooth colouring from the count and |z|^2 at the escape).
 *
 * Rounding is fixed so host references can match per pixel: no contraction of a*b+c into
 * FMA (pragma below); the one explicit fma() computes 2*t + ci, where 2*t is exact, so it
 * rounds exactly like the unfused expression.
 */
#pragma OPENCL FP_CONTRACT OFF
#if IS_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* RV: REAL vector; IV: same-width integer vector (masks, counts); UV: uint vector (stores);
 * FV/FIV: float/int vector, for colouring in float whatever REAL is. */
#if VW == 1
typedef REAL RV;
typedef ITYPE IV;
typedef uint UV;
typedef float FV;
typedef int FIV;
#define MASK(c) (-(IV)(c)) /* scalar compares give 1, vector compares give -1 */
#define ANY(v) ((v) != 0)
#define LOADR(i, p) ((p)[i])
#define STOREU(v, i, p) ((p)[i] = (v))
#define STORE_UC(v, i, p) ((p)[i] = (uchar)(v))
#define TO_UV(v) ((uint)(v))
#define TO_FV(v) ((float)(v))
#define TO_I32(v) ((int)(v))
#define AS_IV(x) CAT(as_, ITYPE)(x)
#define AS_RV(x) CAT(as_, REAL)(x)
#define AS_I32(x) as_int(x)
#define AS_F32(x) as_float(x)
#else
typedef CAT(REAL, VW) RV;
typedef CAT(ITYPE, VW) IV;
typedef CAT(uint, VW) UV;
typedef CAT(float, VW) FV;
typedef CAT(int, VW) FIV;
#define MASK(c) (c)
#define LOADR(i, p) CAT(vload, VW)(i, p)
#define STOREU(v, i, p) CAT(vstore, VW)(v, i, p)
#define STORE_UC(v, i, p) CAT(vstore, VW)(CAT(convert_uchar, VW)(v), i, p)
#define TO_UV(v) CAT(convert_uint, VW)(v)
#define TO_FV(v) CAT(convert_float, VW)(v)
#define TO_I32(v) CAT(convert_int, VW)(v)
#define AS_IV(x) CAT(as_, CAT(ITYPE, VW))(x)
#define AS_RV(x) CAT(as_, CAT(REAL, VW))(x)
#define AS_I32(x) CAT(as_int, VW)(x)
#define AS_F32(x) CAT(as_float, VW)(x)
/* any() over a 0/-1 mask as an OR tree: PoCL's any() tests lane by lane with a branch each. */
#if VW == 16
#define ANY(v) or_tree16(v)
#elif VW == 8
#define ANY(v) or_tree8(v)
#elif VW == 4
#define ANY(v) or_tree4(v)
#else
#define ANY(v) (((v).s0 | (v).s1) != 0)
#endif
#endif

#if VW >= 4
bool or_tree4(CAT(ITYPE, 4) v) { CAT(ITYPE, 2) a = v.lo | v.hi; return (a.s0 | a.s1) != 0; }
#endif
#if VW >= 8
bool or_tree8(CAT(ITYPE, 8) v) { return or_tree4(v.lo | v.hi); }
#endif
#if VW >= 16
bool or_tree16(CAT(ITYPE, 16) v) { return or_tree8(v.lo | v.hi); }
#endif

#if KIND == 2
#define IM_PRODUCT(a, b) fabs((a) * (b))
#else
#define IM_PRODUCT(a, b) ((a) * (b))
#endif

/* The z update shared by both steps below: z = z^2 + c (burning ship: |Re z|, |Im z| first).
 * Inputs r = zr^2, q = zi^2 are computed by the caller, which also needs them for |z|^2. */
#define ADVANCE(k)                                             \
    zi[k] = fma((RV)2, IM_PRODUCT(zr[k], zi[k]), ci[k]);       \
    zr[k] = (r - q) + cr[k];

/* Fast step: no count and no mask, only the largest |z|^2 seen in the block (the compare
 * form maps to one max instruction). 8 operations per iteration instead of 12. */
#define FAST_STEP(k)                                           \
    {                                                          \
        RV r = zr[k] * zr[k];                                  \
        RV q = zi[k] * zi[k];                                  \
        RV m = r + q;                                          \
        mx[k] = select(mx[k], m, MASK(m > mx[k]));             \
        ADVANCE(k)                                             \
    }

/* Exact step: counts the iteration for live lanes and keeps |z|^2 of the last live
 * iteration, i.e. the escaping value. The live mask is sticky, so a lane never counts past
 * its escape. */
#define EXACT_STEP(k)                                          \
    {                                                          \
        RV r = zr[k] * zr[k];                                  \
        RV q = zi[k] * zi[k];                                  \
        RV m = r + q;                                          \
        mf[k] = select(mf[k], m, live[k]);                     \
        live[k] &= MASK(m <= (RV)4);                           \
        n[k] -= live[k];                                       \
        ADVANCE(k)                                             \
    }

#if KIND == 0
/* The main cardioid and period-2 bulb, shrunk by a margin: samples inside never escape, so
 * they start with count max_iter and are never live. The twin of job_image/interior.py
 * (which documents the margins), operation for operation; constants are exact in float. */
IV interior(RV cr, RV ci) {
    RV xq = cr - (RV)0.25f;
    RV y2 = ci * ci;
    RV q = xq * xq + y2;
    RV p = (RV)1.0009765625f * q;                        /* K = 1 + 2^-10 */
    IV cardioid = MASK(p * (p + xq) <= (RV)0.25f * y2) & MASK(q >= (RV)9.5367431640625e-07f);
    RV t = cr + (RV)1.0f;
    return cardioid | MASK(t * t + y2 <= (RV)0.0623779296875f); /* 1/16 - 2^-13 */
}
#endif

/* log2 for positive normal floats, to about 1e-3: exponent plus a cubic in the mantissa
 * that is exact at both ends, so it is continuous and increasing. Enough to pick one of 255
 * colours, and several times cheaper than PoCL's log2, which would cost ~20 % of the
 * kernel's time at max_iter 500. Same operations as colour.py:fast_log2. */
FV fast_log2(FV x) {
    FIV bits = AS_I32(x);
    FV e = TO_FV(((bits >> 23) & 0xff) - 127);
    FV f = AS_F32((bits & 0x007fffff) | 0x3f800000) - 1.0f;
    return e + f * (1.4208645f + f * (-0.57725065f + f * 0.15638611f));
}

/* Smooth colouring, the twin of job_image/colour.py:indices() (which documents it): palette
 * index 0 for the interior, else 1 + floor(254 * sqrt(nu / max_iter)) with the continuous
 * count nu = n + 1 - log2(log2|z_n|), log2|z_n| = log2(|z_n|^2) / 2. In float whatever
 * the precision: this only picks a colour. Done here while |z_n| is at hand, it spares the
 * host a pass over every sample. */
UV shade(IV n, RV mag, int max_iter, float inv_max_iter) {
    FV nu = TO_FV(n) + 1.0f - fast_log2(fast_log2(TO_FV(mag)) * 0.5f);
    FV t = sqrt(clamp(nu * inv_max_iter, 0.0f, 1.0f));
    UV idx = TO_UV(t * 254.0f) + 1;
    return select(idx, (UV)0, TO_I32(n == (IV)max_iter));
}

__kernel void escape(__global const REAL *xs,   /* sample x per column, padded to the row stride */
                     __global const REAL *ys,   /* sample y per row of the whole frame */
                     const int row0,            /* first frame row of this band */
                     const int stride,          /* samples per output row */
                     const int max_iter,
                     const REAL julia_re,
                     const REAL julia_im,
                     const float inv_max_iter,  /* 1 / max_iter, rounded once on the host */
                     const int zero,            /* always 0, see the replay below */
                     __global uint *counts,     /* band rows x stride escape counts */
                     __global uchar *shades)    /* band rows x stride palette indices */
{
    const int row = get_global_id(1);
    const int v0 = get_global_id(0) * IF;  /* first vector index in the row */
    const REAL y = ys[row0 + row];

    RV zr[IF], zi[IF], cr[IF], ci[IF], mf[IF];
    IV n[IF], live[IF];
#pragma unroll
    for (int k = 0; k < IF; k++) {
        RV x = LOADR(v0 + k, xs);
#if KIND == 1
        zr[k] = x;
        zi[k] = (RV)y;
        cr[k] = (RV)julia_re;
        ci[k] = (RV)julia_im;
#else
        zr[k] = (RV)0;
        zi[k] = (RV)0;
        cr[k] = x;
        ci[k] = (RV)y;
#endif
        mf[k] = (RV)0;
#if KIND == 0
        live[k] = ~interior(cr[k], ci[k]);
        n[k] = ~live[k] & (IV)max_iter;
#else
        n[k] = (IV)0;
        live[k] = (IV)(-1);
#endif
    }
#if PERIODIC
    /* Periodicity (Brent's scheme, tested at block ends only): z at the end of block 2^j is
     * kept, and each later block end compares with it until block 2^(j+1). An orbit that
     * returns bit for bit to a value it had is a cycle of the iteration in this precision,
     * so brute force would never see it escape: its count is max_iter. A cycle of period P
     * is caught once the orbit is on it and 2^j blocks span a multiple of P. */
    RV pr[IF], pi[IF];
#pragma unroll
    for (int k = 0; k < IF; k++) {
        pr[k] = zr[k];
        pi[k] = zi[k];
    }
    int blocks = 0;
#endif

    /* Blocks of CHECK iterations run the fast step, which only tracks the largest |z|^2.
     * If no live lane exceeded 4 in the block, every live lane simply counts CHECK more.
     * Otherwise the block is replayed from its saved start with the exact step: the replay
     * repeats the same operations, so it reaches the same z, and yields exact counts and
     * |z|^2 at escape. Each lane escapes once, so replays are few, and blocks without an
     * escape (most of the work in slow regions) pay for no bookkeeping. Lanes that escaped
     * earlier keep iterating towards inf/NaN; they are no longer live, so nothing reads them. */
    int it = 0;
    bool any_live = true;
    while (any_live && it + CHECK <= max_iter) {
        RV sr[IF], si[IF], mx[IF];
#pragma unroll
        for (int k = 0; k < IF; k++) {
            sr[k] = zr[k];
            si[k] = zi[k];
            mx[k] = (RV)0;
        }
#pragma unroll
        for (int s = 0; s < CHECK; s++) {
#pragma unroll
            for (int k = 0; k < IF; k++) FAST_STEP(k)
        }
        it += CHECK;
        /* One decision for all IF vectors: a branch per vector would split them into
         * separate basic blocks, and the compiler would no longer interleave their chains. */
        IV esc = (IV)0;
#pragma unroll
        for (int k = 0; k < IF; k++) esc |= live[k] & MASK(!(mx[k] <= (RV)4));
        if (ANY(esc)) {
#pragma unroll
            for (int k = 0; k < IF; k++) {
                /* x ^ 0 == x, but the compiler cannot know `zero`: otherwise it proves the
                 * replay equal to the fast block and keeps every fast step's |z|^2 and mask
                 * in memory for it, which costs the fast path more than the replays save. */
                zr[k] = AS_RV(AS_IV(sr[k]) ^ (IV)zero);
                zi[k] = AS_RV(AS_IV(si[k]) ^ (IV)zero);
            }
#pragma unroll
            for (int s = 0; s < CHECK; s++) {
#pragma unroll
                for (int k = 0; k < IF; k++) EXACT_STEP(k)
            }
        } else {
#pragma unroll
            for (int k = 0; k < IF; k++) n[k] += live[k] & (IV)CHECK;
        }
#if PERIODIC
        blocks++;
#pragma unroll
        for (int k = 0; k < IF; k++) {
            IV cycled = live[k] & MASK(zr[k] == pr[k]) & MASK(zi[k] == pi[k]);
            n[k] = select(n[k], (IV)max_iter, cycled);
            live[k] &= ~cycled;
        }
        if ((blocks & (blocks - 1)) == 0) {
#pragma unroll
            for (int k = 0; k < IF; k++) {
                pr[k] = zr[k];
                pi[k] = zi[k];
            }
        }
#endif
        IV l = live[0];
#pragma unroll
        for (int k = 1; k < IF; k++) l |= live[k];
        any_live = ANY(l);
    }
    for (; any_live && it < max_iter; it++) {
#pragma unroll
        for (int k = 0; k < IF; k++) EXACT_STEP(k)
    }

    __global uint *crow = counts + (size_t)row * stride;
    __global uchar *srow = shades + (size_t)row * stride;
#pragma unroll
    for (int k = 0; k < IF; k++) {
        STOREU(TO_UV(n[k]), v0 + k, crow);
        STORE_UC(shade(n[k], mf[k], max_iter, inv_max_iter), v0 + k, srow);
    }
}
