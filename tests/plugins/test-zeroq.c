/* ZeroQ (plugins/synthesizers/zeroq, plugins/losses/bns: bns-sample) and the
 * calibration rules of uniform that PTQ uses:
 * - bns-sample and image-prior against the formula of METHODS.md 7 computed
 *   by hand (in double) from the teacher's BN inputs;
 * - their gradient w.r.t. the images against central differences;
 * - zeroq: the same seed gives the same images bit for bit, another seed other
 *   images, and the loss falls over the iterations;
 * - the image sources: real images carry their labels, noise has the asked
 *   statistics;
 * - uniform act_range percentile and mse against hand values. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

/* sum over (b,c) of (t_c - s_bc)^2 / B, in double */
static double
hand_term (const double *s, const float *t, double value, gint64 B, gint64 C)
{
    double acc = 0.0;
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++) {
            double d = (t ? t[c] : value) - s[b * C + c];
            acc += d * d;
        }
    return acc / (double) B;
}

/* per-sample per-channel mean and sqrt(unbiased var + eps) of x [B,C,H,W] */
static void
hand_stats (const DfqTensor *x, double eps, double *mu, double *sd)
{
    gint64 B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *d = dfq_tensor_f32 (x);
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++) {
            const float *p = d + (b * C + c) * HW;
            double m = 0.0, v = 0.0;
            for (gint64 i = 0; i < HW; i++)
                m += p[i];
            m /= (double) HW;
            for (gint64 i = 0; i < HW; i++)
                v += (p[i] - m) * (p[i] - m);
            mu[b * C + c] = m;
            sd[b * C + c] = sqrt (v / (double) (HW - 1) + eps);
        }
}

static void
test_loss_values (void)
{
    g_test_summary ("bns-sample and image-prior equal METHODS.md 7's formula computed by hand in double");
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 3, 1, 4, 1, 28);
    DfqTensor *x = dfq_tensor_new_4d (f.arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, 3, 1, 0.2f, 0.9f);
    DfqFeature *bs = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: bns-sample");
    DfqFeature *ip = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: image-prior");
    g_autoptr (GPtrArray) list = g_ptr_array_new ();
    g_ptr_array_add (list, bs);
    g_ptr_array_add (list, ip);
    double values[2];
    g_autoptr (GError) error = NULL;
    DfqTensor *total = dfq_step_eval_losses (&f.ctx, list, x, NULL, NULL, values, &error);
    g_assert_no_error (error);
    g_assert_nonnull (total);

    /* by hand from the BN-input taps the loss saw */
    const DfqTapSet *taps = ((DfqLoss *) bs)->teacher_taps;
    double expect = 0.0;
    guint layers = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *t = dfq_tap_set_get (taps, i);
        if (t->kind != DFQ_TAP_BN_IN)
            continue;
        gint64 B = t->tensor->shape[0], C = t->tensor->shape[1];
        double *mu = g_new (double, B * C), *sd = g_new (double, B * C);
        hand_stats (t->tensor, 1e-6, mu, sd);
        float *target_sd = g_new (float, C);
        for (gint64 c = 0; c < C; c++)
            target_sd[c] = sqrtf (dfq_tensor_f32 (t->aux1)[c] + 1e-6f);
        expect += hand_term (mu, dfq_tensor_f32 (t->aux0), 0, B, C) + hand_term (sd, target_sd, 0, B, C);
        g_free (mu);
        g_free (sd);
        g_free (target_sd);
        layers++;
    }
    g_assert_cmpuint (layers, ==, 21); /* every BN of ResNet-20: 19 + 2 shortcut BNs */
    g_test_message ("bns-sample %.6f (hand %.6f)", values[0], expect);
    g_assert_cmpfloat (fabs (values[0] - expect), <, 1e-4 * expect);

    double mu[4], sd[4];
    hand_stats (x, 1e-6, mu, sd);
    double prior = hand_term (mu, NULL, 0.0, 4, 1) + hand_term (sd, NULL, 1.0, 4, 1);
    g_test_message ("image-prior %.6f (hand %.6f)", values[1], prior);
    g_assert_cmpfloat (fabs (values[1] - prior), <, 1e-4 * prior + 1e-7);
    g_assert_cmpfloat (fabs (dfq_tensor_f32 (total)[0] - (values[0] + values[1])), <, 1e-4 * expect);
    dfq_feature_free (bs);
    dfq_feature_free (ip);
    dfq_test_synth_clear (&f);
}

/* The loss list's value at images @x (no graph kept). */
static double
loss_at (DfqTestSynth *f, GPtrArray *list, DfqTensor *x)
{
    dfq_arena_reset (f->arena);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    g_autoptr (GError) error = NULL;
    DfqTensor *l = dfq_step_eval_losses (&f->ctx, list, x, NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    double v = dfq_tensor_f32 (l)[0];
    dfq_set_grad_enabled (prev);
    return v;
}

static void
test_loss_gradient (void)
{
    g_test_summary ("The gradient of bns-sample + image-prior w.r.t. the images matches central differences");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 5, 1, 2, 1, 28);
    DfqTensor *x = dfq_tensor_new_4d (keep, DFQ_DTYPE_F32, 2, 1, 28, 28);
    dfq_rand_normal_fill (x, 5, 1, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: bns-sample"));
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: image-prior"));
    g_autoptr (GError) error = NULL;
    dfq_arena_reset (f.arena);
    dfq_tensor_zero_grad (x);
    DfqTensor *l = dfq_step_eval_losses (&f.ctx, list, x, NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    dfq_backward (l, f.arena);
    float *g = g_new (float, dfq_tensor_numel (x));
    memcpy (g, dfq_tensor_f32 (x->grad), sizeof (float) * dfq_tensor_numel (x));
    float *d = dfq_tensor_f32 (x);
    const gint64 probes[] = { 0, 29, 407, 783, 784 + 300, 1567 };
    for (guint i = 0; i < G_N_ELEMENTS (probes); i++) {
        gint64 k = probes[i];
        float v = d[k];
        const float h = 5e-2f;
        d[k] = v + h;
        double up = loss_at (&f, list, x);
        d[k] = v - h;
        double down = loss_at (&f, list, x);
        d[k] = v;
        double num = (up - down) / (2.0 * h);
        g_test_message ("pixel %" G_GINT64_FORMAT ": analytic %.6g numeric %.6g", k, g[k], num);
        g_assert_cmpfloat (fabs (g[k] - num), <, 0.03 * fabs (num) + 2e-3);
    }
    g_free (g);
    dfq_test_synth_clear (&f);
}

/* One zeroq batch of 4 images with @iters iterations and @seed. */
static DfqTensor *
zeroq_batch (DfqArena *keep, guint64 seed, int iters, double *loss)
{
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, seed, 1, 4, 1, 28);
    g_autofree char *yaml = g_strdup_printf ("use: zeroq\niters: %d\n", iters);
    DfqSynthesizer *s = dfq_test_synth_new (&f, yaml, FALSE);
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&f, s, 0, &b);
    g_assert_cmpint (b.images->shape[0], ==, 4);
    g_assert_null (b.labels);
    g_assert_cmpuint (b.n_loss_terms, ==, 2);
    *loss = b.loss;
    DfqTensor *out = dfq_tensor_dup (keep, b.images);
    dfq_feature_free ((DfqFeature *) s);
    dfq_test_synth_clear (&f);
    return out;
}

static void
test_zeroq_images (void)
{
    g_test_summary ("zeroq: same seed -> the same images bit for bit; another seed -> other images; the loss falls");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    double l1, l30a, l30b, l30c;
    DfqTensor *a1 = zeroq_batch (keep, 1, 1, &l1);
    DfqTensor *a = zeroq_batch (keep, 1, 30, &l30a);
    DfqTensor *b = zeroq_batch (keep, 1, 30, &l30b);
    DfqTensor *c = zeroq_batch (keep, 2, 30, &l30c);
    g_assert_cmpmem (dfq_tensor_f32 (a), dfq_tensor_numel (a) * 4, dfq_tensor_f32 (b), dfq_tensor_numel (b) * 4);
    g_assert_cmpfloat (l30a, ==, l30b);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a, c), >, 1e-3f);
    g_test_message ("loss after 1 iteration %.4f, after 30 %.4f", l1, l30a);
    g_assert_cmpfloat (l30a, <, 0.8 * l1);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a1, a), >, 1e-3f);
}

static void
test_image_sources (void)
{
    g_test_summary ("real: training images with their labels, batch b = images [b*B, (b+1)*B) of the seed's draw; "
                    "noise: N(0, 1) pixels, another batch other pixels");
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 9, 1, 500, 1, 28);
    DfqSynthesizer *noise = dfq_test_synth_new (&f, "use: noise", FALSE);
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&f, noise, 0, &b);
    double m = 0, v = 0;
    gint64 n = dfq_tensor_numel (b.images);
    for (gint64 i = 0; i < n; i++)
        m += dfq_tensor_f32 (b.images)[i];
    m /= (double) n;
    for (gint64 i = 0; i < n; i++)
        v += pow (dfq_tensor_f32 (b.images)[i] - m, 2);
    v /= (double) n;
    g_test_message ("noise: mean %.4f variance %.4f over %" G_GINT64_FORMAT " pixels", m, v, n);
    g_assert_cmpfloat (fabs (m), <, 0.01);
    g_assert_cmpfloat (fabs (v - 1.0), <, 0.01);
    dfq_feature_free ((DfqFeature *) noise);

    g_autoptr (DfqDataset) ds = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TRAIN, NULL, NULL);
    if (ds == NULL) {
        dfq_test_synth_clear (&f);
        g_test_skip ("real: Fashion-MNIST is not installed");
        return;
    }
    f.ctx.dataset = "fashion-mnist";
    f.ctx.batch = 8;
    DfqSynthesizer *real = dfq_test_synth_new (&f, "use: real", FALSE);
    DfqSynthBatch all = { 0 }, second = { 0 };
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    f.ctx.batch = 16;
    f.ctx.step = 0; /* images 0..15 of the set */
    dfq_arena_reset (f.arena);
    g_assert_true (DFQ_SYNTHESIZER_CLASS (real)->step (real, &f.ctx, &all, NULL));
    DfqTensor *all_x = dfq_tensor_dup (keep, all.images);
    DfqTensor *all_y = dfq_tensor_dup (keep, all.labels);
    f.ctx.batch = 8;
    f.ctx.step = 8; /* images 8..15 */
    dfq_arena_reset (f.arena);
    g_assert_true (DFQ_SYNTHESIZER_CLASS (real)->step (real, &f.ctx, &second, NULL));
    g_assert_cmpmem (dfq_tensor_f32 (all_x) + 8 * 784, 8 * 784 * 4, dfq_tensor_f32 (second.images), 8 * 784 * 4);
    g_assert_cmpmem (dfq_tensor_i32 (all_y) + 8, 8 * 4, dfq_tensor_i32 (second.labels), 8 * 4);
    for (int i = 0; i < 8; i++)
        g_assert_cmpint (dfq_tensor_i32 (second.labels)[i], <, 10);
    dfq_feature_free ((DfqFeature *) real);
    dfq_test_synth_clear (&f);
}

/* A calibrating forward of one act site through uniform on @x; the site's range. */
static void
calibrate_site (const char *yaml, DfqTensor *const *xs, guint n, float *lo, float *hi)
{
    DfqQuantizer *q = (DfqQuantizer *) dfq_test_make_feature (registry, DFQ_FEATURE_QUANTIZER, yaml);
    g_autoptr (GError) error = NULL;
    g_assert_true (DFQ_QUANTIZER_CLASS (q)->add_site (q, DFQ_SITE_ACT, "act", xs[0], 0, FALSE, FALSE, &error));
    g_assert_no_error (error);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    for (guint i = 0; i < n; i++)
        DFQ_QUANTIZER_CLASS (q)->quantize_act (q, &fwd, "act", xs[i]);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, state);
    *lo = dfq_tensor_f32 (state->pdata[0])[0];
    *hi = dfq_tensor_f32 (state->pdata[0])[1];
    dfq_feature_free ((DfqFeature *) q);
}

static void
test_uniform_calibration (void)
{
    g_test_summary ("uniform act_range: percentile = the (100-p)th / pth order statistics averaged over batches; "
                    "mse clips a lone outlier; minmax keeps it");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    /* batch 1: 0, 1, ..., 9999 (shuffled order); batch 2: twice that */
    DfqTensor *x1 = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 100, 100);
    DfqTensor *x2 = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 100, 100);
    for (int i = 0; i < 10000; i++) {
        int v = (i * 7919) % 10000;
        dfq_tensor_f32 (x1)[i] = (float) v;
        dfq_tensor_f32 (x2)[i] = 2.0f * (float) v;
    }
    DfqTensor *both[] = { x1, x2 };
    float lo, hi;
    calibrate_site ("use: uniform\nact_range: percentile\npercentile: 99", both, 2, &lo, &hi);
    /* p99 of 0..9999: index round(0.99 * 9999) = 9899; p1: round(0.01 * 9999) = 100 */
    g_assert_cmpfloat (hi, ==, (9899.0f + 2.0f * 9899.0f) / 2.0f);
    g_assert_cmpfloat (lo, ==, (100.0f + 200.0f) / 2.0f);

    /* 9999 values in [0, 1) and one outlier at 3: at 4 bits the step of [0, 3]
     * costs the bulk more (~33) than clipping the outlier to ~1 costs it (~4) */
    DfqTensor *y = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 100, 100);
    for (int i = 0; i < 10000; i++)
        dfq_tensor_f32 (y)[i] = (float) ((i * 7919) % 10000) / 10000.0f;
    dfq_tensor_f32 (y)[1234] = 3.0f;
    DfqTensor *one[] = { y };
    calibrate_site ("use: uniform\na_bits: 4\nact_range: minmax", one, 1, &lo, &hi);
    g_assert_cmpfloat (hi, ==, 3.0f);
    calibrate_site ("use: uniform\na_bits: 4\nact_range: mse", one, 1, &lo, &hi);
    g_test_message ("mse clip of [0, 3] with one outlier: [%g, %g]", lo, hi);
    g_assert_cmpfloat (hi, <, 1.5f);
    g_assert_cmpfloat (hi, >, 0.8f);
}

static void
test_site_blocks (void)
{
    g_test_summary ("After attach, every quantization site of ResNet-20 knows its block (stem conv, layers.N, fc); "
                    "modes switch and report");
    DfqModel *student = dfq_test_resnet20_w8 (registry, FALSE);
    DfqQuantizer *q = (DfqQuantizer *) dfq_test_make_feature (registry, DFQ_FEATURE_QUANTIZER, "use: uniform");
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_quantizer_attach (q, student, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_quantizer_get_site_block (q, "conv"), ==, "conv");
    g_assert_cmpstr (dfq_quantizer_get_site_block (q, "layers.0.conv1"), ==, "layers.0");
    g_assert_cmpstr (dfq_quantizer_get_site_block (q, "layers.0.relu2"), ==, "layers.0");
    g_assert_cmpstr (dfq_quantizer_get_site_block (q, "layers.8.conv2"), ==, "layers.8");
    g_assert_cmpstr (dfq_quantizer_get_site_block (q, "fc"), ==, "fc");
    g_assert_null (dfq_quantizer_get_site_block (q, "no.such.site"));
    g_assert_cmpint (dfq_quantizer_get_mode (q), ==, DFQ_QUANT_MODE_LEARN);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_CALIBRATE);
    g_assert_cmpstr (dfq_quant_mode_name (dfq_quantizer_get_mode (q)), ==, "calibrate");
    dfq_quantizer_set_calibrating (q, FALSE);
    g_assert_cmpint (dfq_quantizer_get_mode (q), ==, DFQ_QUANT_MODE_LEARN);
    dfq_feature_free ((DfqFeature *) q);
    dfq_feature_free ((DfqFeature *) student);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_test_add_func ("/zeroq/loss-values", test_loss_values);
    g_test_add_func ("/zeroq/loss-gradient", test_loss_gradient);
    g_test_add_func ("/zeroq/images", test_zeroq_images);
    g_test_add_func ("/zeroq/image-sources", test_image_sources);
    g_test_add_func ("/zeroq/uniform-calibration", test_uniform_calibration);
    g_test_add_func ("/zeroq/site-blocks", test_site_blocks);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
