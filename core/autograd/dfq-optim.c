/* Optimisers (core/autograd): SGD and Adam with PyTorch semantics
 * (torch.optim.SGD, torch.optim.Adam: L2 weight decay added to the gradient, not
 * AdamW), and the learning-rate schedules. State buffers are allocated when a
 * parameter is added, in an arena the optimiser owns, so a step allocates
 * nothing; they are exposed by name for checkpoints. */
#include <math.h>
#include <string.h>

#include <dfq/dfq-optim.h>

/* Below this many elements a loop is not worth waking the thread pool. */
#define DFQ_PAR_MIN 32768

typedef struct {
    DfqTensor *param;
    double weight_decay;
    double lr_scale;
    DfqTensor *buf1; /* SGD momentum_buffer, or Adam exp_avg (NULL when unused) */
    DfqTensor *buf2; /* Adam exp_avg_sq */
    gint64 step;     /* updates of this parameter (PyTorch keeps it per parameter) */
} DfqOptimParam;

struct _DfqOptim {
    DfqOptimConfig config;
    GArray *params; /* DfqOptimParam, in the order they were added */
    DfqArena *state_arena;
    gint64 step;
};

void
dfq_optim_config_init (DfqOptimConfig *config, DfqOptimKind kind)
{
    g_return_if_fail (config != NULL);
    memset (config, 0, sizeof *config);
    config->kind = kind;
    config->lr = kind == DFQ_OPTIM_ADAM ? 1e-3 : 0.01;
    config->weight_decay = 0.0;
    config->momentum = 0.0;
    config->dampening = 0.0;
    config->nesterov = FALSE;
    config->beta1 = 0.9;
    config->beta2 = 0.999;
    config->eps = 1e-8;
}

DfqOptim *
dfq_optim_new (const DfqOptimConfig *config)
{
    g_return_val_if_fail (config != NULL, NULL);
    g_return_val_if_fail (config->kind == DFQ_OPTIM_SGD || config->kind == DFQ_OPTIM_ADAM, NULL);
    g_return_val_if_fail (config->lr >= 0.0 && config->weight_decay >= 0.0, NULL);
    g_return_val_if_fail (config->kind != DFQ_OPTIM_SGD || config->momentum >= 0.0, NULL);
    /* torch.optim.SGD: "Nesterov momentum requires a momentum and zero dampening". */
    g_return_val_if_fail (config->kind != DFQ_OPTIM_SGD || !config->nesterov ||
                          (config->momentum > 0.0 && config->dampening == 0.0), NULL);
    g_return_val_if_fail (config->kind != DFQ_OPTIM_ADAM ||
                          (config->beta1 >= 0.0 && config->beta1 < 1.0 &&
                           config->beta2 >= 0.0 && config->beta2 < 1.0 && config->eps >= 0.0), NULL);
    DfqOptim *self = g_new0 (DfqOptim, 1);
    self->config = *config;
    self->params = g_array_new (FALSE, TRUE, sizeof (DfqOptimParam));
    self->state_arena = dfq_arena_new (0);
    return self;
}

void
dfq_optim_free (DfqOptim *optim)
{
    if (optim == NULL)
        return;
    g_clear_pointer (&optim->params, g_array_unref);
    g_clear_pointer (&optim->state_arena, dfq_arena_free);
    g_free (optim);
}

static DfqTensor *
dfq_optim_new_state (DfqOptim *self, const DfqTensor *param, guint index, const char *buffer)
{
    DfqTensor *t = dfq_tensor_new_like (self->state_arena, param);
    if (param->name[0] != '\0')
        dfq_tensor_set_name (t, "%s.%s", param->name, buffer);
    else
        dfq_tensor_set_name (t, "param%u.%s", index, buffer);
    return t;
}

void
dfq_optim_add_param_full (DfqOptim *optim, DfqTensor *param, double weight_decay, double lr_scale)
{
    g_return_if_fail (optim != NULL && param != NULL);
    g_return_if_fail (param->dtype == DFQ_DTYPE_F32 && (param->flags & DFQ_TENSOR_FLAG_PARAM) != 0);
    g_return_if_fail (weight_decay >= 0.0 && lr_scale >= 0.0);
    for (guint i = 0; i < optim->params->len; i++)
        g_return_if_fail (g_array_index (optim->params, DfqOptimParam, i).param != param);

    DfqOptimParam p = { param, weight_decay, lr_scale, NULL, NULL, 0 };
    guint index = optim->params->len;
    if (optim->config.kind == DFQ_OPTIM_SGD) {
        /* PyTorch creates no momentum buffer when momentum is 0. */
        if (optim->config.momentum != 0.0)
            p.buf1 = dfq_optim_new_state (optim, param, index, "momentum_buffer");
    } else {
        p.buf1 = dfq_optim_new_state (optim, param, index, "exp_avg");
        p.buf2 = dfq_optim_new_state (optim, param, index, "exp_avg_sq");
    }
    g_array_append_val (optim->params, p);
}

void
dfq_optim_add_param (DfqOptim *optim, DfqTensor *param)
{
    g_return_if_fail (optim != NULL);
    dfq_optim_add_param_full (optim, param, optim->config.weight_decay, 1.0);
}

guint
dfq_optim_n_params (const DfqOptim *optim)
{
    g_return_val_if_fail (optim != NULL, 0);
    return optim->params->len;
}

void
dfq_optim_zero_grad (DfqOptim *optim)
{
    g_return_if_fail (optim != NULL);
    for (guint i = 0; i < optim->params->len; i++)
        dfq_tensor_zero_grad (g_array_index (optim->params, DfqOptimParam, i).param);
}

/* torch.optim.SGD (single-tensor path):
 *   g += wd * p
 *   buf = g (first step) | momentum * buf + (1 - dampening) * g
 *   g = g + momentum * buf (nesterov) | buf
 *   p -= lr * g */
static void
dfq_optim_sgd_update (const DfqOptimConfig *c, DfqOptimParam *p, double lr)
{
    float *restrict w = dfq_tensor_f32 (p->param);
    const float *restrict g = dfq_tensor_f32 (p->param->grad);
    float *restrict buf = p->buf1 ? dfq_tensor_f32 (p->buf1) : NULL;
    const double wd = p->weight_decay, mom = c->momentum, damp = c->dampening;
    const gboolean first = p->step == 0, nesterov = c->nesterov;
    gint64 n = dfq_tensor_numel (p->param);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        double d = (double) g[i] + wd * w[i];
        if (buf != NULL) {
            double b = first ? d : mom * buf[i] + (1.0 - damp) * d;
            buf[i] = (float) b;
            d = nesterov ? d + mom * b : b;
        }
        w[i] = (float) (w[i] - lr * d);
    }
}

/* torch.optim.Adam (single-tensor path, amsgrad off), t = this parameter's step:
 *   g += wd * p
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps) */
static void
dfq_optim_adam_update (const DfqOptimConfig *c, DfqOptimParam *p, double lr)
{
    float *restrict w = dfq_tensor_f32 (p->param);
    const float *restrict g = dfq_tensor_f32 (p->param->grad);
    float *restrict m = dfq_tensor_f32 (p->buf1);
    float *restrict v = dfq_tensor_f32 (p->buf2);
    const double wd = p->weight_decay, b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const double t = (double) p->step;
    const double step_size = lr / (1.0 - pow (b1, t));
    const double bc2_sqrt = sqrt (1.0 - pow (b2, t));
    gint64 n = dfq_tensor_numel (p->param);
#pragma omp parallel for schedule(static) if (n > DFQ_PAR_MIN)
    for (gint64 i = 0; i < n; i++) {
        double d = (double) g[i] + wd * w[i];
        double mi = b1 * m[i] + (1.0 - b1) * d;
        double vi = b2 * v[i] + (1.0 - b2) * d * d;
        m[i] = (float) mi;
        v[i] = (float) vi;
        w[i] = (float) (w[i] - step_size * mi / (sqrt (vi) / bc2_sqrt + eps));
    }
}

void
dfq_optim_step (DfqOptim *optim)
{
    g_return_if_fail (optim != NULL);
    const DfqOptimConfig *c = &optim->config;
    /* Parameters one after the other, elements in parallel: every element is
     * updated by exactly one thread, so results do not depend on the count. */
    for (guint i = 0; i < optim->params->len; i++) {
        DfqOptimParam *p = &g_array_index (optim->params, DfqOptimParam, i);
        if (p->param->grad == NULL)
            continue;
        double lr = c->lr * p->lr_scale;
        if (c->kind == DFQ_OPTIM_SGD) {
            dfq_optim_sgd_update (c, p, lr);
            p->step++;
        } else {
            p->step++; /* Adam's bias correction counts the current step */
            dfq_optim_adam_update (c, p, lr);
        }
    }
    optim->step++;
}

void
dfq_optim_set_lr (DfqOptim *optim, double lr)
{
    g_return_if_fail (optim != NULL && lr >= 0.0);
    optim->config.lr = lr;
}

double
dfq_optim_get_lr (const DfqOptim *optim)
{
    g_return_val_if_fail (optim != NULL, 0.0);
    return optim->config.lr;
}

gint64
dfq_optim_get_step (const DfqOptim *optim)
{
    g_return_val_if_fail (optim != NULL, 0);
    return optim->step;
}

void
dfq_optim_set_step (DfqOptim *optim, gint64 step)
{
    g_return_if_fail (optim != NULL && step >= 0);
    optim->step = step;
    /* A restored checkpoint: every parameter has taken @step updates (its
     * momentum buffer is initialised iff step > 0). */
    for (guint i = 0; i < optim->params->len; i++)
        g_array_index (optim->params, DfqOptimParam, i).step = step;
}

GPtrArray *
dfq_optim_get_state (DfqOptim *optim)
{
    g_return_val_if_fail (optim != NULL, NULL);
    GPtrArray *state = g_ptr_array_new ();
    for (guint i = 0; i < optim->params->len; i++) {
        DfqOptimParam *p = &g_array_index (optim->params, DfqOptimParam, i);
        if (p->buf1 != NULL)
            g_ptr_array_add (state, p->buf1);
        if (p->buf2 != NULL)
            g_ptr_array_add (state, p->buf2);
    }
    return state;
}

double
dfq_schedule_lr (const DfqSchedule *schedule, gint64 t)
{
    g_return_val_if_fail (schedule != NULL, 0.0);
    const DfqSchedule *s = schedule;
    switch (s->kind) {
    case DFQ_SCHEDULE_CONSTANT:
        return s->base_lr;
    case DFQ_SCHEDULE_MULTISTEP: {
        g_return_val_if_fail (s->n_milestones >= 0 && s->n_milestones <= DFQ_SCHEDULE_MAX_MILESTONES, s->base_lr);
        int passed = 0;
        for (int i = 0; i < s->n_milestones; i++)
            if (t >= s->milestones[i])
                passed++;
        return s->base_lr * pow (s->gamma, passed);
    }
    case DFQ_SCHEDULE_COSINE: {
        if (s->total <= 0)
            return s->min_lr;
        gint64 tc = CLAMP (t, 0, s->total);
        return s->min_lr + (s->base_lr - s->min_lr) * (1.0 + cos (G_PI * (double) tc / (double) s->total)) / 2.0;
    }
    case DFQ_SCHEDULE_EXPONENTIAL:
        return s->base_lr * pow (s->gamma, (double) t);
    }
    g_return_val_if_reached (s->base_lr);
}

/* ------------------------------------------------------------ plateau */

void
dfq_plateau_schedule_init (DfqPlateauSchedule *plateau, double lr, gint patience, double factor, double min_lr)
{
    g_return_if_fail (plateau != NULL && patience >= 0);
    *plateau = (DfqPlateauSchedule) { lr, INFINITY, 0, patience, factor, min_lr };
}

gboolean
dfq_plateau_schedule_step (DfqPlateauSchedule *plateau, double loss)
{
    g_return_val_if_fail (plateau != NULL, FALSE);
    DfqPlateauSchedule *p = plateau;
    /* torch: is_better (mode min, threshold_mode rel) */
    if (loss < p->best * (1.0 - 1e-4)) {
        p->best = loss;
        p->bad = 0;
        return FALSE;
    }
    if (++p->bad <= p->patience)
        return FALSE;
    /* torch: _reduce_lr, then num_bad_epochs = 0 (cooldown 0) */
    p->bad = 0;
    double next = MAX (p->lr * p->factor, p->min_lr);
    if (p->lr - next <= 1e-8)
        return FALSE;
    p->lr = next;
    return TRUE;
}
