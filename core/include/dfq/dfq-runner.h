/* The runner: executes a pipeline and writes its run directory. A run is an
 * ordered list of phases (train-fp, synthesize, calibrate, train, evaluate;
 * docs/architecture.md), each checkpointed after every unit of its progress
 * (an epoch, a batch of images). Two entry points: dfq_runner_run()
 * (quantization: teacher -> quantized student -> the pipeline's phases, by
 * default [train] for online synthesizers and [synthesize, calibrate,
 * evaluate] for offline ones) and dfq_runner_train() (the train-fp phase:
 * full-precision training of a model on real data, used to make teachers).
 * Both resume after an interruption with the same final result as an
 * uninterrupted run. */
#pragma once

#include <glib.h>
#include <gio/gio.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-registry.h>
#include <dfq/dfq-pipeline.h>

G_BEGIN_DECLS

/* Progress of a run, reported through DfqRunOptions.progress. */
typedef struct {
    const char *phase;     /* "train", "warmup", "eval" (train, train-fp), "synthesize", "calibrate", "evaluate", "done" */
    gint epoch;            /* the phase's unit (epoch, batch), 0-based */
    gint epochs;           /* units of the phase */
    gint iter;             /* within the unit, 0-based */
    gint iters;
    double loss;           /* last student (or model) loss */
    double gen_loss;       /* last generator loss (online synthesizers) */
    double top1;           /* last evaluation, percent (NaN before the first) */
    double elapsed;        /* seconds since this process started the run */
    double eta;            /* seconds, estimated (NaN when unknown) */
} DfqProgress;

typedef void (*DfqProgressFn) (const DfqProgress *progress, gpointer user_data);

typedef struct {
    const char *run_dir;        /* NULL: <output_dir>/<name>-s<seed> */
    gboolean restart;           /* ignore an existing checkpoint and start over */
    guint eval_limit;           /* evaluate on the first N test images only (0 = all; tests) */
    DfqProgressFn progress;
    gpointer progress_data;
    GCancellable *cancellable;  /* cancelled: stop, keeping the last checkpoint (training phases: finish the
                                 * current iteration and checkpoint there) */
    gint stop_after_epochs;     /* > 0: stop (as if interrupted) after this many units (epochs, batches) of this call */
    gint stop_after_iters;      /* > 0: stop (as if interrupted) after this many training iterations of this call,
                                 * with a checkpoint inside the epoch (tests) */
} DfqRunOptions;

typedef struct {
    char *run_dir;
    char *status;        /* "finished", "diverged", "cancelled" */
    double fp_top1;      /* the teacher on the evaluation split */
    double last_top1;
    double best_top1;
    gint best_epoch;
    char *best_split;    /* the split that selected best_top1 */
    gint epochs_done;
    double wall_seconds; /* over all sessions of the run */
    gint eval_limit;     /* > 0: evaluated on the first eval_limit images only */
} DfqRunResult;

DFQ_API void dfq_run_result_clear (DfqRunResult *result);

/**
 * dfq_runner_run:
 * Errors: DFQ_MODEL_ERROR_* (weights), DFQ_DATA_ERROR_* (dataset),
 * DFQ_RUN_ERROR_DIVERGED (a NaN/Inf loss: the last good checkpoint is kept and
 * result.json says "diverged"), DFQ_RUN_ERROR_CANCELLED, DFQ_RUN_ERROR_IO,
 * DFQ_RUN_ERROR_STATE (a checkpoint of another config in the run directory).
 */
DFQ_API gboolean dfq_runner_run (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options,
                                 DfqRunResult *result, GError **error);
DFQ_API gboolean dfq_runner_train (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options,
                                   DfqRunResult *result, GError **error);

/* The run directory a pipeline writes to with these options. (transfer full) */
DFQ_API char *dfq_runner_get_run_dir (DfqPipeline *pipeline, const DfqRunOptions *options);

G_END_DECLS
