/* The `optimizer:` block of a pipeline as a parameter table, shared by the core
 * schema (train.optimizer) and by plugins that train something of their own
 * (a generator's optimizer in gdfq, bag, ...): embed a DfqOptimParams in the
 * instance struct and add one DFQ_PARAM_OPTIMIZER row. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-params.h>
#include <dfq/dfq-optim.h>

G_BEGIN_DECLS

/* Index of DfqOptimParams.schedule; values as DfqScheduleKind. */
typedef struct {
    gint use;              /* DfqOptimKind: "sgd" | "adam" */
    gdouble lr;            /* base learning rate */
    gdouble momentum;      /* SGD */
    gboolean nesterov;     /* SGD; needs momentum > 0 */
    gdouble weight_decay;  /* L2 added to the gradient */
    DfqNumberList betas;   /* Adam (beta1, beta2), each in [0, 1) */
    gdouble eps;           /* Adam */
    gint schedule;         /* DfqScheduleKind */
    DfqNumberList milestones; /* multistep: ascending epochs (or steps) */
    gdouble gamma;         /* multistep, exponential: decay factor */
    gdouble min_lr;        /* cosine: floor */
} DfqOptimParams;

#define DFQ_OPTIM_N_PARAM_SPECS 11

/* The table (a complete array type, so G_N_ELEMENTS works on it). */
DFQ_API extern const DfqParamSpec dfq_optim_param_specs[DFQ_OPTIM_N_PARAM_SPECS];
DFQ_API extern const guint dfq_optim_n_param_specs;
/* "sgd", "adam" (NULL-terminated, in DfqOptimKind order). */
DFQ_API extern const char *const dfq_optim_kind_names[];
/* "constant", "multistep", "cosine", "exponential" (DfqScheduleKind order). */
DFQ_API extern const char *const dfq_schedule_kind_names[];

/**
 * dfq_optim_params_check:
 * The cross-field check of a bound DfqOptimParams (the STRUCT row's `check`):
 * nesterov needs momentum > 0, betas are two values in [0, 1), milestones are
 * strictly ascending. Sets a message-only error (the binder adds file:line:col).
 */
DFQ_API gboolean dfq_optim_params_check (const DfqParamSpec *spec, gconstpointer value, GError **error);

/**
 * dfq_optim_params_to_config:
 * @total: the length of the schedule (epochs or steps, as the caller counts
 *   time) for the cosine schedule.
 * Fills the engine's optimiser config and learning-rate schedule from @params.
 */
DFQ_API void dfq_optim_params_to_config (const DfqOptimParams *params, gint64 total,
                                         DfqOptimConfig *config, DfqSchedule *schedule);

/* A STRUCT row binding `field` (a DfqOptimParams) of @Struct as an optimizer
 * block. Optional trailing `.default_value = "{use: adam, lr: 1e-3}"` sets the
 * plugin's own defaults. */
#define DFQ_PARAM_OPTIMIZER(Struct, field, desc, ...)                                   \
    DFQ_PARAM_STRUCT (Struct, field, desc, dfq_optim_param_specs,                       \
                      .check = dfq_optim_params_check, __VA_ARGS__)

G_END_DECLS
