/* Synthesizer plugin `zeroq` (offline): ZeroQ's distilled data (Cai et al.,
 * CVPR 2020; METHODS.md 7, distill_data.py). Each batch of the image set is
 * optimised directly, from scratch, against the frozen teacher: x starts as
 * (randint(0, 255) - 127.5) / 5418.75 i.i.d. (data_utils.py; |x| <= 0.0235),
 * Adam on x (lr 0.5) minimises the loss list (default: ZeroQ's per-sample BN
 * statistics + image prior, plugins/losses/bns) for `iters` iterations
 * with PyTorch's ReduceLROnPlateau stepped on the loss every iteration
 * (patience 100, factor 0.1, min_lr 1e-4). No labels (`labels: random` draws
 * one per image, for a cross-entropy term).
 *
 * The module also registers `dsg`, DSG's PTQ image synthesis (Zhang/Qin et
 * al., CVPR 2021; METHODS.md 8; post_training_quantization/distill_data.py),
 * which is this loop with other defaults: random labels, Adam lr 0.9, plateau
 * patience 260, and the loss list of the official code: slack BN alignment
 * with layerwise sample enhancement (bns-slack), ZeroQ's image prior, the
 * teacher's cross-entropy on the labels (added twice in the code: weight 2),
 * and 0.01 x the TV and L2 priors on a rolled copy (pixel-priors). */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#define ZEROQ_STREAM_BASE G_GUINT64_CONSTANT (0x7a65726f71000000)
#define ZEROQ_LABEL_STREAM_BASE G_GUINT64_CONSTANT (0x7a65726f716c0000)
#define ZEROQ_MAX_LOSSES 8

typedef enum {
    ZEROQ_INIT_ZEROQ,  /* (randint(0,255) - 127.5) / 5418.75 */
    ZEROQ_INIT_NORMAL, /* N(0, 1) */
} ZeroqInit;

static const char *const zeroq_init_names[] = { "zeroq", "normal", NULL };
static const char *const zeroq_labels_names[] = { "none", "random", NULL };

typedef struct {
    DfqSynthesizer parent;
    /* params */
    gint iters;
    gdouble lr;
    gint patience;
    gdouble factor;
    gdouble min_lr;
    gint init;
    gint labels; /* 0 none, 1 random (uniform over the classes, per image) */
    GPtrArray *losses;
    GPtrArray *transforms; /* DfqTransform *, on the teacher's forwards (swing-conv), or NULL */
    /* state */
    DfqTransformChain chain;
    DfqArena *work; /* the batch being optimised (reset per batch) */
    DfqArena *step; /* one iteration's graph (reset per iteration) */
} Zeroq;

static const DfqParamSpec zeroq_params[] = {
    DFQ_PARAM_INT (Zeroq, iters, "Adam iterations per batch (ZeroQ: 500)", 1, 1000000, 500),
    DFQ_PARAM_DOUBLE (Zeroq, lr, "Adam learning rate on the images (ZeroQ: 0.5)", 0, 100, 0.5),
    DFQ_PARAM_INT (Zeroq, patience, "ReduceLROnPlateau patience in iterations (ZeroQ: 100)", 0, 1000000, 100),
    DFQ_PARAM_DOUBLE (Zeroq, factor, "ReduceLROnPlateau factor (ZeroQ: 0.1)", 0, 1, 0.1),
    DFQ_PARAM_DOUBLE (Zeroq, min_lr, "ReduceLROnPlateau lower bound (ZeroQ: 1e-4)", 0, 100, 1e-4),
    DFQ_PARAM_ENUM (Zeroq, init, "Initial images: zeroq ((randint(0,255) - 127.5) / 5418.75, the official code) or normal",
                    zeroq_init_names, "zeroq"),
    DFQ_PARAM_FEATURE_LIST (Zeroq, losses, "Loss list the images minimise (weighted sum)", DFQ_FEATURE_LOSS,
                            "[{use: bns-sample}, {use: image-prior}]"),
    DFQ_PARAM_FEATURE_LIST (Zeroq, transforms,
                            "Transforms of the teacher's forwards during synthesis, in order (e.g. [{use: swing-conv}])",
                            DFQ_FEATURE_TRANSFORM, "[]", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_ENUM (Zeroq, labels, "none, or random: a label per image, uniform over the classes (for a ce loss)",
                    zeroq_labels_names, "none", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

/* DSG-PTQ: the same rows with the official code's defaults (distill_data.py). */
static const DfqParamSpec dsg_params[] = {
    DFQ_PARAM_INT (Zeroq, iters, "Adam iterations per batch (DSG: 500)", 1, 1000000, 500),
    DFQ_PARAM_DOUBLE (Zeroq, lr, "Adam learning rate on the images (DSG: 0.9)", 0, 100, 0.9),
    DFQ_PARAM_INT (Zeroq, patience, "ReduceLROnPlateau patience in iterations (DSG: 260)", 0, 1000000, 260),
    DFQ_PARAM_DOUBLE (Zeroq, factor, "ReduceLROnPlateau factor (0.1)", 0, 1, 0.1),
    DFQ_PARAM_DOUBLE (Zeroq, min_lr, "ReduceLROnPlateau lower bound (1e-4)", 0, 100, 1e-4),
    DFQ_PARAM_ENUM (Zeroq, init, "Initial images: zeroq ((randint(0,255) - 127.5) / 5418.75, the official code) or normal",
                    zeroq_init_names, "zeroq"),
    DFQ_PARAM_FEATURE_LIST (Zeroq, losses,
                            "Loss list the images minimise (DSG: bns-slack + image prior + 2 x teacher CE + 0.01 x "
                            "rolled TV and L2)",
                            DFQ_FEATURE_LOSS,
                            "[{use: bns-slack}, {use: image-prior}, {use: ce, target: teacher, weight: 2}, "
                            "{use: tv-l2, weight: 0.01}, {use: l2-norm, weight: 0.01}]"),
    DFQ_PARAM_FEATURE_LIST (Zeroq, transforms,
                            "Transforms of the teacher's forwards during synthesis, in order (e.g. [{use: swing-conv}])",
                            DFQ_FEATURE_TRANSFORM, "[]", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_ENUM (Zeroq, labels, "none, or random: a label per image, uniform over the classes (DSG: random)",
                    zeroq_labels_names, "random"),
};

static void
zeroq_init_images (const Zeroq *self, DfqTensor *x, guint64 seed, guint64 stream)
{
    if (self->init == ZEROQ_INIT_NORMAL) {
        dfq_rand_normal_fill (x, seed, stream, 0.0f, 1.0f);
        return;
    }
    /* integers 0..255 from the counter RNG, then ZeroQ's scaling */
    DfqTensor *ints = dfq_tensor_new (self->work, DFQ_DTYPE_I32, x->n_dims, x->shape);
    dfq_rand_int_fill (ints, seed, stream, 256);
    const gint32 *s = dfq_tensor_i32 (ints);
    float *d = dfq_tensor_f32 (x);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
        d[i] = ((float) s[i] - 127.5f) / 5418.75f;
}

static gboolean
zeroq_prepare (DfqSynthesizer *synth, DfqStepContext *ctx, GError **error)
{
    Zeroq *self = (Zeroq *) synth;
    if (self->work == NULL) {
        self->work = dfq_arena_new (0);
        self->step = dfq_arena_new (0);
    }
    return TRUE;
}

/* One batch: ctx->batch images, optimised from scratch. */
static gboolean
zeroq_step (DfqSynthesizer *synth, DfqStepContext *ctx, DfqSynthBatch *out, GError **error)
{
    Zeroq *self = (Zeroq *) synth;
    g_return_val_if_fail (self->work != NULL, FALSE); /* prepare() first */
    dfq_arena_reset (self->work);
    DfqTensor *x = dfq_tensor_new_4d (self->work, DFQ_DTYPE_F32, ctx->batch, ctx->image_shape[0], ctx->image_shape[1],
                                      ctx->image_shape[2]);
    zeroq_init_images (self, x, ctx->seed, ZEROQ_STREAM_BASE + (guint64) ctx->iter);
    dfq_tensor_set_param (x);
    dfq_tensor_set_name (x, "images");
    DfqTensor *labels = NULL;
    if (self->labels == 1) {
        labels = dfq_tensor_new_1d (self->work, DFQ_DTYPE_I32, ctx->batch);
        dfq_rand_int_fill (labels, ctx->seed, ZEROQ_LABEL_STREAM_BASE + (guint64) ctx->iter, ctx->classes);
    }
    DfqOptimConfig oc;
    dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
    oc.lr = self->lr;
    g_autoptr (DfqOptim) optim = dfq_optim_new (&oc);
    dfq_optim_add_param (optim, x);
    DfqPlateauSchedule plateau;
    dfq_plateau_schedule_init (&plateau, self->lr, self->patience, self->factor, self->min_lr);
    double values[ZEROQ_MAX_LOSSES] = { 0 };
    /* the loss list sees this batch's own scratch, and no student */
    DfqStepContext c = *ctx;
    c.arena = self->step;
    c.student = NULL;
    c.quantizer = NULL;
    c.transforms = dfq_transform_chain_active (&self->chain) ? &self->chain : NULL;
    double loss_value = NAN;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    gboolean ok = TRUE;
    for (gint it = 0; it < self->iters && ok; it++) {
        dfq_arena_reset (self->step);
        /* the forward's step: distinct over the whole set, so transforms
         * draw anew in every iteration of every batch */
        c.step = (gint64) ctx->iter * self->iters + it;
        dfq_optim_zero_grad (optim);
        DfqTensor *loss = dfq_step_eval_losses (&c, self->losses, x, labels, NULL, values, error);
        ok = loss != NULL;
        if (!ok)
            break;
        loss_value = dfq_tensor_f32 (loss)[0];
        dfq_backward (loss, self->step);
        dfq_optim_set_lr (optim, plateau.lr);
        dfq_optim_step (optim);
        dfq_plateau_schedule_step (&plateau, loss_value);
        if ((it + 1) % 10 == 0 || it + 1 == self->iters)
            dfq_synthesizer_report (synth, it, self->iters, loss_value);
    }
    dfq_set_grad_enabled (prev);
    if (!ok)
        return FALSE;
    /* the finished images, in the runner's arena */
    out->images = dfq_tensor_dup (ctx->arena, x);
    out->labels = labels != NULL ? dfq_tensor_dup (ctx->arena, labels) : NULL;
    out->loss = loss_value;
    out->n_loss_terms = MIN (self->losses->len, G_N_ELEMENTS (out->loss_terms));
    for (guint k = 0; k < out->n_loss_terms; k++) {
        out->loss_terms[k] = values[k];
        out->loss_names[k] = ((DfqFeature *) self->losses->pdata[k])->klass->name;
    }
    return TRUE;
}

static void
zeroq_finalize (DfqFeature *feature)
{
    Zeroq *self = (Zeroq *) feature;
    g_clear_pointer (&self->work, dfq_arena_free);
    g_clear_pointer (&self->step, dfq_arena_free);
    dfq_transform_chain_clear (&self->chain);
}

static gboolean
zeroq_init (DfqFeature *feature, GError **error)
{
    Zeroq *self = (Zeroq *) feature;
    if (self->losses == NULL || self->losses->len == 0 || self->losses->len > ZEROQ_MAX_LOSSES) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "losses: expected 1 to %d losses",
                     ZEROQ_MAX_LOSSES);
        return FALSE;
    }
    if (!dfq_transform_list_check (self->transforms, error))
        return FALSE;
    dfq_transform_chain_init (&self->chain, self->transforms);
    return TRUE;
}

static const DfqSynthesizerClass zeroq_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "zeroq",
                                           "ZeroQ distilled data: images optimised on per-sample BN statistics (offline)",
                                           Zeroq, zeroq_params, zeroq_init, zeroq_finalize),
    .prepare = zeroq_prepare,
    .step = zeroq_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static const DfqSynthesizerClass dsg_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "dsg",
                                           "DSG-PTQ: zeroq's loop with slack BN alignment, sample enhancement, random "
                                           "labels + CE and rolled TV/L2 priors (offline)",
                                           Zeroq, dsg_params, zeroq_init, zeroq_finalize),
    .prepare = zeroq_prepare,
    .step = zeroq_step,
    .mode = DFQ_SYNTH_OFFLINE,
};

static gboolean
zeroq_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &zeroq_class.parent, error)
           && dfq_registry_add_feature (registry, &dsg_class.parent, error);
}

DFQ_PLUGIN_DEFINE (zeroq, "ZeroQ and DSG-PTQ: data-free image synthesis from BN statistics (Cai et al., CVPR 2020; "
                   "Zhang et al., CVPR 2021)", zeroq_register)
