/* The `reconstruct` phase (core/runner): block reconstruction (BRECQ, GENIE;
 * METHODS.md 9, 11). One unit per model block (the model's `blocks`: basic
 * blocks, inverted-residual blocks, stand-alone conv/linear layers), in
 * network order. For unit k, over the whole image set:
 *   x   = input of block k in the full-precision teacher,
 *   x_q = input of block k in the quantized student (blocks < k already
 *         reconstructed and hardened; quantizer in EVAL mode),
 *   y   = teacher block k (x);
 * then `reconstruct.iters` Adam steps on the quantizer parameters of block k
 * only (dfq_quantizer_set_active_block): loss = mean_b sum_c
 * (block_q(x_mix) - y)^2 + the quantizer's regulariser after the warm-up,
 * with x_mix = dfq_qdrop_mix (x_q, x, qdrop). Then the quantizer goes to HARD
 * with block k active (soft rounding replaced by hard rounding for good) and
 * the unit's checkpoint is written (the quantizer state holds everything).
 *
 * The caches live in the phase (not in the checkpoint): a resumed run
 * recomputes them from the image set through blocks 0..k-1, in the same
 * chunks and with the same ops as the uninterrupted run, so it ends with the
 * same bits. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

#include "dfq-run.h"

/* Streams of the random draws: batch permutations and QDrop masks. */
#define RECON_STREAM_PERM 0x7265636f6e000000ull
#define RECON_STREAM_QDROP 0x72716472ull
/* Progress reports every this many steps. */
#define RECON_REPORT_EVERY 20

typedef struct {
    DfqPhase parent;
    DfqArena *arena_x;   /* x: teacher input of unit `cached` [N, ...] */
    DfqArena *arena_xq;  /* x_q: student input of unit `cached` */
    DfqArena *arena_y;   /* y: teacher output of unit `cached` */
    DfqArena *arena_tmp; /* the next x_q while it is computed */
    DfqArena *step;      /* one optimisation step's graph */
    DfqTensor *x, *xq, *y;
    gint cached;         /* the unit x / x_q are the inputs of, or -1 */
} DfqPhaseReconstruct;

typedef struct {
    double rec_first;    /* reconstruction loss of the first step */
    double rec_last;     /* mean over the last tenth of the steps */
    double reg_last;     /* regulariser of the last step (0 before the warm-up ends) */
    double progress;     /* annealing progress at the last step */
    guint n_params;      /* learnable tensors of the unit */
    gint64 n_values;     /* their elements */
} DfqReconStats;

static gboolean
dfq_reconstruct_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseReconstruct *s = (DfqPhaseReconstruct *) p;
    if (r->images == NULL || r->quantizer == NULL || r->student == NULL) {
        g_set_error_literal (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                             r->images == NULL ? "reconstructs on an image set: put a synthesize phase before it"
                                               : "needs a quantized student (student.quantizer) in `dfq run`");
        return FALSE;
    }
    const DfqModelClass *mk = DFQ_MODEL_CLASS (r->student);
    if (r->student->blocks == NULL || r->student->blocks->len == 0 || mk->forward_block == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "model '%s' declares no blocks (dfq_model_add_block + forward_block): nothing to reconstruct",
                     ((DfqFeature *) r->student)->klass->name);
        return FALSE;
    }
    p->n_units = (gint) r->student->blocks->len;
    s->arena_x = dfq_arena_new (0);
    s->arena_xq = dfq_arena_new (0);
    s->arena_y = dfq_arena_new (0);
    s->arena_tmp = dfq_arena_new (0);
    s->step = dfq_arena_new (0);
    s->cached = -1;
    return TRUE;
}

/* Rows [first, first + count) of @src as a new tensor in @arena. */
static DfqTensor *
dfq_recon_rows (DfqArena *arena, const DfqTensor *src, gint64 first, gint64 count)
{
    gint64 shape[DFQ_MAX_DIMS];
    memcpy (shape, src->shape, sizeof shape);
    shape[0] = count;
    DfqTensor *t = dfq_tensor_new (arena, DFQ_DTYPE_F32, src->n_dims, shape);
    gsize per = (gsize) (dfq_tensor_numel (src) / src->shape[0]);
    memcpy (dfq_tensor_f32 (t), dfq_tensor_f32 (src) + (gsize) first * per, per * (gsize) count * sizeof (float));
    return t;
}

/* Block @index of @model over all rows of @in, reconstruct.eval_batch rows
 * at a time, into a new tensor in @out_arena (reset first). The student runs
 * through the quantizer (@quantized) in its current mode. No graph. */
static DfqTensor *
dfq_recon_map (DfqRun *r, DfqModel *model, gboolean quantized, guint index, const DfqTensor *in, DfqArena *out_arena)
{
    gint64 n = in->shape[0], chunk = r->cfg->reconstruct.eval_batch;
    DfqTensor *out = NULL;
    gboolean prev = dfq_set_grad_enabled (FALSE);
    dfq_arena_reset (out_arena);
    for (gint64 first = 0; first < n; first += chunk) {
        gint64 count = MIN (chunk, n - first);
        dfq_arena_reset (r->scratch);
        DfqForward fwd;
        dfq_forward_init (&fwd, r->scratch, FALSE);
        fwd.seed = (guint64) r->cfg->seed;
        if (quantized)
            dfq_quantizer_hook (r->quantizer, &fwd);
        DfqTensor *y = dfq_model_forward_block (model, &fwd, index, dfq_recon_rows (r->scratch, in, first, count));
        if (out == NULL) {
            gint64 shape[DFQ_MAX_DIMS];
            memcpy (shape, y->shape, sizeof shape);
            shape[0] = n;
            out = dfq_tensor_new (out_arena, DFQ_DTYPE_F32, y->n_dims, shape);
        }
        gsize per = (gsize) (dfq_tensor_numel (y) / count);
        memcpy (dfq_tensor_f32 (out) + (gsize) first * per, dfq_tensor_f32 (y), per * (gsize) count * sizeof (float));
    }
    dfq_set_grad_enabled (prev);
    return out;
}

static void
dfq_recon_swap (DfqArena **a, DfqArena **b)
{
    DfqArena *t = *a;
    *a = *b;
    *b = t;
}

/* Brings x and x_q to the inputs of @unit: from the image set (a fresh or
 * resumed phase), or one block on from the unit before (x = its y). */
static void
dfq_recon_advance (DfqRun *r, DfqPhaseReconstruct *s, gint unit)
{
    if (s->cached < 0 || s->cached > unit) {
        dfq_arena_reset (s->arena_x);
        dfq_arena_reset (s->arena_xq);
        s->x = dfq_tensor_dup (s->arena_x, r->images);
        s->xq = dfq_tensor_dup (s->arena_xq, r->images);
        s->y = NULL;
        s->cached = 0;
    }
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_EVAL);
    for (; s->cached < unit; s->cached++) {
        if (s->y != NULL) {
            dfq_recon_swap (&s->arena_x, &s->arena_y);
            s->x = s->y;
        } else {
            s->x = dfq_recon_map (r, r->teacher, FALSE, (guint) s->cached, s->x, s->arena_y);
            dfq_recon_swap (&s->arena_x, &s->arena_y);
        }
        s->y = NULL;
        s->xq = dfq_recon_map (r, r->student, TRUE, (guint) s->cached, s->xq, s->arena_tmp);
        dfq_recon_swap (&s->arena_xq, &s->arena_tmp);
    }
}

/* mean_b sum_c (a - b)^2 (sum over dim 1, mean over the rest), in double. */
static double
dfq_recon_error (const DfqTensor *a, const DfqTensor *b)
{
    const float *x = dfq_tensor_f32 (a), *y = dfq_tensor_f32 (b);
    gint64 n = dfq_tensor_numel (a);
    double acc = 0.0;
    for (gint64 i = 0; i < n; i++) {
        double d = (double) x[i] - (double) y[i];
        acc += d * d;
    }
    return acc * (double) a->shape[1] / (double) n;
}

/* The student's block @unit on x_q (the whole set, current mode) against y. */
static double
dfq_recon_set_error (DfqRun *r, DfqPhaseReconstruct *s, gint unit)
{
    DfqTensor *out = dfq_recon_map (r, r->student, TRUE, (guint) unit, s->xq, s->arena_tmp);
    double e = dfq_recon_error (out, s->y);
    dfq_arena_reset (s->arena_tmp);
    return e;
}

/* One Adam per quantizer parameter group (its own lr, else reconstruct.lr). */
static GPtrArray *
dfq_recon_optimizers (DfqRun *r, GArray *groups, DfqSchedule *schedules, DfqReconStats *st)
{
    const DfqPipelineReconstruct *rc = &r->cfg->reconstruct;
    GPtrArray *optims = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_optim_free);
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        DfqOptimConfig oc;
        dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
        oc.lr = grp->lr > 0 ? grp->lr : rc->lr;
        oc.weight_decay = grp->weight_decay >= 0 ? grp->weight_decay : 0.0;
        DfqOptim *o = dfq_optim_new (&oc);
        for (guint i = 0; i < grp->params->len; i++) {
            DfqTensor *t = grp->params->pdata[i];
            dfq_optim_add_param (o, t);
            st->n_params++;
            st->n_values += dfq_tensor_numel (t);
        }
        DfqSchedule *sc = &schedules[g];
        memset (sc, 0, sizeof *sc);
        gboolean cosine = rc->cosine != NULL && g_strv_contains ((const char *const *) rc->cosine, grp->name);
        sc->kind = cosine ? DFQ_SCHEDULE_COSINE : DFQ_SCHEDULE_CONSTANT;
        sc->base_lr = oc.lr;
        sc->total = MAX (rc->iters, 1);
        g_ptr_array_add (optims, o);
    }
    return optims;
}

/* Step @t's batch: rows perm[j*bs ..] of x_q, x (QDrop-mixed) and y. */
static DfqTensor *
dfq_recon_batch (DfqRun *r, DfqPhaseReconstruct *s, gint unit, gint64 t, const guint32 *perm, gint64 j, gint64 bs,
                 DfqTensor **yb)
{
    gint64 shape[DFQ_MAX_DIMS];
    memcpy (shape, s->x->shape, sizeof shape);
    shape[0] = bs;
    DfqTensor *xb = dfq_tensor_new (s->step, DFQ_DTYPE_F32, s->x->n_dims, shape);
    DfqTensor *xqb = dfq_tensor_new (s->step, DFQ_DTYPE_F32, s->x->n_dims, shape);
    memcpy (shape, s->y->shape, sizeof shape);
    shape[0] = bs;
    *yb = dfq_tensor_new (s->step, DFQ_DTYPE_F32, s->y->n_dims, shape);
    gsize per_x = (gsize) (dfq_tensor_numel (s->x) / s->x->shape[0]);
    gsize per_y = (gsize) (dfq_tensor_numel (s->y) / s->y->shape[0]);
    for (gint64 i = 0; i < bs; i++) {
        gsize row = perm[j * bs + i];
        memcpy (dfq_tensor_f32 (xb) + i * per_x, dfq_tensor_f32 (s->x) + row * per_x, per_x * sizeof (float));
        memcpy (dfq_tensor_f32 (xqb) + i * per_x, dfq_tensor_f32 (s->xq) + row * per_x, per_x * sizeof (float));
        memcpy (dfq_tensor_f32 (*yb) + i * per_y, dfq_tensor_f32 (s->y) + row * per_y, per_y * sizeof (float));
    }
    guint64 stream = (RECON_STREAM_QDROP << 32) ^ ((guint64) unit << 40) ^ (guint64) t;
    return dfq_qdrop_mix (s->step, xqb, xb, r->cfg->reconstruct.qdrop, (guint64) r->cfg->seed, stream);
}

/* Annealing progress of 0-based step @t (GENIE's LinearTempDecay, 1-based
 * count): < 0 during the warm-up (no regulariser), then 0 -> 1. */
static double
dfq_recon_progress (const DfqPipelineReconstruct *rc, gint64 t)
{
    double i = (double) (t + 1), start = rc->warmup * rc->iters;
    if (i < start)
        return -1.0;
    return rc->iters > start ? MIN ((i - start) / ((double) rc->iters - start), 1.0) : 1.0;
}

/* One step: forward of the unit on the mixed batch, loss, backward, Adam. */
static gboolean
dfq_recon_step (DfqRun *r, DfqPhaseReconstruct *s, gint unit, gint64 t, DfqTensor *xb, DfqTensor *yb,
                GPtrArray *optims, const DfqSchedule *schedules, DfqReconStats *st, GError **error)
{
    const DfqPipelineReconstruct *rc = &r->cfg->reconstruct;
    for (guint g = 0; g < optims->len; g++) {
        dfq_optim_zero_grad (optims->pdata[g]);
        dfq_optim_set_lr (optims->pdata[g], dfq_schedule_lr (&schedules[g], t));
    }
    DfqForward fwd;
    dfq_forward_init (&fwd, s->step, FALSE);
    fwd.seed = (guint64) r->cfg->seed;
    fwd.step = ((guint64) unit << 32) + (guint64) t + 1; /* the quantizer's own draws (GENIE's QDrop) */
    dfq_quantizer_hook (r->quantizer, &fwd);
    DfqTensor *out = dfq_model_forward_block (r->student, &fwd, (guint) unit, xb);
    DfqTensor *d = dfq_sub (s->step, out, yb);
    DfqTensor *rec = dfq_affine (s->step, dfq_sum (s->step, dfq_mul (s->step, d, d)),
                                 (float) ((double) out->shape[1] / (double) dfq_tensor_numel (out)), 0.0f);
    DfqTensor *loss = rec;
    double progress = dfq_recon_progress (rc, t);
    DfqTensor *reg = progress >= 0 ? dfq_quantizer_regularizer (r->quantizer, s->step, progress) : NULL;
    if (reg != NULL)
        loss = dfq_add (s->step, rec, reg);
    double rv = dfq_tensor_f32 (rec)[0], lv = dfq_tensor_f32 (loss)[0];
    if (!isfinite (lv)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                     "reconstruction of block '%s' diverged at step %" G_GINT64_FORMAT " (loss %g): lower the "
                     "quantizer's learning rates", (const char *) r->student->blocks->pdata[unit], t, lv);
        return FALSE;
    }
    dfq_backward (loss, s->step);
    for (guint g = 0; g < optims->len; g++)
        dfq_optim_step (optims->pdata[g]);
    gint64 tail = MAX (rc->iters / 10, 1);
    if (t == 0)
        st->rec_first = rv;
    if (t >= rc->iters - tail)
        st->rec_last += rv / (double) tail;
    st->reg_last = reg != NULL ? lv - rv : 0.0;
    st->progress = progress;
    if (t % RECON_REPORT_EVERY == 0 || t + 1 == rc->iters) {
        r->prog.loss = lv;
        r->prog.eta = NAN;
        dfq_run_progress (r, "reconstruct", unit, (gint) r->student->blocks->len, (gint) t, rc->iters);
    }
    return TRUE;
}

/* The optimisation of unit @unit (the quantizer's active block). */
static gboolean
dfq_recon_optimise (DfqRun *r, DfqPhaseReconstruct *s, gint unit, DfqReconStats *st, GError **error)
{
    const DfqPipelineReconstruct *rc = &r->cfg->reconstruct;
    GArray *groups = dfq_quantizer_get_param_groups (r->quantizer);
    DfqSchedule *schedules = g_new0 (DfqSchedule, MAX (groups->len, 1));
    GPtrArray *optims = dfq_recon_optimizers (r, groups, schedules, st);
    gint64 n = s->x->shape[0], bs = MIN ((gint64) rc->batch, n), per_pass = n / bs;
    guint32 *perm = g_new (guint32, n);
    gboolean ok = TRUE, prev = dfq_set_grad_enabled (TRUE);
    for (gint64 t = 0; ok && st->n_params > 0 && t < rc->iters; t++) {
        gint64 pass = t / per_pass, j = t % per_pass;
        if (j == 0)
            dfq_rand_permutation (perm, (guint32) n, (guint64) r->cfg->seed,
                                  RECON_STREAM_PERM + ((guint64) unit << 24) + (guint64) pass);
        dfq_arena_reset (s->step);
        DfqTensor *yb;
        DfqTensor *xb = dfq_recon_batch (r, s, unit, t, perm, j, bs, &yb);
        ok = dfq_recon_step (r, s, unit, t, xb, yb, optims, schedules, st, error);
    }
    dfq_set_grad_enabled (prev);
    dfq_arena_reset (s->step);
    g_free (perm);
    g_ptr_array_unref (optims);
    g_free (schedules);
    dfq_quant_param_groups_free (groups);
    return ok;
}

static gboolean
dfq_reconstruct_begin (DfqRun *r, DfqPhase *p, gint *unit, GError **error)
{
    /* only the quantizer's parameters learn: no gradient for the weights */
    dfq_model_set_trainable (r->student, FALSE);
    return TRUE;
}

static void
dfq_recon_add_double (JsonBuilder *b, const char *name, double v)
{
    json_builder_set_member_name (b, name);
    json_builder_add_double_value (b, v);
}

static gboolean
dfq_reconstruct_run_unit (DfqRun *r, DfqPhase *p, gint unit, JsonBuilder *b, GError **error)
{
    DfqPhaseReconstruct *s = (DfqPhaseReconstruct *) p;
    const char *block = r->student->blocks->pdata[unit];
    dfq_run_progress (r, "reconstruct", unit, p->n_units, 0, r->cfg->reconstruct.iters);
    dfq_recon_advance (r, s, unit);
    s->y = dfq_recon_map (r, r->teacher, FALSE, (guint) unit, s->x, s->arena_y);
    double before = dfq_recon_set_error (r, s, unit); /* EVAL: hard rounding of the initial state */
    DfqReconStats st = { 0 };
    dfq_quantizer_set_active_block (r->quantizer, block);
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_LEARN);
    gboolean ok = dfq_recon_optimise (r, s, unit, &st, error);
    /* hardens the active block only; the mode stays HARD until the next unit */
    if (ok)
        dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_HARD);
    dfq_quantizer_set_active_block (r->quantizer, NULL);
    if (!ok)
        return FALSE;
    double after = dfq_recon_set_error (r, s, unit);
    json_builder_set_member_name (b, "block");
    json_builder_add_string_value (b, block);
    json_builder_set_member_name (b, "iters");
    json_builder_add_int_value (b, st.n_params > 0 ? r->cfg->reconstruct.iters : 0);
    json_builder_set_member_name (b, "params");
    json_builder_add_int_value (b, st.n_values);
    dfq_recon_add_double (b, "rec_before", before);
    dfq_recon_add_double (b, "rec_after", after);
    if (st.n_params > 0 && r->cfg->reconstruct.iters > 0) {
        dfq_recon_add_double (b, "rec_first", st.rec_first);
        dfq_recon_add_double (b, "rec_last", st.rec_last);
        dfq_recon_add_double (b, "reg_last", st.reg_last);
    }
    if (!isfinite (after)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                     "block '%s' gives a non-finite reconstruction error after hardening", block);
        return FALSE;
    }
    return TRUE;
}

static gboolean
dfq_reconstruct_end (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseReconstruct *s = (DfqPhaseReconstruct *) p;
    dfq_model_set_trainable (r->student, TRUE);
    dfq_arena_reset (s->arena_x);
    dfq_arena_reset (s->arena_xq);
    dfq_arena_reset (s->arena_y);
    dfq_arena_reset (s->arena_tmp);
    s->x = s->xq = s->y = NULL;
    s->cached = -1;
    return TRUE;
}

static void
dfq_reconstruct_clear (DfqPhase *p)
{
    DfqPhaseReconstruct *s = (DfqPhaseReconstruct *) p;
    g_clear_pointer (&s->arena_x, dfq_arena_free);
    g_clear_pointer (&s->arena_xq, dfq_arena_free);
    g_clear_pointer (&s->arena_y, dfq_arena_free);
    g_clear_pointer (&s->arena_tmp, dfq_arena_free);
    g_clear_pointer (&s->step, dfq_arena_free);
}

const DfqPhaseClass dfq_phase_reconstruct = {
    .name = "reconstruct",
    .unit = "unit",
    .instance_size = sizeof (DfqPhaseReconstruct),
    .setup = dfq_reconstruct_setup,
    .begin = dfq_reconstruct_begin,
    .run_unit = dfq_reconstruct_run_unit,
    .end = dfq_reconstruct_end,
    .clear = dfq_reconstruct_clear,
};
