/* Phase `train` (core/runner): quantization-aware training of the student on
 * an online synthesizer's batches, the GDFQ skeleton (METHODS.md 1.4). Unit:
 * an epoch. Per iteration a synthesizer step (generator update + batch), then
 * a student step on the detached batch; activation ranges are calibrated in
 * epochs < range_epochs; the student is updated from warmup_epochs on; the
 * student is evaluated on the real split after every epoch. Checkpoints
 * inside an epoch hold the epoch's running sums: the synthesizers draw from
 * (seed, step) and keep the rest in their checkpointed state, so the
 * iteration index is all the rest of the epoch needs besides them. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "dfq-run.h"

/* Sums of one epoch, for its metrics line. */
typedef struct {
    double loss;
    double gen;
    double gen_terms[G_N_ELEMENTS (((DfqSynthBatch *) NULL)->loss_terms)];
    const char *gen_names[G_N_ELEMENTS (((DfqSynthBatch *) NULL)->loss_terms)];
    guint n_gen_terms;
} DfqTrainSums;

typedef struct {
    DfqPhase parent;
    DfqOptim *optim;
    DfqSchedule schedule;
    GPtrArray *optim_state;
    double *values;     /* per loss, this iteration */
    double *loss_terms; /* per loss, summed over the epoch */
    DfqTrainSums sums;  /* of the running epoch */
    gboolean debug_log;
} DfqPhaseTrain;

/* metrics.jsonl key of loss term @k: "<prefix>.<name>", with ".<k>" added
 * when an earlier term has the same name (two ce losses), "<prefix>.<k>"
 * when the term has no name. */
static char *
dfq_train_metric_key (const char *prefix, const char *const *names, guint k)
{
    if (names[k] == NULL)
        return g_strdup_printf ("%s.%u", prefix, k);
    for (guint j = 0; j < k; j++)
        if (names[j] != NULL && g_str_equal (names[j], names[k]))
            return g_strdup_printf ("%s.%s.%u", prefix, names[k], k);
    return g_strdup_printf ("%s.%s", prefix, names[k]);
}

/* The student's optimiser: its weights, then the quantizer's parameter groups
 * (each with its own learning rate and weight decay). */
static void
dfq_train_build_optim (DfqRun *r, DfqPhaseTrain *t)
{
    const DfqPipelineConfig *cfg = r->cfg;
    DfqOptimConfig ocfg;
    dfq_optim_params_to_config (&cfg->train.optimizer, cfg->train.epochs, &ocfg, &t->schedule);
    t->optim = dfq_optim_new (&ocfg);
    for (guint i = 0; i < r->student->params->len; i++)
        dfq_optim_add_param (t->optim, r->student->params->pdata[i]);
    if (r->quantizer == NULL)
        return;
    GArray *groups = dfq_quantizer_get_param_groups (r->quantizer);
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        double wd = grp->weight_decay >= 0 ? grp->weight_decay : ocfg.weight_decay;
        double scale = grp->lr > 0 && ocfg.lr > 0 ? grp->lr / ocfg.lr : 1.0;
        for (guint i = 0; i < grp->params->len; i++)
            dfq_optim_add_param_full (t->optim, grp->params->pdata[i], wd, scale);
    }
    dfq_quant_param_groups_free (groups);
}

static gboolean
dfq_train_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    const DfqPipelineConfig *cfg = r->cfg;
    if (r->synth == NULL || DFQ_SYNTHESIZER_CLASS (r->synth)->mode != DFQ_SYNTH_ONLINE) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "needs an online synthesizer (a generator trained alongside the student: gdfq, bag, adadfq)%s%s%s",
                     r->synth ? "; '" : "", r->synth ? ((DfqFeature *) r->synth)->klass->name : "",
                     r->synth ? "' makes an image set: use phases [synthesize, calibrate, evaluate]" : "");
        return FALSE;
    }
    if (cfg->train.losses == NULL || cfg->train.losses->len == 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "train.losses is empty: nothing to train the student with");
        return FALSE;
    }
    dfq_train_build_optim (r, t);
    t->optim_state = dfq_optim_get_state (t->optim);
    dfq_priv_ckpt_add (r->ckpt_names, r->ckpt_tensors, "optim.", t->optim_state);
    t->values = g_new0 (double, cfg->train.losses->len);
    t->loss_terms = g_new0 (double, cfg->train.losses->len);
    t->debug_log = !g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN);
    p->n_units = cfg->train.epochs;
    return TRUE;
}

static gboolean
dfq_train_restore (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    dfq_optim_set_step (t->optim, (gint64) dfq_priv_meta_double (st, "optim_step", 0));
    if (DFQ_SYNTHESIZER_CLASS (r->synth)->set_optim_step != NULL)
        DFQ_SYNTHESIZER_CLASS (r->synth)->set_optim_step (r->synth,
                                                          (gint64) dfq_priv_meta_double (st, "synth_optim_step", 0));
    return TRUE;
}

static void
dfq_train_save_meta (DfqRun *r, DfqPhase *p, GHashTable *meta)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    dfq_priv_meta_set_double (meta, "optim_step", (double) dfq_optim_get_step (t->optim));
    if (DFQ_SYNTHESIZER_CLASS (r->synth)->get_optim_step != NULL)
        dfq_priv_meta_set_double (meta, "synth_optim_step",
                                  (double) DFQ_SYNTHESIZER_CLASS (r->synth)->get_optim_step (r->synth));
}

static void
dfq_train_save_partial (DfqRun *r, DfqPhase *p, GHashTable *meta)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    char key[64];
    dfq_priv_meta_set_double (meta, "partial.student_loss", t->sums.loss);
    dfq_priv_meta_set_double (meta, "partial.generator_loss", t->sums.gen);
    dfq_priv_meta_set_double (meta, "partial.n_generator_terms", t->sums.n_gen_terms);
    for (guint k = 0; k < t->sums.n_gen_terms; k++) {
        g_snprintf (key, sizeof key, "partial.generator.%u", k);
        dfq_priv_meta_set_double (meta, key, t->sums.gen_terms[k]);
    }
    for (guint k = 0; k < r->cfg->train.losses->len; k++) {
        g_snprintf (key, sizeof key, "partial.student.%u", k);
        dfq_priv_meta_set_double (meta, key, t->loss_terms[k]);
    }
}

/* The sums of the epoch a checkpoint was written in (before its last
 * iteration); the term names come back with the next synthesizer step. */
static gboolean
dfq_train_restore_partial (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    char key[64];
    gint n_gen = (gint) dfq_priv_meta_double (st, "partial.n_generator_terms", 0);
    if (r->unit_iter >= r->cfg->train.iters || n_gen < 0 || n_gen > (gint) G_N_ELEMENTS (t->sums.gen_terms)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "checkpoint written after iteration %d of an epoch of %d, with %d generator terms; use --restart",
                     r->unit_iter, r->cfg->train.iters, n_gen);
        return FALSE;
    }
    memset (&t->sums, 0, sizeof t->sums);
    t->sums.loss = dfq_priv_meta_double (st, "partial.student_loss", 0);
    t->sums.gen = dfq_priv_meta_double (st, "partial.generator_loss", 0);
    t->sums.n_gen_terms = (guint) n_gen;
    for (guint k = 0; k < t->sums.n_gen_terms; k++) {
        g_snprintf (key, sizeof key, "partial.generator.%u", k);
        t->sums.gen_terms[k] = dfq_priv_meta_double (st, key, 0);
    }
    for (guint k = 0; k < r->cfg->train.losses->len; k++) {
        g_snprintf (key, sizeof key, "partial.student.%u", k);
        t->loss_terms[k] = dfq_priv_meta_double (st, key, 0);
    }
    return TRUE;
}

static gboolean
dfq_train_diverged (GError **error, const char *what, double v, gint epoch, gint it)
{
    g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED, "%s loss is %g at epoch %d, iteration %d: training diverged",
                 what, v, epoch, it);
    return FALSE;
}

/* One iteration: a synthesizer step, then the student step on its batch. */
static gboolean
dfq_train_iteration (DfqRun *r, DfqPhaseTrain *t, gint epoch, gint it, gboolean update_student, DfqTrainSums *sums,
                     GError **error)
{
    const DfqPipelineConfig *cfg = r->cfg;
    DfqStepContext *ctx = &r->ctx;
    ctx->iter = it;
    ctx->step = (gint64) epoch * cfg->train.iters + it;
    dfq_arena_reset (r->scratch);
    /* g_debug() formats its message even when debug output is off */
    if (t->debug_log)
        g_debug ("step %" G_GINT64_FORMAT ": scratch arena %" G_GSIZE_FORMAT " MiB reserved, %u system allocations",
                 ctx->step, dfq_arena_capacity (r->scratch) >> 20, dfq_arena_n_system_allocs (r->scratch));
    DfqSynthBatch batch = { 0 };
    if (!DFQ_SYNTHESIZER_CLASS (r->synth)->step (r->synth, ctx, &batch, error))
        return FALSE;
    if (!isfinite (batch.loss))
        return dfq_train_diverged (error, "generator", batch.loss, epoch, it);
    sums->gen += batch.loss;
    sums->n_gen_terms = MIN (batch.n_loss_terms, G_N_ELEMENTS (sums->gen_terms));
    for (guint k = 0; k < sums->n_gen_terms; k++) {
        sums->gen_terms[k] += batch.loss_terms[k];
        sums->gen_names[k] = batch.loss_names[k];
    }
    /* student step on the detached batch */
    dfq_optim_zero_grad (t->optim);
    DfqTensor *loss = dfq_step_eval_losses (ctx, cfg->train.losses, batch.images, batch.labels, batch.soft_labels,
                                            t->values, error);
    if (loss == NULL)
        return FALSE;
    if (r->quantizer != NULL && update_student) {
        double progress = (double) ctx->step / MAX ((gint64) cfg->train.epochs * cfg->train.iters, 1);
        DfqTensor *reg = dfq_quantizer_regularizer (r->quantizer, r->scratch, progress);
        if (reg != NULL)
            loss = dfq_add (r->scratch, loss, reg);
    }
    double lv = dfq_tensor_f32 (loss)[0];
    if (!isfinite (lv))
        return dfq_train_diverged (error, "student", lv, epoch, it);
    if (update_student) {
        dfq_backward (loss, r->scratch);
        dfq_optim_step (t->optim);
    }
    sums->loss += lv;
    for (guint k = 0; k < cfg->train.losses->len; k++)
        t->loss_terms[k] += t->values[k];
    r->prog.loss = lv;
    r->prog.gen_loss = batch.loss;
    return TRUE;
}

static void
dfq_train_metrics (DfqRun *r, DfqPhaseTrain *t, const DfqTrainSums *sums, gboolean update_student, JsonBuilder *b)
{
    const DfqPipelineConfig *cfg = r->cfg;
    json_builder_set_member_name (b, "lr");
    json_builder_add_double_value (b, dfq_optim_get_lr (t->optim));
    json_builder_set_member_name (b, "student_loss");
    json_builder_add_double_value (b, sums->loss / cfg->train.iters);
    const char **student_names = g_newa (const char *, cfg->train.losses->len);
    for (guint k = 0; k < cfg->train.losses->len; k++)
        student_names[k] = ((DfqFeature *) cfg->train.losses->pdata[k])->klass->name;
    for (guint k = 0; k < cfg->train.losses->len; k++) {
        g_autofree char *key = dfq_train_metric_key ("student", student_names, k);
        json_builder_set_member_name (b, key);
        json_builder_add_double_value (b, t->loss_terms[k] / cfg->train.iters);
    }
    json_builder_set_member_name (b, "generator_loss");
    json_builder_add_double_value (b, sums->gen / cfg->train.iters);
    for (guint k = 0; k < sums->n_gen_terms; k++) {
        /* unweighted, as the student's terms */
        g_autofree char *key = dfq_train_metric_key ("generator", sums->gen_names, k);
        json_builder_set_member_name (b, key);
        json_builder_add_double_value (b, sums->gen_terms[k] / cfg->train.iters);
    }
    json_builder_set_member_name (b, "top1");
    json_builder_add_double_value (b, r->last);
    json_builder_set_member_name (b, "split");
    json_builder_add_string_value (b, dfq_pipeline_split_names[cfg->eval.split]);
    json_builder_set_member_name (b, "student_updated");
    json_builder_add_boolean_value (b, update_student);
}

static gboolean
dfq_train_run_unit (DfqRun *r, DfqPhase *p, gint epoch, JsonBuilder *line, GError **error)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    const DfqPipelineConfig *cfg = r->cfg;
    r->ctx.epoch = epoch;
    dfq_optim_set_lr (t->optim, dfq_schedule_lr (&t->schedule, epoch));
    if (DFQ_SYNTHESIZER_CLASS (r->synth)->start_epoch != NULL)
        DFQ_SYNTHESIZER_CLASS (r->synth)->start_epoch (r->synth, &r->ctx);
    if (r->quantizer != NULL)
        dfq_quantizer_set_calibrating (r->quantizer, epoch < cfg->train.range_epochs);
    gboolean update_student = epoch >= cfg->train.warmup_epochs;
    const char *shown = update_student ? "train" : "warmup";
    /* 0, or where a checkpoint inside this epoch left it (sums restored) */
    const gint first = r->unit_iter;
    if (first == 0) {
        memset (&t->sums, 0, sizeof t->sums);
        memset (t->loss_terms, 0, sizeof (double) * cfg->train.losses->len);
    }
    gint64 t0 = g_get_monotonic_time ();
    for (gint it = first; it < cfg->train.iters; it++) {
        if (!dfq_train_iteration (r, t, epoch, it, update_student, &t->sums, error))
            return FALSE;
        /* iterations left in the run over the seconds per iteration of this epoch so far */
        gint64 left = (gint64) (p->n_units - epoch) * cfg->train.iters - (it + 1);
        r->prog.eta = (g_get_monotonic_time () - t0) / 1e6 / (it + 1 - first) * left;
        dfq_run_progress (r, shown, epoch, p->n_units, it, cfg->train.iters);
        /* after the progress report, which is where the CLI turns a signal into a stop */
        if (!dfq_run_iteration_done (r, p, epoch, it + 1, cfg->train.iters, error))
            return FALSE;
    }
    if (r->quantizer != NULL)
        dfq_quantizer_set_calibrating (r->quantizer, FALSE);

    /* evaluation on the real split */
    dfq_run_progress (r, "eval", epoch, p->n_units, cfg->train.iters - 1, cfg->train.iters);
    double top1;
    if (!dfq_run_eval_student (r, &top1, error))
        return FALSE;
    dfq_run_note_top1 (r, top1, epoch);
    dfq_train_metrics (r, t, &t->sums, update_student, line);
    if (!dfq_run_sqnr (r, line, error))
        return FALSE;
    r->epochs_done = epoch + 1;
    return TRUE;
}

static void
dfq_train_clear (DfqPhase *p)
{
    DfqPhaseTrain *t = (DfqPhaseTrain *) p;
    g_clear_pointer (&t->optim_state, g_ptr_array_unref);
    g_clear_pointer (&t->optim, dfq_optim_free);
    g_clear_pointer (&t->values, g_free);
    g_clear_pointer (&t->loss_terms, g_free);
}

const DfqPhaseClass dfq_phase_train = {
    .name = "train",
    .unit = "epoch",
    .instance_size = sizeof (DfqPhaseTrain),
    .setup = dfq_train_setup,
    .restore = dfq_train_restore,
    .run_unit = dfq_train_run_unit,
    .save_meta = dfq_train_save_meta,
    .save_partial = dfq_train_save_partial,
    .restore_partial = dfq_train_restore_partial,
    .clear = dfq_train_clear,
};
