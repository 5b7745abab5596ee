/* GENIE-D (plugins/synthesizers/genie-d, plugins/losses/bns-std; METHODS.md
 * 10, docs/methods/genie-d.md), white-box through genie-d-private.h:
 * - bns-std and image-prior (eps 0) against distill.py's formula computed by
 *   hand in double from the teacher's BN inputs;
 * - the first iteration on a tiny teacher: the images equal the generator
 *   written out by hand in double from the initial latents and weights, the
 *   loss equals the hand loss, and after the update every latent moved by the
 *   latents' lr (0.1) and the generator's weights by theirs (0.01), against
 *   the sign of the gradient measured by central differences (Adam's first
 *   step);
 * - the gradient of the loss w.r.t. z and the generator's parameters against
 *   central differences (dfq_gradcheck);
 * - the same seed gives the same images bit for bit, another seed others,
 *   batch b from a fresh instance (a resumed run) equals batch b after batch
 *   b - 1; swing-conv changes the images, deterministically;
 * - a PTQ run stopped after its first batch and resumed writes the same
 *   images.safetensors as an uninterrupted run (the per-batch checkpoint);
 * - errors: an image size not divisible by 4, an empty loss list. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

#include "../../plugins/synthesizers/genie-d/genie-d-private.h"

static DfqRegistry *registry;

#define TINY_YAML "use: tiny-cnn\nin_channels: 1\nclasses: 10\nimage_size: 8\nwidth: 4\n"
#define SMALL_G "latent: 16\nc1: 8\nc2: 4\n"

/* ------------------------------------------------------------ hand formulas */

/* batch mean and unbiased std over (N, H, W) of channel c of x [N,C,H,W] */
static void
hand_channel_stats (const DfqTensor *x, gint64 c, double *mean, double *sd)
{
    gint64 N = x->shape[0], C = x->shape[1], HW = dfq_tensor_numel (x) / (N * C);
    const float *d = dfq_tensor_f32 (x);
    double m = 0.0, v = 0.0;
    for (gint64 n = 0; n < N; n++)
        for (gint64 i = 0; i < HW; i++)
            m += d[(n * C + c) * HW + i];
    m /= (double) (N * HW);
    for (gint64 n = 0; n < N; n++)
        for (gint64 i = 0; i < HW; i++)
            v += pow (d[(n * C + c) * HW + i] - m, 2);
    *mean = m;
    *sd = sqrt (v / (double) (N * HW - 1));
}

/* distill.py: sum over BN layers of ||mu - rm||^2 / C + ||sd - sqrt(rv + 1e-6)||^2 / C */
static double
hand_bns_std (const DfqTapSet *taps, guint *layers)
{
    double total = 0.0;
    *layers = 0;
    for (guint i = 0; i < dfq_tap_set_size (taps); i++) {
        const DfqTap *t = dfq_tap_set_get (taps, i);
        if (t->kind != DFQ_TAP_BN_IN)
            continue;
        gint64 C = t->tensor->shape[1];
        double term = 0.0;
        for (gint64 c = 0; c < C; c++) {
            double m, sd;
            hand_channel_stats (t->tensor, c, &m, &sd);
            term += pow (m - dfq_tensor_f32 (t->aux0)[c], 2) / (double) C;
            term += pow (sd - sqrt ((double) dfq_tensor_f32 (t->aux1)[c] + 1e-6), 2) / (double) C;
        }
        total += term;
        (*layers)++;
    }
    return total;
}

/* ||0 - mean_hw||^2 / B + ||1 - std_hw||^2 / B over [B, C] (torch.std_mean, unbiased, no eps) */
static double
hand_prior (const DfqTensor *x)
{
    gint64 B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *d = dfq_tensor_f32 (x);
    double acc = 0.0;
    for (gint64 p = 0; p < B * C; p++) {
        double m = 0.0, v = 0.0;
        for (gint64 i = 0; i < HW; i++)
            m += d[p * HW + i];
        m /= (double) HW;
        for (gint64 i = 0; i < HW; i++)
            v += pow (d[p * HW + i] - m, 2);
        acc += m * m + pow (sqrt (v / (double) (HW - 1)) - 1.0, 2);
    }
    return acc / (double) B;
}

/* In-place train-mode BN of h [N,C,HW] (biased variance, eps 1e-5), affine when @w. */
static void
hand_bn (double *h, gint64 N, gint64 C, gint64 HW, const float *w, const float *b)
{
    for (gint64 c = 0; c < C; c++) {
        double m = 0.0, v = 0.0;
        for (gint64 n = 0; n < N; n++)
            for (gint64 i = 0; i < HW; i++)
                m += h[(n * C + c) * HW + i];
        m /= (double) (N * HW);
        for (gint64 n = 0; n < N; n++)
            for (gint64 i = 0; i < HW; i++)
                v += pow (h[(n * C + c) * HW + i] - m, 2);
        v /= (double) (N * HW);
        for (gint64 n = 0; n < N; n++)
            for (gint64 i = 0; i < HW; i++) {
                double *p = &h[(n * C + c) * HW + i];
                *p = (*p - m) / sqrt (v + 1e-5);
                if (w != NULL)
                    *p = *p * w[c] + b[c];
            }
    }
}

/* nearest x2 of [N,C,H,W] */
static double *
hand_up (const double *h, gint64 NC, gint64 H, gint64 W)
{
    double *u = g_new (double, NC * 4 * H * W);
    for (gint64 p = 0; p < NC; p++)
        for (gint64 y = 0; y < 2 * H; y++)
            for (gint64 x = 0; x < 2 * W; x++)
                u[(p * 2 * H + y) * 2 * W + x] = h[(p * H + y / 2) * W + x / 2];
    return u;
}

/* 3x3 conv, padding 1, stride 1: [N,Ci,H,W] -> [N,Co,H,W] */
static double *
hand_conv (const double *in, gint64 N, gint64 Ci, gint64 Co, gint64 H, gint64 W, const float *w, const float *b)
{
    double *out = g_new (double, N * Co * H * W);
    for (gint64 n = 0; n < N; n++)
        for (gint64 o = 0; o < Co; o++)
            for (gint64 y = 0; y < H; y++)
                for (gint64 x = 0; x < W; x++) {
                    double acc = b[o];
                    for (gint64 i = 0; i < Ci; i++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                gint64 yy = y + ky - 1, xx = x + kx - 1;
                                if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                                    acc += w[((o * Ci + i) * 3 + ky) * 3 + kx] * in[((n * Ci + i) * H + yy) * W + xx];
                            }
                    out[((n * Co + o) * H + y) * W + x] = acc;
                }
    return out;
}

/* GENIE's generator written out: z [N, L] and the weights @g -> [N, C, 4 h0, 4 w0] */
static double *
hand_generate (const DfqTensor *z, DfqTensor *const *g, gint64 c1, gint64 c2, gint64 C, gint64 h0, gint64 w0)
{
    gint64 N = z->shape[0], L = z->shape[1], O = c1 * h0 * w0;
    const float *zd = dfq_tensor_f32 (z), *lw = dfq_tensor_f32 (g[GENIE_D_LIN_W]), *lb = dfq_tensor_f32 (g[GENIE_D_LIN_B]);
    double *h = g_new (double, N * O);
    for (gint64 n = 0; n < N; n++)
        for (gint64 o = 0; o < O; o++) {
            double acc = lb[o];
            for (gint64 i = 0; i < L; i++)
                acc += lw[o * L + i] * zd[n * L + i];
            h[n * O + o] = acc;
        }
    hand_bn (h, N, c1, h0 * w0, dfq_tensor_f32 (g[GENIE_D_BN0_W]), dfq_tensor_f32 (g[GENIE_D_BN0_B]));
    double *u = hand_up (h, N * c1, h0, w0);
    double *c = hand_conv (u, N, c1, c2, 2 * h0, 2 * w0, dfq_tensor_f32 (g[GENIE_D_CONV1_W]),
                           dfq_tensor_f32 (g[GENIE_D_CONV1_B]));
    hand_bn (c, N, c2, 4 * h0 * w0, dfq_tensor_f32 (g[GENIE_D_BN1_W]), dfq_tensor_f32 (g[GENIE_D_BN1_B]));
    for (gint64 i = 0; i < N * c2 * 4 * h0 * w0; i++)
        c[i] = c[i] > 0 ? c[i] : 0.2 * c[i];
    double *u2 = hand_up (c, N * c2, 2 * h0, 2 * w0);
    double *out = hand_conv (u2, N, c2, C, 4 * h0, 4 * w0, dfq_tensor_f32 (g[GENIE_D_CONV2_W]),
                             dfq_tensor_f32 (g[GENIE_D_CONV2_B]));
    for (gint64 i = 0; i < N * C * 16 * h0 * w0; i++)
        out[i] = tanh (out[i]);
    hand_bn (out, N, C, 16 * h0 * w0, NULL, NULL);
    g_free (h);
    g_free (u);
    g_free (c);
    g_free (u2);
    return out;
}

/* ------------------------------------------------------------ fixtures */

static GenieD *
genie_d_new (DfqTestSynth *f, const char *extra)
{
    g_autofree char *yaml = g_strdup_printf ("use: genie-d\n%s", extra);
    return (GenieD *) dfq_test_synth_new (f, yaml, FALSE);
}

static void
tiny_init (DfqTestSynth *f, guint64 seed, int batch)
{
    DfqModel *teacher = (DfqModel *) dfq_test_make_feature (registry, DFQ_FEATURE_MODEL, TINY_YAML);
    dfq_test_synth_init (f, registry, teacher, NULL, seed, 1, batch, 1, 8);
}

/* The loss list of @self at G(z) with its current tensors (no graph). */
static double
loss_now (GenieD *self, DfqTestSynth *f)
{
    dfq_arena_reset (f->arena);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    g_autoptr (GError) error = NULL;
    DfqTensor *x = self->generate (self, f->arena, self->z);
    DfqTensor *l = dfq_step_eval_losses (&f->ctx, self->losses, x, NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    double v = dfq_tensor_f32 (l)[0];
    dfq_set_grad_enabled (prev);
    return v;
}

/* ------------------------------------------------------------ tests */

static void
test_loss_values (void)
{
    g_test_summary ("bns-std and image-prior (eps 0) equal distill.py's loss computed by hand in double");
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 3, 1, 4, 1, 28);
    DfqTensor *x = dfq_tensor_new_4d (f.arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, 3, 1, 0.2f, 0.9f);
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: bns-std"));
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: image-prior\neps: 0"));
    g_ptr_array_add (list, dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: bns-std\nreduce: mean"));
    double values[3];
    g_autoptr (GError) error = NULL;
    DfqTensor *total = dfq_step_eval_losses (&f.ctx, list, x, NULL, NULL, values, &error);
    g_assert_no_error (error);
    g_assert_nonnull (total);
    guint layers;
    double expect = hand_bns_std (((DfqLoss *) list->pdata[0])->teacher_taps, &layers);
    g_assert_cmpuint (layers, ==, 21);
    g_test_message ("bns-std %.6f (hand %.6f), image-prior %.6f (hand %.6f)", values[0], expect, values[1],
                    hand_prior (x));
    g_assert_cmpfloat (fabs (values[0] - expect), <, 1e-4 * expect);
    g_assert_cmpfloat (fabs (values[2] - expect / 21.0), <, 1e-4 * expect / 21.0);
    double prior = hand_prior (x);
    g_assert_cmpfloat (fabs (values[1] - prior), <, 1e-4 * prior + 1e-7);
    dfq_test_synth_clear (&f);
}

/* Central difference of the loss in element @k of @t. */
static double
numeric_grad (GenieD *self, DfqTestSynth *f, DfqTensor *t, gint64 k, float h)
{
    float *d = dfq_tensor_f32 (t);
    float v = d[k];
    d[k] = v + h;
    double up = loss_now (self, f);
    d[k] = v - h;
    double down = loss_now (self, f);
    d[k] = v;
    return (up - down) / (2.0 * h);
}

/* Fraction of the elements of @after that moved from @before by @lr (to 1e-4 relative). */
static double
fraction_moved (const DfqTensor *before, const DfqTensor *after, double lr)
{
    gint64 n = dfq_tensor_numel (before), hit = 0;
    for (gint64 i = 0; i < n; i++) {
        double d = fabs ((double) dfq_tensor_f32 (after)[i] - dfq_tensor_f32 (before)[i]);
        g_assert_cmpfloat (d, <=, lr * 1.0001 + 1e-6);
        hit += fabs (d - lr) < 1e-4 * lr + 2e-6;
    }
    return (double) hit / (double) n;
}

static void
test_first_iteration (void)
{
    g_test_summary ("Iteration 1 on the tiny CNN: images = the generator by hand, loss = the loss by hand; then z "
                    "moved by 0.1 and G by 0.01 against the sign of the central-difference gradient");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTestSynth f;
    tiny_init (&f, 7, 4);
    GenieD *self = genie_d_new (&f, SMALL_G "iters: 1\n");
    f.ctx.iter = 0;
    self->batch_init (self, &f.ctx);
    g_assert_cmpint (self->init_h, ==, 2);
    g_assert_cmpint (self->g[GENIE_D_LIN_W]->shape[0], ==, 8 * 2 * 2);
    g_assert_cmpint (self->g[GENIE_D_CONV2_W]->shape[0], ==, 1);
    DfqTensor *z0 = dfq_tensor_dup (keep, self->z);
    DfqTensor *g0[GENIE_D_N_TENSORS];
    for (guint i = 0; i < GENIE_D_N_TENSORS; i++)
        g0[i] = dfq_tensor_dup (keep, self->g[i]);
    /* the initial values: z ~ N(0, 1), PyTorch's default init bounds */
    for (gint64 i = 0; i < dfq_tensor_numel (g0[GENIE_D_LIN_W]); i++)
        g_assert_cmpfloat (fabs (dfq_tensor_f32 (g0[GENIE_D_LIN_W])[i]), <=, 1.0 / sqrt (16.0));
    g_assert_cmpfloat (dfq_tensor_f32 (g0[GENIE_D_BN0_W])[3], ==, 1.0f);

    /* numeric gradients at the start, for the signs of the first update */
    const gint64 zp[] = { 0, 17, 40, 63 };
    const gint64 wp[] = { 1, 100, 333, 511 };
    double gz[4], gw[4];
    for (int i = 0; i < 4; i++) {
        gz[i] = numeric_grad (self, &f, self->z, zp[i], 1e-2f);
        gw[i] = numeric_grad (self, &f, self->g[GENIE_D_LIN_W], wp[i], 1e-2f);
    }

    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&f, (DfqSynthesizer *) self, 0, &b);
    g_assert_null (b.labels);
    g_assert_cmpuint (b.n_loss_terms, ==, 2);
    g_assert_cmpstr (b.loss_names[0], ==, "bns-std");
    double *x = hand_generate (z0, g0, 8, 4, 1, 2, 2);
    double worst = 0.0;
    for (gint64 i = 0; i < dfq_tensor_numel (b.images); i++)
        worst = MAX (worst, fabs (dfq_tensor_f32 (b.images)[i] - x[i]));
    g_free (x);
    g_test_message ("images vs the hand generator: max |diff| %.3g", worst);
    g_assert_cmpfloat (worst, <, 1e-4);
    guint layers;
    double bns = hand_bns_std (((DfqLoss *) self->losses->pdata[0])->teacher_taps, &layers);
    double prior = hand_prior (b.images);
    g_assert_cmpuint (layers, ==, 2);
    g_test_message ("loss %.6f (hand %.6f + %.6f)", b.loss, bns, prior);
    g_assert_cmpfloat (fabs (b.loss - (bns + prior)), <, 1e-4 * (bns + prior));
    g_assert_cmpfloat (fabs (b.loss_terms[0] - bns), <, 1e-4 * bns);

    /* Adam's first step moves every element by lr g / (|g| + 1e-8): +-lr */
    double fz = fraction_moved (z0, self->z, 0.1);
    double fw = fraction_moved (g0[GENIE_D_LIN_W], self->g[GENIE_D_LIN_W], 0.01);
    double fc = fraction_moved (g0[GENIE_D_CONV2_W], self->g[GENIE_D_CONV2_W], 0.01);
    double fb = fraction_moved (g0[GENIE_D_BN1_W], self->g[GENIE_D_BN1_W], 0.01);
    g_test_message ("moved by lr: z %.3f, linear %.3f, conv %.3f, bn %.3f", fz, fw, fc, fb);
    g_assert_cmpfloat (fz, ==, 1.0);
    g_assert_cmpfloat (fw, >, 0.99);
    g_assert_cmpfloat (fc, ==, 1.0);
    g_assert_cmpfloat (fb, ==, 1.0);
    for (int i = 0; i < 4; i++) {
        double dz = dfq_tensor_f32 (self->z)[zp[i]] - dfq_tensor_f32 (z0)[zp[i]];
        double dw = dfq_tensor_f32 (self->g[GENIE_D_LIN_W])[wp[i]] - dfq_tensor_f32 (g0[GENIE_D_LIN_W])[wp[i]];
        g_test_message ("z[%" G_GINT64_FORMAT "]: grad %.4g step %.4g; w[%" G_GINT64_FORMAT "]: grad %.4g step %.4g",
                        zp[i], gz[i], dz, wp[i], gw[i], dw);
        if (fabs (gz[i]) > 1e-3)
            g_assert_cmpfloat (dz * gz[i], <, 0.0);
        if (fabs (gw[i]) > 1e-3)
            g_assert_cmpfloat (dw * gw[i], <, 0.0);
    }
    dfq_feature_free ((DfqFeature *) self);
    dfq_test_synth_clear (&f);
}

typedef struct {
    GenieD *self;
    DfqTestSynth *f;
} GradCtx;

static const guint grad_params[] = { GENIE_D_LIN_W, GENIE_D_BN0_B, GENIE_D_CONV1_W, GENIE_D_BN1_W, GENIE_D_CONV2_W,
                                     GENIE_D_CONV2_B };

static DfqTensor *
grad_fn (DfqArena *arena, DfqTensor *const *inputs, gpointer data)
{
    GradCtx *gc = data;
    gc->self->z = inputs[0];
    for (guint i = 0; i < G_N_ELEMENTS (grad_params); i++)
        gc->self->g[grad_params[i]] = inputs[1 + i];
    DfqStepContext c = gc->f->ctx;
    c.arena = arena;
    g_autoptr (GError) error = NULL;
    DfqTensor *x = gc->self->generate (gc->self, arena, inputs[0]);
    DfqTensor *l = dfq_step_eval_losses (&c, gc->self->losses, x, NULL, NULL, NULL, &error);
    g_assert_no_error (error);
    return l;
}

static void
test_gradient (void)
{
    g_test_summary ("The loss's gradient w.r.t. z and the generator's parameters matches central differences");
    DfqTestSynth f;
    tiny_init (&f, 5, 4);
    GenieD *self = genie_d_new (&f, SMALL_G "iters: 1\n");
    self->batch_init (self, &f.ctx);
    DfqTensor *inputs[1 + G_N_ELEMENTS (grad_params)];
    inputs[0] = self->z;
    for (guint i = 0; i < G_N_ELEMENTS (grad_params); i++)
        inputs[1 + i] = self->g[grad_params[i]];
    GradCtx gc = { self, &f };
    DfqGradcheckOptions o = { .eps = 1e-2, .atol = 1e-3, .rtol = 5e-2, .seed = 3, .max_elements = 24 };
    double worst = 0.0;
    g_autoptr (GError) error = NULL;
    gboolean ok = dfq_gradcheck (grad_fn, &gc, inputs, G_N_ELEMENTS (inputs), &o, &worst, &error);
    g_test_message ("worst ratio %.3f", worst);
    g_assert_no_error (error);
    g_assert_true (ok);
    dfq_feature_free ((DfqFeature *) self);
    dfq_test_synth_clear (&f);
}

/* Batch @batch of @iters iterations by a fresh instance with @seed (after
 * batch @batch - 1 by the same instance when @after_previous). */
static DfqTensor *
batch_images (DfqArena *keep, guint64 seed, int batch, gboolean after_previous, const char *extra)
{
    DfqTestSynth f;
    tiny_init (&f, seed, 4);
    g_autofree char *yaml = g_strdup_printf (SMALL_G "iters: 6\n%s", extra);
    GenieD *self = genie_d_new (&f, yaml);
    DfqSynthBatch b = { 0 };
    if (after_previous && batch > 0)
        dfq_test_synth_step (&f, (DfqSynthesizer *) self, batch - 1, &b);
    dfq_test_synth_step (&f, (DfqSynthesizer *) self, batch, &b);
    g_assert_true (isfinite (b.loss));
    DfqTensor *out = dfq_tensor_dup (keep, b.images);
    dfq_feature_free ((DfqFeature *) self);
    dfq_test_synth_clear (&f);
    return out;
}

static void
assert_same (const DfqTensor *a, const DfqTensor *b)
{
    g_assert_cmpmem (dfq_tensor_f32 (a), dfq_tensor_numel (a) * 4, dfq_tensor_f32 (b), dfq_tensor_numel (b) * 4);
}

static void
test_determinism (void)
{
    g_test_summary ("Same seed -> same images bit for bit; another seed or batch -> others; batch 1 from a fresh "
                    "instance = batch 1 after batch 0; swing-conv changes the images, deterministically");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *a = batch_images (keep, 1, 0, FALSE, "");
    DfqTensor *b = batch_images (keep, 1, 0, FALSE, "");
    DfqTensor *c = batch_images (keep, 2, 0, FALSE, "");
    assert_same (a, b);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a, c), >, 1e-3f);
    DfqTensor *fresh = batch_images (keep, 1, 1, FALSE, "");
    DfqTensor *cont = batch_images (keep, 1, 1, TRUE, "");
    assert_same (fresh, cont);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a, fresh), >, 1e-3f);
    const char *swing = "transforms: [{use: swing-conv, pad: 1}]\n";
    DfqTensor *s1 = batch_images (keep, 1, 0, FALSE, swing);
    DfqTensor *s2 = batch_images (keep, 1, 0, FALSE, swing);
    assert_same (s1, s2);
    g_test_message ("swing vs plain: max |diff| %.4g", dfq_tensor_max_abs_diff (a, s1));
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (a, s1), >, 1e-4f);
    /* offset (1, 1) is the plain conv: the plain images bit for bit */
    DfqTensor *s11 = batch_images (keep, 1, 0, FALSE, "transforms: [{use: swing-conv, pad: 1, offset: [1, 1]}]\n");
    assert_same (a, s11);
}

/* A tiny PTQ run on the tiny CNN teacher: 3 batches of 4 genie-d images. */
static gboolean
ptq_run (const char *dir, const char *weights, gint stop_after, GError **error)
{
    g_autofree char *text = g_strdup_printf (
        "version: 1\nname: genie-d-resume\nseed: 4\nthreads: 1\n"
        "teacher:\n  model: { use: tiny-cnn, in_channels: 1, classes: 10, image_size: 28, width: 4 }\n"
        "  weights: %s\n"
        "data: { dataset: fashion-mnist }\neval: { split: test, batch: 50 }\n"
        "student:\n  quantizer: { use: uniform, w_bits: 4, a_bits: 4, act_range: minmax }\n"
        "synthesizer: { use: genie-d, iters: 3, latent: 16, c1: 8, c2: 4 }\n"
        "synthesize: { images: 12, batch: 4, reuse: false }\ncalibrate: { batch: 4 }\n",
        weights);
    g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_data (registry, text, -1, "genie-d-resume.yaml", NULL, error);
    g_assert_nonnull (p);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 50, .stop_after_epochs = stop_after };
    DfqRunResult r;
    gboolean ok = dfq_runner_run (registry, p, &o, &r, error);
    dfq_run_result_clear (&r);
    return ok;
}

static void
test_resume (void)
{
    g_test_summary ("A PTQ run stopped after genie-d's first batch and resumed writes the images of an "
                    "uninterrupted run, byte for byte");
    g_autoptr (DfqDataset) ds = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, NULL);
    if (ds == NULL) {
        g_test_skip ("Fashion-MNIST is not installed");
        return;
    }
    g_autoptr (GError) error = NULL;
    g_autofree char *tmp = g_dir_make_tmp ("dfq-genie-d-XXXXXX", &error);
    g_assert_no_error (error);
    /* the teacher's weights: the tiny CNN's own random init */
    DfqModel *teacher = (DfqModel *) dfq_test_make_feature (
        registry, DFQ_FEATURE_MODEL, "use: tiny-cnn\nin_channels: 1\nclasses: 10\nimage_size: 28\nwidth: 4\n");
    g_autofree char *weights = g_build_filename (tmp, "teacher.safetensors", NULL);
    g_assert_true (dfq_model_save (teacher, weights, NULL, &error));
    g_assert_no_error (error);
    dfq_feature_free ((DfqFeature *) teacher);
    g_autofree char *a = g_build_filename (tmp, "a", NULL);
    g_autofree char *b = g_build_filename (tmp, "b", NULL);
    g_assert_true (ptq_run (a, weights, 0, &error));
    g_assert_no_error (error);
    g_assert_false (ptq_run (b, weights, 1, &error));
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED);
    g_clear_error (&error);
    g_assert_true (ptq_run (b, weights, 0, &error));
    g_assert_no_error (error);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *ia = NULL, *ib = NULL;
    for (int k = 0; k < 2; k++) {
        g_autofree char *path = g_build_filename (k == 0 ? a : b, "images.safetensors", NULL);
        g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
        g_assert_no_error (error);
        DfqTensor *t = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 12, 1, 28, 28);
        g_assert_true (dfq_safetensors_copy_to (st, "images", t, &error));
        g_assert_no_error (error);
        *(k == 0 ? &ia : &ib) = t;
    }
    assert_same (ia, ib);
    dfq_test_rm_rf (tmp);
}

static void
test_errors (void)
{
    g_test_summary ("An image size not divisible by 4 and an empty loss list are refused with a message");
    DfqModel *teacher = (DfqModel *) dfq_test_make_feature (
        registry, DFQ_FEATURE_MODEL, "use: tiny-cnn\nin_channels: 1\nclasses: 10\nimage_size: 10\nwidth: 4\n");
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 1, 1, 4, 1, 10);
    DfqSynthesizer *s = (DfqSynthesizer *) dfq_test_make_feature (registry, DFQ_FEATURE_SYNTHESIZER, "use: genie-d");
    g_autoptr (GError) error = NULL;
    g_assert_false (DFQ_SYNTHESIZER_CLASS (s)->prepare (s, &f.ctx, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
    g_assert_nonnull (strstr (error->message, "1x10x10"));
    g_clear_error (&error);
    dfq_feature_free ((DfqFeature *) s);
    dfq_test_synth_clear (&f);

    g_autoptr (DfqConfigNode) node = dfq_config_parse ("{use: genie-d, losses: []}", -1, "test", &error);
    g_assert_no_error (error);
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "genie-d");
    DfqFeature *bad = dfq_feature_new_from_config (registry, klass, node, TRUE, "test", &error);
    g_assert_null (bad);
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    g_assert_nonnull (strstr (error->message, "losses"));

    const char *want[] = { "iters: 4000", "latent: 256", "z_lr: 0.1", "generator_lr: 0.01", "generator_gamma: 0.95",
                           "use: bns-std", "use: image-prior" };
    g_autofree char *yaml = dfq_test_assert_defaults (registry, DFQ_FEATURE_SYNTHESIZER, "genie-d", want,
                                                      G_N_ELEMENTS (want));
    g_assert_null (strstr (yaml, "transforms"));
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_test_add_func ("/genie-d/loss-values", test_loss_values);
    g_test_add_func ("/genie-d/first-iteration", test_first_iteration);
    g_test_add_func ("/genie-d/gradient", test_gradient);
    g_test_add_func ("/genie-d/determinism", test_determinism);
    g_test_add_func ("/genie-d/resume", test_resume);
    g_test_add_func ("/genie-d/errors", test_errors);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
