/* The post-training phases (core/runner):
 * - `synthesize`: an offline synthesizer makes the run's image set, one batch
 *   per unit (ctx->iter = batch index). The finished set is written to the run
 *   directory (images.safetensors) and to a cache keyed by everything it
 *   depends on, so a second run with the same synthesizer (a sweep over
 *   quantizers) loads it instead of synthesising again. The set records the
 *   git revision of the build that made it (metadata git_revision); reusing
 *   one made by another revision is allowed, with a warning naming both.
 * - `calibrate`: the student runs over the image set with the quantizer in
 *   CALIBRATE mode (activation ranges measured), one batch per unit.
 * - `evaluate`: the quantized student on the evaluation split (one unit). */
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <dfq/dfq.h>

#include "dfq-run.h"

#define DFQ_IMAGE_SET_FORMAT "dfqlab image set 1"

typedef struct {
    DfqPhase parent;
    gint batch;
    char *key;        /* sha256 of what the set depends on */
    char *key_text;   /* that text (written beside the cached set) */
    char *cache_path; /* <cache>/<key>/images.safetensors, or NULL (reuse off) */
    gboolean from_cache;
    char *revision;   /* the build that made the set: this one, or the cached set's */
    gboolean has_labels;
    int lock_fd;      /* flock on <cache entry>.lock while this run makes the set */
    gboolean locked;  /* lock_fd is open and locked */
} DfqPhaseSynthesize;

/* ------------------------------------------------------------ the key */

static char *
dfq_ptq_section_yaml (const DfqConfigNode *full, const char *key)
{
    const DfqConfigNode *n = dfq_config_mapping_get (full, key);
    return n != NULL ? dfq_config_to_yaml (n) : g_strdup ("null\n");
}

/* What an image set depends on: the synthesizer (its whole config), the set's
 * size and batch, the teacher (architecture and weights), the dataset (for
 * data-driven sources), the seed and the thread count. */
static char *
dfq_ptq_key_text (DfqRun *r)
{
    const DfqPipelineConfig *cfg = r->cfg;
    g_autoptr (DfqConfigNode) full = dfq_params_to_config (dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, cfg);
    g_autofree char *synth = dfq_ptq_section_yaml (full, "synthesizer");
    const DfqConfigNode *teacher = dfq_config_mapping_get (full, "teacher");
    g_autofree char *model = teacher ? dfq_config_to_yaml (dfq_config_mapping_get (teacher, "model")) : g_strdup ("");
    g_autofree char *rename = teacher ? dfq_config_to_yaml (dfq_config_mapping_get (teacher, "rename")) : g_strdup ("");
    g_autofree char *data = dfq_ptq_section_yaml (full, "data");
    g_autofree char *weights_sha = cfg->teacher.weights ? dfq_priv_file_sha256 (cfg->teacher.weights) : NULL;
    return g_strdup_printf ("%s\nsynthesizer:\n%s\nimages: %d\nbatch: %d\nteacher.model:\n%s\nteacher.rename:\n%s\n"
                            "teacher.weights.sha256: %s\ndata:\n%s\nseed: %d\nthreads: %d\n",
                            DFQ_IMAGE_SET_FORMAT, synth, cfg->synthesize.images, cfg->synthesize.batch, model, rename,
                            weights_sha ? weights_sha : "none", data, cfg->seed, cfg->threads);
}

/* ------------------------------------------------------------ synthesize */

static gboolean
dfq_synthesize_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseSynthesize *s = (DfqPhaseSynthesize *) p;
    const DfqPipelineConfig *cfg = r->cfg;
    if (r->synth == NULL || DFQ_SYNTHESIZER_CLASS (r->synth)->mode != DFQ_SYNTH_OFFLINE) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "needs an offline synthesizer (zeroq, real, noise, image-set)%s%s%s",
                     r->synth ? "; '" : "", r->synth ? ((DfqFeature *) r->synth)->klass->name : "",
                     r->synth ? "' trains a generator with the student: use phases [train]" : "");
        return FALSE;
    }
    gint n = cfg->synthesize.images;
    s->batch = MIN (cfg->synthesize.batch, n);
    p->n_units = (n + s->batch - 1) / s->batch;
    r->images = dfq_tensor_new_4d (r->data, DFQ_DTYPE_F32, n, r->ctx.image_shape[0], r->ctx.image_shape[1],
                                   r->ctx.image_shape[2]);
    r->labels = dfq_tensor_new_1d (r->data, DFQ_DTYPE_I32, n);
    dfq_tensor_set_name (r->images, "images");
    dfq_tensor_set_name (r->labels, "labels");
    memset (dfq_tensor_i32 (r->labels), 0xff, sizeof (gint32) * (gsize) n); /* -1: no label */
    g_ptr_array_add (r->ckpt_names, g_strdup ("imageset.images"));
    g_ptr_array_add (r->ckpt_tensors, r->images);
    g_ptr_array_add (r->ckpt_names, g_strdup ("imageset.labels"));
    g_ptr_array_add (r->ckpt_tensors, r->labels);

    s->key_text = dfq_ptq_key_text (r);
    s->key = g_compute_checksum_for_string (G_CHECKSUM_SHA256, s->key_text, -1);
    if (cfg->synthesize.reuse) {
        /* default: beside the run directory (a sweep's trials share one) */
        g_autofree char *parent = g_path_get_dirname (r->run_dir);
        g_autofree char *dir = cfg->synthesize.cache ? g_strdup (cfg->synthesize.cache)
                                                     : g_build_filename (parent, "image-sets", NULL);
        g_autofree char *leaf = g_strndup (s->key, 16);
        s->cache_path = g_build_filename (dir, leaf, "images.safetensors", NULL);
    }
    return TRUE;
}

static gboolean
dfq_synthesize_restore (DfqRun *r, DfqPhase *p, DfqSafetensors *st, GError **error)
{
    ((DfqPhaseSynthesize *) p)->has_labels = dfq_priv_meta_double (st, "imageset_has_labels", 0) != 0;
    return TRUE;
}

static void
dfq_synthesize_save_meta (DfqRun *r, DfqPhase *p, GHashTable *meta)
{
    dfq_priv_meta_set_double (meta, "imageset_has_labels", ((DfqPhaseSynthesize *) p)->has_labels);
}

/* Loads a cached set whose key matches into r->images / r->labels. */
static gboolean
dfq_synthesize_load_cached (DfqRun *r, DfqPhaseSynthesize *s)
{
    if (s->cache_path == NULL || !g_file_test (s->cache_path, G_FILE_TEST_EXISTS))
        return FALSE;
    g_autoptr (GError) e = NULL;
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (s->cache_path, &e);
    const char *key = st ? dfq_safetensors_get_metadata (st, "key_sha256") : NULL;
    if (key == NULL || !g_str_equal (key, s->key) || !dfq_safetensors_copy_to (st, "images", r->images, &e)) {
        g_warning ("ignoring the cached image set %s: %s", s->cache_path, e ? e->message : "its key differs");
        return FALSE;
    }
    s->has_labels = dfq_safetensors_lookup (st, "labels") != NULL;
    if (s->has_labels && !dfq_safetensors_copy_to (st, "labels", r->labels, &e)) {
        g_warning ("ignoring the cached image set %s: %s", s->cache_path, e->message);
        return FALSE;
    }
    /* the key leaves the build out on purpose (a fix elsewhere must not cost
     * a new set), so say when the set comes from another one */
    const char *revision = dfq_safetensors_get_metadata (st, "git_revision");
    if (revision == NULL || !g_str_equal (revision, DFQ_GIT_REVISION))
        g_warning ("reusing the cached image set %s made by revision %s (this build: %s)", s->cache_path,
                   revision != NULL ? revision : "unknown (not recorded)", DFQ_GIT_REVISION);
    g_free (s->revision);
    s->revision = g_strdup (revision != NULL ? revision : "unknown");
    return TRUE;
}

static void
dfq_synthesize_on_progress (gpointer data, gint iter, gint iters, double loss)
{
    DfqRun *r = data;
    r->prog.loss = loss;
    r->prog.eta = NAN;
    dfq_run_progress (r, "synthesize", r->prog.epoch, r->prog.epochs, iter, iters);
}

/* Runs that start together with the same key (the array tasks of a sweep)
 * make the set once: the first holds an exclusive flock on the cache entry
 * while it synthesises, the others wait for it and then load the set. The
 * kernel drops the lock of a killed process. Best effort: without a lock file
 * every run synthesises on its own, as it would without the cache. */
static void
dfq_synthesize_lock (DfqPhaseSynthesize *s)
{
    if (s->cache_path == NULL)
        return;
    g_autofree char *dir = g_path_get_dirname (s->cache_path);
    g_autofree char *lock = g_strconcat (s->cache_path, ".lock", NULL);
    if (g_mkdir_with_parents (dir, 0755) != 0)
        return;
    int fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (flock (fd, LOCK_EX | LOCK_NB) != 0) {
        g_info ("waiting for another run making the image set %s", s->cache_path);
        if (flock (fd, LOCK_EX) != 0) {
            close (fd);
            return;
        }
    }
    s->lock_fd = fd;
    s->locked = TRUE;
}

static void
dfq_synthesize_unlock (DfqPhaseSynthesize *s)
{
    if (s->locked) {
        flock (s->lock_fd, LOCK_UN);
        close (s->lock_fd);
        s->locked = FALSE;
    }
}

static gboolean
dfq_synthesize_begin (DfqRun *r, DfqPhase *p, gint *unit, GError **error)
{
    DfqPhaseSynthesize *s = (DfqPhaseSynthesize *) p;
    const DfqSynthesizerClass *sk = DFQ_SYNTHESIZER_CLASS (r->synth);
    if (*unit == 0 && !s->locked)
        dfq_synthesize_lock (s);
    if (*unit == 0 && dfq_synthesize_load_cached (r, s)) {
        dfq_synthesize_unlock (s);
        s->from_cache = TRUE;
        g_info ("image set %s taken from the cache %s", s->key, s->cache_path);
        *unit = p->n_units;
        return TRUE;
    }
    if (sk->prepare != NULL && !sk->prepare (r->synth, &r->ctx, error))
        return FALSE;
    dfq_synthesizer_set_progress (r->synth, dfq_synthesize_on_progress, r);
    return TRUE;
}

static gboolean
dfq_synthesize_run_unit (DfqRun *r, DfqPhase *p, gint unit, JsonBuilder *b, GError **error)
{
    DfqPhaseSynthesize *s = (DfqPhaseSynthesize *) p;
    gint n = (gint) r->images->shape[0];
    gint first = unit * s->batch, count = MIN (s->batch, n - first);
    DfqStepContext *ctx = &r->ctx;
    ctx->epoch = 0;
    ctx->iter = unit;
    ctx->step = first;
    ctx->batch = count;
    r->prog.epoch = unit;
    r->prog.epochs = p->n_units;
    dfq_arena_reset (r->scratch);
    DfqSynthBatch batch = { 0 };
    if (!DFQ_SYNTHESIZER_CLASS (r->synth)->step (r->synth, ctx, &batch, error))
        return FALSE;
    if (batch.images == NULL || batch.images->shape[0] != count
        || dfq_tensor_numel (batch.images) != (gint64) count * ctx->image_shape[0] * ctx->image_shape[1] * ctx->image_shape[2]) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "synthesizer '%s' returned %s images for batch %d (expected %d)",
                     ((DfqFeature *) r->synth)->klass->name, batch.images ? "mis-shaped" : "no", unit, count);
        return FALSE;
    }
    if (!isfinite (batch.loss) || !dfq_tensor_all_finite (batch.images)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                     "synthesis diverged in batch %d (loss %g%s): lower the synthesizer's learning rate", unit, batch.loss,
                     dfq_tensor_all_finite (batch.images) ? "" : ", non-finite pixels");
        return FALSE;
    }
    gsize per = (gsize) (dfq_tensor_numel (batch.images) / count);
    memcpy (dfq_tensor_f32 (r->images) + (gsize) first * per, dfq_tensor_f32 (batch.images), per * count * sizeof (float));
    if (batch.labels != NULL) {
        memcpy (dfq_tensor_i32 (r->labels) + first, dfq_tensor_i32 (batch.labels), (gsize) count * sizeof (gint32));
        s->has_labels = TRUE;
    }
    json_builder_set_member_name (b, "images");
    json_builder_add_int_value (b, count);
    json_builder_set_member_name (b, "loss");
    json_builder_add_double_value (b, batch.loss);
    for (guint k = 0; k < MIN (batch.n_loss_terms, G_N_ELEMENTS (batch.loss_terms)); k++) {
        g_autofree char *key = batch.loss_names[k] ? g_strdup_printf ("synthesizer.%s", batch.loss_names[k])
                                                   : g_strdup_printf ("synthesizer.%u", k);
        json_builder_set_member_name (b, key);
        json_builder_add_double_value (b, batch.loss_terms[k]);
    }
    return TRUE;
}

static gboolean
dfq_synthesize_write (DfqRun *r, DfqPhaseSynthesize *s, const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname (path);
    if (g_mkdir_with_parents (dir, 0755) != 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot create %s: %s", dir, g_strerror (errno));
        return FALSE;
    }
    g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert (meta, g_strdup ("format"), g_strdup (DFQ_IMAGE_SET_FORMAT));
    g_hash_table_insert (meta, g_strdup ("key_sha256"), g_strdup (s->key));
    g_hash_table_insert (meta, g_strdup ("key"), g_strdup (s->key_text));
    g_hash_table_insert (meta, g_strdup ("synthesizer"), g_strdup (((DfqFeature *) r->synth)->klass->name));
    g_hash_table_insert (meta, g_strdup ("git_revision"), g_strdup (s->revision ? s->revision : DFQ_GIT_REVISION));
    const char *names[] = { "images", "labels", NULL };
    DfqTensor *tensors[] = { r->images, r->labels };
    /* written beside, then renamed: a reader never sees half a file */
    g_autofree char *tmp = g_strconcat (path, ".part", NULL);
    if (!dfq_safetensors_save_list (tmp, names, tensors, s->has_labels ? 2 : 1, meta, error))
        return FALSE;
    if (g_rename (tmp, path) != 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot rename %s: %s", tmp, g_strerror (errno));
        return FALSE;
    }
    return TRUE;
}

static gboolean
dfq_synthesize_end (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseSynthesize *s = (DfqPhaseSynthesize *) p;
    g_autofree char *path = g_build_filename (r->run_dir, "images.safetensors", NULL);
    if (!dfq_synthesize_write (r, s, path, error))
        return FALSE;
    if (s->cache_path != NULL && !s->from_cache) {
        g_autoptr (GError) e = NULL;
        if (!dfq_synthesize_write (r, s, s->cache_path, &e))
            g_warning ("image set not cached (the run goes on): %s", e->message);
    }
    dfq_synthesize_unlock (s);
    return TRUE;
}

static void
dfq_synthesize_clear (DfqPhase *p)
{
    DfqPhaseSynthesize *s = (DfqPhaseSynthesize *) p;
    dfq_synthesize_unlock (s);
    g_clear_pointer (&s->key, g_free);
    g_clear_pointer (&s->key_text, g_free);
    g_clear_pointer (&s->cache_path, g_free);
    g_clear_pointer (&s->revision, g_free);
}

const DfqPhaseClass dfq_phase_synthesize = {
    .name = "synthesize",
    .unit = "batch",
    .instance_size = sizeof (DfqPhaseSynthesize),
    .setup = dfq_synthesize_setup,
    .restore = dfq_synthesize_restore,
    .begin = dfq_synthesize_begin,
    .run_unit = dfq_synthesize_run_unit,
    .end = dfq_synthesize_end,
    .save_meta = dfq_synthesize_save_meta,
    .clear = dfq_synthesize_clear,
};

/* ------------------------------------------------------------ calibrate */

typedef struct {
    DfqPhase parent;
    gint batch;
} DfqPhaseCalibrate;

static gboolean
dfq_calibrate_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    DfqPhaseCalibrate *c = (DfqPhaseCalibrate *) p;
    if (r->images == NULL) {
        g_set_error_literal (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                             "calibrates on an image set: put a synthesize phase before it");
        return FALSE;
    }
    if (r->quantizer == NULL) {
        g_set_error_literal (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                             "student.quantizer is null: there is nothing to calibrate");
        return FALSE;
    }
    gint n = (gint) r->images->shape[0];
    c->batch = MIN (r->cfg->calibrate.batch, n);
    p->n_units = (n + c->batch - 1) / c->batch;
    return TRUE;
}

static gboolean
dfq_calibrate_begin (DfqRun *r, DfqPhase *p, gint *unit, GError **error)
{
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_CALIBRATE);
    return TRUE;
}

static gboolean
dfq_calibrate_run_unit (DfqRun *r, DfqPhase *p, gint unit, JsonBuilder *b, GError **error)
{
    DfqPhaseCalibrate *c = (DfqPhaseCalibrate *) p;
    gint n = (gint) r->images->shape[0];
    gint first = unit * c->batch, count = MIN (c->batch, n - first);
    dfq_arena_reset (r->scratch);
    const gint64 *is = r->ctx.image_shape;
    DfqTensor *x = dfq_tensor_new_4d (r->scratch, DFQ_DTYPE_F32, count, is[0], is[1], is[2]);
    gsize per = (gsize) (is[0] * is[1] * is[2]);
    memcpy (dfq_tensor_f32 (x), dfq_tensor_f32 (r->images) + (gsize) first * per, per * count * sizeof (float));
    gboolean prev = dfq_set_grad_enabled (FALSE);
    r->ctx.step = unit;
    DfqTensor *logits = dfq_step_student_forward (&r->ctx, x, NULL, 0);
    dfq_set_grad_enabled (prev);
    if (!dfq_tensor_all_finite (logits)) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                     "calibration batch %d gives non-finite logits (non-finite images or ranges?)", unit);
        return FALSE;
    }
    dfq_run_progress (r, "calibrate", unit, p->n_units, 0, 1);
    json_builder_set_member_name (b, "images");
    json_builder_add_int_value (b, count);
    json_builder_set_member_name (b, "mode");
    json_builder_add_string_value (b, dfq_quant_mode_name (DFQ_QUANT_MODE_CALIBRATE));
    return TRUE;
}

static gboolean
dfq_calibrate_end (DfqRun *r, DfqPhase *p, GError **error)
{
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_LEARN);
    return TRUE;
}

const DfqPhaseClass dfq_phase_calibrate = {
    .name = "calibrate",
    .unit = "batch",
    .instance_size = sizeof (DfqPhaseCalibrate),
    .setup = dfq_calibrate_setup,
    .begin = dfq_calibrate_begin,
    .run_unit = dfq_calibrate_run_unit,
    .end = dfq_calibrate_end,
};

/* ------------------------------------------------------------ evaluate */

static gboolean
dfq_evaluate_setup (DfqRun *r, DfqPhase *p, GError **error)
{
    if (r->student == NULL) {
        g_set_error_literal (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "evaluates the student: use it with `dfq run`");
        return FALSE;
    }
    p->n_units = 1;
    return TRUE;
}

static gboolean
dfq_evaluate_run_unit (DfqRun *r, DfqPhase *p, gint unit, JsonBuilder *b, GError **error)
{
    dfq_run_progress (r, "evaluate", unit, 1, 0, 1);
    double top1;
    if (!dfq_run_eval_student (r, &top1, error))
        return FALSE;
    dfq_run_note_top1 (r, top1, r->epochs_done > 0 ? r->epochs_done - 1 : -1);
    json_builder_set_member_name (b, "top1");
    json_builder_add_double_value (b, top1);
    json_builder_set_member_name (b, "split");
    json_builder_add_string_value (b, dfq_pipeline_split_names[r->cfg->eval.split]);
    return dfq_run_sqnr (r, b, error);
}

const DfqPhaseClass dfq_phase_evaluate = {
    .name = "evaluate",
    .unit = "pass",
    .instance_size = sizeof (DfqPhase),
    .setup = dfq_evaluate_setup,
    .run_unit = dfq_evaluate_run_unit,
};
