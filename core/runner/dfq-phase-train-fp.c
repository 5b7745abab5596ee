/* Phase `train-fp` (core/runner): full-precision training of the model on
 * real data, how dfqlab makes its own teachers (`dfq train`). Unit: an epoch.
 * Cross-entropy, SGD/Adam with the pipeline's schedule (cosine per step,
 * multistep and exponential per epoch), pad + crop + flip augmentation,
 * evaluation after every epoch. Checkpoints inside an epoch hold the epoch's
 * running sums; the data order and augmentation are functions of (seed,
 * epoch, sample) and dropout of (seed, step), so the iteration index is all
 * the rest of the epoch needs besides them. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "dfq-run.h"

typedef struct {
    DfqPhase parent;
    DfqDataset *train_set;
    DfqDataLoader *loader;
    DfqOptim *optim;
    GPtrArray *optim_state;
    DfqSchedule schedule;
    gboolean per_step;
    guint steps;     /* per epoch */
    DfqTensor *x;    /* the batch, in r->data */
    DfqTensor *y;
    /* the running epoch's sums, for its metrics line */
    double loss_sum;
    guint correct;
    guint seen;
} DfqPhaseTrainFp;

static gboolean
dfq_train_fp_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseTrainFp *t = (DfqPhaseTrainFp *) p;
    const DfqPipelineConfig *cfg = r->cfg;
    DfqModel *model = r->teacher;
    if (r->student != NULL) {
        g_set_error_literal (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                             "train-fp trains the teacher itself: run it with `dfq train`");
        return FALSE;
    }
    t->train_set = dfq_priv_open_dataset (cfg, DFQ_DATASET_SPLIT_TRAIN, error);
    if (t->train_set == NULL)
        return FALSE;
    guint c, h, w;
    dfq_dataset_get_shape (t->train_set, &c, &h, &w);
    if ((gint) c != model->in_channels) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "dataset images have %u channels, the model takes %d",
                     c, model->in_channels);
        return FALSE;
    }
    DfqDataLoaderOptions lo = DFQ_DATA_LOADER_OPTIONS_INIT;
    lo.batch_size = (guint) cfg->train.batch;
    lo.shuffle = TRUE;
    lo.drop_last = TRUE; /* constant batch shape: BN statistics of full batches only */
    lo.seed = (guint64) cfg->seed;
    lo.pad = (guint) cfg->train.pad;
    lo.hflip = cfg->train.hflip;
    t->loader = dfq_data_loader_new (t->train_set, &lo);
    t->steps = dfq_data_loader_get_n_batches (t->loader);
    if (cfg->train.iters > 0 && (guint) cfg->train.iters < t->steps)
        t->steps = (guint) cfg->train.iters;

    /* cosine decays per step over the whole run; the others count epochs */
    DfqOptimConfig ocfg;
    dfq_optim_params_to_config (&cfg->train.optimizer, (gint64) cfg->train.epochs * t->steps, &ocfg, &t->schedule);
    t->per_step = t->schedule.kind == DFQ_SCHEDULE_COSINE;
    t->optim = dfq_optim_new (&ocfg);
    for (guint i = 0; i < model->params->len; i++)
        dfq_optim_add_param (t->optim, model->params->pdata[i]);
    t->optim_state = dfq_optim_get_state (t->optim);
    dfq_priv_ckpt_add (r->ckpt_names, r->ckpt_tensors, "optim.", t->optim_state);
    t->x = dfq_tensor_new_4d (r->data, DFQ_DTYPE_F32, cfg->train.batch, c, h, w);
    t->y = dfq_tensor_new_1d (r->data, DFQ_DTYPE_I32, cfg->train.batch);
    p->n_units = cfg->train.epochs;
    return TRUE;
}

static gboolean
dfq_train_fp_restore (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error)
{
    dfq_optim_set_step (((DfqPhaseTrainFp *) p)->optim, (gint64) dfq_priv_meta_double (st, "optim_step", 0));
    return TRUE;
}

static void
dfq_train_fp_save_meta (DfqRun *r, DfqPhase *p, GHashTable *meta)
{
    dfq_priv_meta_set_double (meta, "optim_step", (double) dfq_optim_get_step (((DfqPhaseTrainFp *) p)->optim));
}

static void
dfq_train_fp_save_partial (DfqRun *r, DfqPhase *p, GHashTable *meta)
{
    DfqPhaseTrainFp *t = (DfqPhaseTrainFp *) p;
    dfq_priv_meta_set_double (meta, "partial.loss_sum", t->loss_sum);
    dfq_priv_meta_set_double (meta, "partial.correct", t->correct);
    dfq_priv_meta_set_double (meta, "partial.seen", t->seen);
}

static gboolean
dfq_train_fp_restore_partial (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error)
{
    DfqPhaseTrainFp *t = (DfqPhaseTrainFp *) p;
    if (r->unit_iter >= (gint) t->steps) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "checkpoint written after iteration %d of an epoch of %u; use --restart", r->unit_iter, t->steps);
        return FALSE;
    }
    t->loss_sum = dfq_priv_meta_double (st, "partial.loss_sum", 0);
    t->correct = (guint) dfq_priv_meta_double (st, "partial.correct", 0);
    t->seen = (guint) dfq_priv_meta_double (st, "partial.seen", 0);
    return TRUE;
}

static guint
dfq_train_fp_count_correct (const DfqTensor *logits, const DfqTensor *y, gint batch, gint classes)
{
    const float *l = dfq_tensor_f32 (logits);
    guint correct = 0;
    for (gint b = 0; b < batch; b++) {
        gint best_k = 0;
        for (gint k = 1; k < classes; k++)
            if (l[b * classes + k] > l[b * classes + best_k])
                best_k = k;
        correct += best_k == dfq_tensor_i32 (y)[b];
    }
    return correct;
}

static gboolean
dfq_train_fp_run_unit (DfqRun *r, DfqPhase *p, gint epoch, JsonBuilder *b, GError **error)
{
    DfqPhaseTrainFp *t = (DfqPhaseTrainFp *) p;
    const DfqPipelineConfig *cfg = r->cfg;
    DfqModel *model = r->teacher;
    /* 0, or where a checkpoint inside this epoch left it (sums restored) */
    const guint first = (guint) r->unit_iter;
    dfq_data_loader_start_epoch (t->loader, (guint) epoch);
    dfq_data_loader_seek (t->loader, first);
    if (first == 0) {
        t->loss_sum = 0.0;
        t->correct = t->seen = 0;
    }
    gint64 t0 = g_get_monotonic_time ();
    for (guint it = first; it < t->steps; it++) {
        gint64 step = (gint64) epoch * t->steps + it;
        dfq_optim_set_lr (t->optim, dfq_schedule_lr (&t->schedule, t->per_step ? step : epoch));
        if (!dfq_data_loader_next (t->loader, t->x, t->y, NULL))
            break;
        dfq_arena_reset (r->scratch);
        DfqForward fwd;
        dfq_forward_init (&fwd, r->scratch, TRUE);
        fwd.seed = (guint64) cfg->seed;
        fwd.step = (guint64) step;
        DfqTensor *logits = dfq_model_forward (model, &fwd, t->x);
        DfqTensor *loss = dfq_cross_entropy (r->scratch, logits, t->y);
        float lv = dfq_tensor_f32 (loss)[0];
        if (!isfinite (lv)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                         "training loss is %g at epoch %d, step %u: training diverged (lower the learning rate?)", lv,
                         epoch, it);
            return FALSE;
        }
        dfq_optim_zero_grad (t->optim);
        dfq_backward (loss, r->scratch);
        dfq_optim_step (t->optim);
        t->loss_sum += lv;
        t->correct += dfq_train_fp_count_correct (logits, t->y, cfg->train.batch, model->classes);
        t->seen += (guint) cfg->train.batch;
        r->prog.loss = lv;
        /* steps left in the run over the seconds per step of this epoch so far */
        gint64 left = (gint64) (p->n_units - epoch) * t->steps - (it + 1);
        r->prog.eta = (g_get_monotonic_time () - t0) / 1e6 / (it + 1 - first) * left;
        dfq_run_progress (r, "train", epoch, p->n_units, (gint) it, (gint) t->steps);
        /* after the progress report, which is where the CLI turns a signal into a stop */
        if (!dfq_run_iteration_done (r, p, epoch, (gint) it + 1, (gint) t->steps, error))
            return FALSE;
    }
    dfq_run_progress (r, "eval", epoch, p->n_units, (gint) t->steps - 1, (gint) t->steps);
    DfqEvalResult ev;
    if (!dfq_evaluate (model, NULL, r->eval_set, (guint) cfg->eval.batch, r->opts ? r->opts->eval_limit : 0, &ev,
                       error))
        return FALSE;
    dfq_run_note_top1 (r, ev.top1, epoch);
    dfq_eval_result_clear (&ev);
    r->epochs_done = epoch + 1;

    json_builder_set_member_name (b, "lr");
    json_builder_add_double_value (b, dfq_optim_get_lr (t->optim));
    json_builder_set_member_name (b, "train_loss");
    json_builder_add_double_value (b, t->loss_sum / MAX (t->steps, 1));
    json_builder_set_member_name (b, "train_top1");
    json_builder_add_double_value (b, 100.0 * t->correct / MAX (t->seen, 1));
    json_builder_set_member_name (b, "top1");
    json_builder_add_double_value (b, r->last);
    json_builder_set_member_name (b, "split");
    json_builder_add_string_value (b, dfq_pipeline_split_names[cfg->eval.split]);
    return TRUE;
}

static void
dfq_train_fp_clear (DfqPhase *p)
{
    DfqPhaseTrainFp *t = (DfqPhaseTrainFp *) p;
    g_clear_pointer (&t->optim_state, g_ptr_array_unref);
    g_clear_pointer (&t->optim, dfq_optim_free);
    g_clear_pointer (&t->loader, dfq_data_loader_free);
    g_clear_pointer (&t->train_set, dfq_dataset_free);
}

const DfqPhaseClass dfq_phase_train_fp = {
    .name = "train-fp",
    .unit = "epoch",
    .instance_size = sizeof (DfqPhaseTrainFp),
    .setup = dfq_train_fp_setup,
    .restore = dfq_train_fp_restore,
    .run_unit = dfq_train_fp_run_unit,
    .save_meta = dfq_train_fp_save_meta,
    .save_partial = dfq_train_fp_save_partial,
    .restore_partial = dfq_train_fp_restore_partial,
    .clear = dfq_train_fp_clear,
};
