/* Loss plugins ce, bns and kd against hand computations (METHODS.md 1.4, 2.2):
 * bns from the teacher's BN-input taps, kd with PyTorch's KLDivLoss "mean"
 * reduction times T^2, ce with hard and soft labels, and a weighted list as
 * the GDFQ generator loss evaluates it. */
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

/* ResNet-20 (width 8, 1x28x28) with the PyTorch interop weights (21 BN layers
 * with non-trivial running statistics) as the frozen teacher. */
typedef DfqTestSynth LossFixture;

static DfqModel *
make_teacher (void)
{
    return dfq_test_resnet20_w8 (registry, TRUE);
}

static void
fixture_setup (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_init (f, registry, make_teacher (), NULL, 7, 0, 6, 1, 28);
}

static void
fixture_teardown (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_clear (f);
}

static DfqTensor *
random_images (LossFixture *f, guint64 stream)
{
    DfqTensor *x = dfq_tensor_new_4d (f->arena, DFQ_DTYPE_F32, f->ctx.batch, 1, 28, 28);
    dfq_rand_normal_fill (x, 11, stream, 0.0f, 1.0f);
    return x;
}

static GPtrArray *
make_list (const char *const *yamls)
{
    GPtrArray *list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    for (guint i = 0; yamls[i] != NULL; i++)
        g_ptr_array_add (list, make_feature (DFQ_FEATURE_LOSS, yamls[i]));
    return list;
}

/* GDFQ's BNS by hand, in double precision, from the taps of a separate teacher
 * forward: per BN layer the mean and biased variance over (N, H, W) of its
 * input, squared error against the running stats averaged over channels. */
static double
bns_by_hand (LossFixture *f, DfqTensor *x, const char *pattern, guint *n_layers)
{
    const char *patterns[] = { pattern, NULL };
    g_autoptr (DfqTapSet) taps = dfq_tap_set_new (patterns);
    DfqTapSet *sets[] = { taps };
    gboolean prev = dfq_set_grad_enabled (FALSE);
    dfq_step_teacher_forward (&f->ctx, x, sets, 1);
    dfq_set_grad_enabled (prev);
    double total = 0.0;
    *n_layers = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *tap = dfq_tap_set_get (taps, i);
        if (tap->kind != DFQ_TAP_BN_IN)
            continue;
        const DfqTensor *t = tap->tensor;
        const gint64 n = t->shape[0], c = t->shape[1], hw = t->shape[2] * t->shape[3];
        const float *d = dfq_tensor_f32 (t);
        double se_mean = 0.0, se_var = 0.0;
        for (gint64 ch = 0; ch < c; ch++) {
            double s = 0.0, s2 = 0.0;
            for (gint64 b = 0; b < n; b++)
                for (gint64 k = 0; k < hw; k++) {
                    double v = d[(b * c + ch) * hw + k];
                    s += v;
                    s2 += v * v;
                }
            double m = (double) n * (double) hw;
            double mean = s / m, var = s2 / m - mean * mean;
            double dm = mean - dfq_tensor_f32 (tap->aux0)[ch];
            double dv = var - dfq_tensor_f32 (tap->aux1)[ch];
            se_mean += dm * dm;
            se_var += dv * dv;
        }
        total += se_mean / (double) c + se_var / (double) c;
        (*n_layers)++;
    }
    return *n_layers > 0 ? total / *n_layers : 0.0;
}

static void
test_bns_hand (LossFixture *f, gconstpointer data)
{
    const char *pattern = data;
    g_test_summary ("bns equals (1/L) sum_l MSE(mean, running_mean) + MSE(biased var, running_var) over the taps");
    g_autofree char *yaml = g_strdup_printf ("use: bns\npattern: '%s'\n", pattern);
    const char *yamls[] = { yaml, NULL };
    g_autoptr (GPtrArray) list = make_list (yamls);
    DfqTensor *x = random_images (f, 1);
    guint n_layers = 0;
    double want = bns_by_hand (f, x, pattern, &n_layers);
    if (strcmp (pattern, "*:in") == 0)
        g_assert_cmpuint (n_layers, ==, 21); /* ResNet-20: 19 + 2 projection BNs */
    else
        g_assert_cmpuint (n_layers, ==, 2);

    g_autoptr (GError) error = NULL;
    double value = 0.0;
    DfqTensor *loss = dfq_step_eval_losses (&f->ctx, list, x, NULL, NULL, &value, &error);
    g_assert_no_error (error);
    g_assert_nonnull (loss);
    g_test_message ("bns over %u layers: %.6g (hand %.6g)", n_layers, value, want);
    g_assert_cmpfloat (want, >, 0.0);
    g_assert_cmpfloat (fabs (value - want), <=, 1e-4 * want);
    g_assert_cmpfloat (dfq_tensor_f32 (loss)[0], ==, (float) value);
}

static void
test_bns_gradient (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("bns is differentiable w.r.t. the images (what trains the generator)");
    const char *yamls[] = { "use: bns", NULL };
    g_autoptr (GPtrArray) list = make_list (yamls);
    DfqTensor *x = random_images (f, 2);
    dfq_tensor_set_param (x);
    g_autoptr (GError) error = NULL;
    DfqTensor *loss = dfq_step_eval_losses (&f->ctx, list, x, NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    dfq_backward (loss, f->arena);
    double norm = 0.0;
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
        norm += (double) dfq_tensor_f32 (x->grad)[i] * dfq_tensor_f32 (x->grad)[i];
    g_assert_cmpfloat (norm, >, 0.0);
    g_assert_true (isfinite (norm));
}

static void
test_bns_no_match (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("A pattern that selects no BN layer is a GError naming the pattern");
    const char *yamls[] = { "use: bns\npattern: 'nothing*:in'", NULL };
    g_autoptr (GPtrArray) list = make_list (yamls);
    g_autoptr (GError) error = NULL;
    DfqTensor *loss = dfq_step_eval_losses (&f->ctx, list, random_images (f, 3), NULL, NULL, NULL, &error);
    g_assert_null (loss);
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING);
    g_assert_nonnull (strstr (error->message, "nothing*:in"));
}

/* Random [B, K] logits in the fixture's arena. */
static DfqTensor *
random_logits (LossFixture *f, gint64 b, gint64 k, guint64 stream, float scale)
{
    DfqTensor *t = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, b, k);
    dfq_rand_normal_fill (t, 3, stream, 0.0f, scale);
    return t;
}

static void
log_softmax_row (const float *x, gint64 k, double scale, double *out)
{
    double mx = -INFINITY, s = 0.0;
    for (gint64 j = 0; j < k; j++)
        mx = MAX (mx, x[j] * scale);
    for (gint64 j = 0; j < k; j++)
        s += exp (x[j] * scale - mx);
    for (gint64 j = 0; j < k; j++)
        out[j] = x[j] * scale - mx - log (s);
}

typedef struct {
    const char *name;
    const char *yaml;
    double temperature;
    int denom_kind; /* 0 mean (B*K), 1 batchmean (B), 2 sum */
} KdCase;

static const KdCase kd_cases[] = {
    { "mean, T=20 (defaults)", "use: kd", 20.0, 0 },
    { "batchmean, T=4", "use: kd\ntemperature: 4\nreduction: batchmean", 4.0, 1 },
    { "sum, T=1", "use: kd\ntemperature: 1\nreduction: sum", 1.0, 2 },
};

static void
test_kd_hand (LossFixture *f, gconstpointer data)
{
    const KdCase *c = data;
    g_test_summary ("kd = T^2 * KLDiv(log_softmax(s/T), softmax(t/T)) with the given reduction; teacher detached");
    g_autoptr (DfqFeature) loss = make_feature (DFQ_FEATURE_LOSS, c->yaml);
    g_assert_true (DFQ_LOSS_CLASS (loss)->needs_student ((DfqLoss *) loss));
    const gint64 b = 5, k = 10;
    DfqTensor *s = random_logits (f, b, k, 1, 8.0f);
    DfqTensor *t = random_logits (f, b, k, 2, 8.0f);
    dfq_tensor_set_param (s);
    dfq_tensor_set_param (t);
    DfqLossInputs in = { NULL, NULL, NULL, t, s };
    g_autoptr (GError) error = NULL;
    DfqTensor *v = DFQ_LOSS_CLASS (loss)->compute ((DfqLoss *) loss, &f->ctx, &in, &error);
    g_assert_no_error (error);

    double kl = 0.0, lp[16], lq[16];
    const double inv_t = 1.0 / c->temperature;
    for (gint64 i = 0; i < b; i++) {
        log_softmax_row (dfq_tensor_f32 (t) + i * k, k, inv_t, lp);
        log_softmax_row (dfq_tensor_f32 (s) + i * k, k, inv_t, lq);
        for (gint64 j = 0; j < k; j++)
            kl += exp (lp[j]) * (lp[j] - lq[j]);
    }
    double denom = c->denom_kind == 0 ? (double) (b * k) : c->denom_kind == 1 ? (double) b : 1.0;
    double want = c->temperature * c->temperature * kl / denom;
    g_test_message ("kd %s: %.6g (hand %.6g)", c->name, dfq_tensor_f32 (v)[0], want);
    g_assert_cmpfloat (want, >, 0.0);
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - want), <=, 1e-4 * want);

    dfq_backward (v, f->arena);
    double gs = 0.0, gt = 0.0;
    for (gint64 i = 0; i < b * k; i++) {
        gs += fabs (dfq_tensor_f32 (s->grad)[i]);
        gt += fabs (dfq_tensor_f32 (t->grad)[i]);
    }
    g_assert_cmpfloat (gs, >, 0.0);
    g_assert_cmpfloat (gt, ==, 0.0); /* dfq_detach: no gradient into the teacher */
}

static void
test_kd_student_copy (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("Through dfq_step_eval_losses kd runs the student; a student equal to the teacher gives 0");
    g_autoptr (DfqFeature) student = (DfqFeature *) make_teacher ();
    f->ctx.student = (DfqModel *) student;
    const char *yamls[] = { "use: kd", NULL };
    g_autoptr (GPtrArray) list = make_list (yamls);
    g_autoptr (GError) error = NULL;
    double value = -1.0;
    DfqTensor *loss = dfq_step_eval_losses (&f->ctx, list, random_images (f, 4), NULL, NULL, &value, &error);
    g_assert_no_error (error);
    g_assert_nonnull (loss);
    g_assert_cmpfloat (fabs (value), <=, 1e-6);
    f->ctx.student = NULL;

    /* Without a student the step says so instead of crashing. */
    loss = dfq_step_eval_losses (&f->ctx, list, random_images (f, 4), NULL, NULL, &value, &error);
    g_assert_null (loss);
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE);
}

/* Mean over rows of -sum_j p_j log softmax(x)_j. */
static double
ce_by_hand (const DfqTensor *logits, const gint32 *hard, const DfqTensor *soft)
{
    const gint64 b = logits->shape[0], k = logits->shape[1];
    double total = 0.0, lq[16];
    for (gint64 i = 0; i < b; i++) {
        log_softmax_row (dfq_tensor_f32 (logits) + i * k, k, 1.0, lq);
        if (hard != NULL)
            total -= lq[hard[i]];
        else
            for (gint64 j = 0; j < k; j++)
                total -= dfq_tensor_f32 (soft)[i * k + j] * lq[j];
    }
    return total / (double) b;
}

static void
test_ce_hard_soft (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("ce: mean over the batch of -log softmax at the label (hard) or -sum p log softmax (soft), "
                    "on the teacher's or the student's logits");
    g_autoptr (DfqFeature) ce_t = make_feature (DFQ_FEATURE_LOSS, "use: ce\ntarget: teacher");
    g_autoptr (DfqFeature) ce_s = make_feature (DFQ_FEATURE_LOSS, "use: ce");
    g_assert_false (DFQ_LOSS_CLASS (ce_t)->needs_student ((DfqLoss *) ce_t));
    g_assert_true (DFQ_LOSS_CLASS (ce_s)->needs_student ((DfqLoss *) ce_s)); /* default target: student */

    const gint64 b = 7, k = 10;
    DfqTensor *t = random_logits (f, b, k, 5, 3.0f);
    DfqTensor *s = random_logits (f, b, k, 6, 3.0f);
    DfqTensor *hard = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_I32, b);
    dfq_rand_int_fill (hard, 9, 1, (gint32) k);
    DfqTensor *soft = dfq_tensor_new_2d (f->arena, DFQ_DTYPE_F32, b, k);
    dfq_rand_uniform_fill (soft, 9, 2, 0.0f, 1.0f);
    for (gint64 i = 0; i < b; i++) {
        float sum = 0.0f;
        for (gint64 j = 0; j < k; j++)
            sum += dfq_tensor_f32 (soft)[i * k + j];
        for (gint64 j = 0; j < k; j++)
            dfq_tensor_f32 (soft)[i * k + j] /= sum;
    }
    g_autoptr (GError) error = NULL;
    DfqLossInputs in = { NULL, hard, NULL, t, s };
    DfqTensor *v = DFQ_LOSS_CLASS (ce_t)->compute ((DfqLoss *) ce_t, &f->ctx, &in, &error);
    g_assert_no_error (error);
    double want = ce_by_hand (t, dfq_tensor_i32 (hard), NULL);
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - want), <=, 1e-5 * want);
    v = DFQ_LOSS_CLASS (ce_s)->compute ((DfqLoss *) ce_s, &f->ctx, &in, &error);
    g_assert_no_error (error);
    want = ce_by_hand (s, dfq_tensor_i32 (hard), NULL);
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - want), <=, 1e-5 * want);

    /* Soft labels win when present. */
    in.soft_labels = soft;
    v = DFQ_LOSS_CLASS (ce_t)->compute ((DfqLoss *) ce_t, &f->ctx, &in, &error);
    g_assert_no_error (error);
    want = ce_by_hand (t, NULL, soft);
    g_test_message ("ce soft (teacher): %.6g (hand %.6g)", dfq_tensor_f32 (v)[0], want);
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - want), <=, 1e-5 * want);

    /* No labels at all: a GError, not a crash. */
    in.labels = NULL;
    in.soft_labels = NULL;
    v = DFQ_LOSS_CLASS (ce_t)->compute ((DfqLoss *) ce_t, &f->ctx, &in, &error);
    g_assert_null (v);
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE);
}

static void
test_weighted_list (LossFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("The GDFQ generator list [ce(teacher), 0.1 bns] sums weighted terms and reports them unweighted");
    const char *yamls[] = { "use: ce\ntarget: teacher", "use: bns\nweight: 0.1", NULL };
    g_autoptr (GPtrArray) list = make_list (yamls);
    g_assert_cmpfloat (((DfqFeature *) list->pdata[1])->weight, ==, 0.1);
    DfqTensor *x = random_images (f, 8);
    DfqTensor *y = dfq_tensor_new_1d (f->arena, DFQ_DTYPE_I32, f->ctx.batch);
    dfq_rand_int_fill (y, 1, 1, 10);
    g_autoptr (GError) error = NULL;
    double values[2] = { 0 };
    DfqTensor *loss = dfq_step_eval_losses (&f->ctx, list, x, y, NULL, values, &error);
    g_assert_no_error (error);
    guint n_layers;
    double bns = bns_by_hand (f, x, "*:in", &n_layers);
    g_assert_cmpfloat (fabs (values[1] - bns), <=, 1e-4 * bns);
    double want = values[0] + 0.1 * values[1];
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (loss)[0] - want), <=, 1e-5 * want);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "bns"));

#define ADD(path, data, fn) g_test_add (path, LossFixture, data, fixture_setup, fn, fixture_teardown)
    ADD ("/plugin/bns/hand/all", "*:in", test_bns_hand);
    ADD ("/plugin/bns/hand/pattern", "layers.0.*:in", test_bns_hand);
    ADD ("/plugin/bns/gradient", NULL, test_bns_gradient);
    ADD ("/plugin/bns/no-match", NULL, test_bns_no_match);
    ADD ("/plugin/kd/hand/mean-t20", &kd_cases[0], test_kd_hand);
    ADD ("/plugin/kd/hand/batchmean-t4", &kd_cases[1], test_kd_hand);
    ADD ("/plugin/kd/hand/sum-t1", &kd_cases[2], test_kd_hand);
    ADD ("/plugin/kd/student-copy", NULL, test_kd_student_copy);
    ADD ("/plugin/ce/hard-soft", NULL, test_ce_hard_soft);
    ADD ("/plugin/losses/weighted-list", NULL, test_weighted_list);
#undef ADD
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
