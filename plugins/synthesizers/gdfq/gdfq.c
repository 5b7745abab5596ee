/* Synthesizer plugin: GDFQ's conditional generator (Xu et al., ECCV 2020;
 * METHODS.md 2.1, main.py Generator) trained online against the teacher with
 * its own loss list and Adam. Each step draws (z, y), makes x = G(z, y),
 * updates G on x and hands the same x, detached, to the student step
 * (trainer.py train()). The generator is a set of parameter tensors in the
 * synthesizer's arena, named like the PyTorch module's state_dict under
 * "generator.". One generator, three features: `gdfq` (default L_G = CE(T(x), y)
 * + 0.1 BNS, METHODS.md 2.2), `adadfq` (L_G = L_m + L_bal + BNS, METHODS.md 4)
 * and `bag` (bag.c: the generator fake-quantized at the student's bit-width,
 * METHODS.md 5.2). */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "gdfq-private.h"

#define GDFQ_BN_EPS 1e-5f   /* conv_blocks0.0 and the output BN */
#define GDFQ_BN_MOMENTUM 0.1f
#define GDFQ_LEAKY_SLOPE 0.2f

/* Per-step draws: (run seed, stream, element). Streams of z and y are disjoint
 * for every step and far from the name-hash streams of the initialisation. */
#define GDFQ_STREAM_BASE G_GUINT64_CONSTANT (0x6764667100000000)
#define GDFQ_DRAW_Z 0
#define GDFQ_DRAW_Y 1

static const DfqParamSpec gdfq_params[] = {
    DFQ_PARAM_INT (Gdfq, latent, "Dimension of the noise z and of the label embedding", 1, 4096, 100),
    DFQ_PARAM_FEATURE_LIST (Gdfq, losses,
                            "Generator loss list (weighted sum); default GDFQ L_G = CE(teacher) + 0.1 BNS",
                            DFQ_FEATURE_LOSS, "[{use: ce, target: teacher}, {use: bns, weight: 0.1}]"),
    DFQ_PARAM_OPTIMIZER (Gdfq, optimizer, "Generator optimizer; the schedule counts epochs",
                         .default_value = GDFQ_OPTIMIZER_DEFAULT),
    DFQ_PARAM_DOUBLE (Gdfq, bn_eps_inner,
                      "eps of the two inner BNs: 0.8 as in the official code (BatchNorm2d(n, 0.8)), 1e-5 intended",
                      0, 10, 0.8),
    GDFQ_PARAM_TRANSFORMS,
};

/* AdaDFQ (METHODS.md 4): the same generator and Adam; L_G = L_m + beta L_bal
 * + gamma BNS with beta = gamma = 1 (the BNS weight is 1, not GDFQ's 0.1).
 * adadfq-balance carries alpha_ds and alpha_as itself. */
static const DfqParamSpec adadfq_params[] = {
    DFQ_PARAM_INT (Gdfq, latent, "Dimension of the noise z and of the label embedding", 1, 4096, 100),
    DFQ_PARAM_FEATURE_LIST (Gdfq, losses,
                            "Generator loss list (weighted sum); default AdaDFQ L_G = margin + balance + BNS "
                            "(beta = gamma = 1)",
                            DFQ_FEATURE_LOSS, "[{use: adadfq-margin}, {use: adadfq-balance}, {use: bns, weight: 1}]"),
    DFQ_PARAM_OPTIMIZER (Gdfq, optimizer, "Generator optimizer; the schedule counts epochs",
                         .default_value = GDFQ_OPTIMIZER_DEFAULT),
    DFQ_PARAM_DOUBLE (Gdfq, bn_eps_inner,
                      "eps of the two inner BNs: 0.8 as in the official code (BatchNorm2d(n, 0.8)), 1e-5 intended",
                      0, 10, 0.8),
    GDFQ_PARAM_TRANSFORMS,
};

gboolean
gdfq_init_common (Gdfq *self, GError **error)
{
    guint max = G_N_ELEMENTS (((DfqSynthBatch *) NULL)->loss_terms);
    if (self->losses == NULL || self->losses->len == 0 || self->losses->len > max) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'losses' has %u items; give 1 to %u", self->losses != NULL ? self->losses->len : 0, max);
        return FALSE;
    }
    if (!dfq_transform_list_check (self->transforms, error))
        return FALSE;
    dfq_transform_chain_init (&self->chain, self->transforms);
    return TRUE;
}

static gboolean
gdfq_init (DfqFeature *feature, GError **error)
{
    Gdfq *self = (Gdfq *) feature;
    self->method = "gdfq";
    return gdfq_init_common (self, error);
}

static gboolean
adadfq_init (DfqFeature *feature, GError **error)
{
    Gdfq *self = (Gdfq *) feature;
    self->method = "adadfq";
    return gdfq_init_common (self, error);
}

void
gdfq_finalize (DfqFeature *feature)
{
    Gdfq *self = (Gdfq *) feature;
    g_clear_pointer (&self->optim, dfq_optim_free);
    g_clear_pointer (&self->frozen, g_ptr_array_unref);
    dfq_transform_chain_clear (&self->chain);
    if (self->owns_arena)
        g_clear_pointer (&self->parent.arena, dfq_arena_free);
    self->n_tensors = 0;
}

/* Stream id from a tensor name (FNV-1a), as dfq_model_add_*: the init does not
 * depend on the order in which tensors are created. */
static guint64
gdfq_name_stream (const char *name)
{
    guint64 h = G_GUINT64_CONSTANT (1469598103934665603);
    for (const char *p = name; *p; p++)
        h = (h ^ (guint8) *p) * G_GUINT64_CONSTANT (1099511628211);
    return h;
}

static DfqTensor *
gdfq_add_tensor (Gdfq *self, const char *name, int n_dims, const gint64 *shape, gboolean trainable)
{
    g_assert (self->n_tensors < GDFQ_MAX_TENSORS);
    DfqTensor *t = dfq_tensor_new (self->parent.arena, DFQ_DTYPE_F32, n_dims, shape);
    dfq_tensor_set_name (t, "generator.%s", name);
    if (trainable)
        dfq_tensor_set_param (t);
    self->tensors[self->n_tensors++] = t;
    return t;
}

/* PyTorch's Linear/Conv2d default: kaiming_uniform(a = sqrt 5) for the weight,
 * which is U(+-1/sqrt(fan_in)), and the same bound for the bias. */
static void
gdfq_init_uniform (DfqTensor *t, guint64 seed, double fan_in)
{
    float bound = (float) (1.0 / sqrt (fan_in));
    dfq_rand_uniform_fill (t, seed, gdfq_name_stream (t->name), -bound, bound);
}

static void
gdfq_add_conv (Gdfq *self, const char *name, int cin, int cout, guint64 seed, DfqTensor **w, DfqTensor **b)
{
    char n[DFQ_TENSOR_NAME_MAX];
    gint64 shape[4] = { cout, cin, 3, 3 };
    g_snprintf (n, sizeof n, "%s.weight", name);
    *w = gdfq_add_tensor (self, n, 4, shape, TRUE);
    g_snprintf (n, sizeof n, "%s.bias", name);
    *b = gdfq_add_tensor (self, n, 1, shape, TRUE);
    gdfq_init_uniform (*w, seed, cin * 9.0);
    gdfq_init_uniform (*b, seed, cin * 9.0);
}

DfqTensor *
gdfq_add_buffer (Gdfq *self, const char *name, int n_dims, const gint64 *shape)
{
    return gdfq_add_tensor (self, name, n_dims, shape, FALSE);
}

/* BN: weight 1, bias 0 (when affine), running mean 0 and var 1. */
static void
gdfq_add_bn (Gdfq *self, const char *name, int channels, gboolean affine, DfqTensor *bn[4])
{
    char n[DFQ_TENSOR_NAME_MAX];
    gint64 shape[1] = { channels };
    bn[0] = bn[1] = NULL;
    if (affine) {
        g_snprintf (n, sizeof n, "%s.weight", name);
        bn[0] = gdfq_add_tensor (self, n, 1, shape, TRUE);
        dfq_tensor_fill (bn[0], 1.0f);
        g_snprintf (n, sizeof n, "%s.bias", name);
        bn[1] = gdfq_add_tensor (self, n, 1, shape, TRUE);
    }
    g_snprintf (n, sizeof n, "%s.running_mean", name);
    bn[2] = gdfq_add_tensor (self, n, 1, shape, FALSE);
    g_snprintf (n, sizeof n, "%s.running_var", name);
    bn[3] = gdfq_add_tensor (self, n, 1, shape, FALSE);
    dfq_tensor_fill (bn[3], 1.0f);
}

gboolean
gdfq_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_val_if_fail (self->optim == NULL, FALSE); /* prepare() runs once */
    const gint64 c = ctx->image_shape[0], h = ctx->image_shape[1], w = ctx->image_shape[2];
    if (c < 1 || h < 4 || w < 4 || h % 4 != 0 || w % 4 != 0 || ctx->classes < 1) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s makes images of size 4*init_size (two x2 upsamplings): the teacher's input "
                     "%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " (%d classes) is not one",
                     self->method, c, h, w, ctx->classes);
        return FALSE;
    }
    self->classes = ctx->classes;
    self->channels = (gint) c;
    self->init_h = (gint) (h / 4);
    self->init_w = (gint) (w / 4);
    if (self->parent.arena == NULL) {
        self->parent.arena = dfq_arena_new (0);
        self->owns_arena = TRUE;
    }

    /* Parameters first (the optimiser's order), then the BN buffers. */
    const guint64 seed = ctx->seed;
    const gint64 lin_out = (gint64) GDFQ_HIDDEN * self->init_h * self->init_w;
    gint64 shape[2] = { self->classes, self->latent };
    self->emb = gdfq_add_tensor (self, "label_emb.weight", 2, shape, TRUE);
    dfq_rand_normal_fill (self->emb, seed, gdfq_name_stream (self->emb->name), 0.0f, 1.0f);
    shape[0] = lin_out;
    self->l1_w = gdfq_add_tensor (self, "l1.0.weight", 2, shape, TRUE);
    self->l1_b = gdfq_add_tensor (self, "l1.0.bias", 1, shape, TRUE);
    gdfq_init_uniform (self->l1_w, seed, self->latent);
    gdfq_init_uniform (self->l1_b, seed, self->latent);
    gdfq_add_bn (self, "conv_blocks0.0", GDFQ_HIDDEN, TRUE, self->bn0);
    gdfq_add_conv (self, "conv_blocks1.0", GDFQ_HIDDEN, GDFQ_HIDDEN, seed, &self->c1_w, &self->c1_b);
    gdfq_add_bn (self, "conv_blocks1.1", GDFQ_HIDDEN, TRUE, self->bn1);
    gdfq_add_conv (self, "conv_blocks2.0", GDFQ_HIDDEN, GDFQ_HIDDEN2, seed, &self->c2_w, &self->c2_b);
    gdfq_add_bn (self, "conv_blocks2.1", GDFQ_HIDDEN2, TRUE, self->bn2);
    gdfq_add_conv (self, "conv_blocks2.3", GDFQ_HIDDEN2, self->channels, seed, &self->c3_w, &self->c3_b);
    gdfq_add_bn (self, "conv_blocks2.5", self->channels, FALSE, self->bn3);
    if (self->quantize && !bag_prepare_quant (self, ctx, error))
        return FALSE;
    self->frozen = g_ptr_array_new ();

    DfqOptimConfig config;
    dfq_optim_params_to_config (&self->optimizer, ctx->epochs, &config, &self->schedule);
    self->optim = dfq_optim_new (&config);
    for (guint i = 0; i < self->n_tensors; i++)
        if (self->tensors[i]->flags & DFQ_TENSOR_FLAG_PARAM)
            dfq_optim_add_param (self->optim, self->tensors[i]);
    g_debug ("%s: generator for %d classes, %dx%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
             " images, latent %d, inner BN eps %g, weights %d bits, activations %d bits (0 = float)",
             self->method, self->classes, self->channels, h, w, self->latent, self->bn_eps_inner,
             self->w_bits_used, self->a_bits_used);
    return TRUE;
}

static DfqTensor *
gdfq_bn (DfqArena *a, DfqTensor *x, DfqTensor *const bn[4], float eps)
{
    /* Always batch statistics (G stays in train mode); running stats are
     * updated as PyTorch does, and checkpointed, but never read. */
    return dfq_batchnorm (a, x, bn[0], bn[1], bn[2], bn[3], TRUE, GDFQ_BN_MOMENTUM, eps);
}

/* A layer's weight as the forward uses it: the float tensor, or (bag) its
 * fake-quantized image, whose straight-through gradient reaches the float
 * shadow that Adam updates. */
static DfqTensor *
gdfq_weight (Gdfq *self, DfqArena *a, guint layer, DfqTensor *w)
{
    DfqTensor *used = self->w_bits_used > 0 ? bag_weight (self, a, w) : w;
    self->used_weights[layer] = used;
    return used;
}

static DfqTensor *
gdfq_act (Gdfq *self, DfqArena *a, guint site, DfqTensor *x)
{
    x = dfq_leaky_relu (a, x, GDFQ_LEAKY_SLOPE);
    return self->a_bits_used > 0 ? bag_act (self, a, site, x) : x;
}

/* x = G(z, y), METHODS.md 2.1. The embedding, the BNs and the final
 * tanh -> BN stay in float under bag too (METHODS.md 5.2). */
static DfqTensor *
gdfq_generate (Gdfq *self, DfqArena *a, DfqTensor *z, DfqTensor *y)
{
    const float eps_inner = (float) self->bn_eps_inner;
    DfqTensor *h = dfq_mul (a, dfq_embedding (a, self->emb, y), z);
    h = dfq_linear (a, h, gdfq_weight (self, a, GDFQ_LAYER_L1, self->l1_w), self->l1_b);
    const gint64 shape[4] = { z->shape[0], GDFQ_HIDDEN, self->init_h, self->init_w };
    h = dfq_reshape (a, h, 4, shape);
    h = gdfq_bn (a, h, self->bn0, GDFQ_BN_EPS);
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, gdfq_weight (self, a, GDFQ_LAYER_CONV1, self->c1_w), self->c1_b, 1, 1, 1);
    h = gdfq_act (self, a, GDFQ_ACT_1, gdfq_bn (a, h, self->bn1, eps_inner));
    h = dfq_upsample_nearest (a, h, 2);
    h = dfq_conv2d (a, h, gdfq_weight (self, a, GDFQ_LAYER_CONV2, self->c2_w), self->c2_b, 1, 1, 1);
    h = gdfq_act (self, a, GDFQ_ACT_2, gdfq_bn (a, h, self->bn2, eps_inner));
    h = dfq_conv2d (a, h, gdfq_weight (self, a, GDFQ_LAYER_CONV3, self->c3_w), self->c3_b, 1, 1, 1);
    return gdfq_bn (a, dfq_tanh (a, h), self->bn3, GDFQ_BN_EPS);
}

/* Does a loss of the generator's list run the student (AdaDFQ's margin and
 * balance terms)? */
static gboolean
gdfq_losses_need_student (Gdfq *self)
{
    for (guint i = 0; i < self->losses->len; i++) {
        DfqLoss *loss = self->losses->pdata[i];
        const DfqLossClass *klass = DFQ_LOSS_CLASS (loss);
        if ((klass->needs_student != NULL && klass->needs_student (loss)) || klass->student_tap_patterns != NULL)
            return TRUE;
    }
    return FALSE;
}

/* A generator loss that runs the student back-propagates through it (STE)
 * into x, but the generator step has no use for the student's own gradients:
 * the runner zeroes them before the student step (AdaDFQ: zero_grad in
 * backward_S). Clearing REQUIRES_GRAD on the student's (and the quantizer's
 * learnable) parameters for the duration of the step skips computing them:
 * the convolutions then back-propagate to their input only. */
static void
gdfq_freeze_student (Gdfq *self, DfqStepContext *ctx)
{
    g_ptr_array_set_size (self->frozen, 0);
    if (ctx->student == NULL || !gdfq_losses_need_student (self))
        return;
    for (guint i = 0; i < ctx->student->params->len; i++)
        g_ptr_array_add (self->frozen, ctx->student->params->pdata[i]);
    if (ctx->quantizer != NULL && DFQ_QUANTIZER_CLASS (ctx->quantizer)->get_params != NULL)
        DFQ_QUANTIZER_CLASS (ctx->quantizer)->get_params (ctx->quantizer, self->frozen);
    guint kept = 0;
    for (guint i = 0; i < self->frozen->len; i++) {
        DfqTensor *t = self->frozen->pdata[i];
        if (dfq_tensor_requires_grad (t)) {
            t->flags &= ~(guint32) DFQ_TENSOR_FLAG_REQUIRES_GRAD;
            self->frozen->pdata[kept++] = t;
        }
    }
    g_ptr_array_set_size (self->frozen, kept);
}

static void
gdfq_thaw_student (Gdfq *self)
{
    for (guint i = 0; i < self->frozen->len; i++)
        ((DfqTensor *) self->frozen->pdata[i])->flags |= DFQ_TENSOR_FLAG_REQUIRES_GRAD;
    g_ptr_array_set_size (self->frozen, 0);
}

void
gdfq_start_epoch (DfqSynthesizer *synth, DfqStepContext *ctx)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_if_fail (self->optim != NULL);
    /* trainer.py update_lr(epoch): the schedule is a pure function of the epoch. */
    dfq_optim_set_lr (self->optim, dfq_schedule_lr (&self->schedule, ctx->epoch));
}

gboolean
gdfq_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_val_if_fail (self->optim != NULL, FALSE);
    g_return_val_if_fail (ctx->batch > 0, FALSE);
    DfqArena *a = ctx->arena;
    memset (out, 0, sizeof *out);

    /* z ~ N(0, I) [B, latent], y ~ U{0..C-1} [B]: pure functions of (run seed,
     * step), so a resumed run draws what an uninterrupted one would. */
    const guint64 stream = GDFQ_STREAM_BASE + 2 * (guint64) ctx->step;
    DfqTensor *z = dfq_tensor_new_2d (a, DFQ_DTYPE_F32, ctx->batch, self->latent);
    dfq_rand_normal_fill (z, ctx->seed, stream + GDFQ_DRAW_Z, 0.0f, 1.0f);
    DfqTensor *y = dfq_tensor_new_1d (a, DFQ_DTYPE_I32, ctx->batch);
    dfq_rand_int_fill (y, ctx->seed, stream + GDFQ_DRAW_Y, self->classes);

    gboolean grad_was = dfq_set_grad_enabled (TRUE);
    DfqTensor *x = gdfq_generate (self, a, z, y);
    gdfq_freeze_student (self, ctx);
    /* the transforms reach the teacher's forward of this step only */
    DfqStepContext c = *ctx;
    c.transforms = dfq_transform_chain_active (&self->chain) ? &self->chain : NULL;
    DfqTensor *loss = dfq_step_eval_losses (&c, self->losses, x, y, NULL, out->loss_terms, error);
    if (loss == NULL) {
        gdfq_thaw_student (self);
        dfq_set_grad_enabled (grad_was);
        g_prefix_error (error, "%s generator step: ", self->method);
        return FALSE;
    }
    /* trainer.py backward_G: zero_grad, backward, step. */
    dfq_optim_zero_grad (self->optim);
    dfq_backward (loss, a);
    dfq_optim_step (self->optim);
    gdfq_thaw_student (self);
    dfq_set_grad_enabled (grad_was);

    /* The student trains on the images made before the update (images.detach()). */
    out->images = dfq_detach (a, x);
    out->labels = y;
    out->soft_labels = NULL;
    out->loss = dfq_tensor_f32 (loss)[0];
    out->n_loss_terms = self->losses->len;
    for (guint i = 0; i < self->losses->len; i++)
        out->loss_names[i] = ((DfqFeature *) self->losses->pdata[i])->klass->name;
    return TRUE;
}

void
gdfq_get_state (DfqSynthesizer *synth, GPtrArray *state)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_if_fail (self->optim != NULL);
    for (guint i = 0; i < self->n_tensors; i++)
        g_ptr_array_add (state, self->tensors[i]);
    /* "generator.<param>.exp_avg" / ".exp_avg_sq" */
    g_autoptr (GPtrArray) optim_state = dfq_optim_get_state (self->optim);
    for (guint i = 0; i < optim_state->len; i++)
        g_ptr_array_add (state, optim_state->pdata[i]);
}

gint64
gdfq_get_optim_step (DfqSynthesizer *synth)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_val_if_fail (self->optim != NULL, 0);
    return dfq_optim_get_step (self->optim);
}

void
gdfq_set_optim_step (DfqSynthesizer *synth, gint64 step)
{
    Gdfq *self = (Gdfq *) synth;
    g_return_if_fail (self->optim != NULL);
    dfq_optim_set_step (self->optim, step);
}

static const DfqSynthesizerClass gdfq_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "gdfq",
                                           "GDFQ conditional generator trained online against the teacher (CE + BNS, Adam)",
                                           Gdfq, gdfq_params, gdfq_init, gdfq_finalize),
    .prepare = gdfq_prepare,
    .start_epoch = gdfq_start_epoch,
    .step = gdfq_step,
    .get_state = gdfq_get_state,
    .get_optim_step = gdfq_get_optim_step,
    .set_optim_step = gdfq_set_optim_step,
};

static const DfqSynthesizerClass adadfq_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "adadfq",
                                           "AdaDFQ: the GDFQ generator trained on the margin, balance (through the "
                                           "quantized student) and BNS losses",
                                           Gdfq, adadfq_params, adadfq_init, gdfq_finalize),
    .prepare = gdfq_prepare,
    .start_epoch = gdfq_start_epoch,
    .step = gdfq_step,
    .get_state = gdfq_get_state,
    .get_optim_step = gdfq_get_optim_step,
    .set_optim_step = gdfq_set_optim_step,
};

static gboolean
gdfq_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &gdfq_class.parent, error) &&
           dfq_registry_add_feature (registry, &adadfq_class.parent, error) &&
           dfq_registry_add_feature (registry, &bag_class.parent, error);
}

DFQ_PLUGIN_DEFINE (gdfq, "GDFQ generator and its variants: gdfq (Xu et al., ECCV 2020), adadfq (Qian et al., "
                         "CVPR 2023), bag (Baek et al., JKSCI 2024)",
                   gdfq_register)
