/* The run directory (core/runner): one place for what every kind of run
 * writes: config.yaml and its hash, manifest.json, metrics.jsonl (appended a
 * line per unit of progress, truncated to the checkpoint on resume),
 * checkpoint.safetensors (named tensors + string metadata), result.json, all
 * written atomically (metrics lines are appended and flushed). */
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

