/* The runner (core/runner): executes a pipeline, writes the run directory
 * (config.yaml, manifest.json, metrics.jsonl, checkpoint.safetensors,
 * result.json, the trained weights), checkpoints every epoch and resumes. The
 * quantization loop follows the GDFQ skeleton (METHODS.md 1.4): per iteration a
 * synthesizer step (generator update + batch), then a student step on the
 * detached batch; ranges tracked in epochs < range_epochs; student updated only
 * from warmup_epochs on; evaluation on the real split after every epoch. */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

#include "dfq-runner-private.h"

/* ------------------------------------------------------------------ helpers */

void
dfq_run_result_clear (DfqRunResult *result)
{
    g_clear_pointer (&result->run_dir, g_free);
    g_clear_pointer (&result->status, g_free);
    g_clear_pointer (&result->best_split, g_free);
}

char *
dfq_runner_get_run_dir (DfqPipeline *pipeline, const DfqRunOptions *options)
{
    if (options != NULL && options->run_dir != NULL)
        return g_strdup (options->run_dir);
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    g_autofree char *leaf = g_strdup_printf ("%s-s%d", cfg->name ? cfg->name : "run", cfg->seed);
    return g_build_filename (cfg->output_dir ? cfg->output_dir : "runs", leaf, NULL);
}

gboolean
dfq_priv_write_atomic (const char *path, const char *text, GError **error)
{
    GError *e = NULL;
    if (!g_file_set_contents (path, text, -1, &e)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot write %s: %s", path, e->message);
        g_error_free (e);
        return FALSE;
    }
    return TRUE;
}

static char *
dfq_runner_json_to_string (JsonBuilder *b)
{
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    json_generator_set_pretty (gen, TRUE);
    json_generator_set_root (gen, root);
    char *s = json_generator_to_data (gen, NULL);
    char *with_nl = g_strconcat (s, "\n", NULL);
    g_free (s);
    return with_nl;
}

char *
dfq_priv_file_sha256 (const char *path)
{
    g_autoptr (GMappedFile) mf = g_mapped_file_new (path, FALSE, NULL);
    if (mf == NULL)
        return NULL;
    return g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) g_mapped_file_get_contents (mf),
                                        g_mapped_file_get_length (mf));
}

static void
dfq_runner_manifest_feature (JsonBuilder *b, DfqRegistry *registry, const char *role, DfqFeature *f)
{
    if (f == NULL)
        return;
    DfqPluginInfo info = { 0 };
    json_builder_set_member_name (b, role);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "feature");
    json_builder_add_string_value (b, f->klass->name);
    if (dfq_registry_get_plugin_info (registry, f->klass, &info)) {
        json_builder_set_member_name (b, "plugin");
        json_builder_add_string_value (b, info.plugin_name);
        json_builder_set_member_name (b, "version");
        json_builder_add_string_value (b, info.plugin_version);
        json_builder_set_member_name (b, "file");
        json_builder_add_string_value (b, info.path);
        json_builder_set_member_name (b, "sha256");
        json_builder_add_string_value (b, info.sha256);
    }
    json_builder_end_object (b);
}

/* What the figures of a run depend on beyond its config: the CPU, the BLAS
 * build and kernel set, and the environment variables that change them. */
static void
dfq_runner_manifest_machine (JsonBuilder *b)
{
    g_autofree char *cpuinfo = NULL;
    g_autofree char *model = NULL;
    if (g_file_get_contents ("/proc/cpuinfo", &cpuinfo, NULL, NULL)) {
        const char *m = strstr (cpuinfo, "model name");
        const char *colon = m ? strchr (m, ':') : NULL;
        if (colon != NULL)
            model = g_strstrip (g_strndup (colon + 1, strcspn (colon + 1, "\n")));
    }
    json_builder_set_member_name (b, "cpu");
    json_builder_add_string_value (b, model ? model : "unknown");
    json_builder_set_member_name (b, "cpus_online");
    json_builder_add_int_value (b, g_get_num_processors ());
    json_builder_set_member_name (b, "blas");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "config");
    json_builder_add_string_value (b, openblas_get_config ());
    json_builder_set_member_name (b, "core");
    json_builder_add_string_value (b, openblas_get_corename ());
    json_builder_end_object (b);
    static const char *const vars[] = { "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY", "OMP_NUM_THREADS" };
    json_builder_set_member_name (b, "environment");
    json_builder_begin_object (b);
    for (guint i = 0; i < G_N_ELEMENTS (vars); i++) {
        const char *v = g_getenv (vars[i]);
        if (v != NULL) {
            json_builder_set_member_name (b, vars[i]);
            json_builder_add_string_value (b, v);
        }
    }
    json_builder_end_object (b);
}

gboolean
dfq_priv_write_manifest (const char *run_dir, DfqRegistry *registry, DfqPipeline *pipeline, const char *config_hash,
                         GError **error)
{
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "dfqlab_version");
    json_builder_add_string_value (b, DFQ_VERSION_STRING);
    json_builder_set_member_name (b, "git_revision");
    json_builder_add_string_value (b, DFQ_GIT_REVISION);
    json_builder_set_member_name (b, "config_sha256");
    json_builder_add_string_value (b, config_hash);
    json_builder_set_member_name (b, "pipeline_file");
    json_builder_add_string_value (b, dfq_pipeline_get_filename (pipeline));
    json_builder_set_member_name (b, "seed");
    json_builder_add_int_value (b, cfg->seed);
    json_builder_set_member_name (b, "threads");
    json_builder_add_int_value (b, cfg->threads);
    json_builder_set_member_name (b, "host");
    json_builder_add_string_value (b, g_get_host_name ());
    dfq_runner_manifest_machine (b);
    g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
    g_autofree char *iso = g_date_time_format_iso8601 (now);
    json_builder_set_member_name (b, "started");
    json_builder_add_string_value (b, iso);
    if (cfg->teacher.weights != NULL) {
        g_autofree char *h = dfq_priv_file_sha256 (cfg->teacher.weights);
        json_builder_set_member_name (b, "teacher_weights");
        json_builder_add_string_value (b, cfg->teacher.weights);
        json_builder_set_member_name (b, "teacher_sha256");
        json_builder_add_string_value (b, h);
    }
    json_builder_set_member_name (b, "plugins");
    json_builder_begin_object (b);
    dfq_runner_manifest_feature (b, registry, "teacher", cfg->teacher.model);
    dfq_runner_manifest_feature (b, registry, "quantizer", cfg->student.quantizer);
    dfq_runner_manifest_feature (b, registry, "synthesizer", cfg->synthesizer);
    for (guint i = 0; cfg->train.losses != NULL && i < cfg->train.losses->len; i++) {
        g_autofree char *role = g_strdup_printf ("train.losses[%u]", i);
        dfq_runner_manifest_feature (b, registry, role, cfg->train.losses->pdata[i]);
    }
    json_builder_end_object (b);
    json_builder_end_object (b);
    g_autofree char *text = dfq_runner_json_to_string (b);
    g_autofree char *path = g_build_filename (run_dir, "manifest.json", NULL);
    return dfq_priv_write_atomic (path, text, error);
}

/* Prepares the run directory: creates it, writes config.yaml, and returns the
 * config hash; fails if it holds a checkpoint of another config. */
gboolean
dfq_priv_prepare_run_dir (const char *run_dir, DfqPipeline *pipeline, gboolean restart, char **config_hash,
                          GError **error)
{
    if (g_mkdir_with_parents (run_dir, 0755) != 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot create run directory %s: %s", run_dir,
                     g_strerror (errno));
        return FALSE;
    }
    g_autofree char *yaml = dfq_pipeline_to_yaml (pipeline);
    *config_hash = g_compute_checksum_for_string (G_CHECKSUM_SHA256, yaml, -1);
    g_autofree char *ckpt = g_build_filename (run_dir, "checkpoint.safetensors", NULL);
    if (restart) {
        g_autofree char *m = g_build_filename (run_dir, "metrics.jsonl", NULL);
        g_autofree char *r = g_build_filename (run_dir, "result.json", NULL);
        g_unlink (ckpt);
        g_unlink (m);
        g_unlink (r);
    } else if (!g_file_test (ckpt, G_FILE_TEST_EXISTS)) {
        /* no checkpoint: nothing of an earlier attempt counts (a run killed
         * between its first metrics line and its first checkpoint) */
        g_autofree char *m = g_build_filename (run_dir, "metrics.jsonl", NULL);
        g_unlink (m);
    } else {
        g_autoptr (GError) e = NULL;
        g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (ckpt, &e);
        const char *h = st ? dfq_safetensors_get_metadata (st, "config_sha256") : NULL;
        if (st == NULL || h == NULL || !g_str_equal (h, *config_hash)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                         "%s holds a checkpoint of a different configuration%s%s; "
                         "use --restart to start over or --run-dir to run elsewhere",
                         run_dir, e ? ": " : "", e ? e->message : "");
            return FALSE;
        }
    }
    g_autofree char *cfg_path = g_build_filename (run_dir, "config.yaml", NULL);
    return dfq_priv_write_atomic (cfg_path, yaml, error);
}

/* Keeps the first @n_epochs lines of metrics.jsonl (those of checkpointed
 * epochs), so a resumed run does not repeat lines written after its last
 * checkpoint. */
gboolean
dfq_priv_truncate_metrics (const char *run_dir, gint n_epochs, GError **error)
{
    g_autofree char *path = g_build_filename (run_dir, "metrics.jsonl", NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents (path, &text, NULL, NULL))
        return TRUE;
    GString *kept = g_string_new (NULL);
    g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
    gint n = 0;
    for (guint i = 0; lines[i] != NULL && n < n_epochs; i++) {
        if (lines[i][0] == '\0')
            continue;
        g_string_append_printf (kept, "%s\n", lines[i]);
        n++;
    }
    gboolean ok = dfq_priv_write_atomic (path, kept->str, error);
    g_string_free (kept, TRUE);
    return ok;
}

gboolean
dfq_priv_append_metrics (const char *run_dir, JsonBuilder *b, GError **error)
{
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    json_generator_set_root (gen, root);
    g_autofree char *line = json_generator_to_data (gen, NULL);
    g_autofree char *path = g_build_filename (run_dir, "metrics.jsonl", NULL);
    FILE *f = g_fopen (path, "a");
    if (f == NULL || fprintf (f, "%s\n", line) < 0 || fflush (f) != 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot append to %s: %s", path, g_strerror (errno));
        if (f != NULL)
            fclose (f);
        return FALSE;
    }
    fclose (f);
    return TRUE;
}

/* JSON has no NaN: an accuracy not measured yet is null. */
static void
dfq_runner_add_number (JsonBuilder *b, const char *key, double v)
{
    json_builder_set_member_name (b, key);
    if (isfinite (v))
        json_builder_add_double_value (b, v);
    else
        json_builder_add_null_value (b);
}

gboolean
dfq_priv_write_result (const char *run_dir, const DfqRunResult *r, const char *extra_key, const char *extra_value,
                       GError **error)
{
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "status");
    json_builder_add_string_value (b, r->status);
    dfq_runner_add_number (b, "fp_top1", r->fp_top1);
    dfq_runner_add_number (b, "last_top1", r->last_top1);
    dfq_runner_add_number (b, "best_top1", r->best_top1 >= 0 ? r->best_top1 : NAN);
    json_builder_set_member_name (b, "eval_limit");
    json_builder_add_int_value (b, r->eval_limit);
    json_builder_set_member_name (b, "best_epoch");
    json_builder_add_int_value (b, r->best_epoch);
    json_builder_set_member_name (b, "best_selected_on");
    json_builder_add_string_value (b, r->best_split);
    json_builder_set_member_name (b, "epochs_done");
    json_builder_add_int_value (b, r->epochs_done);
    json_builder_set_member_name (b, "wall_seconds");
    json_builder_add_double_value (b, r->wall_seconds);
    if (extra_key != NULL) {
        json_builder_set_member_name (b, extra_key);
        json_builder_add_string_value (b, extra_value);
    }
    json_builder_end_object (b);
    g_autofree char *text = dfq_runner_json_to_string (b);
    g_autofree char *path = g_build_filename (run_dir, "result.json", NULL);
    return dfq_priv_write_atomic (path, text, error);
}

/* A named checkpoint: tensors under prefixes, metadata as strings. */
void
dfq_priv_ckpt_add (GPtrArray *names, GPtrArray *tensors, const char *prefix, GPtrArray *items)
{
    for (guint i = 0; i < items->len; i++) {
        DfqTensor *t = items->pdata[i];
        g_ptr_array_add (names, g_strdup_printf ("%s%s", prefix, t->name));
        g_ptr_array_add (tensors, t);
    }
}

void
dfq_priv_ckpt_add_model (GPtrArray *names, GPtrArray *tensors, const char *prefix, DfqModel *m)
{
    dfq_priv_ckpt_add (names, tensors, prefix, m->params);
    dfq_priv_ckpt_add (names, tensors, prefix, m->buffers);
}

gboolean
dfq_priv_ckpt_restore (DfqSafetensors *st, GPtrArray *names, GPtrArray *tensors, GError **error)
{
    for (guint i = 0; i < names->len; i++) {
        if (!dfq_safetensors_copy_to (st, names->pdata[i], tensors->pdata[i], error)) {
            g_prefix_error (error, "restoring checkpoint: ");
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
dfq_priv_ckpt_save (const char *run_dir, GPtrArray *names, GPtrArray *tensors, GHashTable *meta, GError **error)
{
    g_autofree char *path = g_build_filename (run_dir, "checkpoint.safetensors", NULL);
    g_ptr_array_add (names, NULL);
    gboolean ok = dfq_safetensors_save_list (path, (const char *const *) names->pdata,
                                             (DfqTensor *const *) tensors->pdata, tensors->len, meta, error);
    g_ptr_array_remove_index (names, names->len - 1);
    return ok;
}

double
dfq_priv_meta_double (DfqSafetensors *st, const char *key, double fallback)
{
    const char *v = dfq_safetensors_get_metadata (st, key);
    return v ? g_ascii_strtod (v, NULL) : fallback;
}

void
dfq_priv_meta_set_double (GHashTable *meta, const char *key, double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_hash_table_insert (meta, g_strdup (key), g_strdup (g_ascii_dtostr (buf, sizeof buf, v)));
}

void
dfq_priv_report (const DfqRunOptions *o, DfqProgress *p)
{
    if (o != NULL && o->progress != NULL)
        o->progress (p, o->progress_data);
}

gboolean
dfq_priv_cancelled (const DfqRunOptions *o, GError **error)
{
    if (o != NULL && o->cancellable != NULL && g_cancellable_is_cancelled (o->cancellable)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "interrupted; the last checkpoint is kept");
        return TRUE;
    }
    return FALSE;
}

DfqDataset *
dfq_priv_open_dataset (const DfqPipelineConfig *cfg, DfqDatasetSplit split, GError **error)
{
    return dfq_dataset_open (dfq_pipeline_dataset_names[cfg->data.dataset], split, cfg->data.dir, error);
}

/* A fresh instance of the teacher's architecture (the student). */
DfqModel *
dfq_priv_new_student (DfqRegistry *registry, DfqPipeline *pipeline, GError **error)
{
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    const DfqConfigNode *tree = dfq_pipeline_get_tree (pipeline);
    const DfqConfigNode *teacher = dfq_config_mapping_get (tree, "teacher");
    const DfqConfigNode *node = teacher ? dfq_config_mapping_get (teacher, "model") : NULL;
    DfqFeature *f = dfq_feature_new_from_config (registry, cfg->teacher.model->klass, node, FALSE, "student", error);
    return (DfqModel *) f;
}

/* ---------------------------------------------------- quantization run */

typedef struct {
    DfqRegistry *registry;
    DfqPipeline *pipeline;
    const DfqPipelineConfig *cfg;
    const DfqRunOptions *opts;
    char *run_dir;
    char *config_hash;
    DfqModel *teacher;   /* owned by the pipeline */
    DfqModel *student;   /* owned here */
    DfqQuantizer *quantizer;
    DfqSynthesizer *synth;
    DfqOptim *optim;
    DfqSchedule schedule;
    DfqDataset *eval_set;
    DfqArena *scratch;
    GPtrArray *ckpt_names;
    GPtrArray *ckpt_tensors;
    GPtrArray *optim_state;
} DfqRun;

static void
dfq_run_clear (DfqRun *r)
{
    g_clear_pointer (&r->run_dir, g_free);
    g_clear_pointer (&r->config_hash, g_free);
    if (r->student != NULL)
        dfq_feature_free ((DfqFeature *) r->student);
    g_clear_pointer (&r->optim, dfq_optim_free);
    g_clear_pointer (&r->eval_set, dfq_dataset_free);
    g_clear_pointer (&r->scratch, dfq_arena_free);
    g_clear_pointer (&r->ckpt_names, g_ptr_array_unref);
    g_clear_pointer (&r->ckpt_tensors, g_ptr_array_unref);
    g_clear_pointer (&r->optim_state, g_ptr_array_unref);
}

/* metrics.jsonl key of loss term @k: "<prefix>.<name>", with ".<k>" added
 * when an earlier term has the same name (two ce losses), "<prefix>.<k>"
 * when the term has no name. */
static char *
dfq_priv_metric_key (const char *prefix, const char *const *names, guint k)
{
    if (names[k] == NULL)
        return g_strdup_printf ("%s.%u", prefix, k);
    for (guint j = 0; j < k; j++)
        if (names[j] != NULL && g_str_equal (names[j], names[k]))
            return g_strdup_printf ("%s.%s.%u", prefix, names[k], k);
    return g_strdup_printf ("%s.%s", prefix, names[k]);
}

static gboolean
dfq_run_eval (DfqRun *r, double *top1, GError **error)
{
    DfqForward hooks;
    dfq_forward_init (&hooks, NULL, FALSE);
    if (r->quantizer != NULL) {
        gboolean cal = r->quantizer->calibrating;
        dfq_quantizer_set_calibrating (r->quantizer, FALSE);
        dfq_quantizer_hook (r->quantizer, &hooks);
        DfqEvalResult ev;
        gboolean ok = dfq_evaluate (r->student, &hooks, r->eval_set, (guint) r->cfg->eval.batch,
                                    r->opts ? r->opts->eval_limit : 0, &ev, error);
        dfq_quantizer_set_calibrating (r->quantizer, cal);
        if (!ok)
            return FALSE;
        *top1 = ev.top1;
        dfq_eval_result_clear (&ev);
        return TRUE;
    }
    DfqEvalResult ev;
    if (!dfq_evaluate (r->student, NULL, r->eval_set, (guint) r->cfg->eval.batch, r->opts ? r->opts->eval_limit : 0,
                       &ev, error))
        return FALSE;
    *top1 = ev.top1;
    dfq_eval_result_clear (&ev);
    return TRUE;
}

/* student-quantized.safetensors: every weight through the quantizer's weight
 * hook (values on the k-bit grid), everything else as is. */
static gboolean
dfq_run_save_quantized (DfqRun *r, GError **error)
{
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (GHashTable) out = g_hash_table_new (g_str_hash, g_str_equal);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    gboolean prev = dfq_set_grad_enabled (FALSE);
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
    dfq_set_grad_enabled (prev);
    g_autofree char *path = g_build_filename (r->run_dir, "student-quantized.safetensors", NULL);
    return dfq_safetensors_save (path, out, NULL, error);
}

gboolean
dfq_runner_run (DfqRegistry *registry, DfqPipeline *pipeline, const DfqRunOptions *options, DfqRunResult *result,
                GError **error)
{
    g_return_val_if_fail (registry != NULL && pipeline != NULL && result != NULL, FALSE);
    memset (result, 0, sizeof *result);
    result->eval_limit = options ? (gint) options->eval_limit : 0;
    DfqRun r = { 0 };
    r.registry = registry;
    r.pipeline = pipeline;
    r.cfg = dfq_pipeline_get_config (pipeline);
    r.opts = options;
    const DfqPipelineConfig *cfg = r.cfg;
    gint64 t_start = g_get_monotonic_time ();
    gboolean ok = FALSE;
    GError *e = NULL;
    /* every auto-freed local is declared here: the error paths jump to `out` */
    g_autoptr (GPtrArray) qparams = g_ptr_array_new ();
    g_autoptr (GPtrArray) qstate = g_ptr_array_new ();
    g_autoptr (GPtrArray) sstate = g_ptr_array_new ();
    g_autofree char *ckpt_path = NULL;
    g_autofree double *values = NULL;
    g_autofree double *loss_terms = NULL;
    DfqStepContext ctx = { 0 };
    DfqOptimConfig ocfg;
    gint start_epoch = 0, best_epoch = -1, epochs_this_call = 0;
    double best = -1.0, last = NAN, prior_wall = 0.0;
    /* wall time through the last epoch done (as its checkpoint records it): a
     * rerun of a finished run reports and writes the same figure */
    double wall_done = 0.0;

    dfq_set_num_threads (MAX (cfg->threads, 1));
    r.run_dir = dfq_runner_get_run_dir (pipeline, options);
    if (!dfq_priv_prepare_run_dir (r.run_dir, pipeline, options && options->restart, &r.config_hash, &e))
        goto out;
    if (!dfq_priv_write_manifest (r.run_dir, registry, pipeline, r.config_hash, &e))
        goto out;

    /* teacher */
    r.teacher = (DfqModel *) cfg->teacher.model;
    if (cfg->teacher.weights == NULL) {
        g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "teacher.weights is not set: data-free quantization needs a trained teacher");
        goto out;
    }
    if (!dfq_model_load (r.teacher, cfg->teacher.weights, (const char *const *) cfg->teacher.rename, &e))
        goto out;
    dfq_model_set_trainable (r.teacher, FALSE);

    /* student: same architecture and weights, quantized */
    r.student = dfq_priv_new_student (registry, pipeline, &e);
    if (r.student == NULL)
        goto out;
    dfq_model_copy_weights (r.student, r.teacher);
    r.quantizer = (DfqQuantizer *) cfg->student.quantizer;
    if (r.quantizer != NULL && !dfq_quantizer_attach (r.quantizer, r.student, &e))
        goto out;

    r.eval_set = dfq_priv_open_dataset (cfg, (DfqDatasetSplit) cfg->eval.split, &e);
    if (r.eval_set == NULL)
        goto out;

    /* step context */
    r.scratch = dfq_arena_new (0);
    ctx.arena = r.scratch;
    ctx.teacher = r.teacher;
    ctx.student = r.student;
    ctx.quantizer = r.quantizer;
    ctx.seed = (guint64) cfg->seed;
    ctx.epochs = cfg->train.epochs;
    ctx.batch = cfg->train.batch;
    ctx.classes = r.teacher->classes;
    ctx.image_shape[0] = r.teacher->in_channels;
    ctx.image_shape[1] = r.teacher->height;
    ctx.image_shape[2] = r.teacher->width;
    ctx.student_bn_training = FALSE;

    r.synth = (DfqSynthesizer *) cfg->synthesizer;
    if (r.synth == NULL) {
        g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "this pipeline has no synthesizer");
        goto out;
    }
    if (!DFQ_SYNTHESIZER_CLASS (r.synth)->prepare (r.synth, &ctx, &e))
        goto out;
    if (cfg->train.losses == NULL || cfg->train.losses->len == 0) {
        g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "train.losses is empty: nothing to train the student with");
        goto out;
    }

    /* student optimiser */
    dfq_optim_params_to_config (&cfg->train.optimizer, cfg->train.epochs, &ocfg, &r.schedule);
    r.optim = dfq_optim_new (&ocfg);
    for (guint i = 0; i < r.student->params->len; i++)
        dfq_optim_add_param (r.optim, r.student->params->pdata[i]);
    if (r.quantizer != NULL) {
        const DfqQuantizerClass *qk = DFQ_QUANTIZER_CLASS (r.quantizer);
        if (qk->get_params != NULL)
            qk->get_params (r.quantizer, qparams);
        if (qk->get_state != NULL)
            qk->get_state (r.quantizer, qstate);
        for (guint i = 0; i < qparams->len; i++)
            dfq_optim_add_param (r.optim, qparams->pdata[i]);
    }
    if (DFQ_SYNTHESIZER_CLASS (r.synth)->get_state != NULL)
        DFQ_SYNTHESIZER_CLASS (r.synth)->get_state (r.synth, sstate);

    /* checkpoint layout */
    r.ckpt_names = g_ptr_array_new_with_free_func (g_free);
    r.ckpt_tensors = g_ptr_array_new ();
    r.optim_state = dfq_optim_get_state (r.optim);
    dfq_priv_ckpt_add_model (r.ckpt_names, r.ckpt_tensors, "student.", r.student);
    dfq_priv_ckpt_add (r.ckpt_names, r.ckpt_tensors, "quant.", qstate);
    dfq_priv_ckpt_add (r.ckpt_names, r.ckpt_tensors, "synth.", sstate);
    dfq_priv_ckpt_add (r.ckpt_names, r.ckpt_tensors, "optim.", r.optim_state);

    /* resume */
    ckpt_path = g_build_filename (r.run_dir, "checkpoint.safetensors", NULL);
    if (g_file_test (ckpt_path, G_FILE_TEST_EXISTS)) {
        g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (ckpt_path, &e);
        if (st == NULL || !dfq_priv_ckpt_restore (st, r.ckpt_names, r.ckpt_tensors, &e))
            goto out;
        start_epoch = (gint) dfq_priv_meta_double (st, "epochs_done", 0);
        best = dfq_priv_meta_double (st, "best_top1", -1);
        best_epoch = (gint) dfq_priv_meta_double (st, "best_epoch", -1);
        last = dfq_priv_meta_double (st, "last_top1", NAN);
        prior_wall = dfq_priv_meta_double (st, "wall_seconds", 0);
        wall_done = prior_wall;
        dfq_optim_set_step (r.optim, (gint64) dfq_priv_meta_double (st, "optim_step", 0));
        if (DFQ_SYNTHESIZER_CLASS (r.synth)->set_optim_step != NULL)
            DFQ_SYNTHESIZER_CLASS (r.synth)->set_optim_step (r.synth, (gint64) dfq_priv_meta_double (st, "synth_optim_step", 0));
        if (!dfq_priv_truncate_metrics (r.run_dir, start_epoch, &e))
            goto out;
        g_info ("resuming %s after epoch %d", r.run_dir, start_epoch);
    }

    /* FP reference: the teacher on the evaluation split */
    {
        DfqEvalResult ev;
        if (!dfq_evaluate (r.teacher, NULL, r.eval_set, (guint) cfg->eval.batch, options ? options->eval_limit : 0, &ev, &e))
            goto out;
        result->fp_top1 = ev.top1;
        dfq_eval_result_clear (&ev);
    }

    DfqProgress prog = { .phase = "train", .epochs = cfg->train.epochs, .iters = cfg->train.iters, .top1 = last };
    const gboolean debug_log = !g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN);
    values = g_new0 (double, cfg->train.losses->len);
    loss_terms = g_new0 (double, cfg->train.losses->len);
    for (gint epoch = start_epoch; epoch < cfg->train.epochs; epoch++) {
        gint64 t_epoch = g_get_monotonic_time ();
        ctx.epoch = epoch;
        dfq_optim_set_lr (r.optim, dfq_schedule_lr (&r.schedule, epoch));
        if (DFQ_SYNTHESIZER_CLASS (r.synth)->start_epoch != NULL)
            DFQ_SYNTHESIZER_CLASS (r.synth)->start_epoch (r.synth, &ctx);
        if (r.quantizer != NULL)
            dfq_quantizer_set_calibrating (r.quantizer, epoch < cfg->train.range_epochs);
        gboolean update_student = epoch >= cfg->train.warmup_epochs;
        prog.phase = update_student ? "train" : "warmup";
        double loss_sum = 0.0, gen_sum = 0.0;
        double gen_terms[G_N_ELEMENTS (((DfqSynthBatch *) NULL)->loss_terms)] = { 0 };
        const char *gen_names[G_N_ELEMENTS (gen_terms)] = { NULL };
        guint n_gen_terms = 0;
        memset (loss_terms, 0, sizeof (double) * cfg->train.losses->len);
        for (gint it = 0; it < cfg->train.iters; it++) {
            if (dfq_priv_cancelled (options, &e))
                goto out;
            ctx.iter = it;
            ctx.step = (gint64) epoch * cfg->train.iters + it;
            dfq_arena_reset (r.scratch);
            /* g_debug() formats its message even when debug output is off */
            if (debug_log)
                g_debug ("step %" G_GINT64_FORMAT ": scratch arena %" G_GSIZE_FORMAT " MiB reserved, %u system allocations",
                         ctx.step, dfq_arena_capacity (r.scratch) >> 20, dfq_arena_n_system_allocs (r.scratch));
            DfqSynthBatch batch = { 0 };
            if (!DFQ_SYNTHESIZER_CLASS (r.synth)->step (r.synth, &ctx, &batch, &e))
                goto diverged_or_fail;
            if (!isfinite (batch.loss)) {
                g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                             "generator loss is %g at epoch %d, iteration %d: training diverged", batch.loss, epoch, it);
                goto diverged_or_fail;
            }
            gen_sum += batch.loss;
            n_gen_terms = MIN (batch.n_loss_terms, G_N_ELEMENTS (gen_terms));
            for (guint k = 0; k < n_gen_terms; k++) {
                gen_terms[k] += batch.loss_terms[k];
                gen_names[k] = batch.loss_names[k];
            }
            /* student step on the detached batch */
            dfq_optim_zero_grad (r.optim);
            DfqTensor *loss = dfq_step_eval_losses (&ctx, cfg->train.losses, batch.images, batch.labels,
                                                    batch.soft_labels, values, &e);
            if (loss == NULL)
                goto diverged_or_fail;
            if (!isfinite (dfq_tensor_f32 (loss)[0])) {
                g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                             "student loss is %g at epoch %d, iteration %d: training diverged",
                             dfq_tensor_f32 (loss)[0], epoch, it);
                goto diverged_or_fail;
            }
            if (update_student) {
                dfq_backward (loss, r.scratch);
                dfq_optim_step (r.optim);
            }
            double lv = dfq_tensor_f32 (loss)[0];
            loss_sum += lv;
            for (guint k = 0; k < cfg->train.losses->len; k++)
                loss_terms[k] += values[k];
            prog.epoch = epoch;
            prog.iter = it;
            prog.loss = lv;
            prog.gen_loss = batch.loss;
            prog.elapsed = (g_get_monotonic_time () - t_start) / 1e6;
            gint64 done = (gint64) (epoch - start_epoch) * cfg->train.iters + it + 1;
            gint64 total = (gint64) (cfg->train.epochs - start_epoch) * cfg->train.iters;
            prog.eta = prog.elapsed / done * (total - done);
            dfq_priv_report (options, &prog);
        }
        if (r.quantizer != NULL)
            dfq_quantizer_set_calibrating (r.quantizer, FALSE);

        /* evaluation on the real split */
        prog.phase = "eval";
        dfq_priv_report (options, &prog);
        if (!dfq_run_eval (&r, &last, &e))
            goto diverged_or_fail;
        if (last > best) {
            best = last;
            best_epoch = epoch;
        }
        prog.top1 = last;
        double epoch_seconds = (g_get_monotonic_time () - t_epoch) / 1e6;

        /* metrics line, then the checkpoint that covers it */
        g_autoptr (JsonBuilder) b = json_builder_new ();
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "epoch");
        json_builder_add_int_value (b, epoch);
        json_builder_set_member_name (b, "lr");
        json_builder_add_double_value (b, dfq_optim_get_lr (r.optim));
        json_builder_set_member_name (b, "student_loss");
        json_builder_add_double_value (b, loss_sum / cfg->train.iters);
        const char **student_names = g_newa (const char *, cfg->train.losses->len);
        for (guint k = 0; k < cfg->train.losses->len; k++)
            student_names[k] = ((DfqFeature *) cfg->train.losses->pdata[k])->klass->name;
        for (guint k = 0; k < cfg->train.losses->len; k++) {
            g_autofree char *key = dfq_priv_metric_key ("student", student_names, k);
            json_builder_set_member_name (b, key);
            json_builder_add_double_value (b, loss_terms[k] / cfg->train.iters);
        }
        json_builder_set_member_name (b, "generator_loss");
        json_builder_add_double_value (b, gen_sum / cfg->train.iters);
        for (guint k = 0; k < n_gen_terms; k++) {
            /* unweighted, as the student's terms */
            g_autofree char *key = dfq_priv_metric_key ("generator", gen_names, k);
            json_builder_set_member_name (b, key);
            json_builder_add_double_value (b, gen_terms[k] / cfg->train.iters);
        }
        json_builder_set_member_name (b, "top1");
        json_builder_add_double_value (b, last);
        json_builder_set_member_name (b, "split");
        json_builder_add_string_value (b, dfq_pipeline_split_names[cfg->eval.split]);
        json_builder_set_member_name (b, "student_updated");
        json_builder_add_boolean_value (b, update_student);
        json_builder_set_member_name (b, "seconds");
        json_builder_add_double_value (b, epoch_seconds);
        json_builder_end_object (b);
        if (!dfq_priv_append_metrics (r.run_dir, b, &e))
            goto out;

        g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_insert (meta, g_strdup ("config_sha256"), g_strdup (r.config_hash));
        dfq_priv_meta_set_double (meta, "epochs_done", epoch + 1);
        dfq_priv_meta_set_double (meta, "best_top1", best);
        dfq_priv_meta_set_double (meta, "best_epoch", best_epoch);
        dfq_priv_meta_set_double (meta, "last_top1", last);
        dfq_priv_meta_set_double (meta, "optim_step", (double) dfq_optim_get_step (r.optim));
        if (DFQ_SYNTHESIZER_CLASS (r.synth)->get_optim_step != NULL)
            dfq_priv_meta_set_double (meta, "synth_optim_step", (double) DFQ_SYNTHESIZER_CLASS (r.synth)->get_optim_step (r.synth));
        wall_done = prior_wall + (g_get_monotonic_time () - t_start) / 1e6;
        dfq_priv_meta_set_double (meta, "wall_seconds", wall_done);
        if (!dfq_priv_ckpt_save (r.run_dir, r.ckpt_names, r.ckpt_tensors, meta, &e))
            goto out;
        result->epochs_done = epoch + 1;
        epochs_this_call++;
        if (options != NULL && options->stop_after_epochs > 0 && epochs_this_call >= options->stop_after_epochs
            && epoch + 1 < cfg->train.epochs) {
            g_set_error (&e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED, "stopped after %d epochs as asked", epochs_this_call);
            goto out;
        }
    }

    /* finished: final weights (float shadows, and as the quantizer sees them) and result */
    {
        g_autofree char *wpath = g_build_filename (r.run_dir, "student.safetensors", NULL);
        if (!dfq_model_save (r.student, wpath, NULL, &e))
            goto out;
        if (r.quantizer != NULL && !dfq_run_save_quantized (&r, &e))
            goto out;
    }
    result->status = g_strdup ("finished");
    result->last_top1 = last;
    result->best_top1 = best;
    result->best_epoch = best_epoch;
    result->best_split = g_strdup (dfq_pipeline_split_names[cfg->eval.split]);
    result->epochs_done = cfg->train.epochs;
    result->wall_seconds = wall_done;
    if (!dfq_priv_write_result (r.run_dir, result, NULL, NULL, &e))
        goto out;
    prog.phase = "done";
    dfq_priv_report (options, &prog);
    ok = TRUE;
    goto out;

diverged_or_fail:
    if (e != NULL && g_error_matches (e, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED)) {
        result->status = g_strdup ("diverged");
        result->last_top1 = last;
        result->best_top1 = best;
        result->best_epoch = best_epoch;
        result->best_split = g_strdup (dfq_pipeline_split_names[cfg->eval.split]);
        result->wall_seconds = prior_wall + (g_get_monotonic_time () - t_start) / 1e6;
        dfq_priv_write_result (r.run_dir, result, "error", e->message, NULL);
    }
out:
    if (!ok) {
        if (e != NULL)
            g_propagate_error (error, e);
        else
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "run failed");
    }
    result->run_dir = g_strdup (r.run_dir);
    dfq_run_clear (&r);
    return ok;
}
