/* Synthesizer plugin `genie-d` (offline): GENIE's data distillation (Jeon,
 * Lee, Kim, CVPR 2023; METHODS.md 10, SamsungLabs/Genie distill.py). Each
 * batch of the image set gets a FRESH generator
 *   Linear(latent -> c1 h0 w0) -> view [B, c1, h0, w0] -> BN(c1) -> up x2
 *   -> Conv3x3(c1 -> c2) -> BN(c2) -> LeakyReLU(0.2) -> up x2
 *   -> Conv3x3(c2 -> C) -> tanh -> BN(C, affine = False)
 * (h0, w0 = H/4, W/4; C the teacher's input channels; every BN on batch
 * statistics) and fresh latents z ~ N(0, I) [B, latent]. Both are optimised
 * jointly for `iters` iterations against the frozen teacher on the loss list
 * (default: bns-std, the batch mean and unbiased std of every BN input against
 * the running statistics, plus the image prior): z with Adam (lr 0.1) and
 * PyTorch's ReduceLROnPlateau stepped on the loss every iteration, the
 * generator with Adam (lr 0.01) decayed by 0.95 every 100 iterations. The
 * batch's images are G(z) of the last iteration. No labels. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "genie-d-private.h"

#define GENIE_D_STREAM_BASE G_GUINT64_CONSTANT (0x67656e6965640000) /* "genied" */
#define GENIE_D_BN_EPS 1e-5f
#define GENIE_D_LEAKY_SLOPE 0.2f

static const DfqParamSpec genie_d_params[] = {
    DFQ_PARAM_INT (GenieD, iters, "Iterations per batch (GENIE: 4000)", 1, 1000000, 4000),
    DFQ_PARAM_INT (GenieD, latent, "Dimension of the latents z (GENIE: 256)", 1, 4096, 256),
    DFQ_PARAM_INT (GenieD, c1, "Generator channels after the linear layer (GENIE: 128)", 1, 1024, 128),
    DFQ_PARAM_INT (GenieD, c2, "Generator channels after the first conv (GENIE: 64)", 1, 1024, 64),
    DFQ_PARAM_DOUBLE (GenieD, z_lr, "Adam learning rate of the latents (GENIE: 0.1, the code's lr_g)", 0, 100, 0.1),
    DFQ_PARAM_INT (GenieD, patience, "ReduceLROnPlateau patience of the latents' lr, in iterations (GENIE: 100)", 0,
                   1000000, 100),
    DFQ_PARAM_DOUBLE (GenieD, factor, "ReduceLROnPlateau factor (GENIE: PyTorch's default 0.1)", 0, 1, 0.1),
    DFQ_PARAM_DOUBLE (GenieD, min_lr, "ReduceLROnPlateau lower bound (GENIE: 1e-4)", 0, 100, 1e-4),
    DFQ_PARAM_DOUBLE (GenieD, generator_lr, "Adam learning rate of the generator (GENIE: 0.01, the code's lr_z)", 0,
                      100, 0.01),
    DFQ_PARAM_DOUBLE (GenieD, generator_gamma, "Exponential decay of the generator's lr (GENIE: 0.95)", 0, 1, 0.95),
    DFQ_PARAM_INT (GenieD, generator_decay_every, "Iterations between two decays of the generator's lr (GENIE: 100)",
                   1, 1000000, 100),
    DFQ_PARAM_FEATURE_LIST (GenieD, losses, "Loss list G(z) minimises (weighted sum)", DFQ_FEATURE_LOSS,
                            "[{use: bns-std}, {use: image-prior, eps: 0}]"),
    DFQ_PARAM_FEATURE_LIST (GenieD, transforms,
                            "Transforms of the teacher's forwards during synthesis, in order (GENIE: "
                            "[{use: swing-conv}])",
                            DFQ_FEATURE_TRANSFORM, "[]", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

static const char *const genie_d_names[GENIE_D_N_TENSORS] = {
    "linear.weight", "linear.bias", "conv_layers.0.weight", "conv_layers.0.bias",
    "conv_layers.2.weight", "conv_layers.2.bias", "conv_layers.3.weight", "conv_layers.3.bias",
    "conv_layers.6.weight", "conv_layers.6.bias",
};

/* A stream per (batch, tensor name) (FNV-1a over both): fresh generators of
 * different batches differ, and the init does not depend on the creation order. */
static guint64
genie_d_stream (gint batch, const char *name)
{
    guint64 h = G_GUINT64_CONSTANT (1469598103934665603) ^ (GENIE_D_STREAM_BASE + (guint64) batch);
    for (const char *p = name; *p; p++)
        h = (h ^ (guint8) *p) * G_GUINT64_CONSTANT (1099511628211);
    return h;
}

static DfqTensor *
genie_d_param (GenieD *self, guint index, int n_dims, const gint64 *shape)
{
    DfqTensor *t = dfq_tensor_new (self->work, DFQ_DTYPE_F32, n_dims, shape);
    dfq_tensor_set_name (t, "generator.%s", genie_d_names[index]);
    dfq_tensor_set_param (t);
    self->g[index] = t;
    return t;
}

/* PyTorch's Linear / Conv2d default init: U(+-1/sqrt(fan_in)) for weight and bias. */
static void
genie_d_layer (GenieD *self, const DfqStepContext *ctx, guint w, int n_dims, const gint64 *shape, double fan_in)
{
    const float bound = (float) (1.0 / sqrt (fan_in));
    DfqTensor *weight = genie_d_param (self, w, n_dims, shape);
    DfqTensor *bias = genie_d_param (self, w + 1, 1, shape);
    dfq_rand_uniform_fill (weight, ctx->seed, genie_d_stream (ctx->iter, genie_d_names[w]), -bound, bound);
    dfq_rand_uniform_fill (bias, ctx->seed, genie_d_stream (ctx->iter, genie_d_names[w + 1]), -bound, bound);
}

/* BN affine parameters: weight 1, bias 0. */
static void
genie_d_bn (GenieD *self, guint w, gint64 channels)
{
    dfq_tensor_fill (genie_d_param (self, w, 1, &channels), 1.0f);
    dfq_tensor_fill (genie_d_param (self, w + 1, 1, &channels), 0.0f);
}

static void
genie_d_batch_init (GenieD *self, const DfqStepContext *ctx)
{
    dfq_arena_reset (self->work);
    self->channels = (gint) ctx->image_shape[0];
    self->init_h = (gint) (ctx->image_shape[1] / 4);
    self->init_w = (gint) (ctx->image_shape[2] / 4);
    self->z = dfq_tensor_new_2d (self->work, DFQ_DTYPE_F32, ctx->batch, self->latent);
    dfq_rand_normal_fill (self->z, ctx->seed, GENIE_D_STREAM_BASE + (guint64) ctx->iter, 0.0f, 1.0f);
    dfq_tensor_set_param (self->z);
    dfq_tensor_set_name (self->z, "z");
    gint64 lin[2] = { (gint64) self->c1 * self->init_h * self->init_w, self->latent };
    genie_d_layer (self, ctx, GENIE_D_LIN_W, 2, lin, self->latent);
    genie_d_bn (self, GENIE_D_BN0_W, self->c1);
    gint64 conv1[4] = { self->c2, self->c1, 3, 3 };
    genie_d_layer (self, ctx, GENIE_D_CONV1_W, 4, conv1, self->c1 * 9.0);
    genie_d_bn (self, GENIE_D_BN1_W, self->c2);
    gint64 conv2[4] = { self->channels, self->c2, 3, 3 };
    genie_d_layer (self, ctx, GENIE_D_CONV2_W, 4, conv2, self->c2 * 9.0);
}

static DfqTensor *
genie_d_generate (GenieD *self, DfqArena *a, DfqTensor *z)
{
    DfqTensor *const *g = self->g;
    DfqTensor *h = dfq_linear (a, z, g[GENIE_D_LIN_W], g[GENIE_D_LIN_B]);
    const gint64 shape[4] = { z->shape[0], self->c1, self->init_h, self->init_w };
    h = dfq_reshape (a, h, 4, shape);
    h = dfq_batchnorm (a, h, g[GENIE_D_BN0_W], g[GENIE_D_BN0_B], NULL, NULL, TRUE, 0.1f, GENIE_D_BN_EPS);
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, g[GENIE_D_CONV1_W], g[GENIE_D_CONV1_B], 1, 1, 1);
    h = dfq_batchnorm (a, h, g[GENIE_D_BN1_W], g[GENIE_D_BN1_B], NULL, NULL, TRUE, 0.1f, GENIE_D_BN_EPS);
    h = dfq_leaky_relu (a, h, GENIE_D_LEAKY_SLOPE);
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, g[GENIE_D_CONV2_W], g[GENIE_D_CONV2_B], 1, 1, 1);
    h = dfq_tanh (a, h);
    return dfq_batchnorm (a, h, NULL, NULL, NULL, NULL, TRUE, 0.1f, GENIE_D_BN_EPS);
}

static gboolean
genie_d_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    GenieD *self = (GenieD *) synth;
    const gint64 c = ctx->image_shape[0], h = ctx->image_shape[1], w = ctx->image_shape[2];
    if (c < 1 || h < 4 || w < 4 || h % 4 != 0 || w % 4 != 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "genie-d makes images of 4 x (H/4, W/4) (two x2 upsamplings): the teacher's input "
                     "%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " is not one",
                     c, h, w);
        return FALSE;
    }
    if (self->work == NULL) {
        self->work = dfq_arena_new (0);
        self->step = dfq_arena_new (0);
    }
    return TRUE;
}

/* The two Adams of a batch: z's (plateau schedule), the generator's
 * (exponential decay every generator_decay_every iterations). */
static void
genie_d_optims (GenieD *self, DfqOptim **opt_z, DfqOptim **opt_g)
{
    DfqOptimConfig oc;
    dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
    oc.lr = self->z_lr;
    *opt_z = dfq_optim_new (&oc);
    dfq_optim_add_param (*opt_z, self->z);
    oc.lr = self->generator_lr;
    *opt_g = dfq_optim_new (&oc);
    for (guint i = 0; i < GENIE_D_N_TENSORS; i++)
        dfq_optim_add_param (*opt_g, self->g[i]);
}

static void
genie_d_fill_batch (GenieD *self, DfqStepContext *ctx, DfqTensor *x, double loss, const double *values,
                    DfqSynthBatch *out)
{
    out->images = dfq_tensor_dup (ctx->arena, x);
    dfq_tensor_set_name (out->images, "images");
    out->labels = NULL;
    out->loss = loss;
    out->n_loss_terms = MIN (self->losses->len, G_N_ELEMENTS (out->loss_terms));
    for (guint k = 0; k < out->n_loss_terms; k++) {
        out->loss_terms[k] = values[k];
        out->loss_names[k] = ((DfqFeature *) self->losses->pdata[k])->klass->name;
    }
}

/* One batch: ctx->batch images from a fresh generator and fresh latents. */
static gboolean
genie_d_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    GenieD *self = (GenieD *) synth;
    g_return_val_if_fail (self->work != NULL, FALSE); /* prepare() first */
    genie_d_batch_init (self, ctx);
    g_autoptr (DfqOptim) opt_z = NULL;
    g_autoptr (DfqOptim) opt_g = NULL;
    genie_d_optims (self, &opt_z, &opt_g);
    DfqPlateauSchedule plateau;
    dfq_plateau_schedule_init (&plateau, self->z_lr, self->patience, self->factor, self->min_lr);
    double values[GENIE_D_MAX_LOSSES] = { 0 };
    /* the loss list sees this batch's own scratch, and no student */
    DfqStepContext c = *ctx;
    c.arena = self->step;
    c.student = NULL;
    c.quantizer = NULL;
    c.transforms = dfq_transform_chain_active (&self->chain) ? &self->chain : NULL;
    double loss_value = NAN;
    DfqTensor *x = NULL;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    gboolean ok = TRUE;
    for (gint it = 0; it < self->iters && ok; it++) {
        dfq_arena_reset (self->step);
        /* distinct over the whole set: transforms draw anew in every
         * iteration of every batch */
        c.step = (gint64) ctx->iter * self->iters + it;
        dfq_optim_zero_grad (opt_z);
        dfq_optim_zero_grad (opt_g);
        x = genie_d_generate (self, self->step, self->z);
        DfqTensor *loss = dfq_step_eval_losses (&c, self->losses, x, NULL, NULL, values, error);
        ok = loss != NULL;
        if (!ok)
            break;
        loss_value = dfq_tensor_f32 (loss)[0];
        dfq_backward (loss, self->step);
        /* distill.py: opt_z.step(); opt_g.step(); scheduler_z.step(loss);
         * every 100th iteration scheduler_g.step() */
        dfq_optim_set_lr (opt_z, plateau.lr);
        dfq_optim_set_lr (opt_g, self->generator_lr * pow (self->generator_gamma, it / self->generator_decay_every));
        dfq_optim_step (opt_z);
        dfq_optim_step (opt_g);
        dfq_plateau_schedule_step (&plateau, loss_value);
        if ((it + 1) % 10 == 0 || it + 1 == self->iters)
            dfq_synthesizer_report (synth, it, self->iters, loss_value);
    }
    dfq_set_grad_enabled (prev);
    if (!ok) {
        g_prefix_error (error, "genie-d batch %d: ", ctx->iter);
        return FALSE;
    }
    /* distill.py keeps x of the last iteration (made before its update) */
    genie_d_fill_batch (self, ctx, x, loss_value, values, out);
    return TRUE;
}

static void
genie_d_finalize (DfqFeature *feature)
{
    GenieD *self = (GenieD *) feature;
    g_clear_pointer (&self->work, dfq_arena_free);
    g_clear_pointer (&self->step, dfq_arena_free);
    dfq_transform_chain_clear (&self->chain);
}

static gboolean
genie_d_init (DfqFeature *feature, GError **error)
{
    GenieD *self = (GenieD *) feature;
    if (self->losses == NULL || self->losses->len == 0 || self->losses->len > GENIE_D_MAX_LOSSES) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "losses: expected 1 to %d losses",
                     GENIE_D_MAX_LOSSES);
        return FALSE;
    }
    if (!dfq_transform_list_check (self->transforms, error))
        return FALSE;
    dfq_transform_chain_init (&self->chain, self->transforms);
    self->batch_init = genie_d_batch_init;
    self->generate = genie_d_generate;
    return TRUE;
}

static const DfqSynthesizerClass genie_d_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "genie-d",
                                           "GENIE-D: per batch a fresh generator and latents optimised jointly on "
                                           "BN statistics (offline)",
                                           GenieD, genie_d_params, genie_d_init, genie_d_finalize),
    .prepare = genie_d_prepare,
    .step = genie_d_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static gboolean
genie_d_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &genie_d_class.parent, error);
}

DFQ_PLUGIN_DEFINE (genie-d, "GENIE-D: data distillation with a fresh generator per batch (Jeon et al., CVPR 2023)",
                   genie_d_register)
