/* Tests of the fake-quantization ops (core/ops/dfq-op-quant.c) beyond the
 * gradient check: grid properties, error bounds, exact STE behaviour, the
 * degenerate-range guard, rounding of ties, soft-bit hard mode, the rounding
 * regulariser and thread-count independence. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

typedef struct {
    DfqArena *arena;
} QuantFixture;

static void
quant_setup (QuantFixture *f, gconstpointer data)
{
    f->arena = dfq_arena_new (0);
}

static void
quant_teardown (QuantFixture *f, gconstpointer data)
{
    g_clear_pointer (&f->arena, dfq_arena_free);
}

/* Per-output-channel min and max of a weight tensor [Co, ...]. */
static void
quant_channel_minmax (DfqArena *arena, const DfqTensor *w, DfqTensor **lo, DfqTensor **hi)
{
    gint64 co = w->shape[0], inner = dfq_tensor_numel (w) / co;
    *lo = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, co);
    *hi = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, co);
    const float *d = dfq_tensor_f32 (w);
    for (gint64 c = 0; c < co; c++) {
        float mn = d[c * inner], mx = d[c * inner];
        for (gint64 k = 1; k < inner; k++) {
            mn = fminf (mn, d[c * inner + k]);
            mx = fmaxf (mx, d[c * inner + k]);
        }
        dfq_tensor_f32 (*lo)[c] = mn;
        dfq_tensor_f32 (*hi)[c] = mx;
    }
}

static int
quant_cmp_float (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return (x > y) - (x < y);
}

static void
test_fake_quant_distinct_levels (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("k-bit per-channel weights take at most 2^k distinct values per output channel (k = 2, 3, 4)");
    DfqTensor *w = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 8, 16, 3, 3);
    dfq_rand_normal_fill (w, 7, 0, 0.0f, 0.1f);
    DfqTensor *lo, *hi;
    quant_channel_minmax (f->arena, w, &lo, &hi);
    gint64 inner = dfq_tensor_numel (w) / 8;
    float *vals = g_new (float, inner);
    for (int bits = 2; bits <= 4; bits++) {
        DfqTensor *y = dfq_fake_quant (f->arena, w, lo, hi, 0, bits, DFQ_STE_PLAIN);
        g_assert_nonnull (y);
        for (gint64 c = 0; c < 8; c++) {
            memcpy (vals, dfq_tensor_f32 (y) + c * inner, (gsize) inner * sizeof (float));
            qsort (vals, (gsize) inner, sizeof (float), quant_cmp_float);
            int distinct = 1;
            for (gint64 k = 1; k < inner; k++)
                if (vals[k] != vals[k - 1])
                    distinct++;
            g_assert_cmpint (distinct, <=, 1 << bits);
            g_assert_cmpint (distinct, >=, 2);
        }
    }
    g_free (vals);
}

static void
test_fake_quant_error_bound (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Inside [lo, hi] the dequantization error is at most half a step, 1/(2S)");
    static const int bits_list[] = { 2, 3, 4, 8 };
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 4, 3, 8, 8);
    dfq_rand_normal_fill (x, 11, 0, 0.3f, 1.0f);
    DfqTensor *lo = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 3);
    DfqTensor *hi = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 3);
    /* Ranges narrower than the data (so clamping also happens) and one
     * ReLU-like range starting at 0. */
    const float lo_v[3] = { -1.1f, 0.0f, -0.37f }, hi_v[3] = { 1.3f, 2.1f, 0.61f };
    memcpy (dfq_tensor_f32 (lo), lo_v, sizeof lo_v);
    memcpy (dfq_tensor_f32 (hi), hi_v, sizeof hi_v);
    gint64 inner = 64;
    for (guint b = 0; b < G_N_ELEMENTS (bits_list); b++) {
        int bits = bits_list[b];
        DfqTensor *y = dfq_fake_quant (f->arena, x, lo, hi, 1, bits, DFQ_STE_PLAIN);
        gint64 n_inside = 0;
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
            gint64 c = (i / inner) % 3;
            float xv = dfq_tensor_f32 (x)[i], yv = dfq_tensor_f32 (y)[i];
            if (xv < lo_v[c] || xv > hi_v[c])
                continue;
            n_inside++;
            double half_step = 0.5 * (hi_v[c] - lo_v[c]) / ((1 << bits) - 1);
            double err = fabs ((double) yv - xv);
            if (!(err <= half_step * (1.0 + 1e-4) + 1e-6))
                g_test_fail_printf ("bits %d channel %" G_GINT64_FORMAT ": x %g -> %g, error %g > half step %g",
                                    bits, c, xv, yv, err, half_step);
        }
        g_assert_cmpint (n_inside, >, 100);
    }
}

static void
test_fake_quant_ste_plain (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Plain STE passes the incoming gradient unchanged (bit-exact), also outside [lo, hi]");
    for (int axis = -1; axis <= 1; axis += 2) {
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 5, 5);
        dfq_rand_normal_fill (x, 3, 0, 0.0f, 1.0f);
        dfq_tensor_set_param (x);
        gint64 np = axis < 0 ? 1 : 3;
        DfqTensor *lo = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, np);
        DfqTensor *hi = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, np);
        dfq_tensor_fill (lo, -0.5f);
        dfq_tensor_fill (hi, 0.4f);
        DfqTensor *y = dfq_fake_quant (scratch, x, lo, hi, axis, 4, DFQ_STE_PLAIN);
        DfqTensor *g = dfq_tensor_new_like (f->arena, y);
        dfq_rand_normal_fill (g, 4, 0, 0.0f, 1.0f);
        dfq_backward_with_grad (y, g, scratch);
        g_assert_nonnull (x->grad);
        g_assert_cmpmem (x->grad->data, dfq_tensor_numel (x) * sizeof (float), g->data,
                         dfq_tensor_numel (g) * sizeof (float));
    }
}

static void
test_fake_quant_ste_clipped (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Clipped STE passes the gradient inside [lo, hi] unchanged and zeroes it outside");
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 5, 5);
    dfq_rand_normal_fill (x, 5, 0, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    DfqTensor *lo = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 3);
    DfqTensor *hi = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 3);
    const float lo_v[3] = { -0.5f, -1.0f, 0.0f }, hi_v[3] = { 0.5f, 0.2f, 1.5f };
    memcpy (dfq_tensor_f32 (lo), lo_v, sizeof lo_v);
    memcpy (dfq_tensor_f32 (hi), hi_v, sizeof hi_v);
    DfqTensor *y = dfq_fake_quant (scratch, x, lo, hi, 1, 3, DFQ_STE_CLIPPED);
    DfqTensor *g = dfq_tensor_new_like (f->arena, y);
    dfq_rand_normal_fill (g, 6, 0, 0.0f, 1.0f);
    dfq_backward_with_grad (y, g, scratch);
    int n_in = 0, n_out = 0;
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
        gint64 c = (i / 25) % 3;
        float xv = dfq_tensor_f32 (x)[i];
        float want = (xv >= lo_v[c] && xv <= hi_v[c]) ? dfq_tensor_f32 (g)[i] : 0.0f;
        if (want == 0.0f)
            n_out++;
        else
            n_in++;
        g_assert_true (memcmp (&dfq_tensor_f32 (x->grad)[i], &want, sizeof want) == 0);
    }
    g_assert_cmpint (n_in, >, 10);
    g_assert_cmpint (n_out, >, 10);
}

static void
test_fake_quant_degenerate_range (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("lo == hi (per tensor) gives finite values near lo, no NaN (the 1e-8 range guard)");
    static const float levels[] = { 0.0f, 0.3f, -2.0f };
    for (guint k = 0; k < G_N_ELEMENTS (levels); k++)
        for (int bits = 2; bits <= 8; bits += 6) {
            g_autoptr (DfqArena) scratch = dfq_arena_new (0);
            DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 4, 4);
            dfq_rand_normal_fill (x, 8, 0, 0.0f, 2.0f);
            dfq_tensor_set_param (x);
            DfqTensor *lo = dfq_tensor_new_scalar (f->arena, levels[k]);
            DfqTensor *hi = dfq_tensor_new_scalar (f->arena, levels[k]);
            DfqTensor *y = dfq_fake_quant (scratch, x, lo, hi, -1, bits, DFQ_STE_CLIPPED);
            g_assert_true (dfq_tensor_all_finite (y));
            for (gint64 i = 0; i < dfq_tensor_numel (y); i++)
                g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (y)[i], levels[k], 1e-5);
            /* ACD clipping with a collapsed range: every x lands on lo. */
            DfqTensor *z = dfq_fake_quant_clip (scratch, x, lo, hi, -1, bits, TRUE);
            g_assert_true (dfq_tensor_all_finite (z));
            for (gint64 i = 0; i < dfq_tensor_numel (z); i++)
                g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (z)[i], levels[k], 1e-5);
            DfqTensor *g = dfq_tensor_new_like (f->arena, y);
            dfq_tensor_fill (g, 1.0f);
            dfq_backward_with_grad (y, g, scratch);
            dfq_backward_with_grad (z, g, scratch);
            g_assert_true (dfq_tensor_all_finite (x->grad));
        }
}

static void
test_round_half_even (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Ties round half to even, as torch.round (GDFQ and LSQ)");
    /* GDFQ with lo = 0, hi = 255, 8 bits: S = 1, zp = 128, so S x - zp = x - 128. */
    const float xs[4] = { 128.5f, 129.5f, 130.5f, 127.5f };
    const float want_gdfq[4] = { 128.0f, 130.0f, 130.0f, 128.0f };
    DfqTensor *x = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 4);
    memcpy (dfq_tensor_f32 (x), xs, sizeof xs);
    DfqTensor *y = dfq_fake_quant (f->arena, x, dfq_tensor_new_scalar (f->arena, 0.0f),
                                   dfq_tensor_new_scalar (f->arena, 255.0f), -1, 8, DFQ_STE_PLAIN);
    for (int i = 0; i < 4; i++)
        g_assert_cmpfloat (dfq_tensor_f32 (y)[i], ==, want_gdfq[i]);

    /* LSQ with s = 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2. */
    const float ls[5] = { 0.5f, 1.5f, 2.5f, -0.5f, -1.5f };
    const float want_lsq[5] = { 0.0f, 2.0f, 2.0f, 0.0f, -2.0f };
    DfqTensor *lx = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 5);
    memcpy (dfq_tensor_f32 (lx), ls, sizeof ls);
    DfqTensor *ly = dfq_fake_quant_lsq (f->arena, lx, dfq_tensor_new_scalar (f->arena, 1.0f), -1, -8, 7, 1.0f);
    for (int i = 0; i < 5; i++)
        g_assert_cmpfloat (dfq_tensor_f32 (ly)[i], ==, want_lsq[i]);
}

static void
test_lsq_on_grid (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("LSQ outputs are s * q with integer q in [qn, qp], per channel");
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 4, 6, 6);
    dfq_rand_normal_fill (x, 12, 0, 0.0f, 1.0f);
    DfqTensor *s = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 4);
    dfq_rand_uniform_fill (s, 13, 0, 0.05f, 0.3f);
    DfqTensor *y = dfq_fake_quant_lsq (f->arena, x, s, 1, -8, 7, 1.0f);
    for (gint64 i = 0; i < dfq_tensor_numel (y); i++) {
        float sc = dfq_tensor_f32 (s)[(i / 36) % 4];
        double q = dfq_tensor_f32 (y)[i] / sc;
        g_assert_cmpfloat_with_epsilon (q, nearbyint (q), 1e-4);
        g_assert_cmpfloat (q, >=, -8.0001);
        g_assert_cmpfloat (q, <=, 7.0001);
    }
}

static void
test_softbit_hard_on_grid (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Soft-bit hard mode lies exactly on the grid s*(q - zp), q = clamp(B + [V >= 0] + zp) integer");
    for (int bits = 2; bits <= 4; bits++) {
        DfqTensor *b = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 4, 3, 3, 3);
        DfqTensor *v = dfq_tensor_new_like (f->arena, b);
        DfqTensor *s = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 4);
        DfqTensor *zp = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 4);
        int qmax = (1 << bits) - 1;
        for (gint64 i = 0; i < dfq_tensor_numel (b); i++)
            dfq_tensor_f32 (b)[i] = floorf (dfq_rand_uniform_at (20, (guint64) bits, (guint64) i) * (qmax + 5)) - qmax / 2 - 2;
        dfq_rand_normal_fill (v, 21, (guint64) bits, 0.0f, 1.0f);
        dfq_rand_uniform_fill (s, 22, (guint64) bits, 0.01f, 0.2f);
        for (int c = 0; c < 4; c++)
            dfq_tensor_f32 (zp)[c] = (float) ((c * 3) % (qmax + 1));
        DfqTensor *y = dfq_softbit_quant (f->arena, b, v, s, zp, 0, bits, TRUE);
        g_assert_nonnull (y);
        for (gint64 i = 0; i < dfq_tensor_numel (y); i++) {
            gint64 c = i / 27;
            float z = dfq_tensor_f32 (zp)[c], sc = dfq_tensor_f32 (s)[c];
            float q = dfq_tensor_f32 (b)[i] + (dfq_tensor_f32 (v)[i] >= 0.0f ? 1.0f : 0.0f) + z;
            q = fminf (fmaxf (q, 0.0f), (float) qmax);
            g_assert_cmpfloat (q, ==, nearbyintf (q));
            g_assert_cmpfloat (dfq_tensor_f32 (y)[i], ==, sc * (q - z));
        }
    }
}

static void
test_round_reg_binary (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("round_reg is 0 (and its gradient 0) when h(V) is 0 or 1 everywhere; n when h = 1/2");
    g_assert_cmpfloat (dfq_softbit_h (-6.0f), ==, 0.0f);
    g_assert_cmpfloat (dfq_softbit_h (6.0f), ==, 1.0f);
    g_assert_cmpfloat_with_epsilon (dfq_softbit_h (0.0f), 0.5f, 1e-6);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *v = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, 5, 7);
    for (gint64 i = 0; i < 35; i++)
        dfq_tensor_f32 (v)[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (3.0f + (float) (i % 5));
    dfq_tensor_set_param (v);
    static const float betas[] = { 2.0f, 7.5f, 20.0f };
    for (guint k = 0; k < G_N_ELEMENTS (betas); k++) {
        DfqTensor *r = dfq_round_reg (scratch, v, betas[k]);
        g_assert_cmpint (r->n_dims, ==, 1);
        g_assert_cmpint (r->shape[0], ==, 1);
        g_assert_cmpfloat (dfq_tensor_f32 (r)[0], ==, 0.0f);
        dfq_backward (r, scratch);
    }
    for (gint64 i = 0; i < 35; i++)
        g_assert_cmpfloat (dfq_tensor_f32 (v->grad)[i], ==, 0.0f);

    DfqTensor *mid = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, 5, 7);
    DfqTensor *r = dfq_round_reg (scratch, mid, 2.0f);
    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (r)[0], 35.0f, 1e-4);
}

/* The parameter gradients of a large per-tensor quantizer must not depend on
 * the thread count (block partial sums in a fixed order). */
static void
test_thread_independent (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("LSQ, clip and soft-bit parameter gradients are bit-identical with 1 and 4 threads");
    int prev_threads = dfq_get_num_threads ();
    float results[2][4];
    for (int run = 0; run < 2; run++) {
        dfq_set_num_threads (run == 0 ? 1 : 4);
        g_autoptr (DfqArena) params = dfq_arena_new (0);
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        DfqTensor *x = dfq_tensor_new_4d (params, DFQ_DTYPE_F32, 8, 16, 32, 32);
        dfq_rand_normal_fill (x, 30, 0, 0.0f, 1.0f);
        DfqTensor *s = dfq_tensor_new_scalar (params, 0.1f);
        DfqTensor *lo = dfq_tensor_new_scalar (params, -1.0f);
        DfqTensor *hi = dfq_tensor_new_scalar (params, 1.2f);
        DfqTensor *v = dfq_tensor_new_like (params, x);
        dfq_rand_normal_fill (v, 31, 0, 0.0f, 1.0f);
        DfqTensor *bq = dfq_tensor_new_like (params, x);
        DfqTensor *ss = dfq_tensor_new_scalar (params, 0.05f);
        DfqTensor *zp = dfq_tensor_new_scalar (params, 8.0f);
        dfq_tensor_set_param (s);
        dfq_tensor_set_param (lo);
        dfq_tensor_set_param (hi);
        dfq_tensor_set_param (ss);
        DfqTensor *g = dfq_tensor_new_like (params, x);
        dfq_rand_normal_fill (g, 32, 0, 0.0f, 1.0f);
        dfq_backward_with_grad (dfq_fake_quant_lsq (scratch, x, s, -1, -8, 7, 1.0f), g, scratch);
        dfq_backward_with_grad (dfq_fake_quant_clip (scratch, x, lo, hi, -1, 4, TRUE), g, scratch);
        dfq_backward_with_grad (dfq_softbit_quant (scratch, bq, v, ss, zp, -1, 4, FALSE), g, scratch);
        results[run][0] = dfq_tensor_f32 (s->grad)[0];
        results[run][1] = dfq_tensor_f32 (lo->grad)[0];
        results[run][2] = dfq_tensor_f32 (hi->grad)[0];
        results[run][3] = dfq_tensor_f32 (ss->grad)[0];
    }
    dfq_set_num_threads (prev_threads);
    g_assert_cmpmem (results[0], sizeof results[0], results[1], sizeof results[1]);
}

/* The forward of dfq_fake_quant as first written, with the libm calls
 * (nearbyintf, fminf, fmaxf) and the product rounded on its own. */
/* Inputs every fake-quant reference test mixes in: zeros of both signs, NaN,
 * infinities, subnormals, the extremes, ties, values past any range. */
static const float quant_special[] = { 0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, 1e-40f, -1e-40f, FLT_MAX,
                                       -FLT_MAX, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 1e30f, -1e30f, 8388608.5f,
                                       -8388609.0f };

static float
quant_libm_reference (float x, float xmin, float xmax, int bits)
{
    const float levels = (float) ((1 << bits) - 1);
    const float half = (float) (1 << (bits - 1));
    float s = levels / fmaxf (xmax - xmin, 1e-8f);
    volatile float sxmin = s * xmin;
    float zp = nearbyintf (sxmin) + half;
    volatile float sx = s * x;
    float q = nearbyintf (sx - zp);
    q = fminf (fmaxf (q, -half), half - 1.0f);
    return (q + zp) / s;
}

static gboolean
quant_same_bits (float a, float b)
{
    return memcmp (&a, &b, sizeof a) == 0 || (isnan (a) && isnan (b));
}

/* The plain loops the LSQ and ACD clip ops ran before they were vectorised:
 * libm's own fmaxf / fminf, called through pointers (GCC may expand the
 * builtins inline, and its expansion returns the first of two equal zeros
 * where glibc returns the second), volatile keeping each rounding apart. */
static float (*volatile libm_fmaxf) (float, float) = fmaxf;
static float (*volatile libm_fminf) (float, float) = fminf;

static float
lsq_libm_reference (float x, float s, float qn, float qp)
{
    volatile float v = x / s;
    return s * nearbyintf (libm_fminf (libm_fmaxf (v, qn), qp));
}

static float
clip_libm_reference (float x, float cl, float cu, int bits)
{
    const float levels = (float) ((1 << bits) - 1);
    const float s = libm_fmaxf (cu - cl, 1e-8f) / levels;
    const float xc = libm_fminf (libm_fmaxf (x, cl), cu);
    volatile float q = nearbyintf ((xc - cl) / s);
    volatile float p = q * s;
    return p + cl;
}

/* x [3, 5, 13, 7] (vector bodies and remainders in every block): N(0, 2)
 * with exact ties of a step-0.5 grid and the special values of the
 * fake-quant test mixed in. */
static DfqTensor *
quant_special_input (DfqArena *arena, guint64 seed, gboolean specials)
{
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 3, 5, 13, 7);
    dfq_rand_normal_fill (x, seed, 0, 0.0f, 2.0f);
    float *xd = dfq_tensor_f32 (x);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
        if (i % 3 == 0)
            xd[i] = ((float) (i % 17) - 8.0f + 0.5f) * 0.25f;
        if (specials && i % 7 == 1)
            xd[i] = quant_special[(i / 7) % G_N_ELEMENTS (quant_special)];
    }
    return x;
}

static void
test_lsq_libm_reference (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("LSQ (vectorised) gives the bits of the libm loop it replaced, forward and input gradient, for "
                    "ties, zeros of both signs, NaN, infinities and out-of-range values, per channel");
    const float s_v[5] = { 0.25f, 1e-3f, 1.0f, 0.5f, 3.0f };
    const int ranges[3][2] = { { -8, 7 }, { 0, 15 }, { -2, 1 } };
    for (guint r = 0; r < G_N_ELEMENTS (ranges); r++) {
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        DfqTensor *x = quant_special_input (scratch, 21 + r, TRUE);
        dfq_tensor_set_param (x);
        DfqTensor *s = dfq_tensor_new_1d (scratch, DFQ_DTYPE_F32, 5);
        memcpy (dfq_tensor_f32 (s), s_v, sizeof s_v);
        dfq_tensor_set_param (s);
        const float qn = (float) ranges[r][0], qp = (float) ranges[r][1];
        DfqTensor *y = dfq_fake_quant_lsq (scratch, x, s, 1, ranges[r][0], ranges[r][1], 1.0f);
        DfqTensor *gy = dfq_tensor_new_4d (scratch, DFQ_DTYPE_F32, 3, 5, 13, 7);
        dfq_rand_normal_fill (gy, 31, r, 0.0f, 1.0f);
        dfq_backward_with_grad (y, gy, scratch);
        const float *xd = dfq_tensor_f32 (x), *g = dfq_tensor_f32 (gy), *gx = dfq_tensor_f32 (x->grad);
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
            const float sc = s_v[(i / 91) % 5], v = xd[i] / sc;
            const float want = lsq_libm_reference (xd[i], sc, qn, qp);
            const float want_gx = v < qn || v > qp ? 0.0f : 0.0f + g[i];
            if (!quant_same_bits (dfq_tensor_f32 (y)[i], want) || !quant_same_bits (gx[i], want_gx)) {
                g_test_fail_printf ("range %u element %" G_GINT64_FORMAT ": x %a -> %a (libm %a), dx %a (want %a)", r,
                                    i, (double) xd[i], (double) dfq_tensor_f32 (y)[i], (double) want, (double) gx[i],
                                    (double) want_gx);
                return;
            }
        }
    }
}

static void
test_clip_libm_reference (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("ACD clipping (vectorised) gives the bits of the libm loop it replaced, forward and input "
                    "gradient, for ties, signed zeros, NaN and infinite inputs, zero-signed and NaN clips, and its "
                    "clip gradients agree with the plain double sums");
    /* lower, upper per channel: ordinary, +0 / -0 bounds, degenerate, a NaN upper clip */
    const float lo_v[5] = { -1.0f, 0.0f, -0.0f, 0.25f, -3.0f };
    const float hi_v[5] = { 1.5f, -0.0f, 2.0f, 0.25f, NAN };
    const int bits_list[] = { 2, 4, 8 };
    /* with the special inputs, then without (NaN inputs make the clip sums NaN) */
    for (guint bi = 0; bi < 2 * G_N_ELEMENTS (bits_list); bi++) {
        const int bits = bits_list[bi % G_N_ELEMENTS (bits_list)];
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        DfqTensor *x = quant_special_input (scratch, 41 + bi, bi < G_N_ELEMENTS (bits_list));
        dfq_tensor_set_param (x);
        DfqTensor *lo = dfq_tensor_new_1d (scratch, DFQ_DTYPE_F32, 5), *hi = dfq_tensor_new_1d (scratch, DFQ_DTYPE_F32, 5);
        memcpy (dfq_tensor_f32 (lo), lo_v, sizeof lo_v);
        memcpy (dfq_tensor_f32 (hi), hi_v, sizeof hi_v);
        dfq_tensor_set_param (lo);
        dfq_tensor_set_param (hi);
        DfqTensor *y = dfq_fake_quant_clip (scratch, x, lo, hi, 1, bits, TRUE);
        DfqTensor *gy = dfq_tensor_new_4d (scratch, DFQ_DTYPE_F32, 3, 5, 13, 7);
        dfq_rand_normal_fill (gy, 51, bits, 0.0f, 1.0f);
        dfq_backward_with_grad (y, gy, scratch);
        const float *xd = dfq_tensor_f32 (x), *g = dfq_tensor_f32 (gy), *gx = dfq_tensor_f32 (x->grad);
        const float levels = (float) ((1 << bits) - 1);
        double want_l[5] = { 0 }, want_u[5] = { 0 };
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
            const int c = (int) ((i / 91) % 5);
            const float cl = lo_v[c], cu = hi_v[c], range = fmaxf (cu - cl, 1e-8f), sc = range / levels;
            const float want = clip_libm_reference (xd[i], cl, cu, bits);
            float want_gx = 0.0f;
            if (xd[i] <= cl) {
                want_l[c] += g[i];
            } else if (xd[i] >= cu) {
                want_u[c] += g[i];
            } else {
                want_gx = 0.0f + g[i];
                const double du = (double) nearbyintf ((xd[i] - cl) / sc) / levels - ((double) xd[i] - cl) / range;
                want_u[c] += g[i] * du;
                want_l[c] -= g[i] * du;
            }
            if (!quant_same_bits (dfq_tensor_f32 (y)[i], want) || !quant_same_bits (gx[i], want_gx)) {
                g_test_fail_printf ("bits %d element %" G_GINT64_FORMAT ": x %a -> %a (libm %a), dx %a (want %a)", bits,
                                    i, (double) xd[i], (double) dfq_tensor_f32 (y)[i], (double) want, (double) gx[i],
                                    (double) want_gx);
                return;
            }
        }
        for (int c = 0; c < 5; c++) { /* NaN inputs make some sums NaN: on both sides */
            const double got_l = dfq_tensor_f32 (lo->grad)[c], got_u = dfq_tensor_f32 (hi->grad)[c];
            g_assert_cmpint (isnan (got_l), ==, isnan (want_l[c]));
            g_assert_cmpint (isnan (got_u), ==, isnan (want_u[c]));
            if (!isnan (want_l[c]))
                g_assert_cmpfloat_with_epsilon (got_l, want_l[c], 1e-4 * (1.0 + fabs (want_l[c])));
            if (!isnan (want_u[c]))
                g_assert_cmpfloat_with_epsilon (got_u, want_u[c], 1e-4 * (1.0 + fabs (want_u[c])));
        }
    }
}

static void
test_fake_quant_libm_reference (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("The fake-quant forward (inlined rounding and clamps, vectorised) gives the bits of the "
                    "nearbyintf/fminf/fmaxf formula for every input: ties, zeros of both signs, NaN, infinities, "
                    "subnormals, out-of-range values; per tensor and per channel, 1 to 16 bits");
    const int bits_list[] = { 1, 2, 3, 4, 5, 8, 16 };
    /* Channel ranges: ordinary, tiny, degenerate (lo == hi), reversed, around zero. */
    const float lo_v[5] = { -1.0f, -1e-6f, 0.25f, 1.0f, -3.0f };
    const float hi_v[5] = { 1.5f, 2e-6f, 0.25f, -1.0f, 0.0f };
    for (guint bi = 0; bi < G_N_ELEMENTS (bits_list); bi++) {
        const int bits = bits_list[bi];
        for (int axis = -1; axis <= 1; axis += 2) {
            g_autoptr (DfqArena) scratch = dfq_arena_new (0);
            /* 5 channels of 13x7 (vector bodies and remainders in every block). */
            DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 3, 5, 13, 7);
            gint64 n = dfq_tensor_numel (x), inner = 13 * 7;
            dfq_rand_normal_fill (x, 11 + bits, 0, 0.0f, 2.0f);
            float *xd = dfq_tensor_f32 (x);
            const float level_step = (float) ((1 << bits) - 1) / 2.5f; /* S of channel 0 */
            for (gint64 i = 0; i < n; i++) {
                if (i % 3 == 0) /* exact ties of channel 0's grid: (k + 1/2) / S */
                    xd[i] = ((float) (i % 17) - 8.0f + 0.5f) / level_step;
                if (i % 7 == 1)
                    xd[i] = quant_special[(i / 7) % G_N_ELEMENTS (quant_special)];
            }
            gint64 np = axis < 0 ? 1 : 5;
            DfqTensor *lo = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, np);
            DfqTensor *hi = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, np);
            memcpy (dfq_tensor_f32 (lo), lo_v, (gsize) np * sizeof (float));
            memcpy (dfq_tensor_f32 (hi), hi_v, (gsize) np * sizeof (float));
            DfqTensor *y = dfq_fake_quant (scratch, x, lo, hi, axis, bits, DFQ_STE_PLAIN);
            for (gint64 i = 0; i < n; i++) {
                gint64 c = axis < 0 ? 0 : (i / inner) % 5;
                float want = quant_libm_reference (xd[i], lo_v[c], hi_v[c], bits);
                float got = dfq_tensor_f32 (y)[i];
                if (!quant_same_bits (got, want)) {
                    g_test_fail_printf ("bits %d axis %d element %" G_GINT64_FORMAT ": x %a -> %a, libm formula %a",
                                        bits, axis, i, (double) xd[i], (double) got, (double) want);
                    return;
                }
            }
        }
    }
}

static void
test_fake_quant_ste_accumulates (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("Both STEs write a new gradient buffer as 0 + g and add to an existing one, in either "
                    "order (x used by a clipped and a plain fake-quant)");
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 9, 9);
    dfq_rand_normal_fill (x, 21, 0, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    DfqTensor *lo = dfq_tensor_new_scalar (f->arena, -0.7f);
    DfqTensor *hi = dfq_tensor_new_scalar (f->arena, 0.6f);
    DfqTensor *ya = dfq_fake_quant (scratch, x, lo, hi, -1, 4, DFQ_STE_CLIPPED);
    DfqTensor *yb = dfq_fake_quant (scratch, x, lo, hi, -1, 4, DFQ_STE_PLAIN);
    DfqTensor *y = dfq_add (scratch, ya, yb);
    DfqTensor *g = dfq_tensor_new_like (f->arena, y);
    dfq_rand_normal_fill (g, 22, 0, 0.0f, 1.0f);
    float *gd = dfq_tensor_f32 (g);
    for (gint64 i = 0; i < dfq_tensor_numel (g); i += 5)
        gd[i] = (i / 5) % 2 ? -0.0f : 0.0f;
    dfq_backward_with_grad (y, g, scratch);
    const float *xd = dfq_tensor_f32 (x);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
        float ga = xd[i] >= -0.7f && xd[i] <= 0.6f ? gd[i] : 0.0f;
        float want = (0.0f + ga) + gd[i]; /* the same as (0 + g) + ga */
        g_assert_true (quant_same_bits (dfq_tensor_f32 (x->grad)[i], want));
    }
}

static void
test_fake_quant_bad_param_shape (QuantFixture *f, gconstpointer data)
{
    g_test_summary ("A range tensor of the wrong size is a programmer error: CRITICAL and NULL");
    if (g_test_subprocess ()) {
        DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, 2, 3, 2, 2);
        DfqTensor *lo = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 2);
        DfqTensor *hi = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_F32, 3);
        g_assert_null (dfq_fake_quant (f->arena, x, lo, hi, 1, 4, DFQ_STE_PLAIN));
        return;
    }
    g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed ();
    g_test_trap_assert_stderr ("*CRITICAL*dfq_fake_quant*");
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, QuantFixture, NULL, quant_setup, fn, quant_teardown)
    ADD ("/quant/fake-quant/distinct-levels", test_fake_quant_distinct_levels);
    ADD ("/quant/fake-quant/error-bound", test_fake_quant_error_bound);
    ADD ("/quant/fake-quant/ste-plain", test_fake_quant_ste_plain);
    ADD ("/quant/fake-quant/ste-clipped", test_fake_quant_ste_clipped);
    ADD ("/quant/fake-quant/degenerate-range", test_fake_quant_degenerate_range);
    ADD ("/quant/fake-quant/bad-param-shape", test_fake_quant_bad_param_shape);
    ADD ("/quant/fake-quant/libm-reference", test_fake_quant_libm_reference);
    ADD ("/quant/fake-quant/ste-accumulates", test_fake_quant_ste_accumulates);
    ADD ("/quant/round/half-to-even", test_round_half_even);
    ADD ("/quant/lsq/on-grid", test_lsq_on_grid);
    ADD ("/quant/lsq/libm-reference", test_lsq_libm_reference);
    ADD ("/quant/clip/libm-reference", test_clip_libm_reference);
    ADD ("/quant/softbit/hard-on-grid", test_softbit_hard_on_grid);
    ADD ("/quant/round-reg/zero-at-binary", test_round_reg_binary);
    ADD ("/quant/threads/param-grads-deterministic", test_thread_independent);
#undef ADD
    return g_test_run ();
}
