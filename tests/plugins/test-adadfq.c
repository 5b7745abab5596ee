/* AdaDFQ (METHODS.md 4): the losses adadfq-margin, adadfq-balance and
 * adadfq-entropy against hand computations on small logits, their gradients
 * (w.r.t. student and teacher logits) against central differences, and the
 * adadfq synthesizer: its default loss list, any batch size (7 and 64; the
 * official code hard-codes 16), the generator trained through the quantized
 * student while the student's own parameters gather no gradient, and
 * bit-identical runs for one seed. */
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

/* ------------------------------------------------------------ the losses */

#define B 3
#define C 4

/* Small logits with distinct per-sample entropies of t - s. */
static const float logits_t[B * C] = { 2.0f, 0.5f, -1.0f, 0.0f, 0.3f, 0.2f, 0.1f, 0.0f, -0.5f, 1.5f, 0.7f, 3.0f };
static const float logits_s[B * C] = { 0.5f, 0.0f, 0.2f, -0.3f, 0.1f, 0.4f, -0.2f, 0.3f, 0.9f, -1.0f, 0.2f, 0.1f };
static const gint32 labels[B] = { 0, 2, 3 };

static double
entropy_row (const double *z, int n)
{
    double mx = z[0];
    for (int k = 1; k < n; k++)
        mx = MAX (mx, z[k]);
    double sum = 0.0;
    for (int k = 0; k < n; k++)
        sum += exp (z[k] - mx);
    double h = 0.0;
    for (int k = 0; k < n; k++) {
        double p = exp (z[k] - mx) / sum;
        h -= p * log (p);
    }
    return h;
}

static double
ce_row (const double *z, int n, int y)
{
    double mx = z[0];
    for (int k = 1; k < n; k++)
        mx = MAX (mx, z[k]);
    double sum = 0.0;
    for (int k = 0; k < n; k++)
        sum += exp (z[k] - mx);
    return -(z[y] - mx - log (sum));
}

/* marginal_loss by hand, lambda_l 0.1, lambda_u 0.8. */
static double
margin_by_hand (const float *t, const float *s, int n, int c, double ll, double lu)
{
    double h[64], m = INFINITY;
    g_assert (n <= 64);
    for (int b = 0; b < n; b++) {
        double z[16];
        for (int k = 0; k < c; k++)
            z[k] = (double) t[b * c + k] - s[b * c + k];
        h[b] = entropy_row (z, c);
        m = MIN (m, h[b]);
    }
    double low = 0.0, up = 0.0;
    for (int b = 0; b < n; b++) {
        double hp = (h[b] - m) / (log ((double) c) - m);
        low += MAX (ll - hp, 0.0) / n;
        up += MAX (hp - lu, 0.0) / n;
    }
    return low + up;
}

static double
balance_by_hand (double a_ds, double a_as)
{
    double ds = 0.0, as = 0.0;
    for (int b = 0; b < B; b++) {
        double zd[C], za[C];
        for (int k = 0; k < C; k++) {
            zd[k] = (double) logits_t[b * C + k] - logits_s[b * C + k];
            za[k] = (double) logits_t[b * C + k] + logits_s[b * C + k];
        }
        ds += ce_row (zd, C, labels[b]) / B;
        as += ce_row (za, C, labels[b]) / B;
    }
    return a_ds * ds + a_as * as;
}

static double
entropy_by_hand (double temp)
{
    double sum = 0.0;
    for (int b = 0; b < B; b++) {
        double z[C];
        for (int k = 0; k < C; k++)
            z[k] = ((double) logits_t[b * C + k] - logits_s[b * C + k]) / temp;
        sum += temp * temp * entropy_row (z, C);
    }
    return -sum / B;
}

/* One loss on given logits; both logits are PARAM leaves of @keep so that
 * their gradients can be read. */
static DfqTensor *
eval_loss (DfqLoss *loss, DfqArena *scratch, DfqTensor *t, DfqTensor *s, DfqTensor *y, GError **error)
{
    DfqStepContext ctx = { 0 };
    ctx.arena = scratch;
    DfqLossInputs in = { 0 };
    in.teacher_logits = t;
    in.student_logits = s;
    in.labels = y;
    return DFQ_LOSS_CLASS (loss)->compute (loss, &ctx, &in, error);
}

static void
test_hand (void)
{
    g_test_summary ("margin, balance and entropy on [3, 4] logits equal hand computations in double "
                    "(defaults and other parameters)");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *t = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, B, C), *s = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, B, C);
    memcpy (t->data, logits_t, sizeof logits_t);
    memcpy (s->data, logits_s, sizeof logits_s);
    DfqTensor *y = dfq_tensor_new_1d (keep, DFQ_DTYPE_I32, B);
    memcpy (y->data, labels, sizeof labels);
    struct {
        const char *yaml;
        double want;
    } cases[] = {
        { "use: adadfq-margin", margin_by_hand (logits_t, logits_s, B, C, 0.1, 0.8) },
        { "use: adadfq-margin\nlambda_l: 0.3\nlambda_u: 0.5", margin_by_hand (logits_t, logits_s, B, C, 0.3, 0.5) },
        { "use: adadfq-balance", balance_by_hand (0.2, 0.1) },
        { "use: adadfq-balance\nalpha_ds: 1\nalpha_as: 0", balance_by_hand (1.0, 0.0) },
        { "use: adadfq-entropy", entropy_by_hand (20.0) },
        { "use: adadfq-entropy\ntemperature: 1", entropy_by_hand (1.0) },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        g_autoptr (GError) error = NULL;
        DfqLoss *loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, cases[i].yaml);
        g_assert_true (DFQ_LOSS_CLASS (loss)->needs_student (loss));
        dfq_arena_reset (scratch);
        DfqTensor *v = eval_loss (loss, scratch, t, s, y, &error);
        g_assert_no_error (error);
        double got = dfq_tensor_f32 (v)[0];
        g_test_message ("%s: %.7f (hand %.7f)", cases[i].yaml, got, cases[i].want);
        g_assert_cmpfloat (fabs (got - cases[i].want), <=, 2e-6 * (1.0 + fabs (cases[i].want)));
        dfq_feature_free ((DfqFeature *) loss);
    }
    /* The margin's pieces: per-sample entropies of t - s at T = 1 land on both
     * sides of the margins, so both relu terms are active. */
    g_assert_cmpfloat (cases[0].want, >, 0.1 / B);
}

static void
test_margin_any_batch (void)
{
    g_test_summary ("The margin loss takes any batch size (official code: 16 only): batch 1, 7, 16, 64 match the "
                    "hand computation; batch 1 gives lambda_l (h' = 0)");
    const int sizes[] = { 1, 7, 16, 64 };
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqLoss *loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, "use: adadfq-margin");
    for (guint i = 0; i < G_N_ELEMENTS (sizes); i++) {
        g_autoptr (GError) error = NULL;
        DfqTensor *t = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, sizes[i], 10);
        DfqTensor *s = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, sizes[i], 10);
        dfq_rand_normal_fill (t, 4, 2 * i, 0.0f, 2.0f);
        dfq_rand_normal_fill (s, 4, 2 * i + 1, 0.0f, 2.0f);
        dfq_arena_reset (scratch);
        DfqTensor *v = eval_loss (loss, scratch, t, s, NULL, &error);
        g_assert_no_error (error);
        double want = margin_by_hand (dfq_tensor_f32 (t), dfq_tensor_f32 (s), sizes[i], 10, 0.1, 0.8);
        g_test_message ("batch %d: %.7f (hand %.7f)", sizes[i], dfq_tensor_f32 (v)[0], want);
        g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - want), <=, 2e-6);
        if (sizes[i] == 1)
            g_assert_cmpfloat (fabs (dfq_tensor_f32 (v)[0] - 0.1), <=, 1e-7);
    }
    dfq_feature_free ((DfqFeature *) loss);
}

static void
test_gradient (gconstpointer data)
{
    const char *yaml = data;
    g_test_summary ("The loss's gradients w.r.t. the student and the teacher logits equal central differences "
                    "(the margin's gradient flows through min_b h and 1/(log C - min_b h)); adadfq-entropy "
                    "gives the teacher none");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    const int n = 6, c = 5;
    DfqTensor *t = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, n, c), *s = dfq_tensor_new_2d (keep, DFQ_DTYPE_F32, n, c);
    dfq_rand_normal_fill (t, 8, 1, 0.0f, 0.4f);
    dfq_rand_normal_fill (s, 8, 2, 0.0f, 0.4f);
    /* Two confident rows close together (the second lands below lambda_l
     * once normalised) and near-uniform others (above lambda_u): every term
     * of the margin loss is active, not only the minimising row, whose own
     * h' = 0 has zero derivative. */
    dfq_tensor_f32 (t)[0] += 4.0f;
    dfq_tensor_f32 (t)[c + 1] += 3.8f;
    dfq_tensor_set_param (t);
    dfq_tensor_set_param (s);
    DfqTensor *y = dfq_tensor_new_1d (keep, DFQ_DTYPE_I32, n);
    dfq_rand_int_fill (y, 8, 3, c);
    DfqLoss *loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, yaml);
    gboolean entropy = strstr (yaml, "entropy") != NULL;

    g_autoptr (GError) error = NULL;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *v = eval_loss (loss, scratch, t, s, y, &error);
    g_assert_no_error (error);
    const double value = dfq_tensor_f32 (v)[0];
    dfq_backward (v, scratch);
    dfq_set_grad_enabled (FALSE);

    const double eps = 1e-3, rtol = 1e-2, atol = 1e-4 * (1.0 + fabs (value));
    double worst = 0.0, max_grad = 0.0;
    char where[160] = "";
    DfqTensor *inputs[2] = { s, t };
    for (int which = 0; which < 2; which++) {
        DfqTensor *x = inputs[which];
        g_autofree float *g = g_memdup2 (dfq_tensor_f32 (x->grad), (gsize) dfq_tensor_numel (x) * sizeof (float));
        float *d = dfq_tensor_f32 (x);
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++) {
            float saved = d[i];
            d[i] = saved + (float) eps;
            dfq_arena_reset (scratch);
            double fp = dfq_tensor_f32 (eval_loss (loss, scratch, t, s, y, NULL))[0];
            d[i] = saved - (float) eps;
            dfq_arena_reset (scratch);
            double fm = dfq_tensor_f32 (eval_loss (loss, scratch, t, s, y, NULL))[0];
            d[i] = saved;
            double numeric = (fp - fm) / (2.0 * eps);
            if (entropy && which == 1) {
                /* detached teacher: the function moves, the gradient must not */
                g_assert_cmpfloat (g[i], ==, 0.0f);
                continue;
            }
            double err = fabs (numeric - g[i]) / (atol + rtol * fabs (numeric));
            if (err > worst) {
                worst = err;
                g_snprintf (where, sizeof where, "%s element %" G_GINT64_FORMAT ": analytic %.7g numeric %.7g",
                            which == 0 ? "student" : "teacher", i, g[i], numeric);
            }
            max_grad = MAX (max_grad, fabs (g[i]));
        }
    }
    dfq_set_grad_enabled (prev);
    g_test_message ("%s = %.6g: worst ratio %.3f (%s), max |grad| %.4g", yaml, value, worst, where, max_grad);
    g_assert_cmpfloat (max_grad, >, 1e-3);
    g_assert_cmpfloat (worst, <, 1.0);
    dfq_feature_free ((DfqFeature *) loss);
}

static void
test_missing_inputs (void)
{
    g_test_summary ("Without the student's logits every AdaDFQ loss is DFQ_RUN_ERROR_STATE; balance without "
                    "labels too");
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *t = dfq_tensor_new_2d (scratch, DFQ_DTYPE_F32, 2, 3);
    const char *names[] = { "use: adadfq-margin", "use: adadfq-balance", "use: adadfq-entropy" };
    for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
        g_autoptr (GError) error = NULL;
        DfqLoss *loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, names[i]);
        g_assert_null (eval_loss (loss, scratch, t, NULL, NULL, &error));
        g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE);
        dfq_feature_free ((DfqFeature *) loss);
    }
    g_autoptr (GError) error = NULL;
    DfqLoss *loss = (DfqLoss *) make_feature (DFQ_FEATURE_LOSS, "use: adadfq-balance");
    g_assert_null (eval_loss (loss, scratch, t, t, NULL, &error));
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE);
    dfq_feature_free ((DfqFeature *) loss);
}

/* ------------------------------------------------------------ the synthesizer */

/* ResNet-20 (width 8, 1x28x28) with the interop weights: frozen teacher, and
 * a W3A3 student attached to the uniform quantizer, tracking ranges. */
typedef DfqTestSynth SynthFixture;

static void
synth_setup (SynthFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_init (f, registry, dfq_test_resnet20_w8 (registry, TRUE), dfq_test_resnet20_w8 (registry, FALSE),
                         3, 4, 7, 1, 28);
    dfq_test_synth_attach_quantizer (f, "use: uniform\nw_bits: 3\na_bits: 3");
    dfq_quantizer_set_calibrating (f->quantizer, TRUE);
}

static void
synth_teardown (SynthFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_clear (f);
}

static DfqSynthesizer *
make_synth (SynthFixture *f, const char *yaml)
{
    return dfq_test_synth_new (f, yaml, TRUE);
}

/* Copies of the trainable tensors of get_state. */
static GPtrArray *
snapshot_state (DfqSynthesizer *s, DfqArena *keep, gboolean params_only)
{
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (s)->get_state (s, state);
    GPtrArray *out = g_ptr_array_new ();
    for (guint i = 0; i < state->len; i++) {
        DfqTensor *t = state->pdata[i];
        if (params_only && !(t->flags & DFQ_TENSOR_FLAG_PARAM))
            continue;
        DfqTensor *c = dfq_tensor_dup (keep, t);
        dfq_tensor_set_name (c, "%s", t->name);
        g_ptr_array_add (out, c);
    }
    return out;
}

static void
test_synth_batch (SynthFixture *f, gconstpointer data)
{
    const int batch = GPOINTER_TO_INT (data);
    g_test_summary ("adadfq at batch 7 and 64: images [B,1,28,28], three finite loss terms (margin, balance, BNS) "
                    "summing to the loss, the generator moves, and the student's parameters get no gradient "
                    "during the generator step but stay trainable");
    f->ctx.batch = batch;
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_synth (f, "use: adadfq");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autoptr (GPtrArray) before = snapshot_state (s, keep, TRUE);
    for (gint64 i = 0; i < 2; i++) {
        DfqSynthBatch out;
        dfq_test_synth_step (f, s, i, &out);
        g_assert_cmpint (out.images->shape[0], ==, batch);
        g_assert_cmpint (out.images->shape[1], ==, 1);
        g_assert_cmpint (out.images->shape[2], ==, 28);
        g_assert_false (dfq_tensor_requires_grad (out.images));
        g_assert_cmpuint (out.n_loss_terms, ==, 3);
        double sum = 0.0;
        for (guint k = 0; k < 3; k++) {
            g_assert_true (isfinite (out.loss_terms[k]));
            sum += out.loss_terms[k];
        }
        g_test_message ("batch %d step %" G_GINT64_FORMAT ": loss %.5f = margin %.5f + balance %.5f + bns %.5f", batch,
                        i, out.loss, out.loss_terms[0], out.loss_terms[1], out.loss_terms[2]);
        g_assert_cmpfloat (fabs (out.loss - sum), <=, 1e-5 * (1.0 + fabs (sum)));
    }
    g_autoptr (GPtrArray) after = snapshot_state (s, keep, TRUE);
    float moved = 0.0f;
    for (guint i = 0; i < before->len; i++)
        moved = MAX (moved, dfq_tensor_max_abs_diff (before->pdata[i], after->pdata[i]));
    g_assert_cmpfloat (moved, >, 0.0f);
    for (guint i = 0; i < f->student->params->len; i++) {
        DfqTensor *p = f->student->params->pdata[i];
        g_assert_true (dfq_tensor_requires_grad (p));
        g_assert_nonnull (p->grad);
        for (gint64 k = 0; k < dfq_tensor_numel (p); k++)
            if (dfq_tensor_f32 (p->grad)[k] != 0.0f) {
                g_test_fail_printf ("%s got a gradient in the generator step", p->name);
                return;
            }
    }
}

static void
test_synth_defaults (void)
{
    g_test_summary ("adadfq's default generator losses: [adadfq-margin, adadfq-balance, bns (weight 1)]; "
                    "margin 0.1/0.8, balance 0.2/0.1; Adam 1e-3 (0.5, 0.999)");
    const char *want[] = { "use: adadfq-margin", "lambda_l: 0.1", "lambda_u: 0.8", "use: adadfq-balance",
                           "alpha_ds: 0.2", "alpha_as: 0.1", "use: bns", "use: adam", "betas: [0.5, 0.999]" };
    g_autofree char *yaml = dfq_test_assert_defaults (registry, DFQ_FEATURE_SYNTHESIZER, "adadfq", want,
                                                      G_N_ELEMENTS (want));
    g_assert_null (strstr (yaml, "weight: 0.1")); /* BNS weight 1, not GDFQ's 0.1 */
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "adadfq");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) feature = dfq_feature_new_default (registry, klass, &error);
    g_assert_no_error (error);
    GPtrArray *losses = NULL;
    for (guint i = 0; i < klass->n_params; i++)
        if (strcmp (klass->params[i].name, "losses") == 0)
            losses = *(GPtrArray **) ((guint8 *) feature + klass->params[i].offset);
    g_assert_nonnull (losses);
    g_assert_cmpuint (losses->len, ==, 3);
    for (guint i = 0; i < 3; i++)
        g_assert_cmpfloat (((DfqFeature *) losses->pdata[i])->weight, ==, 1.0);
}

static void
test_synth_deterministic (SynthFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("Two adadfq runs with one seed give bit-identical generator state (weights, BN buffers, Adam) "
                    "and student activation ranges; another seed differs");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    GPtrArray *runs[3];
    const guint64 seeds[3] = { 5, 5, 6 };
    for (int r = 0; r < 3; r++) {
        /* a fresh quantizer each run: its ranges are part of the outcome */
        g_autoptr (GError) error = NULL;
        dfq_feature_free ((DfqFeature *) f->quantizer);
        f->quantizer = (DfqQuantizer *) make_feature (DFQ_FEATURE_QUANTIZER, "use: uniform\nw_bits: 3\na_bits: 3");
        g_assert_true (dfq_quantizer_attach (f->quantizer, f->student, &error));
        dfq_quantizer_set_calibrating (f->quantizer, TRUE);
        f->ctx.quantizer = f->quantizer;
        f->ctx.seed = seeds[r];
        g_autoptr (DfqFeature) feature = (DfqFeature *) make_synth (f, "use: adadfq");
        DfqSynthBatch out;
        for (int i = 0; i < 3; i++)
            dfq_test_synth_step (f, (DfqSynthesizer *) feature, i, &out);
        runs[r] = snapshot_state ((DfqSynthesizer *) feature, keep, FALSE);
        g_autoptr (GPtrArray) q = g_ptr_array_new ();
        DFQ_QUANTIZER_CLASS (f->quantizer)->get_state (f->quantizer, q);
        for (guint i = 0; i < q->len; i++)
            g_ptr_array_add (runs[r], dfq_tensor_dup (keep, q->pdata[i]));
    }
    g_assert_cmpuint (runs[0]->len, ==, runs[1]->len);
    gboolean differs = FALSE;
    for (guint i = 0; i < runs[0]->len; i++) {
        const DfqTensor *a = runs[0]->pdata[i], *b = runs[1]->pdata[i], *c = runs[2]->pdata[i];
        gsize bytes = (gsize) dfq_tensor_numel (a) * sizeof (float);
        if (memcmp (a->data, b->data, bytes) != 0)
            g_test_fail_printf ("%s differs between two runs with one seed", a->name);
        differs |= memcmp (a->data, c->data, bytes) != 0;
    }
    g_assert_true (differs);
    for (int r = 0; r < 3; r++)
        g_ptr_array_unref (runs[r]);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "adadfq-margin"));

    g_test_add_func ("/plugin/adadfq/losses/hand", test_hand);
    g_test_add_func ("/plugin/adadfq/losses/margin-any-batch", test_margin_any_batch);
    g_test_add_data_func ("/plugin/adadfq/losses/gradcheck/margin", "use: adadfq-margin", test_gradient);
    g_test_add_data_func ("/plugin/adadfq/losses/gradcheck/margin-narrow", "use: adadfq-margin\nlambda_l: 0.5\nlambda_u: 0.6",
                          test_gradient);
    g_test_add_data_func ("/plugin/adadfq/losses/gradcheck/balance", "use: adadfq-balance", test_gradient);
    g_test_add_data_func ("/plugin/adadfq/losses/gradcheck/entropy", "use: adadfq-entropy\ntemperature: 2", test_gradient);
    g_test_add_func ("/plugin/adadfq/losses/missing-inputs", test_missing_inputs);
    g_test_add_func ("/plugin/adadfq/synth/defaults", test_synth_defaults);
#define ADD(path, data, fn) g_test_add (path, SynthFixture, data, synth_setup, fn, synth_teardown)
    ADD ("/plugin/adadfq/synth/batch-7", GINT_TO_POINTER (7), test_synth_batch);
    ADD ("/plugin/adadfq/synth/batch-64", GINT_TO_POINTER (64), test_synth_batch);
    ADD ("/plugin/adadfq/synth/deterministic", NULL, test_synth_deterministic);
#undef ADD
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
