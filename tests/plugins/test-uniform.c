/* Quantizer plugin `uniform` (plugins/quantizers/uniform): the GDFQ-family
 * min/max fake quantizer of METHODS.md 1.3, loaded through the registry and
 * built from YAML. Weight grids on a real ResNet student, the half-step error
 * bound, the two STE variants, the GDFQ EMA recurrence (with its overshoot),
 * plain EMA, ZeroQ min/max, freezing, per-site overrides, errors and
 * determinism. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

/* ------------------------------------------------------------ helpers */

static DfqFeature *
feature_from_yaml (DfqFeatureKind kind, const char *yaml, GError **error)
{
    DfqConfigNode *node = dfq_config_parse (yaml, -1, "test-uniform.yaml", error);
    g_assert_nonnull (node);
    const char *use = dfq_config_mapping_get (node, "use")->scalar;
    const DfqFeatureClass *klass = dfq_registry_find (registry, kind, use);
    g_assert_nonnull (klass);
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, FALSE, "test", error);
    dfq_config_node_free (node);
    return f;
}

static DfqQuantizer *
make_quantizer (const char *yaml)
{
    g_autoptr (GError) error = NULL;
    DfqFeature *f = feature_from_yaml (DFQ_FEATURE_QUANTIZER, yaml, &error);
    g_assert_no_error (error);
    g_assert_nonnull (f);
    return (DfqQuantizer *) f;
}

static DfqModel *
make_model (const char *yaml)
{
    g_autoptr (GError) error = NULL;
    DfqFeature *f = feature_from_yaml (DFQ_FEATURE_MODEL, yaml, &error);
    g_assert_no_error (error);
    g_assert_nonnull (f);
    return (DfqModel *) f;
}

static void
add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example)
{
    g_autoptr (GError) error = NULL;
    g_assert_true (DFQ_QUANTIZER_CLASS (q)->add_site (q, kind, site, example, 0, TRUE, TRUE, &error));
    g_assert_no_error (error);
}

/* The act_range tensor of @site through get_state. */
static float *
act_range (DfqQuantizer *q, const char *site)
{
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, state);
    g_autofree char *name = g_strdup_printf ("%s.act_range", site);
    for (guint i = 0; i < state->len; i++) {
        DfqTensor *t = state->pdata[i];
        if (strcmp (t->name, name) == 0) {
            g_assert_cmpint (dfq_tensor_numel (t), ==, 3);
            return dfq_tensor_f32 (t);
        }
    }
    g_assert_not_reached ();
    return NULL;
}

static int
float_cmp (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return x < y ? -1 : x > y;
}

static guint
count_distinct (const float *v, gint64 n)
{
    g_autofree float *s = g_memdup2 (v, (gsize) n * sizeof (float));
    qsort (s, (size_t) n, sizeof (float), float_cmp);
    guint d = n > 0;
    for (gint64 i = 1; i < n; i++)
        d += s[i] != s[i - 1];
    return d;
}

/* Checks y = Q(x) per channel (@n_ch blocks of @x): at most 2^bits distinct
 * values, each within half a step of its input, where the step is that of the
 * channel's [min, max] (or [-max|x|, max|x|] when @symmetric). Returns the
 * largest number of distinct values over channels. */
static guint
assert_quantized (const DfqTensor *xt, const DfqTensor *yt, gint64 n_ch, int bits, gboolean symmetric,
                  const char *what)
{
    const float *x = dfq_tensor_f32 (xt), *y = dfq_tensor_f32 (yt);
    gint64 inner = dfq_tensor_numel (xt) / n_ch;
    guint most = 0;
    for (gint64 c = 0; c < n_ch; c++) {
        const float *xc = x + c * inner, *yc = y + c * inner;
        float lo = xc[0], hi = xc[0];
        for (gint64 i = 0; i < inner; i++) {
            lo = MIN (lo, xc[i]);
            hi = MAX (hi, xc[i]);
        }
        if (symmetric) {
            float m = MAX (fabsf (lo), fabsf (hi));
            lo = -m;
            hi = m;
        }
        double step = ((double) hi - lo) / ((1 << bits) - 1);
        double tol = 0.5 * step + 1e-6 * (fabs (lo) + fabs (hi)) + 1e-9;
        double worst = 0.0;
        for (gint64 i = 0; i < inner; i++)
            worst = MAX (worst, fabs ((double) yc[i] - xc[i]));
        guint distinct = count_distinct (yc, inner);
        if (worst > tol || distinct > (1u << bits))
            g_test_fail_printf ("%s channel %" G_GINT64_FORMAT ": %d bits, %u distinct values, max error %.3g > half step %.3g",
                                what, c, bits, distinct, worst, 0.5 * step);
        most = MAX (most, distinct);
    }
    return most;
}

/* A forward's quantization hooks wrapped to record what goes in and out. */
typedef struct {
    DfqQuantizeFn inner_weight;
    DfqQuantizeFn inner_act;
    gpointer inner_data;
    GHashTable *w_in, *w_out, *a_in, *a_out; /* site -> DfqTensor * */
    GPtrArray *w_order;                      /* site names in forward order */
} Capture;

static DfqTensor *
capture_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *w)
{
    Capture *c = data;
    DfqTensor *y = c->inner_weight (c->inner_data, fwd, site, w);
    g_hash_table_insert (c->w_in, g_strdup (site), w);
    g_hash_table_insert (c->w_out, g_strdup (site), y);
    g_ptr_array_add (c->w_order, g_strdup (site));
    return y;
}

static DfqTensor *
capture_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    Capture *c = data;
    DfqTensor *y = c->inner_act (c->inner_data, fwd, site, x);
    g_hash_table_insert (c->a_in, g_strdup (site), x);
    g_hash_table_insert (c->a_out, g_strdup (site), y);
    return y;
}

static void
capture_init (Capture *c, DfqQuantizer *q, DfqForward *fwd)
{
    dfq_quantizer_hook (q, fwd);
    c->inner_weight = fwd->quantize_weight;
    c->inner_act = fwd->quantize_act;
    c->inner_data = fwd->quant_data;
    c->w_in = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    c->w_out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    c->a_in = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    c->a_out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    c->w_order = g_ptr_array_new_with_free_func (g_free);
    fwd->quantize_weight = capture_weight;
    fwd->quantize_act = capture_act;
    fwd->quant_data = c;
}

static void
capture_clear (Capture *c)
{
    g_hash_table_unref (c->w_in);
    g_hash_table_unref (c->w_out);
    g_hash_table_unref (c->a_in);
    g_hash_table_unref (c->a_out);
    g_ptr_array_unref (c->w_order);
}

#define RESNET_YAML "use: resnet-cifar\ndepth: 20\nin_channels: 3\nimage_size: 16\ninit_seed: 3\n"

/* One forward of a ResNet-20 student through @q (attached here) with the
 * hooks captured; calibrating as given. */
static void
run_resnet (DfqQuantizer *q, DfqModel *student, DfqArena *arena, gboolean calibrating, Capture *cap)
{
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, student->in_channels, student->height, student->width);
    dfq_rand_normal_fill (x, 11, 0, 0.0f, 1.0f);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    capture_init (cap, q, &fwd);
    dfq_quantizer_set_calibrating (q, calibrating);
    DfqTensor *logits = dfq_model_forward (student, &fwd, x);
    dfq_set_grad_enabled (prev);
    g_assert_true (dfq_tensor_all_finite (logits));
}

/* ------------------------------------------------------------ tests */

static void
test_weight_levels (void)
{
    g_test_summary ("4-bit weights of every conv/linear layer of a ResNet-20 student have at most 16 distinct values "
                    "per output channel, within half a step of the float weights");
    g_autoptr (DfqFeature) model = (DfqFeature *) make_model (RESNET_YAML);
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\nw_bits: 4\na_bits: 4\n");
    DfqModel *student = (DfqModel *) model;
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_quantizer_attach (q, student, &error));
    g_assert_no_error (error);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    Capture cap;
    run_resnet (q, student, arena, TRUE, &cap);

    /* 21 convs + fc; 19 ReLUs */
    g_assert_cmpuint (g_hash_table_size (cap.w_out), ==, 22);
    g_assert_cmpuint (g_hash_table_size (cap.a_out), ==, 19);
    for (guint i = 0; i < cap.w_order->len; i++) {
        const char *site = cap.w_order->pdata[i];
        DfqTensor *w = g_hash_table_lookup (cap.w_in, site);
        DfqTensor *wq = g_hash_table_lookup (cap.w_out, site);
        g_assert_true (w != wq);
        g_autofree char *param = g_strdup_printf ("%s.weight", site);
        g_assert_true (w == dfq_model_get (student, param)); /* the real float weights */
        guint most = assert_quantized (w, wq, w->shape[0], 4, FALSE, site);
        g_assert_cmpuint (most, <=, 16);
    }
    /* activations: per tensor, at most 16 levels */
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, cap.a_out);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        DfqTensor *y = value;
        g_assert_cmpuint (count_distinct (dfq_tensor_f32 (y), dfq_tensor_numel (y)), <=, 16);
    }
    capture_clear (&cap);
}

static void
test_overrides (void)
{
    g_test_summary ("overrides w:first=8 / w:last=8 put the stem conv and the classifier on a 256-level grid, "
                    "the rest stays at 4 bits; a:first=32 leaves the first ReLU in float, globs and a:last apply");
    g_autoptr (DfqFeature) model = (DfqFeature *) make_model (RESNET_YAML);
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer (
        "use: uniform\noverrides: ['w:first=8', 'w:last=8', 'a:first=32', 'a:layers.1.*=3', 'a:last=2']\n");
    DfqModel *student = (DfqModel *) model;
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_quantizer_attach (q, student, &error));
    g_assert_no_error (error);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    Capture cap;
    run_resnet (q, student, arena, TRUE, &cap);

    g_assert_cmpuint (cap.w_order->len, ==, 22);
    for (guint i = 0; i < cap.w_order->len; i++) {
        const char *site = cap.w_order->pdata[i];
        DfqTensor *w = g_hash_table_lookup (cap.w_in, site);
        DfqTensor *wq = g_hash_table_lookup (cap.w_out, site);
        gboolean edge = i == 0 || i + 1 == cap.w_order->len;
        guint most = assert_quantized (w, wq, w->shape[0], edge ? 8 : 4, FALSE, site);
        if (edge) {
            /* more than 16 levels used: really finer than 4 bits */
            g_test_message ("%s: up to %u distinct values per channel at 8 bits", site, most);
            g_assert_cmpuint (most, >, 16);
            g_assert_cmpuint (most, <=, 256);
        } else {
            g_assert_cmpuint (most, <=, 16);
        }
    }
    g_assert_cmpstr (cap.w_order->pdata[0], ==, "conv");
    g_assert_cmpstr (cap.w_order->pdata[21], ==, "fc");

    /* a:first=32: the stem ReLU output is passed through untouched */
    g_assert_true (g_hash_table_lookup (cap.a_in, "relu") == g_hash_table_lookup (cap.a_out, "relu"));
    /* a:layers.1.*=3 */
    const char *three[] = { "layers.1.relu1", "layers.1.relu2" };
    for (guint i = 0; i < G_N_ELEMENTS (three); i++) {
        DfqTensor *y = g_hash_table_lookup (cap.a_out, three[i]);
        guint d = count_distinct (dfq_tensor_f32 (y), dfq_tensor_numel (y));
        g_assert_cmpuint (d, <=, 8);
        g_assert_cmpuint (d, >, 4);
    }
    /* a:last=2 (the last ReLU in forward order) */
    DfqTensor *y = g_hash_table_lookup (cap.a_out, "layers.8.relu2");
    g_assert_cmpuint (count_distinct (dfq_tensor_f32 (y), dfq_tensor_numel (y)), <=, 4);
    /* the others: default 4 bits, and really quantized */
    y = g_hash_table_lookup (cap.a_out, "layers.0.relu1");
    g_assert_true (y != g_hash_table_lookup (cap.a_in, "layers.0.relu1"));
    g_assert_cmpuint (count_distinct (dfq_tensor_f32 (y), dfq_tensor_numel (y)), <=, 16);
    capture_clear (&cap);
}

typedef struct {
    int bits;
    gboolean per_channel;
    gboolean symmetric;
} DequantCase;

static const DequantCase dequant_cases[] = {
    { 2, TRUE, FALSE },
    { 3, TRUE, FALSE },
    { 4, TRUE, FALSE },
    { 8, TRUE, FALSE },
    { 4, FALSE, FALSE },
    { 8, FALSE, FALSE },
    { 4, TRUE, TRUE },
    { 3, FALSE, TRUE },
    { 8, TRUE, TRUE },
    { 16, TRUE, FALSE },
};

static void
test_dequant_error (gconstpointer data)
{
    const DequantCase *c = data;
    g_test_summary ("Every quantized weight lies within half a step of its float value, with at most 2^k values "
                    "per channel (per tensor when per_channel is false)");
    g_autofree char *yaml = g_strdup_printf ("use: uniform\nw_bits: %d\nper_channel: %s\nsymmetric: %s\n", c->bits,
                                             c->per_channel ? "true" : "false", c->symmetric ? "true" : "false");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer (yaml);
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *w = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 8, 16, 3, 3);
    dfq_rand_normal_fill (w, 7, (guint64) c->bits, 0.1f, 0.5f);
    /* one channel entirely positive, one constant: ranges need not contain 0 */
    float *d = dfq_tensor_f32 (w);
    for (int i = 0; i < 144; i++) {
        d[144 + i] = 1.0f + fabsf (d[144 + i]);
        d[288 + i] = -0.75f;
    }
    add_site (q, DFQ_SITE_WEIGHT, "w", w);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *wq = DFQ_QUANTIZER_CLASS (q)->quantize_weight (q, &fwd, "w", w);
    g_assert_true (dfq_tensor_all_finite (wq));
    assert_quantized (w, wq, c->per_channel ? 8 : 1, c->bits, c->symmetric, "w");
    if (c->per_channel && !c->symmetric)
        for (int i = 0; i < 144; i++) /* a constant channel (the 1e-8 range guard) is kept */
            g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (wq)[288 + i], -0.75f, 1e-6f);
}

static void
test_ste (gconstpointer data)
{
    gboolean clipped = GPOINTER_TO_INT (data);
    g_test_summary (clipped ? "Clipped STE: gradient passes inside the activation range, zero outside"
                            : "Plain STE (GDFQ): the gradient passes unchanged for weights and activations, even "
                              "outside the range");
    g_autofree char *yaml = g_strdup_printf ("use: uniform\nw_bits: 3\na_bits: 3\nste: %s\n", clipped ? "clipped" : "plain");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer (yaml);
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    gboolean prev = dfq_set_grad_enabled (TRUE);

    /* weights: the range is the data's min/max, so nothing is outside */
    DfqTensor *w = dfq_tensor_new_2d (params, DFQ_DTYPE_F32, 6, 10);
    dfq_rand_normal_fill (w, 1, 0, 0.0f, 1.0f);
    dfq_tensor_set_param (w);
    DfqTensor *x = dfq_tensor_new_4d (params, DFQ_DTYPE_F32, 2, 3, 4, 4);
    dfq_rand_uniform_fill (x, 1, 1, -1.0f, 1.0f);
    dfq_tensor_set_param (x);
    add_site (q, DFQ_SITE_WEIGHT, "fc", w);
    add_site (q, DFQ_SITE_ACT, "relu", x);
    /* a frozen activation range [0, 0.5] */
    float *r = act_range (q, "relu");
    r[0] = 0.0f;
    r[1] = 0.5f;
    dfq_quantizer_set_calibrating (q, FALSE);

    DfqForward fwd;
    dfq_forward_init (&fwd, arena, TRUE);
    DfqTensor *gw = dfq_tensor_new_like (params, w);
    DfqTensor *gx = dfq_tensor_new_like (params, x);
    dfq_rand_normal_fill (gw, 2, 0, 0.0f, 1.0f);
    dfq_rand_normal_fill (gx, 2, 1, 0.0f, 1.0f);
    DfqTensor *wq = DFQ_QUANTIZER_CLASS (q)->quantize_weight (q, &fwd, "fc", w);
    DfqTensor *xq = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
    DfqTensor *loss = dfq_add (arena, dfq_sum (arena, dfq_mul (arena, wq, gw)), dfq_sum (arena, dfq_mul (arena, xq, gx)));
    dfq_backward (loss, arena);
    dfq_set_grad_enabled (prev);

    const float *dw = dfq_tensor_f32 (w->grad), *dx = dfq_tensor_f32 (x->grad);
    for (gint64 i = 0; i < dfq_tensor_numel (w); i++)
        g_assert_cmpfloat (dw[i], ==, dfq_tensor_f32 (gw)[i]);
    guint outside = 0;
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
        float v = dfq_tensor_f32 (x)[i];
        gboolean in = v >= 0.0f && v <= 0.5f;
        outside += !in;
        float want = (!clipped || in) ? dfq_tensor_f32 (gx)[i] : 0.0f;
        g_assert_cmpfloat (dx[i], ==, want);
    }
    g_assert_cmpuint (outside, >, 10);
}

/* Batch [2,3,5,5] with every value in [lo, hi] and both ends present. */
static DfqTensor *
batch_with_range (DfqArena *arena, guint64 stream, float lo, float hi)
{
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, 3, 5, 5);
    dfq_rand_uniform_fill (x, 99, stream, lo, hi);
    float *d = dfq_tensor_f32 (x);
    d[7] = lo;
    d[31] = hi;
    return x;
}

/* y == dfq_fake_quant(x, lo, hi): the site quantized with exactly this range. */
static void
assert_quantized_with (const DfqTensor *x, const DfqTensor *y, float lo, float hi, int bits)
{
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *want = dfq_fake_quant (a, (DfqTensor *) x, dfq_tensor_new_scalar (a, lo), dfq_tensor_new_scalar (a, hi),
                                      -1, bits, DFQ_STE_PLAIN);
    dfq_set_grad_enabled (prev);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (want, y), ==, 0.0f);
}

static void
test_ema_gdfq (void)
{
    g_test_summary ("act_range ema follows GDFQ QuantAct step by step: beta_t *= 0.9, r = (0.9 r + 0.1 m) / (1 - beta_t), "
                    "overshooting to ~3945 at update 21 for a constant max of 1; each batch is quantized with the range "
                    "updated by it; frozen, the range does not move");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\na_bits: 4\nact_range: ema\n");
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *example = batch_with_range (arena, 0, 0.0f, 1.0f);
    add_site (q, DFQ_SITE_ACT, "layers.0.relu1", example);
    float *r = act_range (q, "layers.0.relu1");
    g_assert_cmpfloat (r[0], ==, 0.0f);
    g_assert_cmpfloat (r[1], ==, 0.0f);
    g_assert_cmpfloat (r[2], ==, 1.0f);

    dfq_quantizer_set_calibrating (q, TRUE);
    double ref_min = 0.0, ref_max = 0.0, beta_t = 1.0, peak = 0.0;
    int peak_at = 0;
    const float m = -0.25f, M = 1.0f;
    for (int t = 1; t <= 30; t++) {
        dfq_arena_reset (arena);
        DfqTensor *x = batch_with_range (arena, (guint64) t, m, M);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "layers.0.relu1", x);
        beta_t *= 0.9;
        ref_min = (ref_min * 0.9 + m * 0.1) / (1.0 - beta_t);
        ref_max = (ref_max * 0.9 + M * 0.1) / (1.0 - beta_t);
        g_assert_cmpfloat (fabs (r[0] - ref_min), <=, 2e-5 * fabs (ref_min));
        g_assert_cmpfloat (fabs (r[1] - ref_max), <=, 2e-5 * fabs (ref_max));
        g_assert_cmpfloat (fabs (r[2] - beta_t), <=, 1e-5 * beta_t);
        assert_quantized_with (x, y, r[0], r[1], 4); /* update, then quantize */
        if (r[1] > peak) {
            peak = r[1];
            peak_at = t;
        }
    }
    g_test_message ("GDFQ EMA of a constant max 1: peak %.2f at update %d (double recurrence %.2f at update 30: %.2f)",
                    peak, peak_at, ref_max, r[1]);
    g_assert_cmpint (peak_at, ==, 21);
    g_assert_cmpfloat (fabs (peak - 3945.1), <, 0.5);

    /* frozen: other data, same range, quantized with it */
    dfq_quantizer_set_calibrating (q, FALSE);
    float frozen[3] = { r[0], r[1], r[2] };
    for (int t = 0; t < 5; t++) {
        dfq_arena_reset (arena);
        DfqTensor *x = batch_with_range (arena, 100 + (guint64) t, -3.0f, 7.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "layers.0.relu1", x);
        g_assert_cmpmem (r, sizeof frozen, frozen, sizeof frozen);
        assert_quantized_with (x, y, frozen[0], frozen[1], 4);
    }
}

static void
test_ema_plain (void)
{
    g_test_summary ("act_range ema_plain: the first batch's min/max as is, then r = beta r + (1-beta) m");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\nact_range: ema_plain\nema_beta: 0.8\n");
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    add_site (q, DFQ_SITE_ACT, "relu", batch_with_range (arena, 0, 0.0f, 1.0f));
    float *r = act_range (q, "relu");
    dfq_quantizer_set_calibrating (q, TRUE);
    double ref_min = 0.0, ref_max = 0.0;
    for (int t = 1; t <= 30; t++) {
        float m = -0.1f * (float) (t % 4), M = 0.5f + 0.25f * (float) (t % 5);
        dfq_arena_reset (arena);
        DfqTensor *x = batch_with_range (arena, (guint64) t, m, M);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
        if (t == 1) {
            ref_min = m;
            ref_max = M;
            g_assert_cmpfloat (r[0], ==, m);
            g_assert_cmpfloat (r[1], ==, M);
        } else {
            ref_min = 0.8 * ref_min + 0.2 * m;
            ref_max = 0.8 * ref_max + 0.2 * M;
        }
        g_assert_cmpfloat (fabs (r[0] - ref_min), <=, 1e-5);
        g_assert_cmpfloat (fabs (r[1] - ref_max), <=, 1e-5);
        g_assert_cmpfloat (r[2], ==, (float) t);
        assert_quantized_with (x, y, r[0], r[1], 4);
    }
}

static void
test_minmax (void)
{
    g_test_summary ("act_range minmax (ZeroQ): running global min/max from 0, frozen when not calibrating");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\nact_range: minmax\na_bits: 8\n");
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    add_site (q, DFQ_SITE_ACT, "relu", batch_with_range (arena, 0, 0.0f, 1.0f));
    float *r = act_range (q, "relu");
    static const float batches[][2] = { { 0.5f, 2.0f }, { -1.0f, 1.5f }, { 0.2f, 3.0f }, { -0.5f, 0.1f } };
    static const float want[][2] = { { 0.0f, 2.0f }, { -1.0f, 2.0f }, { -1.0f, 3.0f }, { -1.0f, 3.0f } };
    dfq_quantizer_set_calibrating (q, TRUE);
    for (guint t = 0; t < G_N_ELEMENTS (batches); t++) {
        dfq_arena_reset (arena);
        DfqTensor *x = batch_with_range (arena, t + 1, batches[t][0], batches[t][1]);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
        g_assert_cmpfloat (r[0], ==, want[t][0]);
        g_assert_cmpfloat (r[1], ==, want[t][1]);
        g_assert_cmpfloat (r[2], ==, (float) (t + 1));
        assert_quantized_with (x, y, r[0], r[1], 8);
    }
    dfq_quantizer_set_calibrating (q, FALSE);
    dfq_arena_reset (arena);
    DfqTensor *x = batch_with_range (arena, 50, -9.0f, 9.0f);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
    g_assert_cmpfloat (r[0], ==, -1.0f);
    g_assert_cmpfloat (r[1], ==, 3.0f);
    assert_quantized_with (x, y, -1.0f, 3.0f, 8);
}

static void
test_uncalibrated (void)
{
    g_test_summary ("A site whose range was never calibrated (0, 0) gives finite outputs (the 1e-8 guard)");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\n");
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, 4, 3, 3);
    dfq_rand_normal_fill (x, 4, 0, 0.0f, 10.0f);
    add_site (q, DFQ_SITE_ACT, "relu", x);
    dfq_quantizer_set_calibrating (q, FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *y = DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
    g_assert_true (dfq_tensor_all_finite (y));
    for (gint64 i = 0; i < dfq_tensor_numel (y); i++)
        g_assert_cmpfloat (fabsf (dfq_tensor_f32 (y)[i]), <=, 1e-7f);
}

static void
test_bad_override (void)
{
    g_test_summary ("Malformed override rules and unsupported bit widths are BAD_VALUE errors naming the rule");
    static const struct {
        const char *yaml;
        const char *needle;
    } bad[] = {
        { "use: uniform\noverrides: ['w:first']\n", "'w:first' has no '='" },
        { "use: uniform\noverrides: ['w:first=8', 'x:first=8']\n", "must start with 'w:'" },
        { "use: uniform\noverrides: ['w:=8']\n", "empty site" },
        { "use: uniform\noverrides: ['a:last=0']\n", "bits '0'" },
        { "use: uniform\noverrides: ['w:first=17']\n", "bits '17'" },
        { "use: uniform\noverrides: ['a:layers.*=eight']\n", "bits 'eight'" },
        { "use: uniform\noverrides: ['first=8']\n", "must start with 'w:'" },
        { "use: uniform\na_bits: 20\n", "20 bits" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        g_autoptr (GError) error = NULL;
        DfqFeature *f = feature_from_yaml (DFQ_FEATURE_QUANTIZER, bad[i].yaml, &error);
        g_assert_null (f);
        g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
        g_test_message ("%s", error->message);
        if (strstr (error->message, bad[i].needle) == NULL)
            g_test_fail_printf ("error '%s' does not say '%s'", error->message, bad[i].needle);
        g_assert_nonnull (strstr (error->message, "test-uniform.yaml:"));
    }
    /* accepted: spaces around the parts, full precision, globs */
    g_autoptr (DfqFeature) ok = (DfqFeature *) make_quantizer (
        "use: uniform\na_bits: 32\noverrides: [' w:last = 8 ', 'a:*=32', 'w:layers.?.conv*=2']\n");
    g_assert_nonnull (ok);
}

static void
test_state (void)
{
    g_test_summary ("get_state lists one '<site>.act_range' tensor per ReLU site; get_params adds nothing");
    g_autoptr (DfqFeature) model = (DfqFeature *) make_model (RESNET_YAML);
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\n");
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_quantizer_attach (q, (DfqModel *) model, &error));
    g_assert_no_error (error);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    g_autoptr (GPtrArray) params = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, state);
    DFQ_QUANTIZER_CLASS (q)->get_params (q, params);
    g_assert_cmpuint (params->len, ==, 0);
    g_assert_cmpuint (state->len, ==, 19);
    g_assert_cmpstr (((DfqTensor *) state->pdata[0])->name, ==, "relu.act_range");
    g_assert_cmpstr (((DfqTensor *) state->pdata[1])->name, ==, "layers.0.relu1.act_range");
    g_assert_cmpstr (((DfqTensor *) state->pdata[18])->name, ==, "layers.8.relu2.act_range");
}

/* Three calibrating forwards of a fresh student + quantizer: logits of the
 * last and every range. */
static void
deterministic_run (DfqArena *out, DfqTensor **logits, DfqTensor **ranges)
{
    g_autoptr (DfqFeature) model = (DfqFeature *) make_model (
        "use: resnet-cifar\ndepth: 20\nin_channels: 3\nimage_size: 32\ninit_seed: 5\n");
    g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\nw_bits: 3\na_bits: 3\n");
    DfqModel *student = (DfqModel *) model;
    DfqQuantizer *q = (DfqQuantizer *) qf;
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_quantizer_attach (q, student, &error));
    g_assert_no_error (error);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    dfq_quantizer_set_calibrating (q, TRUE);
    DfqTensor *y = NULL;
    for (int step = 0; step < 3; step++) {
        dfq_arena_reset (arena);
        /* 16x16x32x32 activations: several min/max chunks */
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 16, 3, 32, 32);
        dfq_rand_normal_fill (x, 21, (guint64) step, 0.0f, 1.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        dfq_quantizer_hook (q, &fwd);
        y = dfq_model_forward (student, &fwd, x);
    }
    dfq_set_grad_enabled (prev);
    *logits = dfq_tensor_dup (out, y);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, state);
    *ranges = dfq_tensor_new_1d (out, DFQ_DTYPE_F32, 3 * state->len);
    for (guint i = 0; i < state->len; i++)
        memcpy (dfq_tensor_f32 (*ranges) + 3 * i, dfq_tensor_f32 (state->pdata[i]), 3 * sizeof (float));
}

static void
test_deterministic (void)
{
    g_test_summary ("Two identical calibrating runs give bit-identical logits and ranges");
    g_autoptr (DfqArena) out = dfq_arena_new (0);
    DfqTensor *l1, *r1, *l2, *r2;
    deterministic_run (out, &l1, &r1);
    deterministic_run (out, &l2, &r2);
    g_assert_true (dfq_tensor_all_finite (l1));
    g_assert_cmpmem (l1->data, dfq_tensor_numel (l1) * 4, l2->data, dfq_tensor_numel (l2) * 4);
    g_assert_cmpmem (r1->data, dfq_tensor_numel (r1) * 4, r2->data, dfq_tensor_numel (r2) * 4);
}

static void
test_minmax_threads (void)
{
    g_test_summary ("The activation min/max reduction gives the same range for 1 and 2 threads");
    float got[2][3];
    for (int run = 0; run < 2; run++) {
        dfq_set_num_threads (run == 0 ? 1 : 2);
        g_autoptr (DfqFeature) qf = (DfqFeature *) make_quantizer ("use: uniform\n");
        DfqQuantizer *q = (DfqQuantizer *) qf;
        g_autoptr (DfqArena) arena = dfq_arena_new (0);
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 8, 16, 64, 64);
        dfq_rand_normal_fill (x, 8, 0, 0.5f, 2.0f);
        add_site (q, DFQ_SITE_ACT, "relu", x);
        dfq_quantizer_set_calibrating (q, TRUE);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "relu", x);
        memcpy (got[run], act_range (q, "relu"), sizeof got[run]);
        float mn = dfq_tensor_f32 (x)[0], mx = mn;
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
            mn = MIN (mn, dfq_tensor_f32 (x)[i]);
            mx = MAX (mx, dfq_tensor_f32 (x)[i]);
        }
        /* first GDFQ update: (0 * 0.9 + m * 0.1) / (1 - 0.9) */
        g_assert_cmpfloat (fabsf (got[run][0] - mn), <=, 1e-5f * fabsf (mn));
        g_assert_cmpfloat (fabsf (got[run][1] - mx), <=, 1e-5f * fabsf (mx));
    }
    dfq_set_num_threads (2);
    g_assert_cmpmem (got[0], sizeof got[0], got[1], sizeof got[1]);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_QUANTIZER, "uniform"));

    g_test_add_func ("/plugin/uniform/weight-levels", test_weight_levels);
    g_test_add_func ("/plugin/uniform/overrides", test_overrides);
    for (guint i = 0; i < G_N_ELEMENTS (dequant_cases); i++) {
        const DequantCase *c = &dequant_cases[i];
        g_autofree char *p = g_strdup_printf ("/plugin/uniform/dequant-error/w%d-%s-%s", c->bits,
                                              c->per_channel ? "channel" : "tensor", c->symmetric ? "sym" : "asym");
        g_test_add_data_func (p, c, test_dequant_error);
    }
    g_test_add_data_func ("/plugin/uniform/ste/plain", GINT_TO_POINTER (FALSE), test_ste);
    g_test_add_data_func ("/plugin/uniform/ste/clipped", GINT_TO_POINTER (TRUE), test_ste);
    g_test_add_func ("/plugin/uniform/ema/gdfq", test_ema_gdfq);
    g_test_add_func ("/plugin/uniform/ema/plain", test_ema_plain);
    g_test_add_func ("/plugin/uniform/minmax", test_minmax);
    g_test_add_func ("/plugin/uniform/uncalibrated", test_uncalibrated);
    g_test_add_func ("/plugin/uniform/bad-override", test_bad_override);
    g_test_add_func ("/plugin/uniform/state", test_state);
    g_test_add_func ("/plugin/uniform/deterministic", test_deterministic);
    g_test_add_func ("/plugin/uniform/minmax-threads", test_minmax_threads);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
