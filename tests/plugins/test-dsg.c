/* DSG (plugins/losses/bns: bns-slack; plugins/losses/pixel-priors: tv-l2, l2-norm, sci;
 * plugins/synthesizers/zeroq: dsg), METHODS.md 8:
 * - the hinge is zero inside the margins and quadratic outside: bns-slack
 *   against the formula by hand (in double) from the teacher's BN inputs, per
 *   mode (paper, abs, batch statistics), with margins 0 it is bns-sample;
 * - the LSE weights of each mode against a hand-computed case;
 * - quantile margins from a fixed reference batch against the quantile by
 *   hand; the margins file in the run directory; the same margins again (a
 *   resumed run), and `margins: file` reading them back;
 * - the warm-up reference batch is zeroq's first batch;
 * - gradients of bns-slack, tv-l2 and l2-norm against central differences;
 * - sci (the official code's, gradient-free) against a two-image case by hand;
 * - dsg: the same seed gives the same images bit for bit, with labels. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

/* ------------------------------------------------------------ by hand */

typedef enum { HAND_LSE_OFF, HAND_LSE_PAPER, HAND_LSE_PTQ, HAND_LSE_QAT } HandLse;

/* The weight of the squared residual of (sample b, channel c) at layer l of L. */
static double
hand_lse_weight (HandLse lse, gint64 b, gint64 c, guint l, guint L, gint64 lse_layers)
{
    switch (lse) {
    case HAND_LSE_PAPER:
        return b % L == l ? 2.0 : 1.0;
    case HAND_LSE_PTQ: /* the code: D[i] *= 2 for i == cnt, i < min(B, layer_num) */
        return b == (gint64) l && b < lse_layers ? 4.0 : 1.0;
    case HAND_LSE_QAT: /* gap[num] *= sqrt(2) */
        return c == (gint64) l ? 2.0 : 1.0;
    default:
        return 1.0;
    }
}

/* per-sample mean and sqrt(unbiased var + eps) of the (b,c) plane of x */
static void
hand_plane_stats (const DfqTensor *x, gint64 b, gint64 c, double *mu, double *sd)
{
    gint64 C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *p = dfq_tensor_f32 (x) + (b * C + c) * HW;
    double m = 0.0, v = 0.0;
    for (gint64 i = 0; i < HW; i++)
        m += p[i];
    m /= (double) HW;
    for (gint64 i = 0; i < HW; i++)
        v += (p[i] - m) * (p[i] - m);
    *mu = m;
    *sd = sqrt (v / (double) (HW - 1) + 1e-6);
}

static double
hand_hinge (double gap, double m, gboolean abs_mode)
{
    double d = gap - m;
    if (abs_mode)
        return d * d;
    return d > 0 ? d * d : 0.0;
}

/* bns-slack, stats: sample, reduce: sum, by hand from the BN-input taps. */
static double
hand_slack_sample (const DfqTapSet *taps, const double *delta, const double *gamma, gboolean abs_mode, HandLse lse,
                   gint64 lse_layers)
{
    guint L = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++)
        L += dfq_tap_set_get (taps, i)->kind == DFQ_TAP_BN_IN;
    double total = 0.0;
    guint l = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *t = dfq_tap_set_get (taps, i);
        if (t->kind != DFQ_TAP_BN_IN)
            continue;
        gint64 B = t->tensor->shape[0], C = t->tensor->shape[1];
        double acc = 0.0;
        for (gint64 b = 0; b < B; b++)
            for (gint64 c = 0; c < C; c++) {
                double mu, sd;
                hand_plane_stats (t->tensor, b, c, &mu, &sd);
                double tm = dfq_tensor_f32 (t->aux0)[c], ts = sqrt ((double) dfq_tensor_f32 (t->aux1)[c] + 1e-6);
                double w = hand_lse_weight (lse, b, c, l, L, lse_layers);
                acc += w * (hand_hinge (fabs (mu - tm), delta[l], abs_mode) + hand_hinge (fabs (sd - ts), gamma[l], abs_mode));
            }
        total += acc / (double) B;
        l++;
    }
    return total;
}

/* bns-slack, stats: batch, reduce: mean: batch mean and biased variance. */
static double
hand_slack_batch (const DfqTapSet *taps, double m, double n, gboolean abs_mode, HandLse lse)
{
    double total = 0.0;
    guint L = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *t = dfq_tap_set_get (taps, i);
        if (t->kind != DFQ_TAP_BN_IN)
            continue;
        gint64 B = t->tensor->shape[0], C = t->tensor->shape[1], HW = t->tensor->shape[2] * t->tensor->shape[3];
        for (gint64 c = 0; c < C; c++) {
            double mu = 0.0, var = 0.0;
            for (gint64 b = 0; b < B; b++)
                for (gint64 k = 0; k < HW; k++)
                    mu += dfq_tensor_f32 (t->tensor)[(b * C + c) * HW + k];
            mu /= (double) (B * HW);
            for (gint64 b = 0; b < B; b++)
                for (gint64 k = 0; k < HW; k++)
                    var += pow (dfq_tensor_f32 (t->tensor)[(b * C + c) * HW + k] - mu, 2);
            var /= (double) (B * HW);
            double w = hand_lse_weight (lse, 0, c, L, 0, 0);
            total += w * (hand_hinge (fabs (mu - dfq_tensor_f32 (t->aux0)[c]), m, abs_mode)
                          + hand_hinge (fabs (var - dfq_tensor_f32 (t->aux1)[c]), n, abs_mode));
        }
        L++;
    }
    return total / (double) L;
}

/* numpy.quantile (linear) of @n doubles */
static double
hand_quantile (double *v, gsize n, double q)
{
    for (gsize i = 1; i < n; i++) /* insertion sort: a test's few values */
        for (gsize j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    double pos = q * (double) (n - 1);
    gsize lo = (gsize) floor (pos);
    return lo + 1 >= n ? v[n - 1] : v[lo] + (pos - (double) lo) * (v[lo + 1] - v[lo]);
}

/* ------------------------------------------------------------ fixtures */

typedef struct {
    DfqTestSynth f;
    DfqTensor *x;
} Setup;

static void
setup_init (Setup *s, int batch, guint64 seed)
{
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    dfq_test_synth_init (&s->f, registry, teacher, NULL, seed, 1, batch, 1, 28);
    s->x = dfq_tensor_new_4d (s->f.arena, DFQ_DTYPE_F32, batch, 1, 28, 28);
    dfq_rand_normal_fill (s->x, seed, 1, 0.1f, 0.8f);
}

/* The value of one loss (from YAML) at s->x; the loss is returned in @out. */
static double
eval_one (Setup *s, const char *yaml, DfqFeature **out)
{
    DfqFeature *loss = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, yaml);
    g_autoptr (GPtrArray) list = g_ptr_array_new ();
    g_ptr_array_add (list, loss);
    double v = NAN;
    g_autoptr (GError) error = NULL;
    DfqTensor *total = dfq_step_eval_losses (&s->f.ctx, list, s->x, NULL, NULL, &v, &error);
    g_assert_no_error (error);
    g_assert_nonnull (total);
    *out = loss;
    return v;
}

static void
assert_close (double got, double want, const char *what)
{
    g_test_message ("%s: %.9g (hand %.9g)", what, got, want);
    g_assert_cmpfloat (fabs (got - want), <=, 1e-4 * fabs (want) + 1e-7);
}

/* ------------------------------------------------------------ tests */

static void
test_hinge (void)
{
    g_test_summary ("bns-slack is zero inside the margins, quadratic outside (paper), |gap - m|^2 (abs), and "
                    "bns-sample at margins 0, against the formula by hand");
    Setup s;
    setup_init (&s, 4, 3);
    DfqFeature *loss;
    /* margins above every gap: zero, exactly */
    double v = eval_one (&s, "use: bns-slack\nmargins: fixed\ndelta: [1e6]\ngamma: [1e6]\nlse: off", &loss);
    g_assert_cmpfloat (v, ==, 0.0);
    dfq_feature_free (loss);

    /* margins 0 and no LSE: ZeroQ's exact matching */
    DfqFeature *exact;
    double zeroq = eval_one (&s, "use: bns-sample", &exact);
    v = eval_one (&s, "use: bns-slack\nmargins: fixed\ndelta: [0]\ngamma: [0]\nlse: off", &loss);
    assert_close (v, zeroq, "margins 0 vs bns-sample");
    dfq_feature_free (exact);
    dfq_feature_free (loss);

    /* margins inside the range of the gaps: some residuals clipped, some not */
    double delta[21], gamma[21];
    for (int l = 0; l < 21; l++)
        delta[l] = 0.05, gamma[l] = 0.08;
    v = eval_one (&s, "use: bns-slack\nmargins: fixed\ndelta: [0.05]\ngamma: [0.08]\nlse: off", &loss);
    double hand = hand_slack_sample (((DfqLoss *) loss)->teacher_taps, delta, gamma, FALSE, HAND_LSE_OFF, 0);
    assert_close (v, hand, "paper hinge, margins 0.05 / 0.08");
    g_assert_cmpfloat (v, <, zeroq);
    g_assert_cmpfloat (v, >, 0.0);
    dfq_feature_free (loss);

    /* quadratic outside: scaling the gaps past the margin by moving the
     * margin down by t changes each clipped residual by exactly t */
    v = eval_one (&s, "use: bns-slack\nmargins: fixed\ndelta: [0.05]\ngamma: [0.08]\nlse: off\nhinge: abs", &loss);
    hand = hand_slack_sample (((DfqLoss *) loss)->teacher_taps, delta, gamma, TRUE, HAND_LSE_OFF, 0);
    assert_close (v, hand, "abs hinge (QAT code), margins 0.05 / 0.08");
    dfq_feature_free (loss);

    /* batch statistics (the QAT form), mean over layers */
    v = eval_one (&s, "use: bns-slack\nstats: batch\nreduce: mean\nlse: off\nmargins: fixed\ndelta: [0.01]\ngamma: [0.02]",
                  &loss);
    hand = hand_slack_batch (((DfqLoss *) loss)->teacher_taps, 0.01, 0.02, FALSE, HAND_LSE_OFF);
    assert_close (v, hand, "batch statistics, paper hinge");
    dfq_feature_free (loss);
    v = eval_one (&s,
                  "use: bns-slack\nstats: batch\nreduce: mean\nhinge: abs\nlse: qat-code\nmargins: fixed\ndelta: [0.01]\n"
                  "gamma: [0.02]",
                  &loss);
    hand = hand_slack_batch (((DfqLoss *) loss)->teacher_taps, 0.01, 0.02, TRUE, HAND_LSE_QAT);
    assert_close (v, hand, "batch statistics, abs hinge, qat-code LSE (the QAT code)");
    dfq_feature_free (loss);
    dfq_test_synth_clear (&s.f);
}

static void
test_hinge_shape (void)
{
    g_test_summary ("One layer, one residual: the loss is 0 for margins above the gap and (gap - m)^2 / B below it");
    Setup s;
    setup_init (&s, 2, 5);
    DfqFeature *loss;
    /* the first BN input only; spread margin huge so only the means count */
    double v0 = eval_one (&s, "use: bns-slack\npattern: 'bn:in'\nmargins: fixed\ndelta: [0]\ngamma: [1e6]\nlse: off",
                          &loss);
    const DfqTap *t = dfq_tap_set_get (((DfqLoss *) loss)->teacher_taps, 0);
    gint64 B = t->tensor->shape[0], C = t->tensor->shape[1];
    double gaps[64];
    g_assert_cmpint (B * C, <=, 64);
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++) {
            double mu, sd;
            hand_plane_stats (t->tensor, b, c, &mu, &sd);
            gaps[b * C + c] = fabs (mu - dfq_tensor_f32 (t->aux0)[c]);
        }
    dfq_feature_free (loss);
    double sum0 = 0.0, gmax = 0.0;
    for (gint64 i = 0; i < B * C; i++)
        sum0 += gaps[i] * gaps[i], gmax = MAX (gmax, gaps[i]);
    assert_close (v0, sum0 / (double) B, "margin 0: sum of squared gaps / B");
    const double ms[] = { 0.25, 0.5, 0.75, 1.0, 1.5 };
    for (guint k = 0; k < G_N_ELEMENTS (ms); k++) {
        double m = ms[k] * gmax;
        g_autofree char *yaml = g_strdup_printf (
            "use: bns-slack\npattern: 'bn:in'\nmargins: fixed\ndelta: [%.9g]\ngamma: [1e6]\nlse: off", m);
        double v = eval_one (&s, yaml, &loss);
        double hand = 0.0;
        for (gint64 i = 0; i < B * C; i++)
            hand += gaps[i] > m ? (gaps[i] - m) * (gaps[i] - m) : 0.0;
        assert_close (v, hand / (double) B, "one layer, margin");
        if (m >= gmax)
            g_assert_cmpfloat (v, ==, 0.0);
        dfq_feature_free (loss);
    }
    dfq_test_synth_clear (&s.f);
}

static void
test_lse (void)
{
    g_test_summary ("LSE weights: paper (sample i x2 at layer i mod L), ptq-code (row i x4 at layer i, i < lse_layers), "
                    "qat-code (channel l x2 at layer l), against the loss by hand");
    Setup s;
    setup_init (&s, 4, 7);
    /* per-layer margins (more layers than a YAML list holds): a margins file */
    double delta[21], gamma[21];
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *md = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, 21), *mg = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, 21);
    for (int l = 0; l < 21; l++) {
        dfq_tensor_f32 (md)[l] = 0.01f * (float) (l % 3);
        dfq_tensor_f32 (mg)[l] = 0.02f;
        delta[l] = dfq_tensor_f32 (md)[l], gamma[l] = dfq_tensor_f32 (mg)[l];
    }
    g_autofree char *dir = g_dir_make_tmp ("dfq-dsg-XXXXXX", NULL);
    g_autofree char *mpath = g_build_filename (dir, "margins.safetensors", NULL);
    const char *names[] = { "delta", "gamma" };
    DfqTensor *tensors[] = { md, mg };
    g_assert_true (dfq_safetensors_save_list (mpath, names, tensors, 2, NULL, NULL));
    g_autofree char *margins = g_strdup_printf ("margins: file\nmargins_path: %s\n", mpath);
    struct {
        const char *yaml;
        HandLse lse;
        gint64 lse_layers;
    } cases[] = {
        { "lse: off", HAND_LSE_OFF, 0 },
        { "lse: paper", HAND_LSE_PAPER, 0 },
        { "lse: ptq-code\nlse_layers: 2", HAND_LSE_PTQ, 2 },
        { "lse: ptq-code", HAND_LSE_PTQ, 20 },
        { "lse: qat-code", HAND_LSE_QAT, 0 },
    };
    double off = 0.0;
    for (guint k = 0; k < G_N_ELEMENTS (cases); k++) {
        g_autofree char *yaml = g_strdup_printf ("use: bns-slack\n%s%s", margins, cases[k].yaml);
        DfqFeature *loss;
        double v = eval_one (&s, yaml, &loss);
        double hand = hand_slack_sample (((DfqLoss *) loss)->teacher_taps, delta, gamma, FALSE, cases[k].lse,
                                         cases[k].lse_layers);
        assert_close (v, hand, cases[k].yaml);
        if (k == 0)
            off = v;
        else
            g_assert_cmpfloat (v, >, off); /* every mode adds weight somewhere */
        dfq_feature_free (loss);
    }
    /* a batch of 4 and 21 layers: paper enhances samples 0-3 at layers 0-3
     * only, the same places as ptq-code with lse_layers >= 4 but weight 2 not
     * 4: (ptq - off) = 3 (paper - off) */
    DfqFeature *lp, *lc;
    g_autofree char *yp = g_strdup_printf ("use: bns-slack\n%slse: paper", margins);
    g_autofree char *yc = g_strdup_printf ("use: bns-slack\n%slse: ptq-code", margins);
    double paper = eval_one (&s, yp, &lp), code = eval_one (&s, yc, &lc);
    assert_close (code - off, 3.0 * (paper - off), "ptq-code extra = 3 x paper extra");
    dfq_feature_free (lp);
    dfq_feature_free (lc);
    dfq_test_synth_clear (&s.f);
    dfq_test_rm_rf (dir);
}

/* Writes @x as images.safetensors in @dir; returns the path. */
static char *
write_image_set (const char *dir, DfqTensor *x)
{
    char *path = g_build_filename (dir, "images.safetensors", NULL);
    const char *names[] = { "images" };
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save_list (path, names, &x, 1, NULL, &error));
    g_assert_no_error (error);
    return path;
}

/* delta and gamma of a margins file */
static void
read_margins (const char *path, float *delta, float *gamma, guint L)
{
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
    g_assert_no_error (error);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *d = dfq_safetensors_get_tensor (st, "delta", a, &error);
    DfqTensor *g = dfq_safetensors_get_tensor (st, "gamma", a, &error);
    g_assert_no_error (error);
    g_assert_cmpint (d->shape[0], ==, L);
    memcpy (delta, dfq_tensor_f32 (d), L * sizeof (float));
    memcpy (gamma, dfq_tensor_f32 (g), L * sizeof (float));
}

static void
test_margins (void)
{
    g_test_summary ("Quantile margins of a fixed reference batch = the 0.7 quantile of the gaps by hand; written to the "
                    "run directory; a second instance computes the same bits; margins: file reads them back");
    Setup s;
    setup_init (&s, 3, 11);
    g_autofree char *dir = g_dir_make_tmp ("dfq-dsg-XXXXXX", NULL);
    g_autofree char *set = write_image_set (dir, s.x);
    s.f.ctx.run_dir = dir;
    g_autofree char *yaml = g_strdup_printf ("use: bns-slack\nmargins: quantile\nquantile: 0.7\nreference: image-set\n"
                                             "reference_path: %s\nreference_images: 3\nsave_as: m.safetensors",
                                             set);
    DfqFeature *loss;
    double v1 = eval_one (&s, yaml, &loss);
    g_autofree char *mpath = g_build_filename (dir, "m.safetensors", NULL);
    g_assert_true (g_file_test (mpath, G_FILE_TEST_EXISTS));
    float delta[21], gamma[21];
    read_margins (mpath, delta, gamma, 21);
    /* the reference is the batch itself, so the taps of this step are its taps */
    const DfqTapSet *taps = ((DfqLoss *) loss)->teacher_taps;
    guint l = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *t = dfq_tap_set_get (taps, i);
        if (t->kind != DFQ_TAP_BN_IN)
            continue;
        gint64 B = t->tensor->shape[0], C = t->tensor->shape[1];
        double *gm = g_new (double, B * C), *gs = g_new (double, B * C);
        for (gint64 b = 0; b < B; b++)
            for (gint64 c = 0; c < C; c++) {
                double mu, sd;
                hand_plane_stats (t->tensor, b, c, &mu, &sd);
                gm[b * C + c] = fabs (mu - dfq_tensor_f32 (t->aux0)[c]);
                gs[b * C + c] = fabs (sd - sqrt ((double) dfq_tensor_f32 (t->aux1)[c] + 1e-6));
            }
        double qd = hand_quantile (gm, (gsize) (B * C), 0.7), qg = hand_quantile (gs, (gsize) (B * C), 0.7);
        if (l < 3)
            g_test_message ("%s: delta %.6g (hand %.6g) gamma %.6g (hand %.6g)", t->name, delta[l], qd, gamma[l], qg);
        g_assert_cmpfloat (fabs (delta[l] - qd), <=, 1e-4 * qd + 1e-6);
        g_assert_cmpfloat (fabs (gamma[l] - qg), <=, 1e-4 * qg + 1e-6);
        g_free (gm);
        g_free (gs);
        l++;
    }
    g_assert_cmpuint (l, ==, 21);
    /* 30 % of the gaps lie above the 0.7 quantile: the loss is not zero */
    g_assert_cmpfloat (v1, >, 0.0);
    dfq_feature_free (loss);

    /* a resumed run: a new instance, the same margins bit for bit */
    g_assert_cmpint (g_remove (mpath), ==, 0);
    double v2 = eval_one (&s, yaml, &loss);
    dfq_feature_free (loss);
    float delta2[21], gamma2[21];
    read_margins (mpath, delta2, gamma2, 21);
    g_assert_cmpmem (delta, sizeof delta, delta2, sizeof delta2);
    g_assert_cmpmem (gamma, sizeof gamma, gamma2, sizeof gamma2);
    g_assert_cmpfloat (v1, ==, v2);

    /* margins: file */
    s.f.ctx.run_dir = NULL;
    g_autofree char *yf = g_strdup_printf ("use: bns-slack\nmargins: file\nmargins_path: %s", mpath);
    double v3 = eval_one (&s, yf, &loss);
    g_assert_cmpfloat (v3, ==, v1);
    dfq_feature_free (loss);
    dfq_test_synth_clear (&s.f);
    dfq_test_rm_rf (dir);
}

static void
test_warmup_is_zeroq (void)
{
    g_test_summary ("reference: warmup is zeroq's first batch of the seed: the same margins as reference: image-set on "
                    "zeroq's images");
    Setup s;
    setup_init (&s, 4, 13);
    g_autofree char *dir = g_dir_make_tmp ("dfq-dsg-XXXXXX", NULL);
    DfqSynthesizer *z = dfq_test_synth_new (&s.f, "use: zeroq\niters: 6", FALSE);
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&s.f, z, 0, &b);
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    g_autofree char *set = write_image_set (dir, dfq_tensor_dup (keep, b.images));
    dfq_feature_free ((DfqFeature *) z);
    s.f.ctx.run_dir = dir;
    float dw[21], gw[21], di[21], gi[21];
    DfqFeature *loss;
    eval_one (&s, "use: bns-slack\nreference: warmup\nwarmup_iters: 6\nreference_images: 4\nsave_as: w.safetensors",
              &loss);
    dfq_feature_free (loss);
    g_autofree char *yi = g_strdup_printf ("use: bns-slack\nreference: image-set\nreference_path: %s\n"
                                           "reference_images: 4\nsave_as: i.safetensors",
                                           set);
    eval_one (&s, yi, &loss);
    dfq_feature_free (loss);
    g_autofree char *pw = g_build_filename (dir, "w.safetensors", NULL);
    g_autofree char *pi = g_build_filename (dir, "i.safetensors", NULL);
    read_margins (pw, dw, gw, 21);
    read_margins (pi, di, gi, 21);
    g_test_message ("layer 0: warmup delta %.6g, on zeroq's images %.6g", dw[0], di[0]);
    g_assert_cmpmem (dw, sizeof dw, di, sizeof di);
    g_assert_cmpmem (gw, sizeof gw, gi, sizeof gi);
    dfq_test_synth_clear (&s.f);
    dfq_test_rm_rf (dir);
}

/* ---- gradients */

typedef struct {
    DfqStepContext *ctx;
    GPtrArray *list;
} GradData;

static DfqTensor *
grad_fn (DfqArena *arena, DfqTensor *const *inputs, gpointer user_data)
{
    GradData *d = user_data;
    DfqStepContext c = *d->ctx;
    c.arena = arena;
    c.step = 5; /* a fixed roll for tv-l2 */
    g_autoptr (GError) error = NULL;
    DfqTensor *l = dfq_step_eval_losses (&c, d->list, inputs[0], NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    return l;
}

static void
check_grad (Setup *s, const char *yaml, double h)
{
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, yaml));
    GradData d = { &s->f.ctx, list };
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_dup (keep, s->x);
    dfq_tensor_set_param (x);
    DfqGradcheckOptions o = { .eps = h, .atol = 2e-3, .rtol = 3e-2, .seed = 3, .max_elements = 48 };
    double worst = 0.0;
    g_autoptr (GError) error = NULL;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    gboolean ok = dfq_gradcheck (grad_fn, &d, &x, 1, &o, &worst, &error);
    dfq_set_grad_enabled (prev);
    g_test_message ("%s: worst %.3f", yaml, worst);
    g_assert_no_error (error);
    g_assert_true (ok);
}

static void
test_gradients (void)
{
    g_test_summary ("Image gradients of bns-slack (sample and batch statistics, both hinges, LSE), tv-l2 (rolled) and "
                    "l2-norm against central differences");
    Setup s;
    setup_init (&s, 2, 17);
    check_grad (&s, "use: bns-slack\nmargins: fixed\ndelta: [0.05]\ngamma: [0.05]\nlse: paper", 1e-2);
    check_grad (&s, "use: bns-slack\nmargins: fixed\ndelta: [0.05]\ngamma: [0.05]\nhinge: abs\nlse: ptq-code", 1e-2);
    check_grad (&s, "use: bns-slack\nstats: batch\nreduce: mean\nmargins: fixed\ndelta: [0.01]\ngamma: [0.01]\n"
                    "lse: qat-code",
                1e-2);
    check_grad (&s, "use: tv-l2\nroll: 30", 1e-3);
    check_grad (&s, "use: tv-l2\nroll: 0", 1e-3);
    check_grad (&s, "use: l2-norm", 1e-3);
    dfq_test_synth_clear (&s.f);
}

static void
test_priors (void)
{
    g_test_summary ("tv-l2 = the sum of the 4 neighbour-difference norms of the rolled images, l2-norm = the mean image "
                    "norm, by hand");
    Setup s;
    setup_init (&s, 2, 19);
    s.f.ctx.step = 0;
    DfqFeature *loss;
    double tv0 = eval_one (&s, "use: tv-l2\nroll: 0", &loss);
    dfq_feature_free (loss);
    const float *x = dfq_tensor_f32 (s.x);
    const int H = 28, W = 28;
    double n[4] = { 0 };
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const float *q = x + p * H * W;
                if (j + 1 < W)
                    n[0] += pow (q[i * W + j] - q[i * W + j + 1], 2);
                if (i + 1 < H)
                    n[1] += pow (q[i * W + j] - q[(i + 1) * W + j], 2);
                if (i + 1 < H && j + 1 < W) {
                    n[2] += pow (q[(i + 1) * W + j] - q[i * W + j + 1], 2);
                    n[3] += pow (q[i * W + j] - q[(i + 1) * W + j + 1], 2);
                }
            }
    assert_close (tv0, sqrt (n[0]) + sqrt (n[1]) + sqrt (n[2]) + sqrt (n[3]), "tv-l2 without roll");
    /* rolled: the same sums over the cyclic neighbours minus the seam */
    double tv = eval_one (&s, "use: tv-l2", &loss);
    dfq_feature_free (loss);
    g_assert_cmpfloat (fabs (tv - tv0), >, 1e-6);
    g_assert_cmpfloat (fabs (tv - tv0), <, 0.3 * tv0);
    double l2 = eval_one (&s, "use: l2-norm", &loss), hand = 0.0;
    dfq_feature_free (loss);
    for (int p = 0; p < 2; p++) {
        double acc = 0.0;
        for (int i = 0; i < H * W; i++)
            acc += (double) x[p * H * W + i] * x[p * H * W + i];
        hand += sqrt (acc) / 2.0;
    }
    assert_close (l2, hand, "l2-norm");
    dfq_test_synth_clear (&s.f);
}

static void
test_sci (void)
{
    g_test_summary ("sci as the official code computes it: for two images, 1e-4 (|c| - |c_g|)^2 + [sign c = sign c_g] "
                    "by hand (c, c_g the cosines of the images and of the step's Gaussian pair); no gradient");
    Setup s;
    setup_init (&s, 2, 23);
    s.f.ctx.step = 4;
    DfqFeature *loss;
    double v = eval_one (&s, "use: sci", &loss);
    dfq_feature_free (loss);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *g = dfq_tensor_new_like (a, s.x);
    dfq_rand_normal_fill (g, 23, G_GUINT64_CONSTANT (0x7363690000000000) + 4, 0.0f, 1.0f);
    double cos[2];
    const DfqTensor *pair[2] = { s.x, g };
    for (int k = 0; k < 2; k++) {
        const float *p = dfq_tensor_f32 (pair[k]);
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < 784; i++)
            ab += (double) p[i] * p[784 + i], aa += (double) p[i] * p[i], bb += (double) p[784 + i] * p[784 + i];
        cos[k] = ab / sqrt (aa * bb);
    }
    double d = fabs (cos[0]) - fabs (cos[1]);
    double hand = 1e-4 * d * d + ((cos[0] > 0) == (cos[1] > 0) ? 1.0 : 0.0);
    g_test_message ("cosines %.4f (images) %.4f (gauss)", cos[0], cos[1]);
    assert_close (v, hand, "sci, two images");

    /* no gradient: [l2-norm, sci] has l2-norm's gradient */
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *grads[2];
    for (int k = 0; k < 2; k++) {
        g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
        g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: l2-norm"));
        if (k == 1)
            g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: sci"));
        DfqTensor *x = dfq_tensor_dup (keep, s.x);
        dfq_tensor_set_param (x);
        gboolean prev = dfq_set_grad_enabled (TRUE);
        g_autoptr (GError) error = NULL;
        DfqTensor *l = dfq_step_eval_losses (&s.f.ctx, list, x, NULL, NULL, NULL, &error);
        g_assert_no_error (error);
        dfq_backward (l, s.f.arena);
        dfq_set_grad_enabled (prev);
        grads[k] = dfq_tensor_dup (keep, x->grad);
    }
    g_assert_cmpmem (dfq_tensor_f32 (grads[0]), 2 * 784 * 4, dfq_tensor_f32 (grads[1]), 2 * 784 * 4);
    dfq_test_synth_clear (&s.f);
}

/* One dsg batch of 4 images, few iterations. */
static DfqTensor *
dsg_batch (DfqArena *keep, guint64 seed, DfqTensor **labels)
{
    Setup s;
    setup_init (&s, 4, seed);
    DfqSynthesizer *z = dfq_test_synth_new (
        &s.f,
        "use: dsg\niters: 8\nlosses: [{use: bns-slack, warmup_iters: 4, reference_images: 8}, {use: image-prior}, "
        "{use: ce, target: teacher, weight: 2}, {use: tv-l2, weight: 0.01}, {use: l2-norm, weight: 0.01}]",
        FALSE);
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&s.f, z, 0, &b);
    g_assert_cmpuint (b.n_loss_terms, ==, 5);
    g_assert_true (isfinite (b.loss));
    g_assert_nonnull (b.labels);
    DfqTensor *out = dfq_tensor_dup (keep, b.images);
    *labels = dfq_tensor_dup (keep, b.labels);
    dfq_feature_free ((DfqFeature *) z);
    dfq_test_synth_clear (&s.f);
    return out;
}

static void
test_dsg_images (void)
{
    g_test_summary ("dsg: the same seed gives the same images and labels bit for bit, another seed others");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *la, *lb, *lc;
    DfqTensor *a = dsg_batch (keep, 1, &la), *b = dsg_batch (keep, 1, &lb), *c = dsg_batch (keep, 2, &lc);
    g_assert_cmpmem (dfq_tensor_f32 (a), dfq_tensor_numel (a) * 4, dfq_tensor_f32 (b), dfq_tensor_numel (b) * 4);
    g_assert_cmpmem (dfq_tensor_i32 (la), 16, dfq_tensor_i32 (lb), 16);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a, c), >, 1e-3f);
    for (int i = 0; i < 4; i++)
        g_assert_true (dfq_tensor_i32 (la)[i] >= 0 && dfq_tensor_i32 (la)[i] < 10);
}

static void
test_errors (void)
{
    g_test_summary ("bns-slack refuses inconsistent settings with an actionable message");
    const char *bad[] = {
        "use: bns-slack\nstats: batch\nlse: paper",
        "use: bns-slack\nmargins: fixed",
        "use: bns-slack\nmargins: file",
        "use: bns-slack\nreference: image-set",
        "use: bns-slack\npattern: ''",
    };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqConfigNode) node = dfq_config_parse (bad[i], -1, "test", &error);
        g_assert_no_error (error);
        const DfqFeatureClass *k = dfq_registry_find (registry, DFQ_FEATURE_LOSS, "bns-slack");
        DfqFeature *f = dfq_feature_new_from_config (registry, k, node, TRUE, "bns-slack", &error);
        g_assert_null (f);
        g_assert_nonnull (error);
        g_test_message ("%s -> %s", bad[i], error->message);
    }
    /* a fixed list of the wrong length: at the first step, naming the count */
    Setup s;
    setup_init (&s, 2, 1);
    DfqFeature *loss = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS,
                                              "use: bns-slack\nmargins: fixed\ndelta: [0.1, 0.2]\ngamma: [0.1]");
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, loss);
    g_autoptr (GError) error = NULL;
    g_assert_null (dfq_step_eval_losses (&s.f.ctx, list, s.x, NULL, NULL, NULL, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    g_assert_nonnull (strstr (error->message, "21 BN layers"));
    dfq_test_synth_clear (&s.f);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_test_registry_new ();
    g_test_add_func ("/plugin/dsg/hinge", test_hinge);
    g_test_add_func ("/plugin/dsg/hinge-shape", test_hinge_shape);
    g_test_add_func ("/plugin/dsg/lse", test_lse);
    g_test_add_func ("/plugin/dsg/margins", test_margins);
    g_test_add_func ("/plugin/dsg/warmup-is-zeroq", test_warmup_is_zeroq);
    g_test_add_func ("/plugin/dsg/gradients", test_gradients);
    g_test_add_func ("/plugin/dsg/priors", test_priors);
    g_test_add_func ("/plugin/dsg/sci", test_sci);
    g_test_add_func ("/plugin/dsg/images", test_dsg_images);
    g_test_add_func ("/plugin/dsg/errors", test_errors);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
