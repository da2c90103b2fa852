/* Escape-time fractals (mandelbrot, julia, burning_ship) for float and double.
 *
 * Build-time defines (chosen per device by job_image/render.py):
 *   REAL      float | double
 *   ITYPE     int | long        integer of REAL's width (vector compares yield it)
 *   VW        1, 2, 4, 8, 16    samples per vector: wide on CPUs (one AVX register),
 *                               1 on GPUs (the hardware vectorises across work-items)
 *   IF        1..4              vectors in flight per work-item (hides FP latency on CPUs)
 *   TILE      samples per work-item, a multiple of VW*IF (VW*IF on GPUs; on CPUs a long
 *             run of the band's rows, which the lanes share out among themselves)
 *   HEAD      iterations every sample gets in fixed vector groups before the refill
 *   CHECK     iterations per block between escape tests (see the loop in escape())
 *   KIND      0 mandelbrot, 1 julia, 2 burning_ship
 *   PERIODIC  1: detect orbits that repeat exactly (see the loop in escape()); 0: don't
 *   INTERIOR  1: mandelbrot samples in the cardioid or period-2 bulb are not iterated; 0: they
 *             are (brute force, for benchmarks to check the skips against)
 *
 * Each work-item renders TILE consecutive samples of its band (row after row). Per sample it
 * writes the escape count (iterations done before |z|^2 > 4, capped at max_iter) and a
 * palette index (smooth colouring from the count and |z|^2 at the escape).
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
#define LANE_BITS ((IV)1)
#define LANE_IDS ((IV)0)
#define OR_LANES(v) (v)
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
/* An aligned vector store (rows start at multiples of 64 samples): PoCL turns vstoreN of
 * uchars into N byte stores. */
#define STORE_UC(v, i, p) (((__global CAT(uchar, VW) *)(p))[i] = CAT(convert_uchar, VW)(v))
#define TO_UV(v) CAT(convert_uint, VW)(v)
#define TO_FV(v) CAT(convert_float, VW)(v)
#define TO_I32(v) CAT(convert_int, VW)(v)
#define AS_IV(x) CAT(as_, CAT(ITYPE, VW))(x)
#define AS_RV(x) CAT(as_, CAT(REAL, VW))(x)
#define AS_I32(x) CAT(as_int, VW)(x)
#define AS_F32(x) CAT(as_float, VW)(x)
/* OR of all lanes as a tree: PoCL's any() tests lane by lane with a branch each. */
#define ANY(v) (OR_LANES(v) != 0)
#if VW == 16
#define OR_LANES(v) or_tree16(v)
#define LANE_BITS ((IV)(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768))
#define LANE_IDS ((IV)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#elif VW == 8
#define OR_LANES(v) or_tree8(v)
#define LANE_BITS ((IV)(1, 2, 4, 8, 16, 32, 64, 128))
#define LANE_IDS ((IV)(0, 1, 2, 3, 4, 5, 6, 7))
#elif VW == 4
#define OR_LANES(v) or_tree4(v)
#define LANE_BITS ((IV)(1, 2, 4, 8))
#define LANE_IDS ((IV)(0, 1, 2, 3))
#else
#define OR_LANES(v) ((v).s0 | (v).s1)
#define LANE_BITS ((IV)(1, 2))
#define LANE_IDS ((IV)(0, 1))
#endif
#endif

#if VW >= 4
ITYPE or_tree4(CAT(ITYPE, 4) v) { CAT(ITYPE, 2) a = v.lo | v.hi; return a.s0 | a.s1; }
#endif
#if VW >= 8
ITYPE or_tree8(CAT(ITYPE, 8) v) { return or_tree4(v.lo | v.hi); }
#endif
#if VW >= 16
ITYPE or_tree16(CAT(ITYPE, 16) v) { return or_tree8(v.lo | v.hi); }
#endif

#define PER_ITEM (VW * IF)
#define PERIOD_SAVE 8  /* blocks between the periodicity test's saves, a power of 2 */
/* Index of the lowest set bit of a non-zero ulong (popcount is OpenCL 1.2; ctz is 2.0). */
#define LOWEST_BIT(d) ((int)popcount(((d) & (~(d) + 1)) - 1))
/* A 0/-1 lane mask as bits (lane l of vector k is bit k*VW + l), and back. */
#define TO_BITS(mask, k) ((ulong)(uint)OR_LANES((mask) & LANE_BITS) << ((k) * VW))
#define FROM_BITS(bits, k) MASK(((IV)(ITYPE)((bits) >> ((k) * VW)) & LANE_BITS) != (IV)0)

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

#define FOR_K _Pragma("unroll") for (int k = 0; k < IF; k++)
#define FOR_S _Pragma("unroll") for (int s = 0; s < CHECK; s++)

/* A block of CHECK iterations on all IF vectors, fast: the fast step only tracks the largest
 * |z|^2. If no live lane exceeded 4, every live lane simply counts CHECK more. Otherwise the
 * block is replayed from its saved start with the exact step: the replay repeats the same
 * operations, so it reaches the same z, and yields exact counts and |z|^2 at escape. Blocks
 * without an escape pay for no bookkeeping. `hit` tells whether a lane escaped.
 * One decision for all IF vectors: a branch per vector would split them into separate basic
 * blocks, and the compiler would no longer interleave their chains.
 * In the replay, x ^ 0 == x, but the compiler cannot know `zero`: otherwise it proves the
 * replay equal to the fast block and keeps every fast step's |z|^2 and mask in memory for
 * it, which costs the fast path more than the replays save. */
#define FAST_BLOCK(hit)                                                  \
    {                                                                    \
        RV sr[IF], si[IF], mx[IF];                                       \
        FOR_K {                                                          \
            sr[k] = zr[k];                                               \
            si[k] = zi[k];                                               \
            mx[k] = (RV)0;                                               \
        }                                                                \
        FOR_S { FOR_K FAST_STEP(k) }                                     \
        IV esc = (IV)0;                                                  \
        FOR_K esc |= live[k] & MASK(!(mx[k] <= (RV)4));                  \
        hit = ANY(esc);                                                  \
        if (hit) {                                                       \
            FOR_K {                                                      \
                zr[k] = AS_RV(AS_IV(sr[k]) ^ (IV)zero);                  \
                zi[k] = AS_RV(AS_IV(si[k]) ^ (IV)zero);                  \
            }                                                            \
            FOR_S { FOR_K EXACT_STEP(k) }                                \
        } else {                                                         \
            FOR_K n[k] += live[k] & (IV)CHECK;                           \
        }                                                                \
    }

/* The same block with the exact step only, for where lanes escape in most blocks (there the
 * replay would double the work). */
#define EXACT_BLOCK(hit) EXACT_BLOCK_N(hit, CHECK)
#define HALF_CHECK (CHECK > 1 ? CHECK / 2 : 1)
#define EXACT_BLOCK_N(hit, steps)                                        \
    {                                                                    \
        IV before[IF], gone = (IV)0;                                     \
        FOR_K before[k] = live[k];                                       \
        _Pragma("unroll") for (int s = 0; s < (steps); s++) { FOR_K EXACT_STEP(k) } \
        FOR_K gone |= before[k] & ~live[k];                              \
        hit = ANY(gone);                                                 \
    }

/* After a block with an escape, the next runs the exact step directly, until one passes
 * without: where lanes escape in most blocks, replays would double the work. */
#define RUN_BLOCK(exact)                                                 \
    {                                                                    \
        bool hit;                                                        \
        if (exact) {                                                     \
            EXACT_BLOCK(hit)                                             \
        } else {                                                         \
            FAST_BLOCK(hit)                                              \
        }                                                                \
        exact = hit;                                                     \
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
FIV shade(IV n, RV mag, int max_iter, float inv_max_iter) {
    FV nu = TO_FV(n) + 1.0f - fast_log2(fast_log2(TO_FV(mag)) * 0.5f);
    FV t = sqrt(clamp(nu * inv_max_iter, 0.0f, 1.0f));
    FIV idx = TO_I32(t * 254.0f) + 1;  /* t >= 0: the signed conversion is one instruction */
    return select(idx, (FIV)0, TO_I32(n == (IV)max_iter));
}

__kernel void escape(__global const REAL *xs,   /* sample x per column, padded to the row stride */
                     __global const REAL *ys,   /* sample y per row of the whole frame */
                     const int row0,            /* first frame row of this band */
                     const int nrows,           /* rows in this band */
                     const int stride,          /* samples per output row (a multiple of VW*IF) */
                     const int width,           /* samples of a row that are real, <= stride */
                     const int max_iter,
                     const REAL julia_re,
                     const REAL julia_im,
                     const float inv_max_iter,  /* 1 / max_iter, rounded once on the host */
                     const int zero,            /* always 0, see FAST_BLOCK */
                     __global uint *counts,     /* band rows x stride escape counts */
                     __global uchar *shades)    /* band rows x stride palette indices */
{
    /* The band is one run of nrows * stride samples, row after row; a work-item takes TILE
     * of them (on a CPU several rows: a long run keeps the refill's tail short). */
    const int t0 = get_global_id(0) * TILE;
    const int t1 = min(t0 + TILE, nrows * stride);

    RV zr[IF], zi[IF], cr[IF], ci[IF], mf[IF];
    IV n[IF], live[IF];
#if KIND == 1
    FOR_K {
        cr[k] = (RV)julia_re;
        ci[k] = (RV)julia_im;
    }
#endif

    /* Head: the tile's samples VW*IF consecutive ones at a time, for at most HEAD iterations,
     * with the counts and colours stored as vectors: most samples of a frame escape early,
     * and this is the cheapest way to finish them. Mandelbrot samples in the cardioid or the
     * period-2 bulb are finished without iterating. The samples still running after HEAD
     * iterations are listed, with their z, for the refill below. */
    const int head = min(HEAD, max_iter) / CHECK * CHECK;
    ushort todo[TILE];       /* offsets from t0 of the samples left for the refill */
    REAL todo_zr[TILE], todo_zi[TILE];  /* their z after the head, by offset */
    int ntodo = 0;
    bool exact = false;  /* run blocks with the exact step directly: escapes are frequent */
    for (int g = t0; g < t1; g += PER_ITEM) {  /* a group never spans two rows */
        const int row = g / stride, col = g - row * stride;
        if (col >= width) continue;  /* the row's padding */
        const REAL y = ys[row0 + row];
        FOR_K {
            RV x = LOADR(col / VW + k, xs);
            live[k] = MASK((IV)(col + k * VW) + LANE_IDS < (IV)width);  /* not the padding */
#if KIND == 1
            zr[k] = x;
            zi[k] = (RV)y;
#else
            zr[k] = zi[k] = (RV)0;
            cr[k] = x;
            ci[k] = (RV)y;
#endif
#if KIND == 0 && INTERIOR
            IV inside = interior(x, (RV)y);
            n[k] = inside & (IV)max_iter;
            live[k] &= ~inside;
#else
            n[k] = (IV)0;
#endif
            mf[k] = (RV)0;
        }
        int it = 0;
        while (it < head) {
            IV l = (IV)0;
            FOR_K l |= live[k];
            if (!ANY(l)) break;
            /* Short exact blocks here: a group ends as soon as its last lane escapes. */
            bool hit;
            if (exact || it + CHECK > head) {
                EXACT_BLOCK_N(hit, HALF_CHECK)
                it += HALF_CHECK;
            } else {
                FAST_BLOCK(hit)
                it += CHECK;
            }
            exact = hit;
        }
        if (it == head && head < max_iter) {
            ulong left = 0;
            FOR_K {
                STOREU(zr[k], (g - t0) / VW + k, todo_zr);
                STOREU(zi[k], (g - t0) / VW + k, todo_zi);
                left |= TO_BITS(live[k], k);
            }
            for (; left; left &= left - 1) todo[ntodo++] = (ushort)(g - t0 + LOWEST_BIT(left));
        } else {
            FOR_K n[k] = min(n[k], (IV)max_iter);  /* lanes live at max_iter: never escaped */
        }
        FOR_K {  /* the listed samples' entries are overwritten by the refill */
            STOREU(TO_UV(n[k]), g / VW + k, counts);
            STORE_UC(shade(n[k], mf[k], max_iter, inv_max_iter), g / VW + k, shades);
        }
    }
    if (!ntodo) return;

    /* Refill: each of the VW*IF lanes works on its own listed sample. When lanes finish
     * (escape, count max_iter, or an exact cycle), their results are written and they take
     * the next listed samples, so vectors stay full until the list runs out instead of every
     * lane waiting for the slowest sample of its vector. The refill is scalar work over
     * finished lanes only, at most once per block of CHECK iterations. */
#if PERIODIC
    REAL keep_zr[PER_ITEM], keep_zi[PER_ITEM];  /* per lane: z kept for the periodicity test */
#endif
    FOR_K live[k] = (IV)0;
    uint at[PER_ITEM];  /* each lane's sample, as an offset from t0 */
    REAL xnew[PER_ITEM], ynew[PER_ITEM], zrnew[PER_ITEM], zinew[PER_ITEM];  /* samples lanes take */
    uint nout[PER_ITEM];
    int sout[PER_ITEM];
    for (int l = 0; l < PER_ITEM; l++) {
        at[l] = 0;
        xnew[l] = ynew[l] = zrnew[l] = zinew[l] = (REAL)0;
#if PERIODIC
        keep_zr[l] = keep_zi[l] = (REAL)NAN;
#endif
    }
#if PERIODIC
    uint blocks = 0;
#endif
    int next = 0;
    ulong busy = 0;                                     /* lanes holding a sample */
    ulong fin = ((ulong)1 << (PER_ITEM - 1) << 1) - 1;  /* first pass: every lane takes one */
    for (;;) {
        if (fin) {
            FOR_K {
                STOREU(TO_UV(n[k]), k, nout);
                STOREU(shade(n[k], mf[k], max_iter, inv_max_iter), k, sout);
            }
            ulong fresh = 0;
            for (ulong d = fin; d; d &= d - 1) {
                int l = LOWEST_BIT(d);
                if ((busy >> l) & 1) {
                    counts[t0 + at[l]] = nout[l];
                    shades[t0 + at[l]] = (uchar)sout[l];
                }
                if (next < ntodo) {
                    int j = todo[next++], row = (t0 + j) / stride;
                    at[l] = j;
                    xnew[l] = xs[t0 + j - row * stride];
                    ynew[l] = ys[row0 + row];
                    zrnew[l] = todo_zr[j];
                    zinew[l] = todo_zi[j];
                    fresh |= (ulong)1 << l;
                }
            }
            busy = (busy & ~fin) | fresh;
            if (!busy) break;
            FOR_K {
                IV f = FROM_BITS(fresh, k);
#if KIND != 1
                cr[k] = select(cr[k], LOADR(k, xnew), f);
                ci[k] = select(ci[k], LOADR(k, ynew), f);
#endif
                zr[k] = select(zr[k], LOADR(k, zrnew), f);
                zi[k] = select(zi[k], LOADR(k, zinew), f);
                n[k] = select(n[k], (IV)head, f);
                live[k] |= f;
#if PERIODIC
                STOREU(select(LOADR(k, keep_zr), (RV)NAN, f), k, keep_zr);
                STOREU(select(LOADR(k, keep_zi), (RV)NAN, f), k, keep_zi);
#endif
            }
        }

        RUN_BLOCK(exact)

#if PERIODIC
        /* Periodicity: an orbit that returns bit for bit to a value it had is a cycle of the
         * iteration in this precision, so brute force would never see it escape: its count is
         * max_iter. Every block end compares z with the value kept at the latest of the
         * work-item's saves, one every PERIOD_SAVE blocks: a cycle of period P is caught once
         * the orbit is on it and P divides CHECK * m for some m <= PERIOD_SAVE (every P up to
         * 8, and 10, 12, 14, 16, 20, ... 64). Simulated on the yardstick frame, this catches as
         * many cycles as Brent's doubling windows, at a third of the cost per block (no per-lane
         * ages). The kept values live
         * in memory (the index hides them from register promotion): in registers they would
         * crowd out the iteration. A lane's kept value is NaN until the first save after its
         * sample started, so it never matches another sample's orbit. */
        IV same_re = (IV)0;  /* Re z alone first: a match is rare, so the full test seldom runs */
        FOR_K same_re |= live[k] & MASK(zr[k] == LOADR(k + zero, keep_zr));
        if (ANY(same_re)) {
            FOR_K {
                const int at_k = k + zero;
                IV cycled = live[k] & MASK(zr[k] == LOADR(at_k, keep_zr)) &
                            MASK(zi[k] == LOADR(at_k, keep_zi));
                n[k] = select(n[k], (IV)max_iter, cycled);
                live[k] &= ~cycled;
            }
        }
        if ((++blocks & (PERIOD_SAVE - 1)) == 0) {
            FOR_K {
                STOREU(zr[k], k + zero, keep_zr);
                STOREU(zi[k], k + zero, keep_zi);
            }
        }
#endif
        /* Counts past max_iter (a block may overrun it) are max_iter: brute force stops there. */
        ulong still = 0;
        FOR_K {
            IV over = MASK(n[k] >= (IV)max_iter);
            n[k] = select(n[k], (IV)max_iter, over);
            live[k] &= ~over;
            still |= TO_BITS(live[k], k);
        }
        fin = busy & ~still;
    }
}
