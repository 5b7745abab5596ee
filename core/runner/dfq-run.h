/* A run as an ordered list of phases (core/runner, private). Each phase has a
 * unit of progress (an epoch, a batch of images, a block) that is also its
 * checkpoint grain: after every unit the run appends one metrics.jsonl line
 * ({"phase": ..., "<unit>": i, ..., "seconds": s}) and saves a checkpoint
 * with {phase, units_done}; a rerun restores it and goes on from the next
 * unit. The training phases, whose units (epochs) are long, also save inside
 * a unit (dfq_run_iteration_done(): on a stop, and every
 * train.checkpoint_minutes) with {unit_iters} and the unit's running sums; a
 * rerun goes on from that iteration. The phases of a run share one DfqRun:
 * the models, the image set, the checkpoint layout and the accuracy figures. */
#pragma once

#include <json-glib/json-glib.h>
#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

#include "dfq-runner-private.h"

G_BEGIN_DECLS

typedef struct _DfqRun DfqRun;
typedef struct _DfqPhase DfqPhase;

typedef struct {
    const char *name;     /* as written in `phases:` and metrics.jsonl */
    const char *unit;     /* the unit's key in metrics.jsonl: "epoch", "batch" */
    gsize instance_size;  /* >= sizeof (DfqPhase) */
    /* Before anything runs, in phase order: checks the pipeline, sets
     * p->n_units, builds the phase's state and adds what it must checkpoint
     * to r->ckpt_names / r->ckpt_tensors. */
    gboolean (*setup) (DfqRun *r, DfqPhase *p, GError **error);
    /* After the run's checkpoint @st was restored (every phase is told, also
     * those already done or not started). Optional. */
    gboolean (*restore) (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error);
    /* The phase starts or resumes at *@unit (units before it are done). May
     * move *@unit to n_units when its work is already there (a cached image
     * set). Optional. */
    gboolean (*begin) (DfqRun *r, DfqPhase *p, gint *unit, GError **error);
    /* One unit. Adds its members to the open metrics line @line. */
    gboolean (*run_unit) (DfqRun *r, DfqPhase *p, gint unit, JsonBuilder *line, GError **error);
    /* After the last unit, before its checkpoint. Optional. */
    gboolean (*end) (DfqRun *r, DfqPhase *p, GError **error);
    /* Checkpoint metadata of the phase (optimiser steps). Optional. */
    void (*save_meta) (DfqRun *r, DfqPhase *p, GHashTable *meta);
    /* Checkpoints inside a unit (both or neither; without them a phase is
     * checkpointed at unit ends only). save_partial adds to @meta what the
     * rest of the running unit needs beyond the checkpoint's tensors (its
     * running sums); restore_partial reads it back from a checkpoint written
     * r->unit_iter iterations into unit units_done of this phase. Then
     * run_unit starts that unit at iteration r->unit_iter. */
    void (*save_partial) (DfqRun *r, DfqPhase *p, GHashTable *meta);
    gboolean (*restore_partial) (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error);
    void (*clear) (DfqPhase *p); /* optional */
} DfqPhaseClass;

struct _DfqPhase {
    const DfqPhaseClass *klass;
    gint n_units;
};

struct _DfqRun {
    DfqRegistry *registry;
    DfqPipeline *pipeline;
    const DfqPipelineConfig *cfg;
    const DfqRunOptions *opts;
    char *run_dir;
    char *config_hash;
    DfqModel *teacher;        /* owned by the pipeline; the model itself in train-fp */
    DfqModel *student;        /* owned here; NULL in train-fp */
    DfqQuantizer *quantizer;  /* owned by the pipeline, or NULL */
    DfqSynthesizer *synth;    /* owned by the pipeline, or NULL */
    DfqDataset *eval_set;
    DfqArena *scratch;        /* reset per step */
    DfqArena *data;           /* lives as long as the run: the image set */
    DfqStepContext ctx;
    /* the image set of offline synthesizers [N,C,H,W] and labels I32 [N] (or NULL) */
    DfqTensor *images;
    DfqTensor *labels;
    /* checkpoint layout, filled by the runner then each phase's setup() */
    GPtrArray *ckpt_names;
    GPtrArray *ckpt_tensors;
    GPtrArray *phases;        /* DfqPhase *, owned */
    /* figures */
    double fp_top1;
    double last;              /* NaN before the first evaluation */
    double best;              /* -1 before the first evaluation */
    gint best_epoch;          /* -1: none (PTQ runs evaluate once) */
    gint epochs_done;         /* training epochs done, over the train phases */
    gint metrics_lines;       /* lines of metrics.jsonl the checkpoint covers */
    double prior_wall;        /* wall seconds of earlier calls (from the checkpoint) */
    double wall_done;         /* wall seconds through the last unit done */
    gint64 t_start;
    gint units_this_call;
    guint phase_index;        /* the phase running now */
    gint unit_iter;           /* iterations of the running unit done: where run_unit starts it (0, or
                               * from a checkpoint written inside it), then kept by dfq_run_iteration_done */
    gint iters_this_call;     /* training iterations of this call (stop_after_iters) */
    gint64 t_saved;           /* monotonic time of the last checkpoint (train.checkpoint_minutes) */
    DfqProgress prog;
    /* after the last phase (also on the rerun of a finished run): the weights
     * files of the run; set by the entry point */
    gboolean (*save_outputs) (DfqRun *r, GError **error);
};

/* The built-in phases. */
extern const DfqPhaseClass dfq_phase_train;      /* QAT: synthesizer step + student step per iteration */
extern const DfqPhaseClass dfq_phase_train_fp;   /* full-precision training on real data (dfq train) */
extern const DfqPhaseClass dfq_phase_synthesize; /* offline synthesizer -> image set */
extern const DfqPhaseClass dfq_phase_calibrate;  /* quantizer ranges from the image set */
extern const DfqPhaseClass dfq_phase_reconstruct; /* block reconstruction of the quantizer on the image set */
extern const DfqPhaseClass dfq_phase_evaluate;   /* the quantized student on the eval split */

/* NULL-terminated list of the built-in phase classes. */
extern const DfqPhaseClass *const dfq_phase_classes[];
const DfqPhaseClass *dfq_phase_class_find (const char *name);

/* Runs r->phases from the checkpoint on; fills @result. A DIVERGED error
 * writes result.json with status "diverged" before returning FALSE. */
gboolean dfq_run_phases (DfqRun *r, DfqRunResult *result, GError **error);
void dfq_run_add_phase (DfqRun *r, const DfqPhaseClass *klass);
void dfq_run_clear (DfqRun *r);

/* Progress of unit @unit (0-based) of a phase, step @iter of @iters in it. */
void dfq_run_progress (DfqRun *r, const char *phase, gint unit, gint n_units, gint iter, gint iters);
/* A phase with save_partial after iteration @iters_done (a count, 1 to
 * @n_iters, the unit's iterations) of unit @unit: notes it in r->unit_iter
 * and, before the last iteration, writes a checkpoint there when the run is
 * stopped (cancelled, or stop_after_iters reached: then returns FALSE with
 * DFQ_RUN_ERROR_CANCELLED) or when train.checkpoint_minutes have passed since
 * the last checkpoint. After the last one the unit ends as usual, with its
 * own checkpoint. Errors: DFQ_RUN_ERROR_CANCELLED, DFQ_RUN_ERROR_IO. */
gboolean dfq_run_iteration_done (DfqRun *r, DfqPhase *p, gint unit, gint iters_done, gint n_iters, GError **error);
/* The student through the quantizer, evaluated on the eval split. */
gboolean dfq_run_eval_student (DfqRun *r, double *top1, GError **error);
/* The per-layer SQNR diagnostic (dfq-sqnr.c): adds sqnr_db, sqnr_db_weight,
 * sqnr_db_mean and sqnr_images to @line (nothing without a quantizer or with
 * eval.sqnr_images 0). */
gboolean dfq_run_sqnr (DfqRun *r, JsonBuilder *line, GError **error);
/* Records an evaluation: r->last, and r->best / best_epoch when better. */
void dfq_run_note_top1 (DfqRun *r, double top1, gint epoch);

G_END_DECLS
