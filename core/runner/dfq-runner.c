/* The runner (core/runner): the two entry points. dfq_runner_run() loads and
 * freezes the teacher, makes the student (a fresh instance of the teacher's
 * model with its weights), attaches the quantizer and runs the pipeline's
 * phases (dfq-run.c): `phases:` as written, else [train] for an online
 * synthesizer (the GDFQ family) and [synthesize, calibrate, evaluate] for an
 * offline one (ZeroQ and the PTQ family). dfq_runner_train() runs [train-fp]
 * on the teacher itself (how dfqlab makes teachers). Both write the run
 * directory (dfq-rundir.c) and resume from its checkpoint. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

#include "dfq-run.h"

/* student-quantized.safetensors: every weight through the quantizer's weight
 * hook (values on the k-bit grid), everything else as is. In EVAL mode: the
 * weights evaluation sees (a soft-rounding quantizer left in LEARN would give
 * its soft weights). */
static gboolean
dfq_run_save_quantized (DfqRun *r, GError **error)
{
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (GHashTable) out = g_hash_table_new (g_str_hash, g_str_equal);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqQuantMode mode = dfq_quantizer_get_mode (r->quantizer);
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_EVAL);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, r->student->by_name);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        const char *name = key;
        DfqTensor *t = value;
        g_hash_table_insert (out, (gpointer) name, t);
        if (!g_str_has_suffix (name, ".weight") || t->n_dims < 2)
            continue; /* conv and linear weights are the weight sites */
        g_autofree char *site = g_strndup (name, strlen (name) - strlen (".weight"));
        DfqTensor *q = DFQ_QUANTIZER_CLASS (r->quantizer)->quantize_weight (r->quantizer, &fwd, site, t);
        g_hash_table_insert (out, (gpointer) name, q);
    }
    dfq_quantizer_set_mode (r->quantizer, mode);
    dfq_set_grad_enabled (prev);
    g_autofree char *path = g_build_filename (r->run_dir, "student-quantized.safetensors", NULL);
    return dfq_safetensors_save (path, out, NULL, error);
}


static gboolean
dfq_run_save_student (DfqRun *r, GError **error)
{
    g_autofree char *wpath = g_build_filename (r->run_dir, "student.safetensors", NULL);
    if (!dfq_model_save (r->student, wpath, NULL, error))
        return FALSE;
    return r->quantizer == NULL || dfq_run_save_quantized (r, error);
}

/* The trained model (train-fp): model.safetensors, and train.save if set. */
static gboolean
dfq_run_save_model (DfqRun *r, GError **error)
{
    const DfqPipelineConfig *cfg = r->cfg;
    r->fp_top1 = r->last;
    g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert (meta, g_strdup ("dfqlab_version"), g_strdup (DFQ_VERSION_STRING));
    g_hash_table_insert (meta, g_strdup ("pipeline"), g_strdup (dfq_pipeline_get_filename (r->pipeline)));
    g_hash_table_insert (meta, g_strdup ("seed"), g_strdup_printf ("%d", cfg->seed));
    dfq_priv_meta_set_double (meta, "top1", r->last);
    g_hash_table_insert (meta, g_strdup ("split"), g_strdup (dfq_pipeline_split_names[cfg->eval.split]));
    dfq_priv_meta_set_double (meta, "train_seconds", r->wall_done);
    g_autofree char *wpath = g_build_filename (r->run_dir, "model.safetensors", NULL);
    if (!dfq_model_save (r->teacher, wpath, meta, error))
        return FALSE;
    return cfg->train.save == NULL || dfq_model_save (r->teacher, cfg->train.save, meta, error);
}

/* The phase list: `phases:` as written, else from the synthesizer. */
static gboolean
dfq_run_plan (DfqRun *r, GError **error)
{
    const DfqPipelineConfig *cfg = r->cfg;
    if (cfg->phases != NULL && cfg->phases[0] != NULL) {
        for (guint i = 0; cfg->phases[i] != NULL; i++) {
            const DfqPhaseClass *k = dfq_phase_class_find (cfg->phases[i]);
            if (k == NULL || k == &dfq_phase_train_fp) {
                g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                             "phases: '%s' cannot run in `dfq run` (train-fp trains a teacher: `dfq train`)",
                             cfg->phases[i]);
                return FALSE;
            }
            dfq_run_add_phase (r, k);
        }
        return TRUE;
    }
    if (r->synth == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "this pipeline has no synthesizer (and no phases:): nothing says where the images come from");
        return FALSE;
    }
    if (DFQ_SYNTHESIZER_CLASS (r->synth)->mode == DFQ_SYNTH_OFFLINE) {
        dfq_run_add_phase (r, &dfq_phase_synthesize);
        dfq_run_add_phase (r, &dfq_phase_calibrate);
        dfq_run_add_phase (r, &dfq_phase_evaluate);
    } else {
        dfq_run_add_phase (r, &dfq_phase_train);
    }
    return TRUE;
}

static void
dfq_run_init (DfqRun *r, DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options)
{
    memset (r, 0, sizeof *r);
    r->registry = registry;
    r->pipeline = pipeline;
    r->cfg = dfq_pipeline_get_config (pipeline);
    r->opts = options;
    r->t_start = g_get_monotonic_time ();
    r->t_saved = r->t_start;
    r->last = NAN;
    r->best = -1.0;
    r->best_epoch = -1;
    r->prog.top1 = NAN;
    r->prog.eta = NAN;
    r->scratch = dfq_arena_new (0);
    r->data = dfq_arena_new (0);
    r->ckpt_names = g_ptr_array_new_with_free_func (g_free);
    r->ckpt_tensors = g_ptr_array_new ();
    r->teacher = (DfqModel *) r->cfg->teacher.model;
}

/* Run directory, manifest, teacher weights, evaluation split. */
static gboolean
dfq_run_open (DfqRun *r, GError **error)
{
    const DfqPipelineConfig *cfg = r->cfg;
    dfq_set_num_threads (MAX (cfg->threads, 1));
    r->run_dir = dfq_runner_get_run_dir (r->pipeline, r->opts);
    if (!dfq_priv_prepare_run_dir (r->run_dir, r->pipeline, r->opts && r->opts->restart, &r->config_hash, error))
        return FALSE;
    if (!dfq_priv_write_manifest (r->run_dir, r->registry, r->pipeline, r->config_hash, error))
        return FALSE;
    if (cfg->teacher.weights != NULL
        && !dfq_model_load (r->teacher, cfg->teacher.weights, (const char *const *) cfg->teacher.rename, error))
        return FALSE;
    r->eval_set = dfq_priv_open_dataset (cfg, (DfqDatasetSplit) cfg->eval.split, error);
    return r->eval_set != NULL;
}

/* Teacher frozen, student = quantized copy, step context, synthesizer. */
static gboolean
dfq_run_prepare_models (DfqRun *r, GError **error)
{
    const DfqPipelineConfig *cfg = r->cfg;
    dfq_model_set_trainable (r->teacher, FALSE);
    r->student = dfq_priv_new_student (r->registry, r->pipeline, error);
    if (r->student == NULL)
        return FALSE;
    dfq_model_copy_weights (r->student, r->teacher);
    r->quantizer = (DfqQuantizer *) cfg->student.quantizer;
    if (r->quantizer != NULL && !dfq_quantizer_attach (r->quantizer, r->student, error))
        return FALSE;
    DfqStepContext *ctx = &r->ctx;
    ctx->arena = r->scratch;
    ctx->teacher = r->teacher;
    ctx->student = r->student;
    ctx->quantizer = r->quantizer;
    ctx->seed = (guint64) cfg->seed;
    ctx->epochs = cfg->train.epochs;
    ctx->batch = cfg->train.batch;
    ctx->classes = r->teacher->classes;
    ctx->image_shape[0] = r->teacher->in_channels;
    ctx->image_shape[1] = r->teacher->height;
    ctx->image_shape[2] = r->teacher->width;
    ctx->student_bn_training = FALSE;
    ctx->dataset = dfq_pipeline_dataset_names[cfg->data.dataset];
    ctx->data_dir = cfg->data.dir;
    ctx->run_dir = r->run_dir;
    r->synth = (DfqSynthesizer *) cfg->synthesizer;
    return TRUE;
}

/* The checkpoint layout every quantization run shares (the phases add theirs):
 * student, quantizer state, and an online synthesizer's generator. */
static gboolean
dfq_run_layout (DfqRun *r, GError **error)
{
    g_autoptr (GPtrArray) qstate = g_ptr_array_new ();
    g_autoptr (GPtrArray) sstate = g_ptr_array_new ();
    if (r->quantizer != NULL && DFQ_QUANTIZER_CLASS (r->quantizer)->get_state != NULL)
        DFQ_QUANTIZER_CLASS (r->quantizer)->get_state (r->quantizer, qstate);
    if (r->synth != NULL && DFQ_SYNTHESIZER_CLASS (r->synth)->mode == DFQ_SYNTH_ONLINE) {
        if (!DFQ_SYNTHESIZER_CLASS (r->synth)->prepare (r->synth, &r->ctx, error))
            return FALSE;
        if (DFQ_SYNTHESIZER_CLASS (r->synth)->get_state != NULL)
            DFQ_SYNTHESIZER_CLASS (r->synth)->get_state (r->synth, sstate);
    }
    dfq_priv_ckpt_add_model (r->ckpt_names, r->ckpt_tensors, "student.", r->student);
    dfq_priv_ckpt_add (r->ckpt_names, r->ckpt_tensors, "quant.", qstate);
    dfq_priv_ckpt_add (r->ckpt_names, r->ckpt_tensors, "synth.", sstate);
    return TRUE;
}

static gboolean
dfq_run_finish (DfqRun *r, gboolean ok, GError *e, DfqRunResult *result, GError **error)
{
    if (!ok) {
        if (e != NULL)
            g_propagate_error (error, e);
        else
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "run failed");
    }
    result->run_dir = g_strdup (r->run_dir);
    dfq_run_clear (r);
    return ok;
}

/* What a quantization run does between opening its directory and its phases. */
static gboolean
dfq_run_setup_quantization (DfqRun *r, DfqRunResult *result, GError **error)
{
    if (r->cfg->teacher.weights == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "teacher.weights is not set: data-free quantization needs a trained teacher");
        return FALSE;
    }
    if (!dfq_run_prepare_models (r, error) || !dfq_run_plan (r, error) || !dfq_run_layout (r, error))
        return FALSE;
    /* FP reference: the teacher on the evaluation split */
    DfqEvalResult ev;
    if (!dfq_evaluate (r->teacher, NULL, r->eval_set, (guint) r->cfg->eval.batch, r->opts ? r->opts->eval_limit : 0,
                       &ev, error))
        return FALSE;
    r->fp_top1 = ev.top1;
    result->fp_top1 = ev.top1;
    dfq_eval_result_clear (&ev);
    return TRUE;
}

/* What a model training run does before its phase. */
static gboolean
dfq_run_setup_training (DfqRun *r, DfqRunResult *result, GError **error)
{
    dfq_priv_ckpt_add_model (r->ckpt_names, r->ckpt_tensors, "model.", r->teacher);
    dfq_run_add_phase (r, &dfq_phase_train_fp);
    return TRUE;
}

/* The common shape of both entry points. */
static gboolean
dfq_run_execute (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options, DfqRunResult *result,
                 gboolean quantize, GError **error)
{
    g_return_val_if_fail (registry != NULL && pipeline != NULL && result != NULL, FALSE);
    memset (result, 0, sizeof *result);
    result->eval_limit = options ? (gint) options->eval_limit : 0;
    DfqRun r;
    dfq_run_init (&r, registry, pipeline, options);
    r.save_outputs = quantize ? dfq_run_save_student : dfq_run_save_model;
    GError *e = NULL;
    gboolean ok = dfq_run_open (&r, &e)
                  && (quantize ? dfq_run_setup_quantization (&r, result, &e) : dfq_run_setup_training (&r, result, &e))
                  && dfq_run_phases (&r, result, &e);
    return dfq_run_finish (&r, ok, e, result, error);
}

gboolean
dfq_runner_run (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options, DfqRunResult *result,
                GError **error)
{
    return dfq_run_execute (registry, pipeline, options, result, TRUE, error);
}

gboolean
dfq_runner_train (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options, DfqRunResult *result,
                  GError **error)
{
    return dfq_run_execute (registry, pipeline, options, result, FALSE, error);
}
