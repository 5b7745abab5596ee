/* The phase driver (core/runner): sets up every phase of a run, restores the
 * checkpoint, runs the remaining units in order with one metrics line and one
 * checkpoint after each, and writes result.json. See dfq-run.h. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "dfq-run.h"

const DfqPhaseClass *const dfq_phase_classes[] = {
    &dfq_phase_train_fp, &dfq_phase_synthesize, &dfq_phase_calibrate, &dfq_phase_reconstruct, &dfq_phase_train,
    &dfq_phase_evaluate, NULL,
};

const DfqPhaseClass *
dfq_phase_class_find (const char *name)
{
    for (guint i = 0; dfq_phase_classes[i] != NULL; i++)
        if (g_str_equal (dfq_phase_classes[i]->name, name))
            return dfq_phase_classes[i];
    return NULL;
}

static void
dfq_phase_free (gpointer data)
{
    DfqPhase *p = data;
    if (p->klass->clear != NULL)
        p->klass->clear (p);
    g_free (p);
}

void
dfq_run_add_phase (DfqRun *r, const DfqPhaseClass *klass)
{
    g_return_if_fail (klass->instance_size >= sizeof (DfqPhase));
    if (r->phases == NULL)
        r->phases = g_ptr_array_new_with_free_func (dfq_phase_free);
    DfqPhase *p = g_malloc0 (klass->instance_size);
    p->klass = klass;
    g_ptr_array_add (r->phases, p);
}

void
dfq_run_clear (DfqRun *r)
{
    g_clear_pointer (&r->phases, g_ptr_array_unref);
    g_clear_pointer (&r->run_dir, g_free);
    g_clear_pointer (&r->config_hash, g_free);
    if (r->student != NULL)
        dfq_feature_free ((DfqFeature *) r->student);
    r->student = NULL;
    g_clear_pointer (&r->eval_set, dfq_dataset_free);
    g_clear_pointer (&r->scratch, dfq_arena_free);
    g_clear_pointer (&r->data, dfq_arena_free);
    g_clear_pointer (&r->ckpt_names, g_ptr_array_unref);
    g_clear_pointer (&r->ckpt_tensors, g_ptr_array_unref);
}

void
dfq_run_progress (DfqRun *r, const char *phase, gint unit, gint n_units, gint iter, gint iters)
{
    DfqProgress *p = &r->prog;
    p->phase = phase;
    p->epoch = unit;
    p->epochs = n_units;
    p->iter = iter;
    p->iters = iters;
    p->elapsed = (g_get_monotonic_time () - r->t_start) / 1e6;
    dfq_priv_report (r->opts, p);
}

void
dfq_run_note_top1 (DfqRun *r, double top1, gint epoch)
{
    r->last = top1;
    r->prog.top1 = top1;
    if (top1 > r->best) {
        r->best = top1;
        r->best_epoch = epoch;
    }
}

gboolean
dfq_run_eval_student (DfqRun *r, double *top1, GError **error)
{
    DfqForward hooks;
    dfq_forward_init (&hooks, NULL, FALSE);
    DfqQuantMode mode = DFQ_QUANT_MODE_LEARN;
    if (r->quantizer != NULL) {
        mode = dfq_quantizer_get_mode (r->quantizer);
        dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_EVAL);
        dfq_quantizer_hook (r->quantizer, &hooks);
    }
    DfqEvalResult ev;
    gboolean ok = dfq_evaluate (r->student, r->quantizer ? &hooks : NULL, r->eval_set, (guint) r->cfg->eval.batch,
                                r->opts ? r->opts->eval_limit : 0, &ev, error);
    if (r->quantizer != NULL)
        dfq_quantizer_set_mode (r->quantizer, mode);
    if (!ok)
        return FALSE;
    *top1 = ev.top1;
    dfq_eval_result_clear (&ev);
    return TRUE;
}

/* ------------------------------------------------------------ checkpoint */

typedef struct {
    gint phase;      /* index of the phase to run next */
    gint unit;       /* its first unit to run */
} DfqRunPosition;

/* A checkpoint written inside a unit (unit_iters > 0): its phase reads back
 * the unit's running sums, and the unit resumes at that iteration. */
static gboolean
dfq_run_restore_partial (DfqRun *r, DfqSafetensors *st, const DfqRunPosition *pos, const char *path, GError **error)
{
    r->unit_iter = (gint) dfq_priv_meta_double (st, "unit_iters", 0);
    if (r->unit_iter == 0)
        return TRUE;
    DfqPhase *p = (guint) pos->phase < r->phases->len ? r->phases->pdata[pos->phase] : NULL;
    if (r->unit_iter < 0 || p == NULL || p->klass->restore_partial == NULL || pos->unit >= p->n_units) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "%s: written %d iterations into unit %d of phase %d, where this run cannot resume; use --restart",
                     path, r->unit_iter, pos->unit, pos->phase);
        return FALSE;
    }
    return p->klass->restore_partial (r, p, st, error);
}

static gboolean
dfq_run_restore (DfqRun *r, DfqRunPosition *pos, GError **error)
{
    g_autofree char *path = g_build_filename (r->run_dir, "checkpoint.safetensors", NULL);
    pos->phase = 0;
    pos->unit = 0;
    if (!g_file_test (path, G_FILE_TEST_EXISTS))
        return TRUE;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, error);
    if (st == NULL || !dfq_priv_ckpt_restore (st, r->ckpt_names, r->ckpt_tensors, error))
        return FALSE;
    /* checkpoints written before phases existed: one train phase, in epochs */
    double epochs_done = dfq_priv_meta_double (st, "epochs_done", 0);
    pos->phase = (gint) dfq_priv_meta_double (st, "phase", 0);
    pos->unit = (gint) dfq_priv_meta_double (st, "units_done", epochs_done);
    r->metrics_lines = (gint) dfq_priv_meta_double (st, "metrics_lines", epochs_done);
    r->epochs_done = (gint) epochs_done;
    r->best = dfq_priv_meta_double (st, "best_top1", -1);
    r->best_epoch = (gint) dfq_priv_meta_double (st, "best_epoch", -1);
    r->last = dfq_priv_meta_double (st, "last_top1", NAN);
    r->prog.top1 = r->last;
    r->prior_wall = dfq_priv_meta_double (st, "wall_seconds", 0);
    r->wall_done = r->prior_wall;
    if (pos->phase < 0 || (guint) pos->phase > r->phases->len) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "%s: phase %d does not exist in this run (%u phases); use --restart", path, pos->phase,
                     r->phases->len);
        return FALSE;
    }
    for (guint i = 0; i < r->phases->len; i++) {
        DfqPhase *p = r->phases->pdata[i];
        if (p->klass->restore != NULL && !p->klass->restore (r, p, st, error))
            return FALSE;
    }
    if (!dfq_run_restore_partial (r, st, pos, path, error))
        return FALSE;
    if (!dfq_priv_truncate_metrics (r->run_dir, r->metrics_lines, error))
        return FALSE;
    g_info ("resuming %s at phase %d, unit %d, iteration %d", r->run_dir, pos->phase, pos->unit, r->unit_iter);
    return TRUE;
}

static gboolean
dfq_run_save (DfqRun *r, gint phase, gint units_done, GError **error)
{
    g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert (meta, g_strdup ("config_sha256"), g_strdup (r->config_hash));
    dfq_priv_meta_set_double (meta, "phase", phase);
    dfq_priv_meta_set_double (meta, "units_done", units_done);
    dfq_priv_meta_set_double (meta, "metrics_lines", r->metrics_lines);
    dfq_priv_meta_set_double (meta, "epochs_done", r->epochs_done);
    dfq_priv_meta_set_double (meta, "best_top1", r->best);
    dfq_priv_meta_set_double (meta, "best_epoch", r->best_epoch);
    dfq_priv_meta_set_double (meta, "last_top1", r->last);
    r->wall_done = r->prior_wall + (g_get_monotonic_time () - r->t_start) / 1e6;
    dfq_priv_meta_set_double (meta, "wall_seconds", r->wall_done);
    for (guint i = 0; i < r->phases->len; i++) {
        DfqPhase *p = r->phases->pdata[i];
        if (p->klass->save_meta != NULL)
            p->klass->save_meta (r, p, meta);
    }
    /* inside unit @units_done of phase @phase: where in it, and its sums */
    if (r->unit_iter > 0) {
        DfqPhase *p = r->phases->pdata[phase];
        dfq_priv_meta_set_double (meta, "unit_iters", r->unit_iter);
        p->klass->save_partial (r, p, meta);
    }
    r->t_saved = g_get_monotonic_time ();
    return dfq_priv_ckpt_save (r->run_dir, r->ckpt_names, r->ckpt_tensors, meta, error);
}

/* True when this call has run the training iterations stop_after_iters asks for. */
static gboolean
dfq_run_iters_reached (DfqRun *r)
{
    return r->opts != NULL && r->opts->stop_after_iters > 0 && r->iters_this_call >= r->opts->stop_after_iters;
}

gboolean
dfq_run_iteration_done (DfqRun *r, DfqPhase *p, gint unit, gint iters_done, gint n_iters, GError **error)
{
    g_return_val_if_fail (p->klass->save_partial != NULL && iters_done > 0, FALSE);
    const DfqRunOptions *o = r->opts;
    r->unit_iter = iters_done;
    r->iters_this_call++;
    /* after the last iteration the unit's end is near: its own checkpoint
     * follows (and a stop comes before the next unit) */
    if (iters_done >= n_iters)
        return TRUE;
    gboolean cancelled = o != NULL && o->cancellable != NULL && g_cancellable_is_cancelled (o->cancellable);
    gboolean stop = dfq_run_iters_reached (r);
    double minutes = r->cfg->train.checkpoint_minutes;
    gboolean due = minutes > 0 && g_get_monotonic_time () - r->t_saved >= minutes * 60e6;
    if (!cancelled && !stop && !due)
        return TRUE;
    if (!dfq_run_save (r, (gint) r->phase_index, unit, error))
        return FALSE;
    g_info ("checkpoint at %s %s %d, iteration %d", p->klass->name, p->klass->unit, unit, iters_done);
    if (cancelled)
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED,
                     "interrupted; checkpoint written after iteration %d of %s %d", iters_done, p->klass->unit, unit);
    else if (stop)
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "stopped after %d iterations as asked",
                     r->iters_this_call);
    return !cancelled && !stop;
}

/* ------------------------------------------------------------ the loop */

static gboolean
dfq_run_unit (DfqRun *r, guint index, DfqPhase *p, gint unit, GError **error)
{
    gint64 t0 = g_get_monotonic_time ();
    g_autoptr (JsonBuilder) line = json_builder_new ();
    json_builder_begin_object (line);
    json_builder_set_member_name (line, "phase");
    json_builder_add_string_value (line, p->klass->name);
    json_builder_set_member_name (line, p->klass->unit);
    json_builder_add_int_value (line, unit);
    if (!p->klass->run_unit (r, p, unit, line, error))
        return FALSE;
    r->unit_iter = 0; /* the unit is whole: its checkpoint is not inside it */
    json_builder_set_member_name (line, "seconds");
    json_builder_add_double_value (line, (g_get_monotonic_time () - t0) / 1e6);
    json_builder_end_object (line);
    if (unit + 1 == p->n_units && p->klass->end != NULL && !p->klass->end (r, p, error))
        return FALSE;
    /* the metrics line, then the checkpoint that covers it */
    if (!dfq_priv_append_metrics (r->run_dir, line, error))
        return FALSE;
    r->metrics_lines++;
    return dfq_run_save (r, (gint) index, unit + 1, error);
}

static gboolean
dfq_run_loop (DfqRun *r, const DfqRunPosition *pos, GError **error)
{
    for (guint i = (guint) pos->phase; i < r->phases->len; i++) {
        DfqPhase *p = r->phases->pdata[i];
        gint unit = (gint) i == pos->phase ? pos->unit : 0;
        if (unit >= p->n_units)
            continue;
        r->phase_index = i;
        if (p->klass->begin != NULL && !p->klass->begin (r, p, &unit, error))
            return FALSE;
        if (unit >= p->n_units) {
            /* done without running a unit (a cached image set) */
            if (p->klass->end != NULL && !p->klass->end (r, p, error))
                return FALSE;
            if (!dfq_run_save (r, (gint) i, p->n_units, error))
                return FALSE;
            continue;
        }
        for (; unit < p->n_units; unit++) {
            if (dfq_priv_cancelled (r->opts, error))
                return FALSE;
            if (!dfq_run_unit (r, i, p, unit, error))
                return FALSE;
            r->units_this_call++;
            gboolean more = unit + 1 < p->n_units || i + 1 < r->phases->len;
            if (r->opts != NULL && r->opts->stop_after_epochs > 0 && r->units_this_call >= r->opts->stop_after_epochs
                && more) {
                g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "stopped after %d units as asked",
                             r->units_this_call);
                return FALSE;
            }
            if (dfq_run_iters_reached (r) && more) {
                g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "stopped after %d iterations as asked",
                             r->iters_this_call);
                return FALSE;
            }
        }
    }
    return TRUE;
}

static void
dfq_run_fill_result (DfqRun *r, DfqRunResult *result, const char *status)
{
    result->status = g_strdup (status);
    result->fp_top1 = r->fp_top1;
    result->last_top1 = r->last;
    result->best_top1 = r->best;
    result->best_epoch = r->best_epoch;
    result->best_split = g_strdup (dfq_pipeline_split_names[r->cfg->eval.split]);
    result->epochs_done = r->epochs_done;
}

gboolean
dfq_run_phases (DfqRun *r, DfqRunResult *result, GError **error)
{
    DfqRunPosition pos;
    GError *e = NULL;
    for (guint i = 0; i < r->phases->len; i++) {
        DfqPhase *p = r->phases->pdata[i];
        if (!p->klass->setup (r, p, error)) {
            g_prefix_error (error, "phase %s: ", p->klass->name);
            return FALSE;
        }
    }
    if (!dfq_run_restore (r, &pos, error))
        return FALSE;
    if (!dfq_run_loop (r, &pos, &e)) {
        if (g_error_matches (e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED)) {
            dfq_run_fill_result (r, result, "diverged");
            result->wall_seconds = r->prior_wall + (g_get_monotonic_time () - r->t_start) / 1e6;
            dfq_priv_write_result (r->run_dir, result, "error", e->message, NULL);
        }
        g_propagate_error (error, e);
        return FALSE;
    }
    if (r->save_outputs != NULL && !r->save_outputs (r, error))
        return FALSE;
    dfq_run_fill_result (r, result, "finished");
    result->wall_seconds = r->wall_done;
    if (!dfq_priv_write_result (r->run_dir, result, NULL, NULL, error))
        return FALSE;
    r->prog.phase = "done";
    dfq_priv_report (r->opts, &r->prog);
    return TRUE;
}
