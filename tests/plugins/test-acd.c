/* The `acd` quantizer and the `sqnr` loss (plugins/quantizers/acd,
 * plugins/losses/sqnr; METHODS.md 12.2, docs/methods/acd.md, sqnr.md), and
 * the quantization taps they meet through: clip-value gradients against
 * central differences below l, inside and above u; calibration, the decay
 * and the SQNR values against hand computations; at most 2^k levels per
 * channel; a learnable clip moved by the SQNR loss alone; MobileNetV2's
 * opt-in block-output sites; the taps "<site>:quant" / ":wquant"; the
 * online real-data source real-stream. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

static DfqQuantizer *
make_acd (const char *yaml)
{
    return (DfqQuantizer *) dfq_test_make_feature (registry, DFQ_FEATURE_QUANTIZER, yaml);
}

static void
add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example)
{
    g_autoptr (GError) error = NULL;
    g_assert_true (DFQ_QUANTIZER_CLASS (q)->add_site (q, kind, site, example, 0, TRUE, TRUE, &error));
    g_assert_no_error (error);
}

/* The quantizer tensor named "<site>.<what>" (get_state). */
static DfqTensor *
state_tensor (DfqQuantizer *q, const char *site, const char *what)
{
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, state);
    g_autofree char *name = g_strdup_printf ("%s.%s", site, what);
    for (guint i = 0; i < state->len; i++)
        if (strcmp (((DfqTensor *) state->pdata[i])->name, name) == 0)
            return state->pdata[i];
    g_assert_not_reached ();
    return NULL;
}

static DfqTensor *
quantize_act (DfqQuantizer *q, DfqArena *arena, const char *site, DfqTensor *x)
{
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    return DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, site, x);
}

static DfqTensor *
new_act (DfqArena *arena, gint64 n, gint64 c, gint64 h, guint64 seed, float mean, float std)
{
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, n, c, h, h);
    dfq_rand_normal_fill (x, seed, 1, mean, std);
    return x;
}

/* ------------------------------------------------------------ gradients */

/* The function whose derivative the STE rule with in-range terms defines:
 * x^ = (q0 + v - v0) s + l, v = (clamp(x, l, u) - l) / s, s = (u - l)/(2^k-1),
 * with q0 = round(v0) frozen at the base point; sum(r * x^) in double. */
static double
clip_surrogate (const float *x, const float *r, const double *lo, const double *hi, const float *lo0,
                const float *hi0, const float *x0, gint64 n, gint64 C, gint64 inner, int bits)
{
    double levels = (double) ((1 << bits) - 1), sum = 0.0;
    for (gint64 i = 0; i < n; i++) {
        gint64 c = (i / inner) % C;
        float s0 = (hi0[c] - lo0[c]) / (float) levels;
        float xc0 = fminf (fmaxf (x0[i], lo0[c]), hi0[c]);
        double v0 = (double) ((xc0 - lo0[c]) / s0);
        double q0 = nearbyintf ((xc0 - lo0[c]) / s0);
        double s = (hi[c] - lo[c]) / levels;
        double xc = fmin (fmax (x[i], lo[c]), hi[c]);
        double v = (xc - lo[c]) / s;
        sum += r[i] * ((q0 + v - v0) * s + lo[c]);
    }
    return sum;
}

/* x holds values below l, inside and above u of every channel (away from
 * the kinks by more than the step of the differences); the analytic
 * gradients of sum(r * Q(x)) w.r.t. l, u and x match central differences. */
static void
test_clip_gradients (gconstpointer data)
{
    const gboolean in_range = GPOINTER_TO_INT (data);
    const int bits = 3;
    const gint64 N = 2, C = 3, H = 4, n = N * C * H * H, inner = H * H;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autofree char *yaml = g_strdup_printf ("use: acd\na_bits: %d\nlower: learn\nin_range_grad: %s\n", bits,
                                             in_range ? "true" : "false");
    DfqQuantizer *q = make_acd (yaml);
    DfqTensor *x = new_act (arena, N, C, H, 7, 0.0f, 1.5f);
    add_site (q, DFQ_SITE_ACT, "s", x);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_LEARN);
    DfqTensor *lo = state_tensor (q, "s", "clip_lo"), *hi = state_tensor (q, "s", "clip_hi");
    /* calibrate once (never calibrated), then put the clips inside the data */
    quantize_act (q, arena, "s", x);
    const float lo_v[3] = { -0.9f, -0.55f, -1.3f }, hi_v[3] = { 0.8f, 1.15f, 0.6f };
    memcpy (dfq_tensor_f32 (lo), lo_v, sizeof lo_v);
    memcpy (dfq_tensor_f32 (hi), hi_v, sizeof hi_v);
    float *xv = dfq_tensor_f32 (x);
    guint below = 0, inside = 0, above = 0;
    for (gint64 i = 0; i < n; i++) {
        gint64 c = (i / inner) % C;
        /* keep 0.01 away from l and u */
        if (fabsf (xv[i] - lo_v[c]) < 0.01f)
            xv[i] = lo_v[c] - 0.02f;
        if (fabsf (xv[i] - hi_v[c]) < 0.01f)
            xv[i] = hi_v[c] + 0.02f;
        below += xv[i] < lo_v[c];
        above += xv[i] > hi_v[c];
        inside += xv[i] > lo_v[c] && xv[i] < hi_v[c];
    }
    g_assert_cmpuint (below, >, 3);
    g_assert_cmpuint (above, >, 3);
    g_assert_cmpuint (inside, >, 20);
    dfq_tensor_set_param (x);
    DfqTensor *r = dfq_tensor_new_like (arena, x);
    dfq_rand_normal_fill (r, 11, 2, 0.0f, 1.0f);

    dfq_tensor_zero_grad (lo);
    dfq_tensor_zero_grad (hi);
    dfq_tensor_zero_grad (x);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *y = quantize_act (q, arena, "s", x);
    dfq_backward (dfq_sum (arena, dfq_mul (arena, y, r)), arena);
    dfq_set_grad_enabled (prev);

    g_autofree float *x0 = g_memdup2 (xv, (gsize) n * sizeof (float));
    const float *rv = dfq_tensor_f32 (r);
    double base_lo[3], base_hi[3];
    for (int c = 0; c < 3; c++) {
        base_lo[c] = lo_v[c];
        base_hi[c] = hi_v[c];
    }
    const double eps = 1e-3;
    /* d/dl, d/du */
    for (int c = 0; c < 3; c++) {
        for (int which = 0; which < 2; which++) {
            double *p = which == 0 ? base_lo : base_hi;
            double keep = p[c];
            p[c] = keep + eps;
            double fp = clip_surrogate (x0, rv, base_lo, base_hi, lo_v, hi_v, x0, n, C, inner, bits);
            p[c] = keep - eps;
            double fm = clip_surrogate (x0, rv, base_lo, base_hi, lo_v, hi_v, x0, n, C, inner, bits);
            p[c] = keep;
            double numeric = (fp - fm) / (2 * eps);
            /* without the in-range terms only the clipped elements count */
            double outside = 0.0;
            for (gint64 i = 0; i < n; i++)
                if ((i / inner) % C == c && (which == 0 ? x0[i] < lo_v[c] : x0[i] > hi_v[c]))
                    outside += rv[i];
            double analytic = dfq_tensor_f32 ((which == 0 ? lo : hi)->grad)[c];
            double want = in_range ? numeric : outside;
            g_assert_cmpfloat_with_epsilon (analytic, want, 2e-3 * (1.0 + fabs (want)));
            if (in_range) /* the in-range part is really there */
                g_assert_cmpfloat (fabs (numeric - outside), >, 1e-3);
        }
    }
    /* d/dx: r inside (STE), 0 outside, also by central differences */
    for (gint64 i = 0; i < n; i += 7) {
        g_autofree float *xp = g_memdup2 (x0, (gsize) n * sizeof (float));
        xp[i] = x0[i] + (float) eps;
        double fp = clip_surrogate (xp, rv, base_lo, base_hi, lo_v, hi_v, x0, n, C, inner, bits);
        xp[i] = x0[i] - (float) eps;
        double fm = clip_surrogate (xp, rv, base_lo, base_hi, lo_v, hi_v, x0, n, C, inner, bits);
        double numeric = (fp - fm) / (2 * eps);
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (x->grad)[i], numeric, 2e-3 * (1.0 + fabs (numeric)));
    }
    dfq_feature_free ((DfqFeature *) q);
}

/* ------------------------------------------------------------ calibration, levels */

static int
float_cmp (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return x < y ? -1 : x > y;
}

/* Two calibration batches: l_c, u_c = the mean over batches of each batch's
 * per-channel min / max; the lower clip of a ReLU site (all >= 0) is 0 with
 * lower: fixed0, the signed site's is learnt. */
static void
test_calibration (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqQuantizer *q = make_acd ("use: acd\na_bits: 4\n");
    DfqTensor *a = new_act (arena, 3, 4, 5, 1, 0.2f, 1.0f), *b = new_act (arena, 3, 4, 5, 2, -0.1f, 2.0f);
    DfqTensor *ra = dfq_relu (arena, a), *rb = dfq_relu (arena, b);
    add_site (q, DFQ_SITE_ACT, "signed", a);
    add_site (q, DFQ_SITE_ACT, "relu", ra);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    quantize_act (q, arena, "signed", a);
    quantize_act (q, arena, "signed", b);
    quantize_act (q, arena, "relu", ra);
    quantize_act (q, arena, "relu", rb);
    const float *lo = dfq_tensor_f32 (state_tensor (q, "signed", "clip_lo"));
    const float *hi = dfq_tensor_f32 (state_tensor (q, "signed", "clip_hi"));
    const float *rlo = dfq_tensor_f32 (state_tensor (q, "relu", "clip_lo"));
    const float *rhi = dfq_tensor_f32 (state_tensor (q, "relu", "clip_hi"));
    for (gint64 c = 0; c < 4; c++) {
        float mn[2] = { INFINITY, INFINITY }, mx[2] = { -INFINITY, -INFINITY }, rmx[2] = { 0, 0 };
        DfqTensor *t[2] = { a, b };
        for (int k = 0; k < 2; k++)
            for (gint64 o = 0; o < 3; o++)
                for (gint64 i = 0; i < 25; i++) {
                    float v = dfq_tensor_f32 (t[k])[(o * 4 + c) * 25 + i];
                    mn[k] = fminf (mn[k], v);
                    mx[k] = fmaxf (mx[k], v);
                    rmx[k] = fmaxf (rmx[k], fmaxf (v, 0.0f));
                }
        g_assert_cmpfloat_with_epsilon (lo[c], (mn[0] + mn[1]) / 2, 1e-6);
        g_assert_cmpfloat_with_epsilon (hi[c], (mx[0] + mx[1]) / 2, 1e-6);
        g_assert_cmpfloat (rlo[c], ==, 0.0f);
        g_assert_cmpfloat_with_epsilon (rhi[c], (rmx[0] + rmx[1]) / 2, 1e-6);
    }
    dfq_feature_free ((DfqFeature *) q);

    /* lower: learn keeps the ReLU site's calibrated minimum (0) but learns it */
    q = make_acd ("use: acd\na_bits: 4\nlower: learn\nact_init: percentile\npercentile: 90\n");
    add_site (q, DFQ_SITE_ACT, "signed", a);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    quantize_act (q, arena, "signed", a);
    /* 90th percentile of a channel's 75 values: the value of rank round(0.9 * 74) = 67 */
    for (gint64 c = 0; c < 4; c++) {
        float v[75];
        for (gint64 o = 0; o < 3; o++)
            memcpy (v + o * 25, dfq_tensor_f32 (a) + (o * 4 + c) * 25, 25 * sizeof (float));
        qsort (v, 75, sizeof (float), float_cmp);
        g_assert_cmpfloat (dfq_tensor_f32 (state_tensor (q, "signed", "clip_hi"))[c], ==, v[67]);
        g_assert_cmpfloat (dfq_tensor_f32 (state_tensor (q, "signed", "clip_lo"))[c], ==, v[7]);
    }
    dfq_feature_free ((DfqFeature *) q);
}

static guint
distinct (const float *v, gint64 n, gint64 stride_outer, gint64 inner, gint64 outer, float *mn, float *mx)
{
    GHashTable *seen = g_hash_table_new (g_int_hash, g_int_equal);
    g_autofree gint *keys = g_new (gint, n);
    gint64 k = 0;
    *mn = INFINITY;
    *mx = -INFINITY;
    for (gint64 o = 0; o < outer; o++)
        for (gint64 i = 0; i < inner; i++) {
            float f = v[o * stride_outer + i];
            memcpy (&keys[k], &f, sizeof f);
            g_hash_table_add (seen, &keys[k++]);
            *mn = fminf (*mn, f);
            *mx = fmaxf (*mx, f);
        }
    guint d = g_hash_table_size (seen);
    g_hash_table_unref (seen);
    return d;
}

/* Per-channel fake quantization: every channel of an activation (and every
 * output channel of a weight) holds at most 2^k values, inside [l_c, u_c];
 * channels differ in range, so a per-tensor grid would not fit them. */
static void
test_levels (gconstpointer data)
{
    const int bits = GPOINTER_TO_INT (data);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autofree char *yaml = g_strdup_printf ("use: acd\na_bits: %d\nw_bits: %d\nw_range: mse\n", bits, bits);
    DfqQuantizer *q = make_acd (yaml);
    const gint64 N = 4, C = 6, H = 6;
    DfqTensor *x = new_act (arena, N, C, H, 3, 0.0f, 1.0f);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++) /* channel c spans about (c + 1) x the unit range */
        dfq_tensor_f32 (x)[i] *= (float) ((i / (H * H)) % C + 1);
    DfqTensor *w = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 5, 3, 3, 3);
    dfq_rand_normal_fill (w, 4, 1, 0.0f, 0.3f);
    add_site (q, DFQ_SITE_ACT, "a", x);
    add_site (q, DFQ_SITE_WEIGHT, "w", w);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    quantize_act (q, arena, "a", x);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_EVAL);
    DfqTensor *y = quantize_act (q, arena, "a", x);
    const float *lo = dfq_tensor_f32 (state_tensor (q, "a", "clip_lo"));
    const float *hi = dfq_tensor_f32 (state_tensor (q, "a", "clip_hi"));
    guint most = 0;
    for (gint64 c = 0; c < C; c++) {
        float mn, mx;
        guint d = distinct (dfq_tensor_f32 (y) + c * H * H, N * H * H, C * H * H, H * H, N, &mn, &mx);
        g_assert_cmpuint (d, <=, 1u << bits);
        g_assert_cmpfloat (mn, >=, lo[c] - 1e-6f);
        g_assert_cmpfloat (mx, <=, hi[c] + 1e-6f);
        most = MAX (most, d);
    }
    g_assert_cmpuint (most, >=, (1u << bits) - 1); /* the grid is used */
    /* the channels' grids differ: more than 2^k values in the whole tensor */
    float mn, mx;
    g_assert_cmpuint (distinct (dfq_tensor_f32 (y), dfq_tensor_numel (y), 0, dfq_tensor_numel (y), 1, &mn, &mx), >,
                      1u << bits);

    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *wq = DFQ_QUANTIZER_CLASS (q)->quantize_weight (q, &fwd, "w", w);
    const float *ratio = dfq_tensor_f32 (state_tensor (q, "w", "w_ratio"));
    g_assert_cmpfloat (ratio[5], ==, 1.0f); /* chosen */
    for (gint64 c = 0; c < 5; c++) {
        g_assert_cmpfloat (ratio[c], >, 0.0f);
        g_assert_cmpfloat (ratio[c], <=, 1.0f);
        g_assert_cmpuint (distinct (dfq_tensor_f32 (wq) + c * 27, 27, 0, 27, 1, &mn, &mx), <=, 1u << bits);
    }
    dfq_feature_free ((DfqFeature *) q);
}

/* ------------------------------------------------------------ decay */

/* lambda * sum(u^2 + l^2), the fixed lower clips left out, and its gradient
 * 2 lambda u; nothing while calibrating. */
static void
test_decay (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqQuantizer *q = make_acd ("use: acd\nclip_decay: 0.5\n");
    DfqTensor *a = new_act (arena, 2, 3, 4, 5, 0.0f, 1.0f);
    DfqTensor *ra = dfq_relu (arena, a);
    add_site (q, DFQ_SITE_ACT, "signed", a);
    add_site (q, DFQ_SITE_ACT, "relu", ra);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    quantize_act (q, arena, "signed", a);
    quantize_act (q, arena, "relu", ra);
    g_assert_null (dfq_quantizer_regularizer (q, arena, 0.0));
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_LEARN);
    const float sl[3] = { -1.0f, -2.0f, 0.5f }, su[3] = { 1.5f, 2.0f, 3.0f };
    const float rl[3] = { 7.0f, 7.0f, 7.0f }, ru[3] = { 0.25f, 1.0f, 4.0f }; /* rl: held at 0, ignored */
    memcpy (dfq_tensor_f32 (state_tensor (q, "signed", "clip_lo")), sl, sizeof sl);
    memcpy (dfq_tensor_f32 (state_tensor (q, "signed", "clip_hi")), su, sizeof su);
    memcpy (dfq_tensor_f32 (state_tensor (q, "relu", "clip_lo")), rl, sizeof rl);
    memcpy (dfq_tensor_f32 (state_tensor (q, "relu", "clip_hi")), ru, sizeof ru);
    GArray *groups = dfq_quantizer_get_param_groups (q);
    g_assert_cmpuint (groups->len, ==, 1);
    DfqQuantParamGroup *g = &g_array_index (groups, DfqQuantParamGroup, 0);
    g_assert_cmpstr (g->name, ==, "clips");
    g_assert_cmpuint (g->params->len, ==, 4);
    for (guint i = 0; i < g->params->len; i++)
        dfq_tensor_zero_grad (g->params->pdata[i]);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *reg = dfq_quantizer_regularizer (q, arena, 0.3);
    g_assert_nonnull (reg);
    /* 0.5 * ((1 + 4 + .25) + (2.25 + 4 + 9) + (.0625 + 1 + 16)) */
    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (reg)[0], 0.5 * (5.25 + 15.25 + 17.0625), 1e-5);
    dfq_backward (reg, arena);
    dfq_set_grad_enabled (prev);
    for (int c = 0; c < 3; c++) {
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (state_tensor (q, "signed", "clip_lo")->grad)[c], sl[c], 1e-6);
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (state_tensor (q, "signed", "clip_hi")->grad)[c], su[c], 1e-6);
        g_assert_cmpfloat (dfq_tensor_f32 (state_tensor (q, "relu", "clip_lo")->grad)[c], ==, 0.0f);
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (state_tensor (q, "relu", "clip_hi")->grad)[c], ru[c], 1e-6);
    }
    dfq_quant_param_groups_free (groups);
    dfq_feature_free ((DfqFeature *) q);
    q = make_acd ("use: acd\nclip_decay: 0\n");
    add_site (q, DFQ_SITE_ACT, "signed", a);
    g_assert_null (dfq_quantizer_regularizer (q, arena, 0.0));
    dfq_feature_free ((DfqFeature *) q);
}

/* ------------------------------------------------------------ sqnr loss */

static DfqLoss *
make_sqnr (const char *yaml)
{
    return (DfqLoss *) dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, yaml);
}

/* Fills the loss's student tap set with quantization taps (Q, X) as a
 * forward would, and evaluates it. */
static double
sqnr_eval (DfqLoss *loss, DfqArena *arena, DfqTensor **xs, DfqTensor **qs, guint n, DfqTensor **out)
{
    if (loss->student_taps == NULL)
        loss->student_taps = dfq_tap_set_new (DFQ_LOSS_CLASS (loss)->student_tap_patterns (loss));
    dfq_tap_set_clear (loss->student_taps);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    dfq_forward_add_taps (&fwd, loss->student_taps);
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf ("site%u:quant", i);
        dfq_layer_tap (&fwd, name, DFQ_TAP_QUANT_ACT, qs[i], xs[i], NULL);
    }
    DfqStepContext ctx = { 0 };
    ctx.arena = arena;
    DfqLossInputs in = { 0 };
    g_autoptr (GError) error = NULL;
    DfqTensor *v = DFQ_LOSS_CLASS (loss)->compute (loss, &ctx, &in, &error);
    g_assert_no_error (error);
    if (out != NULL)
        *out = v;
    return dfq_tensor_f32 (v)[0];
}

/* SQNR per layer and per channel, dB and linear, against sums by hand. */
static void
test_sqnr_values (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *xs[2], *qs[2];
    for (int l = 0; l < 2; l++) {
        xs[l] = new_act (arena, 2, 3, 4, 20 + l, 0.5f, 1.0f);
        qs[l] = new_act (arena, 2, 3, 4, 30 + l, 0.0f, 0.1f * (l + 1));
        for (gint64 i = 0; i < dfq_tensor_numel (qs[l]); i++) /* Q = X + noise */
            dfq_tensor_f32 (qs[l])[i] += dfq_tensor_f32 (xs[l])[i];
    }
    /* one dead channel in layer 1: no signal, left out of the per-channel mean */
    for (gint64 o = 0; o < 2; o++)
        for (gint64 i = 0; i < 16; i++)
            dfq_tensor_f32 (xs[1])[(o * 3 + 2) * 16 + i] = 0.0f;
    double sig[2][4] = { { 0 } }, noise[2][4] = { { 0 } }; /* [layer][channel], [3] whole layer */
    for (int l = 0; l < 2; l++)
        for (gint64 i = 0; i < 96; i++) {
            double xv = dfq_tensor_f32 (xs[l])[i], e = xv - dfq_tensor_f32 (qs[l])[i];
            gint64 c = (i / 16) % 3;
            sig[l][c] += xv * xv;
            noise[l][c] += e * e;
            sig[l][3] += xv * xv;
            noise[l][3] += e * e;
        }
    double db_layer = 0, lin_layer = 0, db_chan = 0, lin_chan = 0;
    for (int l = 0; l < 2; l++) {
        db_layer += -log10 (sig[l][3] / (noise[l][3] + 1e-12)) / 2.0;
        lin_layer += noise[l][3] / sig[l][3] / 2.0;
        int nc = l == 1 ? 2 : 3;
        double dbc = 0, linc = 0;
        for (int c = 0; c < nc; c++) {
            dbc += -log10 (sig[l][c] / (noise[l][c] + 1e-12)) / nc;
            linc += noise[l][c] / sig[l][c] / nc;
        }
        db_chan += dbc / 2.0;
        lin_chan += linc / 2.0;
    }
    struct {
        const char *yaml;
        double want;
    } cases[] = {
        { "use: sqnr\n", db_layer },
        { "use: sqnr\nform: linear\n", lin_layer },
        { "use: sqnr\ngranularity: channel\n", db_chan },
        { "use: sqnr\ngranularity: channel\nform: linear\n", lin_chan },
    };
    for (guint k = 0; k < G_N_ELEMENTS (cases); k++) {
        DfqLoss *loss = make_sqnr (cases[k].yaml);
        double v = sqnr_eval (loss, arena, xs, qs, 2, NULL);
        g_test_message ("%s -> %g (hand %g)", cases[k].yaml, v, cases[k].want);
        g_assert_cmpfloat_with_epsilon (v, cases[k].want, 1e-4 * (1.0 + fabs (cases[k].want)));
        dfq_feature_free ((DfqFeature *) loss);
    }
    /* sites: only the matching taps count */
    DfqLoss *loss = make_sqnr ("use: sqnr\nsites: ['site1']\n");
    g_assert_cmpfloat_with_epsilon (sqnr_eval (loss, arena, xs, qs, 2, NULL),
                                    -log10 (sig[1][3] / (noise[1][3] + 1e-12)), 1e-4);
    dfq_feature_free ((DfqFeature *) loss);
    /* no quantized tensor (a full-precision student): 0 */
    loss = make_sqnr ("use: sqnr\n");
    g_assert_cmpfloat (sqnr_eval (loss, arena, xs, qs, 0, NULL), ==, 0.0);
    dfq_feature_free ((DfqFeature *) loss);
}

/* A 2-bit signed site with min/max clips: the SQNR loss alone (SGD on the
 * clips only) moves u and l inwards and raises the SQNR, per layer and per
 * channel, when the clips get the in-range terms. With the outside
 * gradients only (PACT's rule) it cannot: from min/max clips nothing is
 * clipped, so the clips get no gradient at all (and from narrower ones it
 * could only widen them). */
static void
test_sqnr_moves_clip (gconstpointer data)
{
    const char *granularity = data;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (DfqArena) step = dfq_arena_new (0);
    DfqQuantizer *q = make_acd ("use: acd\na_bits: 2\nin_range_grad: true\n");
    DfqQuantizer *pact = make_acd ("use: acd\na_bits: 2\n");
    DfqTensor *x = new_act (arena, 8, 2, 4, 9, 0.0f, 1.0f);
    add_site (q, DFQ_SITE_ACT, "s", x);
    add_site (pact, DFQ_SITE_ACT, "s", x);
    g_autofree char *yaml = g_strdup_printf ("use: sqnr\ngranularity: %s\n", granularity);
    DfqLoss *loss = make_sqnr (yaml);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    quantize_act (q, arena, "s", x);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_LEARN);
    {
        DfqTensor *plo = state_tensor (pact, "s", "clip_lo"), *phi = state_tensor (pact, "s", "clip_hi");
        dfq_quantizer_set_mode (pact, DFQ_QUANT_MODE_LEARN); /* calibrates on its first batch */
        dfq_tensor_zero_grad (plo);
        dfq_tensor_zero_grad (phi);
        gboolean prev = dfq_set_grad_enabled (TRUE);
        DfqTensor *y = quantize_act (pact, step, "s", x), *v;
        sqnr_eval (loss, step, &x, &y, 1, &v);
        dfq_backward (v, step);
        dfq_set_grad_enabled (prev);
        for (int c = 0; c < 2; c++) {
            g_assert_cmpfloat (dfq_tensor_f32 (plo->grad)[c], ==, 0.0f);
            g_assert_cmpfloat (dfq_tensor_f32 (phi->grad)[c], ==, 0.0f);
        }
        dfq_arena_reset (step);
    }
    DfqTensor *lo = state_tensor (q, "s", "clip_lo"), *hi = state_tensor (q, "s", "clip_hi");
    float lo0[2], hi0[2];
    memcpy (lo0, dfq_tensor_f32 (lo), sizeof lo0);
    memcpy (hi0, dfq_tensor_f32 (hi), sizeof hi0);
    DfqOptimConfig oc;
    dfq_optim_config_init (&oc, DFQ_OPTIM_SGD);
    oc.lr = 0.05;
    DfqOptim *opt = dfq_optim_new (&oc);
    dfq_optim_add_param (opt, lo);
    dfq_optim_add_param (opt, hi);
    double first = 0, last = 0;
    for (int it = 0; it < 60; it++) {
        dfq_arena_reset (step);
        dfq_optim_zero_grad (opt);
        gboolean prev = dfq_set_grad_enabled (TRUE);
        DfqTensor *y = quantize_act (q, step, "s", x);
        DfqTensor *v;
        last = sqnr_eval (loss, step, &x, &y, 1, &v);
        if (it == 0)
            first = last;
        dfq_backward (v, step);
        dfq_set_grad_enabled (prev);
        dfq_optim_step (opt);
    }
    g_test_message ("%s: loss %g -> %g; u %g %g -> %g %g", granularity, first, last, hi0[0], hi0[1],
                    dfq_tensor_f32 (hi)[0], dfq_tensor_f32 (hi)[1]);
    g_assert_cmpfloat (last, <, first - 0.05); /* SQNR up by more than 0.5 dB */
    for (int c = 0; c < 2; c++) {
        g_assert_cmpfloat (dfq_tensor_f32 (hi)[c], <, hi0[c] - 0.05f);
        g_assert_cmpfloat (dfq_tensor_f32 (lo)[c], >, lo0[c] + 0.05f);
    }
    dfq_optim_free (opt);
    dfq_feature_free ((DfqFeature *) loss);
    dfq_feature_free ((DfqFeature *) q);
    dfq_feature_free ((DfqFeature *) pact);
}

/* ------------------------------------------------------------ taps and sites */

/* With a quantizer, a forward emits "<site>:quant" (Q(X), X) for every
 * activation site and "<layer>:wquant" for every weight; without one, none. */
static void
test_quant_taps (void)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqModel *m = (DfqModel *) dfq_test_make_feature (registry, DFQ_FEATURE_MODEL,
                                                      "use: mobilenetv2-cifar\nin_channels: 1\nimage_size: 16\n"
                                                      "width_mult: 0.25\nact_sites: conv_inputs\n");
    g_autoptr (GError) error = NULL;
    g_autoptr (GPtrArray) sites = dfq_model_list_sites (m, 1, &error);
    g_assert_no_error (error);
    guint n_act = 0, n_w = 0, n_out = 0;
    for (guint i = 0; i < sites->len; i++) {
        const DfqModelPoint *p = sites->pdata[i];
        n_act += p->kind == DFQ_SITE_ACT;
        n_w += p->kind == DFQ_SITE_WEIGHT;
        n_out += g_str_has_suffix (p->name, ".out");
    }
    g_assert_cmpuint (n_out, ==, 17); /* one per inverted residual block */
    DfqQuantizer *q = make_acd ("use: acd\n");
    g_assert_true (dfq_quantizer_attach (q, m, &error));
    g_assert_no_error (error);
    const char *const pats[] = { "*:quant", "*:wquant", NULL };
    g_autoptr (DfqTapSet) set = dfq_tap_set_new (pats);
    DfqTensor *x = new_act (arena, 2, 1, 16, 3, 0.0f, 1.0f);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    dfq_forward_add_taps (&fwd, set);
    dfq_model_forward (m, &fwd, x); /* no quantizer */
    g_assert_cmpuint (dfq_tap_set_size (set), ==, 0);
    dfq_quantizer_hook (q, &fwd);
    dfq_model_forward (m, &fwd, x);
    g_assert_cmpuint (dfq_tap_set_size (set), ==, n_act + n_w);
    const DfqTap *t = dfq_tap_set_find (set, "features.1.out:quant");
    g_assert_nonnull (t);
    g_assert_cmpint (t->kind, ==, DFQ_TAP_QUANT_ACT);
    g_assert_true (dfq_tensor_same_shape (t->tensor, t->aux0));
    gboolean negative = FALSE; /* a signed site: its lower clip is learnt */
    for (gint64 i = 0; i < dfq_tensor_numel (t->aux0); i++)
        negative |= dfq_tensor_f32 (t->aux0)[i] < 0.0f;
    g_assert_true (negative);
    g_assert_cmpfloat (dfq_tensor_f32 (state_tensor (q, "features.1.out", "clip_lo"))[0], <, 0.0f);
    t = dfq_tap_set_find (set, "features.0.0:wquant");
    g_assert_nonnull (t);
    g_assert_cmpint (t->kind, ==, DFQ_TAP_QUANT_WEIGHT);
    dfq_feature_free ((DfqFeature *) q);
    dfq_feature_free ((DfqFeature *) m);

    /* the default keeps MobileNetV2's sites as they were: after each ReLU6 only */
    m = (DfqModel *) dfq_test_make_feature (registry, DFQ_FEATURE_MODEL,
                                            "use: mobilenetv2-cifar\nin_channels: 1\nimage_size: 16\n"
                                            "width_mult: 0.25\n");
    g_autoptr (GPtrArray) plain = dfq_model_list_sites (m, 1, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (plain->len + 17, ==, sites->len);
    for (guint i = 0; i < plain->len; i++)
        g_assert_false (g_str_has_suffix (((DfqModelPoint *) plain->pdata[i])->name, ".out"));
    dfq_feature_free ((DfqFeature *) m);
}

/* ------------------------------------------------------------ real-stream */

/* Batches of the online real-data source are a function of (seed, step):
 * step 5 of a fresh source (a resumed run) equals step 5 after steps 0-4;
 * labels come with them; the augmentation changes the images (a flip or a
 * shifted crop) and two seeds give other batches. */
static void
test_real_stream (void)
{
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 3, 2, 8, 1, 28);
    f.ctx.dataset = "fashion-mnist";
    DfqSynthesizer *a = dfq_test_synth_new (&f, "use: real-stream\n", FALSE);
    DfqSynthesizer *b = dfq_test_synth_new (&f, "use: real-stream\n", FALSE);
    DfqSynthesizer *plain = dfq_test_synth_new (&f, "use: real-stream\naugment: none\n", FALSE);
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqSynthBatch out;
    for (gint64 step = 0; step <= 5; step++)
        dfq_test_synth_step (&f, a, step, &out);
    g_assert_nonnull (out.labels);
    DfqTensor *seq = dfq_tensor_dup (keep, out.images), *seq_y = dfq_tensor_dup (keep, out.labels);
    dfq_test_synth_step (&f, b, 5, &out);
    g_assert_cmpmem (dfq_tensor_f32 (out.images), dfq_tensor_numel (seq) * 4, dfq_tensor_f32 (seq),
                     dfq_tensor_numel (seq) * 4);
    g_assert_cmpmem (dfq_tensor_i32 (out.labels), 8 * 4, dfq_tensor_i32 (seq_y), 8 * 4);
    /* the same samples without augmentation: same labels, other pixels */
    dfq_test_synth_step (&f, plain, 5, &out);
    g_assert_cmpmem (dfq_tensor_i32 (out.labels), 8 * 4, dfq_tensor_i32 (seq_y), 8 * 4);
    g_assert_true (memcmp (dfq_tensor_f32 (out.images), dfq_tensor_f32 (seq), dfq_tensor_numel (seq) * 4) != 0);
    /* another seed, another batch */
    f.ctx.seed = 4;
    DfqSynthesizer *c = dfq_test_synth_new (&f, "use: real-stream\n", FALSE);
    dfq_test_synth_step (&f, c, 5, &out);
    g_assert_true (memcmp (dfq_tensor_f32 (out.images), dfq_tensor_f32 (seq), dfq_tensor_numel (seq) * 4) != 0);
    dfq_feature_free ((DfqFeature *) a);
    dfq_feature_free ((DfqFeature *) b);
    dfq_feature_free ((DfqFeature *) c);
    dfq_feature_free ((DfqFeature *) plain);
    dfq_test_synth_clear (&f);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_QUANTIZER, "acd"));
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "sqnr"));

    g_test_add_data_func ("/plugin/acd/clip-gradients/outside", GINT_TO_POINTER (FALSE), test_clip_gradients);
    g_test_add_data_func ("/plugin/acd/clip-gradients/in-range", GINT_TO_POINTER (TRUE), test_clip_gradients);
    g_test_add_func ("/plugin/acd/calibration", test_calibration);
    g_test_add_data_func ("/plugin/acd/levels/2bit", GINT_TO_POINTER (2), test_levels);
    g_test_add_data_func ("/plugin/acd/levels/3bit", GINT_TO_POINTER (3), test_levels);
    g_test_add_func ("/plugin/acd/decay", test_decay);
    g_test_add_func ("/plugin/sqnr/values", test_sqnr_values);
    g_test_add_data_func ("/plugin/sqnr/moves-clip/layer", "layer", test_sqnr_moves_clip);
    g_test_add_data_func ("/plugin/sqnr/moves-clip/channel", "channel", test_sqnr_moves_clip);
    g_test_add_func ("/plugin/acd/quant-taps", test_quant_taps);
    g_test_add_func ("/plugin/real-stream/by-step", test_real_stream);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
