/* Loss plugin ca-kd (METHODS.md 6.2): values against hand computations in both
 * modes, the gradient w.r.t. the student's feature maps against central
 * differences, no gradient into the teacher, the default taps on ResNet-20
 * (the 18 residual-body conv -> BN outputs) and AKT's unit bodies, and the
 * errors for taps that match nothing or differ between student and teacher. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

static DfqFeature *
make_feature (DfqFeatureKind kind, const char *yaml)
{
    return dfq_test_make_feature (registry, kind, yaml);
}

/* ------------------------------------------------------------ direct taps */

/* A ca-kd loss fed by hand-made feature maps: pairs (name, student, teacher). */
typedef struct {
    DfqLoss *loss;
    DfqArena *scratch;
    guint n;
    const char *names[4];
    DfqTensor *student[4];
    DfqTensor *teacher[4];
} Direct;

static void
direct_init (Direct *d, const char *yaml)
{
    memset (d, 0, sizeof *d);
    d->loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, yaml);
    const DfqLossClass *klass = DFQ_LOSS_CLASS (d->loss);
    d->loss->teacher_taps = dfq_tap_set_new (klass->teacher_tap_patterns (d->loss));
    d->loss->student_taps = dfq_tap_set_new (klass->student_tap_patterns (d->loss));
    d->scratch = dfq_arena_new (0);
}

static void
direct_clear (Direct *d)
{
    dfq_feature_free ((DfqFeature *) d->loss);
    dfq_arena_free (d->scratch);
}

static void
direct_add (Direct *d, const char *name, DfqTensor *student, DfqTensor *teacher)
{
    g_assert (d->n < G_N_ELEMENTS (d->names));
    d->names[d->n] = name;
    d->student[d->n] = student;
    d->teacher[d->n] = teacher;
    d->n++;
}

/* The loss on the current data, in d->scratch (reset first). */
static DfqTensor *
direct_compute (Direct *d, GError **error)
{
    dfq_arena_reset (d->scratch);
    dfq_tap_set_clear (d->loss->teacher_taps);
    dfq_tap_set_clear (d->loss->student_taps);
    DfqForward ft, fs;
    dfq_forward_init (&ft, d->scratch, FALSE);
    dfq_forward_init (&fs, d->scratch, FALSE);
    dfq_forward_add_taps (&ft, d->loss->teacher_taps);
    dfq_forward_add_taps (&fs, d->loss->student_taps);
    for (guint i = 0; i < d->n; i++) {
        dfq_layer_tap (&ft, d->names[i], DFQ_TAP_BN_OUT, d->teacher[i], NULL, NULL);
        dfq_layer_tap (&fs, d->names[i], DFQ_TAP_BN_OUT, d->student[i], NULL, NULL);
    }
    DfqStepContext ctx = { 0 };
    ctx.arena = d->scratch;
    DfqLossInputs in = { 0 };
    return DFQ_LOSS_CLASS (d->loss)->compute (d->loss, &ctx, &in, error);
}

static double
direct_value (Direct *d)
{
    g_autoptr (GError) error = NULL;
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *v = direct_compute (d, &error);
    dfq_set_grad_enabled (prev);
    g_assert_no_error (error);
    return dfq_tensor_f32 (v)[0];
}

static DfqTensor *
tensor_from (DfqArena *arena, int n_dims, const gint64 *shape, const float *values)
{
    DfqTensor *t = dfq_tensor_new (arena, DFQ_DTYPE_F32, n_dims, shape);
    memcpy (t->data, values, (gsize) dfq_tensor_numel (t) * sizeof (float));
    return t;
}

static void
test_hand_single (void)
{
    g_test_summary ("One [1,2,1,1] map, teacher (1, 2), student (2, 1): v_t = (1, 4), v_s = (4, 1); "
                    "l2 gives mean((a_s - a_t)^2) = 9/17, softmax (tau 1) KL(a_t || a_s) = 3 tanh(1.5)");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    const gint64 shape[4] = { 1, 2, 1, 1 };
    const float ft[] = { 1.0f, 2.0f }, fs[] = { 2.0f, 1.0f };
    struct {
        const char *yaml;
        double want;
    } cases[] = {
        { "use: ca-kd", 9.0 / 17.0 },
        { "use: ca-kd\nmode: softmax\ntau: 1", 3.0 * tanh (1.5) },
        /* tau 2: logits (0.5, 2) vs (2, 0.5): KL = 1.5 (p1 - p0) = 1.5 tanh(0.75) */
        { "use: ca-kd\nmode: softmax\ntau: 2", 1.5 * tanh (0.75) },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        Direct d;
        direct_init (&d, cases[i].yaml);
        direct_add (&d, "layers.0.bn1:out", tensor_from (keep, 4, shape, fs), tensor_from (keep, 4, shape, ft));
        double got = direct_value (&d);
        g_test_message ("%s: %.7f (hand %.7f)", cases[i].yaml, got, cases[i].want);
        g_assert_cmpfloat (fabs (got - cases[i].want), <=, 1e-6 * (1.0 + cases[i].want));
        direct_clear (&d);
    }
}

/* The reference in double precision: per layer, energies, normalisation and
 * distance, averaged over layers. */
static double
cakd_reference (const Direct *d, gboolean softmax, double tau)
{
    double total = 0.0;
    for (guint l = 0; l < d->n; l++) {
        const DfqTensor *ts = d->student[l], *tt = d->teacher[l];
        const gint64 b = ts->shape[0], c = ts->shape[1];
        const gint64 hw = ts->n_dims == 4 ? ts->shape[2] * ts->shape[3] : 1;
        double term = 0.0;
        for (gint64 i = 0; i < b; i++) {
            double vs[16], vt[16];
            g_assert (c <= 16);
            for (gint64 ch = 0; ch < c; ch++) {
                double ss = 0.0, st = 0.0;
                for (gint64 k = 0; k < hw; k++) {
                    double xs = dfq_tensor_f32 (ts)[(i * c + ch) * hw + k];
                    double xt = dfq_tensor_f32 (tt)[(i * c + ch) * hw + k];
                    ss += xs * xs;
                    st += xt * xt;
                }
                vs[ch] = ss / (double) hw;
                vt[ch] = st / (double) hw;
            }
            if (!softmax) {
                double ns = 0.0, nt = 0.0;
                for (gint64 ch = 0; ch < c; ch++) {
                    ns += vs[ch] * vs[ch];
                    nt += vt[ch] * vt[ch];
                }
                for (gint64 ch = 0; ch < c; ch++) {
                    double diff = vs[ch] / sqrt (ns) - vt[ch] / sqrt (nt);
                    term += diff * diff / (double) (b * c);
                }
            } else {
                double zs = 0.0, zt = 0.0;
                for (gint64 ch = 0; ch < c; ch++) {
                    zs += exp (vs[ch] / tau);
                    zt += exp (vt[ch] / tau);
                }
                for (gint64 ch = 0; ch < c; ch++) {
                    double pt = exp (vt[ch] / tau) / zt;
                    double lps = vs[ch] / tau - log (zs), lpt = vt[ch] / tau - log (zt);
                    term += pt * (lpt - lps) / (double) b;
                }
            }
        }
        total += term;
    }
    return total / (double) d->n;
}

/* Two layers: a [3,5,4,4] map and a [3,6] vector (pooled features). */
static void
direct_two_layers (Direct *d, DfqArena *keep, guint64 seed, gboolean student_param)
{
    const gint64 s4[4] = { 3, 5, 4, 4 }, s2[2] = { 3, 6 };
    DfqTensor *sa = dfq_tensor_new (keep, DFQ_DTYPE_F32, 4, s4), *ta = dfq_tensor_new (keep, DFQ_DTYPE_F32, 4, s4);
    DfqTensor *sb = dfq_tensor_new (keep, DFQ_DTYPE_F32, 2, s2), *tb = dfq_tensor_new (keep, DFQ_DTYPE_F32, 2, s2);
    dfq_rand_normal_fill (sa, seed, 1, 0.0f, 1.0f);
    dfq_rand_normal_fill (ta, seed, 2, 0.0f, 1.0f);
    dfq_rand_normal_fill (sb, seed, 3, 0.0f, 1.0f);
    dfq_rand_normal_fill (tb, seed, 4, 0.0f, 1.0f);
    if (student_param) {
        dfq_tensor_set_param (sa);
        dfq_tensor_set_param (sb);
        /* The teacher's side must get nothing, even where it could. */
        dfq_tensor_set_param (ta);
        dfq_tensor_set_param (tb);
    }
    direct_add (d, "layers.0.bn1:out", sa, ta);
    direct_add (d, "layers.0.bn2:out", sb, tb);
}

static void
test_hand_random (gconstpointer data)
{
    const char *mode = data;
    gboolean softmax = strcmp (mode, "softmax") == 0;
    g_test_summary ("Two layers ([3,5,4,4] and [3,6]) of random maps: the loss equals a double-precision "
                    "reference (energies, normalisation, distance, mean over layers)");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autofree char *yaml = g_strdup_printf ("use: ca-kd\nmode: %s\ntau: 0.7\n"
                                             "taps: ['layers.*.bn1:out', 'layers.*.bn2:out']",
                                             mode);
    Direct d;
    direct_init (&d, yaml);
    direct_two_layers (&d, keep, 3, FALSE);
    double got = direct_value (&d), want = cakd_reference (&d, softmax, 0.7);
    g_test_message ("%s: %.8f (reference %.8f)", mode, got, want);
    g_assert_cmpfloat (want, >, 0.0);
    g_assert_cmpfloat (fabs (got - want), <=, 1e-5 * want);
    direct_clear (&d);
}

static void
test_gradient (gconstpointer data)
{
    const char *mode = data;
    g_test_summary ("d(ca-kd)/d(student maps) from dfq_backward equals central differences (step 1e-3) "
                    "on every element of both layers; the teacher maps get no gradient");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autofree char *yaml = g_strdup_printf ("use: ca-kd\nmode: %s\ntau: 0.7\n"
                                             "taps: ['layers.*.bn1:out', 'layers.*.bn2:out']",
                                             mode);
    Direct d;
    direct_init (&d, yaml);
    direct_two_layers (&d, keep, 5, TRUE);

    g_autoptr (GError) error = NULL;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *loss = direct_compute (&d, &error);
    g_assert_no_error (error);
    dfq_backward (loss, d.scratch);
    dfq_set_grad_enabled (prev);

    /* The loss is a float: one ulp of it over the 2 eps step is the
     * finite-difference noise floor, hence atol relative to its value. */
    const double eps = 1e-3, rtol = 1e-2, atol = 1e-4 * (1.0 + fabs (dfq_tensor_f32 (loss)[0]));
    double worst = 0.0, max_grad = 0.0;
    char where[160] = "";
    for (guint l = 0; l < d.n; l++) {
        /* teacher: untouched persistent gradient */
        const float *gt = dfq_tensor_f32 (d.teacher[l]->grad);
        for (gint64 i = 0; i < dfq_tensor_numel (d.teacher[l]); i++)
            g_assert_cmpfloat (gt[i], ==, 0.0f);
        DfqTensor *s = d.student[l];
        float *x = dfq_tensor_f32 (s);
        /* copy: direct_value resets nothing of keep, but be explicit */
        g_autofree float *g = g_memdup2 (dfq_tensor_f32 (s->grad), (gsize) dfq_tensor_numel (s) * sizeof (float));
        for (gint64 i = 0; i < dfq_tensor_numel (s); i++) {
            float saved = x[i];
            x[i] = saved + (float) eps;
            double fp = direct_value (&d);
            x[i] = saved - (float) eps;
            double fm = direct_value (&d);
            x[i] = saved;
            double numeric = (fp - fm) / (2.0 * eps);
            double err = fabs (numeric - g[i]) / (atol + rtol * fabs (numeric));
            if (err > worst) {
                worst = err;
                g_snprintf (where, sizeof where, "layer %u element %" G_GINT64_FORMAT ": analytic %.7g numeric %.7g",
                            l, i, g[i], numeric);
            }
            max_grad = MAX (max_grad, fabs (g[i]));
        }
    }
    g_test_message ("%s: worst |analytic - numeric| / (atol + rtol |numeric|) = %.3f (%s), max |grad| %.4g", mode,
                    worst, where, max_grad);
    g_assert_cmpfloat (max_grad, >, 1e-3); /* the check is not vacuous */
    g_assert_cmpfloat (worst, <, 1.0);
    direct_clear (&d);
}

static void
test_mismatch (void)
{
    g_test_summary ("A teacher map the student lacks is DFQ_MODEL_ERROR_MISSING; maps of different shapes are "
                    "DFQ_MODEL_ERROR_SHAPE; both name the tap");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    const gint64 s1[4] = { 2, 3, 2, 2 }, s2[4] = { 2, 4, 2, 2 };
    DfqTensor *a = dfq_tensor_new (keep, DFQ_DTYPE_F32, 4, s1), *b = dfq_tensor_new (keep, DFQ_DTYPE_F32, 4, s2);
    {
        Direct d;
        direct_init (&d, "use: ca-kd");
        direct_add (&d, "layers.2.bn2:out", b, a);
        g_autoptr (GError) error = NULL;
        g_assert_null (direct_compute (&d, &error));
        g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
        g_assert_nonnull (strstr (error->message, "layers.2.bn2:out"));
        direct_clear (&d);
    }
    {
        Direct d;
        direct_init (&d, "use: ca-kd");
        direct_add (&d, "layers.2.bn2:out", a, a);
        /* a student tap the teacher set has and the student set has not */
        dfq_arena_reset (d.scratch);
        dfq_tap_set_clear (d.loss->teacher_taps);
        dfq_tap_set_clear (d.loss->student_taps);
        DfqForward ft;
        dfq_forward_init (&ft, d.scratch, FALSE);
        dfq_forward_add_taps (&ft, d.loss->teacher_taps);
        dfq_layer_tap (&ft, "layers.2.bn2:out", DFQ_TAP_BN_OUT, a, NULL, NULL);
        DfqStepContext ctx = { 0 };
        ctx.arena = d.scratch;
        DfqLossInputs in = { 0 };
        g_autoptr (GError) error = NULL;
        g_assert_null (DFQ_LOSS_CLASS (d.loss)->compute (d.loss, &ctx, &in, &error));
        g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
        g_assert_nonnull (strstr (error->message, "layers.2.bn2:out"));
        direct_clear (&d);
    }
}

static void
test_bad_params (void)
{
    g_test_summary ("An empty taps list and an unknown mode are rejected when the pipeline is bound");
    const char *bad[] = { "use: ca-kd\ntaps: []\n", "use: ca-kd\nmode: cosine\n", "use: ca-kd\ntau: 0\n" };
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_LOSS, "ca-kd");
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqConfigNode) node = dfq_config_parse (bad[i], -1, "bad.yaml", &error);
        g_assert_no_error (error);
        DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, TRUE, "ca-kd", &error);
        g_assert_null (f);
        g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    }
}

/* ------------------------------------------------------------ on ResNet-20 */

static DfqModel *
make_resnet (void)
{
    return dfq_test_resnet20_w8 (registry, FALSE);
}

typedef struct {
    const char *yaml;
    guint n_layers;
    const char *first, *last;
} TapCase;

static void
test_resnet_taps (gconstpointer data)
{
    const TapCase *tc = data;
    g_test_summary ("On ResNet-20 (interop weights) the taps select the expected layers; the loss is 0 for a "
                    "student equal to the teacher and > 0 for the W3A3 fake-quantized student, whose "
                    "parameters get a gradient");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqModel *teacher = make_resnet ();
    DfqModel *student = make_resnet ();
    dfq_model_set_trainable (teacher, FALSE);
    DfqQuantizer *q = (DfqQuantizer *) make_feature (DFQ_FEATURE_QUANTIZER, "use: uniform\nw_bits: 3\na_bits: 3");
    g_assert_true (dfq_quantizer_attach (q, student, &error));
    g_assert_no_error (error);
    dfq_quantizer_set_calibrating (q, TRUE);

    DfqStepContext ctx = { 0 };
    ctx.arena = arena;
    ctx.teacher = teacher;
    ctx.student = student;
    ctx.seed = 2;
    ctx.batch = 4;
    ctx.classes = 10;
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, make_feature (DFQ_FEATURE_LOSS, tc->yaml));
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, 9, 1, 0.0f, 1.0f);

    double same = -1.0;
    g_assert_nonnull (dfq_step_eval_losses (&ctx, list, x, NULL, NULL, &same, &error));
    g_assert_no_error (error);
    DfqLoss *loss = list->pdata[0];
    g_assert_cmpuint (dfq_tap_set_size (loss->teacher_taps), ==, tc->n_layers);
    g_assert_cmpuint (dfq_tap_set_size (loss->student_taps), ==, tc->n_layers);
    g_assert_cmpstr (dfq_tap_set_get (loss->teacher_taps, 0)->name, ==, tc->first);
    g_assert_cmpstr (dfq_tap_set_get (loss->teacher_taps, tc->n_layers - 1)->name, ==, tc->last);
    g_assert_cmpfloat (fabs (same), <=, 1e-6); /* KL: log p vs log_softmax round differently */

    ctx.quantizer = q;
    double quant = 0.0;
    for (guint i = 0; i < student->params->len; i++)
        dfq_tensor_zero_grad (student->params->pdata[i]);
    /* the student through its quantizer (the runner's student forward) */
    dfq_arena_reset (arena);
    x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, 9, 1, 0.0f, 1.0f);
    DfqTensor *total = dfq_step_eval_losses (&ctx, list, x, NULL, NULL, &quant, &error);
    g_assert_no_error (error);
    dfq_backward (total, arena);
    double gnorm = 0.0;
    for (guint i = 0; i < student->params->len; i++) {
        DfqTensor *p = student->params->pdata[i];
        for (gint64 k = 0; k < dfq_tensor_numel (p); k++)
            gnorm += (double) dfq_tensor_f32 (p->grad)[k] * dfq_tensor_f32 (p->grad)[k];
    }
    g_test_message ("%s: %u layers, loss %.6g with the W3A3 student, |grad| %.4g", tc->yaml, tc->n_layers, quant,
                    sqrt (gnorm));
    g_assert_cmpfloat (quant, >, 0.0);
    g_assert_true (isfinite (gnorm) && gnorm > 0.0);

    dfq_feature_free ((DfqFeature *) q);
    dfq_feature_free ((DfqFeature *) teacher);
    dfq_feature_free ((DfqFeature *) student);
}

static const TapCase taps_default = { "use: ca-kd", 18, "layers.0.bn1:out", "layers.8.bn2:out" };
static const TapCase taps_akt = { "use: ca-kd\ntaps: ['layers.*:body']", 9, "layers.0:body", "layers.8:body" };
static const TapCase taps_softmax = { "use: ca-kd\nmode: softmax\ntau: 0.5", 18, "layers.0.bn1:out", "layers.8.bn2:out" };

static void
test_no_match (void)
{
    g_test_summary ("Taps that match no feature map of the teacher are DFQ_MODEL_ERROR_MISSING naming the globs");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqModel *teacher = make_resnet ();
    DfqModel *student = make_resnet ();
    DfqStepContext ctx = { 0 };
    ctx.arena = arena;
    ctx.teacher = teacher;
    ctx.student = student;
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, make_feature (DFQ_FEATURE_LOSS, "use: ca-kd\ntaps: ['features.*:out']"));
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, 1, 28, 28);
    g_assert_null (dfq_step_eval_losses (&ctx, list, x, NULL, NULL, NULL, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
    g_assert_nonnull (strstr (error->message, "features.*:out"));
    dfq_feature_free ((DfqFeature *) teacher);
    dfq_feature_free ((DfqFeature *) student);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "ca-kd"));

    g_test_add_func ("/plugin/ca-kd/hand/single", test_hand_single);
    g_test_add_data_func ("/plugin/ca-kd/hand/random-l2", "l2", test_hand_random);
    g_test_add_data_func ("/plugin/ca-kd/hand/random-softmax", "softmax", test_hand_random);
    g_test_add_data_func ("/plugin/ca-kd/gradcheck/l2", "l2", test_gradient);
    g_test_add_data_func ("/plugin/ca-kd/gradcheck/softmax", "softmax", test_gradient);
    g_test_add_func ("/plugin/ca-kd/mismatch", test_mismatch);
    g_test_add_func ("/plugin/ca-kd/bad-params", test_bad_params);
    g_test_add_data_func ("/plugin/ca-kd/resnet/default-taps", &taps_default, test_resnet_taps);
    g_test_add_data_func ("/plugin/ca-kd/resnet/akt-bodies", &taps_akt, test_resnet_taps);
    g_test_add_data_func ("/plugin/ca-kd/resnet/softmax", &taps_softmax, test_resnet_taps);
    g_test_add_func ("/plugin/ca-kd/no-match", test_no_match);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
