/* What a plugin sees during one optimisation step of a run: the models, the
 * quantizer, the step's scratch arena, and helpers that run the teacher and the
 * (quantized) student the same way for every method. Loss lists are evaluated
 * here too, so synthesizers (generator losses) and the runner (student losses)
 * share one mechanism. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-model.h>
#include <dfq/dfq-transform.h>

G_BEGIN_DECLS

typedef struct _DfqQuantizer DfqQuantizer;
typedef struct _DfqLoss DfqLoss;

/* Code that builds a context itself (tests, tools) zeroes it first ({ 0 } or
 * memset): reserved slots become fields (transforms) that NULL leaves off. */
typedef struct {
    DfqArena *arena;         /* scratch of this step: reset before each iteration */
    DfqModel *teacher;       /* full precision, frozen, eval-mode BN */
    DfqModel *student;       /* quantized copy of the teacher (may be NULL in synthesis-only phases) */
    DfqQuantizer *quantizer; /* the student's quantizer, or NULL (full precision) */
    guint64 seed;            /* run seed */
    gint epoch;
    gint iter;
    gint64 step;             /* global iteration counter (epoch * iters + iter) */
    gint epochs;             /* of the phase, for schedules */
    gint batch;
    gint classes;
    gint64 image_shape[3];   /* C, H, W the teacher takes */
    gboolean student_bn_training; /* FALSE: the student's BN uses running stats (GDFQ family) */
    const char *dataset;     /* the pipeline's data.dataset ("fashion-mnist"), for data-driven baselines (real) */
    const char *data_dir;    /* its data.dir, or NULL (automatic) */
    /* Transforms of the teacher's forwards (swing convolution), or NULL: set
     * by a synthesizer on its own copy of the context, so that only its
     * teacher forwards (dfq_step_teacher_forward) see them. Takes reserved[0]:
     * the size is unchanged. */
    DfqTransformChain *transforms;
    /* The run directory, for small files a plugin writes beside the run's own
     * (bns-slack's margins), or NULL (tests, tools). Takes reserved[1]: the
     * size is unchanged. */
    const char *run_dir;
} DfqStepContext;

/* The inputs a loss sees. Logits and taps exist only for what some loss of the
 * list asked for (DfqLossClass.needs_student, tap patterns). */
typedef struct {
    DfqTensor *images;          /* [B,C,H,W] */
    DfqTensor *labels;          /* I32 [B], or NULL */
    DfqTensor *soft_labels;     /* F32 [B,K], or NULL */
    DfqTensor *teacher_logits;  /* [B,K] */
    DfqTensor *student_logits;  /* [B,K] or NULL */
} DfqLossInputs;

/* Teacher forward (eval-mode BN, BN stats untouched; tap sets may be NULL).
 * Builds a graph only where @x requires a gradient (the teacher is frozen).
 * With ctx->transforms, they wrap the teacher's conv inputs; a transform that
 * fails leaves its error in the chain (dfq_transform_chain_check();
 * dfq_step_eval_losses reports it). */
DFQ_API DfqTensor *dfq_step_teacher_forward (DfqStepContext *ctx, DfqTensor *x, DfqTapSet *const *taps, guint n_taps);
/* Student forward through the quantizer hooks; BN mode from ctx->student_bn_training. */
DFQ_API DfqTensor *dfq_step_student_forward (DfqStepContext *ctx, DfqTensor *x, DfqTapSet *const *taps, guint n_taps);

/**
 * dfq_step_eval_losses:
 * @losses: DfqFeature * of kind LOSS (a pipeline FEATURE_LIST), each with its weight.
 * @x: the images (with or without gradient: a generator step passes its output,
 *   a student step a detached batch).
 * @labels / @soft_labels: nullable.
 * @values: (out) (nullable) (array fixed-size=losses->len): each loss's unweighted value.
 *
 * Runs the teacher (and the student when a loss needs it), with the taps the
 * losses asked for, computes sum_i weight_i * loss_i and returns it as a scalar
 * tensor in ctx->arena. Errors: a transform's error (ctx->transforms),
 * DFQ_RUN_ERROR_DIVERGED when a loss is not finite
 * (the message names the loss and the step), or a loss's own error.
 */
DFQ_API DfqTensor *dfq_step_eval_losses (DfqStepContext *ctx, GPtrArray *losses, DfqTensor *x,
                                         DfqTensor *labels, DfqTensor *soft_labels, double *values,
                                         GError **error);

G_END_DECLS
