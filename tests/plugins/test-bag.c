/* Synthesizer bag (METHODS.md 5.2): the GDFQ generator with its Linear/Conv
 * weights fake-quantized at the student's bit-width. White-box: the test reads
 * the feature's struct (plugins/synthesizers/gdfq/gdfq-private.h) for the
 * resolved bits and the weights the last forward used. Checks: those weights
 * lie on the k-bit grid (at most 2^k values per output channel) and equal the
 * GDFQ quantizer applied by hand to the float shadows, while Adam moves the
 * shadows, which stay off the grid; bits follow the student's quantizer unless
 * `bits` is set; optional activation quantization with a signed EMA range;
 * bit-identical runs for one seed; gdfq itself is untouched. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

#include "../../plugins/synthesizers/gdfq/gdfq-private.h"

static DfqRegistry *registry;

static DfqFeature *
make_feature (DfqFeatureKind kind, const char *yaml)
{
    return dfq_test_make_feature (registry, kind, yaml);
}

/* A random ResNet-20 (width 8, 1x28x28, interop weights) as teacher, a copy
 * as student, and optionally a uniform quantizer attached to it. */
typedef DfqTestSynth BagFixture;

static void
fixture_setup (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_init (f, registry, dfq_test_resnet20_w8 (registry, TRUE), dfq_test_resnet20_w8 (registry, FALSE),
                         1, 4, 8, 1, 28);
}

static void
fixture_teardown (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_clear (f);
}

static Gdfq *
make_bag (BagFixture *f, const char *yaml)
{
    return (Gdfq *) dfq_test_synth_new (f, yaml, TRUE);
}

static void
bag_free (Gdfq *g)
{
    dfq_feature_free ((DfqFeature *) g);
}

static void
run_step (BagFixture *f, Gdfq *g, gint64 step, DfqSynthBatch *out)
{
    dfq_test_synth_step (f, (DfqSynthesizer *) g, step, out);
}

static DfqTensor *
shadow_of (Gdfq *g, guint layer)
{
    DfqTensor *w[GDFQ_N_LAYERS] = { g->l1_w, g->c1_w, g->c2_w, g->c3_w };
    return w[layer];
}

static int
cmp_float (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return (x > y) - (x < y);
}

/* Largest number of distinct values in one output channel (row of [Cout, -1]). */
static gint64
max_distinct_per_channel (const DfqTensor *w)
{
    const gint64 n_ch = w->shape[0], inner = dfq_tensor_numel (w) / n_ch;
    g_autofree float *row = g_new (float, inner);
    gint64 worst = 0;
    for (gint64 c = 0; c < n_ch; c++) {
        memcpy (row, dfq_tensor_f32 (w) + c * inner, (gsize) inner * sizeof (float));
        qsort (row, (gsize) inner, sizeof (float), cmp_float);
        gint64 distinct = 1;
        for (gint64 k = 1; k < inner; k++)
            distinct += row[k] != row[k - 1];
        worst = MAX (worst, distinct);
    }
    return worst;
}

/* METHODS.md 1.3 by hand, in double, per output channel. */
static double
max_error_vs_reference (const DfqTensor *used, const DfqTensor *shadow, int bits)
{
    const gint64 n_ch = shadow->shape[0], inner = dfq_tensor_numel (shadow) / n_ch;
    const float *w = dfq_tensor_f32 (shadow), *q = dfq_tensor_f32 (used);
    const double half = ldexp (1.0, bits - 1);
    double worst = 0.0;
    for (gint64 c = 0; c < n_ch; c++) {
        double lo = INFINITY, hi = -INFINITY;
        for (gint64 k = 0; k < inner; k++) {
            lo = MIN (lo, w[c * inner + k]);
            hi = MAX (hi, w[c * inner + k]);
        }
        double s = (ldexp (1.0, bits) - 1.0) / MAX (hi - lo, 1e-8);
        double zp = nearbyint (s * lo) + half;
        for (gint64 k = 0; k < inner; k++) {
            double v = nearbyint (s * w[c * inner + k] - zp);
            v = CLAMP (v, -half, half - 1.0);
            double want = (v + zp) / s;
            /* per-step ulp of the float result */
            worst = MAX (worst, fabs (want - q[c * inner + k]) / (1.0 / s));
        }
    }
    return worst;
}

static void
test_grid (BagFixture *f, gconstpointer data)
{
    const int bits = GPOINTER_TO_INT (data);
    g_test_summary ("The weights the forward uses lie on the k-bit grid (<= 2^k values per output channel), equal "
                    "the GDFQ quantizer applied by hand to the float shadows, while Adam moves the shadows, "
                    "which stay off the grid");
    g_autofree char *yaml = g_strdup_printf ("use: bag\nbits: %d\n", bits);
    Gdfq *g = make_bag (f, yaml);
    g_assert_cmpint (g->w_bits_used, ==, bits);
    g_assert_cmpint (g->a_bits_used, ==, 0);
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    for (gint64 step = 0; step < 3; step++) {
        DfqTensor *before[GDFQ_N_LAYERS];
        for (guint l = 0; l < GDFQ_N_LAYERS; l++)
            before[l] = dfq_tensor_dup (keep, shadow_of (g, l));
        DfqSynthBatch out;
        run_step (f, g, step, &out);
        for (guint l = 0; l < GDFQ_N_LAYERS; l++) {
            DfqTensor *used = g->used_weights[l], *shadow = shadow_of (g, l);
            g_assert_nonnull (used);
            g_assert_true (used != shadow);
            g_assert_true (dfq_tensor_same_shape (used, shadow));
            gint64 distinct = max_distinct_per_channel (used);
            gint64 shadow_distinct = max_distinct_per_channel (shadow);
            double err = max_error_vs_reference (used, before[l], bits);
            float moved = dfq_tensor_max_abs_diff (before[l], shadow);
            if (step == 2)
                g_test_message ("%d bits, layer %u %s: <= %" G_GINT64_FORMAT " values per channel as used "
                                "(shadow: %" G_GINT64_FORMAT "), error vs hand %.2g steps, shadow moved by %.3g",
                                bits, l, shadow->name, distinct, shadow_distinct, err, moved);
            g_assert_cmpint (distinct, <=, (gint64) 1 << bits);
            g_assert_cmpint (shadow_distinct, >, (gint64) 1 << bits);
            g_assert_cmpfloat (err, <=, 1e-3);
            g_assert_cmpfloat (moved, >, 0.0f);
        }
    }
    g_assert_cmpint (DFQ_SYNTHESIZER_CLASS (g)->get_optim_step ((DfqSynthesizer *) g), ==, 3);
    bag_free (g);
}

typedef struct {
    const char *quantizer; /* uniform YAML, or NULL: float student */
    const char *bag;
    gint w_bits, a_bits;
} BitsCase;

static const BitsCase bits_cases[] = {
    { "use: uniform\nw_bits: 3\na_bits: 3", "use: bag", 3, 0 },
    { "use: uniform\nw_bits: 4\na_bits: 5", "use: bag", 4, 0 },
    { "use: uniform\nw_bits: 4\na_bits: 5", "use: bag\nact_bits: -1", 4, 5 },
    { "use: uniform\nw_bits: 3\na_bits: 3", "use: bag\nbits: 5", 5, 0 },
    { "use: uniform\nw_bits: 3\na_bits: 3", "use: bag\nbits: 2\nact_bits: 6", 2, 6 },
    { "use: uniform\nw_bits: 3\na_bits: 32", "use: bag\nact_bits: -1", 3, 0 }, /* float activations */
    { NULL, "use: bag", 0, 0 },                                                  /* float student */
    { NULL, "use: bag\nbits: 3", 3, 0 },
};

static void
test_bits (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("bits 0 follows the student's quantizer (w_bits), act_bits -1 its a_bits; explicit values "
                    "override; a float student gives a float generator");
    for (guint i = 0; i < G_N_ELEMENTS (bits_cases); i++) {
        const BitsCase *bc = &bits_cases[i];
        if (bc->quantizer != NULL)
            dfq_test_synth_attach_quantizer (f, bc->quantizer);
        else
            f->ctx.quantizer = NULL;
        Gdfq *g = make_bag (f, bc->bag);
        g_test_message ("student %s, %s: weights %d bits, activations %d bits", bc->quantizer ? bc->quantizer : "float",
                        bc->bag, g->w_bits_used, g->a_bits_used);
        g_assert_cmpint (g->w_bits_used, ==, bc->w_bits);
        g_assert_cmpint (g->a_bits_used, ==, bc->a_bits);
        DfqSynthBatch out;
        run_step (f, g, 0, &out);
        g_assert_true (isfinite (out.loss));
        if (bc->w_bits == 0)
            g_assert_true (g->used_weights[GDFQ_LAYER_CONV1] == g->c1_w);
        else
            g_assert_cmpint (max_distinct_per_channel (g->used_weights[GDFQ_LAYER_CONV1]), <=, (gint64) 1 << bc->w_bits);
        bag_free (g);
    }
}

/* A quantizer class that does not report its bits. */
static const DfqQuantizerClass silent_class = {
    .parent = { .kind = DFQ_FEATURE_QUANTIZER, .name = "silent" },
};

static void
test_bits_unknown (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("bits 0 with a quantizer that has no get_bits is DFQ_PIPELINE_ERROR_BAD_VALUE at prepare(), "
                    "naming the quantizer; an explicit bits works");
    DfqQuantizer silent = { 0 };
    silent.parent.klass = &silent_class.parent;
    f->ctx.quantizer = &silent;
    {
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqFeature) s = make_feature (DFQ_FEATURE_SYNTHESIZER, "use: bag");
        g_assert_false (DFQ_SYNTHESIZER_CLASS (s)->prepare ((DfqSynthesizer *) s, &f->ctx, &error));
        g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
        g_assert_nonnull (strstr (error->message, "silent"));
    }
    Gdfq *g = make_bag (f, "use: bag\nbits: 4");
    g_assert_cmpint (g->w_bits_used, ==, 4);
    bag_free (g);
}

static void
test_act_bits (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("act_bits 3: both LeakyReLU sites get a checkpointed signed range (min < 0 < max, one update "
                    "per step) and the output differs from the weights-only generator");
    dfq_test_synth_attach_quantizer (f, "use: uniform\nw_bits: 3\na_bits: 3");
    Gdfq *g = make_bag (f, "use: bag\nact_bits: 3");
    Gdfq *w = make_bag (f, "use: bag");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqSynthBatch out;
    DfqTensor *xa = NULL, *xw = NULL;
    for (gint64 step = 0; step < 3; step++) {
        run_step (f, g, step, &out);
        xa = dfq_tensor_dup (keep, out.images);
        run_step (f, w, step, &out);
        xw = dfq_tensor_dup (keep, out.images);
    }
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (xa, xw), >, 0.0f);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (g)->get_state ((DfqSynthesizer *) g, state);
    guint found = 0;
    for (guint i = 0; i < state->len; i++) {
        const DfqTensor *t = state->pdata[i];
        if (!g_str_has_suffix (t->name, ".act_range"))
            continue;
        const float *r = dfq_tensor_f32 (t);
        g_test_message ("%s: [%.4f, %.4f] after %.0f updates", t->name, r[0], r[1], r[2]);
        g_assert_cmpfloat (r[0], <, 0.0f);
        g_assert_cmpfloat (r[1], >, 0.0f);
        g_assert_cmpfloat (r[2], ==, 3.0f);
        found++;
    }
    g_assert_cmpuint (found, ==, 2);
    g_autoptr (GPtrArray) wstate = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (w)->get_state ((DfqSynthesizer *) w, wstate);
    g_assert_cmpuint (wstate->len + 2, ==, state->len);
    bag_free (g);
    bag_free (w);
}

/* Runs @n steps of a fresh synthesizer and returns copies of its state. */
static GPtrArray *
run_and_snapshot (BagFixture *f, const char *yaml, DfqArena *keep, guint64 seed, int n)
{
    f->ctx.seed = seed;
    Gdfq *g = make_bag (f, yaml);
    DfqSynthBatch out;
    for (int i = 0; i < n; i++)
        run_step (f, g, i, &out);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (g)->get_state ((DfqSynthesizer *) g, state);
    GPtrArray *copy = g_ptr_array_new ();
    for (guint i = 0; i < state->len; i++) {
        const DfqTensor *t = state->pdata[i];
        DfqTensor *c = dfq_tensor_dup (keep, t);
        dfq_tensor_set_name (c, "%s", t->name);
        g_ptr_array_add (copy, c);
    }
    g_ptr_array_add (copy, dfq_tensor_dup (keep, out.images));
    bag_free (g);
    return copy;
}

static void
test_deterministic (BagFixture *f, gconstpointer data)
{
    const char *yaml = data;
    g_test_summary ("Two runs with one seed give bit-identical generator state (float shadows, BN buffers, "
                    "activation ranges, Adam) and images; another seed differs");
    dfq_test_synth_attach_quantizer (f, "use: uniform\nw_bits: 3\na_bits: 3");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (GPtrArray) a = run_and_snapshot (f, yaml, keep, 5, 3);
    g_autoptr (GPtrArray) b = run_and_snapshot (f, yaml, keep, 5, 3);
    g_autoptr (GPtrArray) c = run_and_snapshot (f, yaml, keep, 6, 3);
    g_assert_cmpuint (a->len, ==, b->len);
    gboolean differs = FALSE;
    for (guint i = 0; i < a->len; i++) {
        const DfqTensor *ta = a->pdata[i], *tb = b->pdata[i], *tc = c->pdata[i];
        gsize bytes = (gsize) dfq_tensor_numel (ta) * sizeof (float);
        if (memcmp (ta->data, tb->data, bytes) != 0)
            g_test_fail_printf ("%s differs between two runs with one seed", ta->name);
        differs |= memcmp (ta->data, tc->data, bytes) != 0;
    }
    g_assert_true (differs);
}

static void
test_gdfq_untouched (BagFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("gdfq and adadfq keep a float generator even with a quantized student; bag with a float "
                    "student makes gdfq's images bit for bit");
    dfq_test_synth_attach_quantizer (f, "use: uniform\nw_bits: 3\na_bits: 3");
    const char *names[] = { "use: gdfq", "use: adadfq" };
    for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
        Gdfq *g = make_bag (f, names[i]);
        DfqSynthBatch out;
        run_step (f, g, 0, &out);
        g_assert_cmpint (g->w_bits_used, ==, 0);
        g_assert_cmpint (g->a_bits_used, ==, 0);
        for (guint l = 0; l < GDFQ_N_LAYERS; l++)
            g_assert_true (g->used_weights[l] == shadow_of (g, l));
        bag_free (g);
    }
    f->ctx.quantizer = NULL;
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (GPtrArray) a = run_and_snapshot (f, "use: gdfq", keep, 7, 2);
    g_autoptr (GPtrArray) b = run_and_snapshot (f, "use: bag", keep, 7, 2);
    g_assert_cmpuint (a->len, ==, b->len);
    for (guint i = 0; i < a->len; i++)
        g_assert_cmpfloat (dfq_tensor_max_abs_diff (a->pdata[i], b->pdata[i]), ==, 0.0f);
}

static void
test_defaults (void)
{
    g_test_summary ("bag's defaults: bits 0 (the student's), act_bits 0 (float), GDFQ's generator losses "
                    "[ce(teacher), 0.1 bns] and Adam");
    const char *want[] = { "bits: 0", "act_bits: 0", "target: teacher", "use: bns", "weight: 0.1", "use: adam",
                           "latent: 100", "bn_eps_inner: 0.8" };
    g_free (dfq_test_assert_defaults (registry, DFQ_FEATURE_SYNTHESIZER, "bag", want, G_N_ELEMENTS (want)));
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "bag");
    /* out of range */
    const char *bad[] = { "use: bag\nbits: 17\n", "use: bag\nact_bits: -2\n" };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        g_autoptr (GError) e = NULL;
        g_autoptr (DfqConfigNode) node = dfq_config_parse (bad[i], -1, "bad.yaml", &e);
        g_assert_null (dfq_feature_new_from_config (registry, klass, node, FALSE, "synthesizer", &e));
        g_assert_error (e, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    }
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "bag"));

#define ADD(path, data, fn) g_test_add (path, BagFixture, data, fixture_setup, fn, fixture_teardown)
    ADD ("/plugin/bag/grid/2-bits", GINT_TO_POINTER (2), test_grid);
    ADD ("/plugin/bag/grid/3-bits", GINT_TO_POINTER (3), test_grid);
    ADD ("/plugin/bag/grid/4-bits", GINT_TO_POINTER (4), test_grid);
    ADD ("/plugin/bag/bits", NULL, test_bits);
    ADD ("/plugin/bag/bits-unknown", NULL, test_bits_unknown);
    ADD ("/plugin/bag/act-bits", NULL, test_act_bits);
    ADD ("/plugin/bag/deterministic/weights", "use: bag", test_deterministic);
    ADD ("/plugin/bag/deterministic/act-bits", "use: bag\nact_bits: 3", test_deterministic);
    ADD ("/plugin/bag/deterministic/adadfq-losses",
         "use: bag\nlosses: [{use: adadfq-margin}, {use: adadfq-balance}, {use: bns, weight: 1}]", test_deterministic);
    ADD ("/plugin/bag/gdfq-untouched", NULL, test_gdfq_untouched);
#undef ADD
    g_test_add_func ("/plugin/bag/defaults", test_defaults);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
