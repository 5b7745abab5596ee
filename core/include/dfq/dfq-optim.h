/* Optimisers (SGD with momentum/nesterov/weight decay, Adam) and learning-rate
 * schedules. State is exposed as named tensors so checkpoints can save and
 * restore it exactly. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

typedef enum {
    DFQ_OPTIM_SGD,
    DFQ_OPTIM_ADAM,
} DfqOptimKind;

typedef struct {
    DfqOptimKind kind;
    double lr;
    double weight_decay; /* L2 added to the gradient (PyTorch semantics, both kinds) */
    /* SGD */
    double momentum;
    double dampening;
    gboolean nesterov;
    /* Adam */
    double beta1;
    double beta2;
    double eps;
} DfqOptimConfig;

/* Defaults: SGD lr 0.01 no momentum; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8. */
DFQ_API void dfq_optim_config_init (DfqOptimConfig *config, DfqOptimKind kind);

typedef struct _DfqOptim DfqOptim;

DFQ_API DfqOptim *dfq_optim_new (const DfqOptimConfig *config);
DFQ_API void dfq_optim_free (DfqOptim *optim);
/* @param must be a PARAM tensor; the optimiser does not own it. */
DFQ_API void dfq_optim_add_param (DfqOptim *optim, DfqTensor *param);
/* Per-parameter weight decay override (e.g. 0 for clip values), and lr multiplier. */
DFQ_API void dfq_optim_add_param_full (DfqOptim *optim, DfqTensor *param, double weight_decay, double lr_scale);
DFQ_API guint dfq_optim_n_params (const DfqOptim *optim);
DFQ_API void dfq_optim_zero_grad (DfqOptim *optim);
DFQ_API void dfq_optim_step (DfqOptim *optim);
DFQ_API void dfq_optim_set_lr (DfqOptim *optim, double lr);
DFQ_API double dfq_optim_get_lr (const DfqOptim *optim);
/* Number of dfq_optim_step() calls so far (Adam bias correction uses it). */
DFQ_API gint64 dfq_optim_get_step (const DfqOptim *optim);
DFQ_API void dfq_optim_set_step (DfqOptim *optim, gint64 step);
/**
 * dfq_optim_get_state:
 * Returns: (transfer container) the state buffers (momentum; exp_avg and
 * exp_avg_sq) in a stable order, named "<param name>.<buffer>". Writing their data
 * restores the state (with dfq_optim_set_step()).
 */
DFQ_API GPtrArray *dfq_optim_get_state (DfqOptim *optim);

typedef enum {
    DFQ_SCHEDULE_CONSTANT,
    DFQ_SCHEDULE_MULTISTEP,   /* base * gamma^(number of milestones m with t >= m) */
    DFQ_SCHEDULE_COSINE,      /* min + (base-min)(1+cos(pi t/total))/2 */
    DFQ_SCHEDULE_EXPONENTIAL, /* base * gamma^t */
} DfqScheduleKind;

#define DFQ_SCHEDULE_MAX_MILESTONES 16

typedef struct {
    DfqScheduleKind kind;
    double base_lr;
    double gamma;
    double min_lr;
    gint64 total;
    gint64 milestones[DFQ_SCHEDULE_MAX_MILESTONES];
    int n_milestones;
} DfqSchedule;

/* The learning rate at time @t (epoch or step, as the caller counts). Pure
 * function of (schedule, t): resuming needs no extra state. */
DFQ_API double dfq_schedule_lr (const DfqSchedule *schedule, gint64 t);

/* Reduce-on-plateau: PyTorch's ReduceLROnPlateau in mode min, relative
 * threshold 1e-4, cooldown 0, eps 1e-8, stepped on a loss (ZeroQ, DSG and
 * GENIE-D step it on every iteration's loss). Unlike DfqSchedule it has state:
 * the learning rate depends on the losses seen. Initialise with
 * dfq_plateau_schedule_init(); the fields are read-only to callers. */
typedef struct {
    double lr;     /* the current learning rate */
    double best;   /* the best loss so far (+inf before the first step) */
    gint bad;      /* steps since the best or since the last reduction */
    gint patience; /* steps without improvement tolerated before a reduction */
    double factor; /* lr <- max(lr * factor, min_lr) */
    double min_lr;
} DfqPlateauSchedule;

DFQ_API void dfq_plateau_schedule_init (DfqPlateauSchedule *plateau, double lr, gint patience, double factor,
                                        double min_lr);
/**
 * dfq_plateau_schedule_step:
 * Feeds @loss (after the optimiser step that used plateau->lr). A loss below
 * best (1 - 1e-4) is an improvement and becomes the best; otherwise, on the
 * (patience + 1)-th such step in a row, lr becomes max(lr factor, min_lr)
 * (kept when that changes it by 1e-8 or less) and the count restarts. A NaN
 * loss is no improvement. Returns: whether lr was reduced.
 */
DFQ_API gboolean dfq_plateau_schedule_step (DfqPlateauSchedule *plateau, double loss);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqOptim, dfq_optim_free)

G_END_DECLS
