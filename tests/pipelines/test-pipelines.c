/* End-to-end pipelines (tests/pipelines): a tiny teacher trained by dfq train
 * on Fashion-MNIST, then the GDFQ smoke pipeline on it: the student beats
 * chance and its quantized weights lie on the 4-bit grid; a run interrupted
 * after one epoch and resumed ends bit-identical to an uninterrupted one; a
 * diverging run stops with DFQ_RUN_ERROR_DIVERGED and keeps its checkpoint; a
 * run directory of another configuration is refused; steady-state training
 * steps make no heap allocation. The PTQ smoke pipeline (synthesize ->
 * calibrate -> evaluate) runs, resumes after a stop at every unit (and after
 * a kill between a metrics line and its checkpoint) to the same result, and a
 * second run with the same synthesizer takes the image set from the cache.
 * Both training phases stopped inside an epoch (cancelled, stop_after_iters,
 * a kill after a periodic checkpoint) resume there to the same result. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;
static char *tmpdir;
static char *teacher_weights; /* NULL when Fashion-MNIST is absent */

/* Heap allocations in steady-state steps: counted from iteration 2 of an
 * epoch (the scratch arena has grown and merged by then) to its last
 * iteration, for every epoch (tests/dfq-test-malloc.c). */
typedef struct {
    gint64 at_start; /* count at iteration 2 of epoch @epoch, or -1 */
    gint epoch;
    gint64 worst;    /* most allocations seen in one window */
    guint windows;   /* windows measured */
} AllocWatch;

static void
alloc_watch_init (AllocWatch *w)
{
    memset (w, 0, sizeof *w);
    w->at_start = -1;
}

static void
alloc_watch_progress (const DfqProgress *p, gpointer data)
{
    AllocWatch *w = data;
    if (!g_str_equal (p->phase, "train") && !g_str_equal (p->phase, "warmup"))
        return;
    if (p->iter == 2) {
        w->at_start = dfq_test_malloc_count ();
        w->epoch = p->epoch;
    } else if (p->iter == p->iters - 1 && w->at_start >= 0 && w->epoch == p->epoch) {
        w->worst = MAX (w->worst, dfq_test_malloc_count () - w->at_start);
        w->windows++;
        w->at_start = -1;
    }
}

static AllocWatch teacher_allocs; /* of the teacher training in setup_teacher() */

static char *
pipeline_path (const char *name)
{
    return g_test_build_filename (G_TEST_DIST, "..", "pipelines", name, NULL);
}

static DfqPipeline *
load (const char *name, const char *const *extra)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *path = pipeline_path (name);
    g_autoptr (GPtrArray) sets = g_ptr_array_new_with_free_func (g_free);
    if (teacher_weights != NULL && (g_str_equal (name, "smoke-gdfq.yaml") || g_str_equal (name, "smoke-ptq.yaml")))
        g_ptr_array_add (sets, g_strdup_printf ("teacher.weights=%s", teacher_weights));
    for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
        g_ptr_array_add (sets, g_strdup (extra[i]));
    g_ptr_array_add (sets, NULL);
    DfqPipeline *p = dfq_pipeline_new_from_file (registry, path, (const char *const *) sets->pdata, &error);
    g_assert_no_error (error);
    return p;
}

static gboolean
need_teacher (void)
{
    if (teacher_weights == NULL) {
        g_test_skip ("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return FALSE;
    }
    return TRUE;
}

static void
setup_teacher (void)
{
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) probe = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    if (probe == NULL)
        return;
    g_autoptr (DfqPipeline) p = load ("smoke-teacher-tiny.yaml", NULL);
    g_autofree char *dir = g_build_filename (tmpdir, "teacher", NULL);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 1000 };
    if (dfq_test_malloc_count != NULL) {
        alloc_watch_init (&teacher_allocs);
        o.progress = alloc_watch_progress;
        o.progress_data = &teacher_allocs;
    }
    DfqRunResult r;
    g_assert_true (dfq_runner_train (registry, p, &o, &r, &error));
    g_assert_no_error (error);
    g_test_message ("tiny teacher: %.1f %% on 1000 test images", r.last_top1);
    g_assert_cmpfloat (r.best_top1, >, 30.0);
    teacher_weights = g_build_filename (dir, "model.safetensors", NULL);
    dfq_run_result_clear (&r);
}

/* The most distinct values in one output channel of @layer's weight in the
 * run's student-quantized.safetensors (at most 2^k on a k-bit grid). */
static guint
quantized_levels (const char *dir, const char *layer)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *qpath = g_build_filename (dir, "student-quantized.safetensors", NULL);
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (qpath, &error);
    g_assert_no_error (error);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autofree char *name = g_strdup_printf ("%s.weight", layer);
    DfqTensor *t = dfq_safetensors_get_tensor (st, name, a, &error);
    g_assert_no_error (error);
    gint64 inner = dfq_tensor_numel (t) / t->shape[0];
    guint most = 0;
    for (gint64 c = 0; c < t->shape[0]; c++) {
        g_autoptr (GHashTable) seen = g_hash_table_new (g_int_hash, g_int_equal);
        const float *w = dfq_tensor_f32 (t) + c * inner;
        for (gint64 k = 0; k < inner; k++)
            g_hash_table_add (seen, (gpointer) &w[k]);
        most = MAX (most, g_hash_table_size (seen));
    }
    return most;
}

static void
test_smoke_gdfq (void)
{
    g_test_summary ("GDFQ smoke: the W4A4 student beats chance and its weights are on the 4-bit grid");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", NULL);
    g_autofree char *dir = g_build_filename (tmpdir, "smoke", NULL);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 1000 };
    DfqRunResult r;
    g_assert_true (dfq_runner_run (registry, p, &o, &r, &error));
    g_assert_no_error (error);
    g_test_message ("smoke gdfq: FP %.1f %%, student last %.1f %% best %.1f %%", r.fp_top1, r.last_top1, r.best_top1);
    g_assert_cmpstr (r.status, ==, "finished");
    g_assert_cmpfloat (r.last_top1, >, 20.0); /* chance is 10 % */
    for (const char *f = "config.yaml\0manifest.json\0metrics.jsonl\0result.json\0student.safetensors\0"; *f;
         f += strlen (f) + 1) {
        g_autofree char *path = g_build_filename (dir, f, NULL);
        g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
    }
    /* quantized weights: at most 16 distinct values per output channel */
    const char *layers[] = { "conv1", "conv2", "fc" }; /* every weight layer */
    for (guint i = 0; i < G_N_ELEMENTS (layers); i++)
        g_assert_cmpuint (quantized_levels (dir, layers[i]), <=, 16);

    /* running a finished run again trains nothing and changes nothing */
    g_autofree char *rpath = g_build_filename (dir, "result.json", NULL);
    g_autofree char *before = NULL, *after = NULL;
    g_assert_true (g_file_get_contents (rpath, &before, NULL, NULL));
    DfqRunResult again;
    g_autoptr (DfqPipeline) p2 = load ("smoke-gdfq.yaml", NULL); /* a pipeline runs once */
    g_assert_true (dfq_runner_run (registry, p2, &o, &again, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (again.status, ==, "finished");
    g_assert_cmpfloat (again.last_top1, ==, r.last_top1);
    g_assert_cmpfloat (again.best_top1, ==, r.best_top1);
    g_assert_cmpfloat (again.wall_seconds, ==, r.wall_seconds);
    g_assert_true (g_file_get_contents (rpath, &after, NULL, NULL));
    g_assert_cmpstr (after, ==, before);
    dfq_run_result_clear (&again);
    dfq_run_result_clear (&r);
}

static void
test_steady_state_allocations (void)
{
    g_test_summary ("Steady-state steps make no heap allocation: teacher training (forward, backward, SGD) and "
                    "GDFQ (generator step, student step through the quantizer, taps and losses)");
    if (!need_teacher ())
        return;
    g_test_message ("teacher training: %u windows, at most %" G_GINT64_FORMAT " allocations",
                    teacher_allocs.windows, teacher_allocs.worst);
    g_assert_cmpuint (teacher_allocs.windows, >=, 3);
    g_assert_cmpint (teacher_allocs.worst, ==, 0);

    g_autoptr (GError) error = NULL;
    /* One thread: OpenBLAS's threaded GEMM path (level3_thread.c, built with
     * MAX_THREADS=64) mallocs its job array on every call it splits, which is
     * outside dfqlab; on one thread it calls the kernels directly. */
    const char *const sets[] = { "threads=1", NULL };
    g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", sets);
    g_autofree char *dir = g_build_filename (tmpdir, "allocs", NULL);
    AllocWatch w;
    alloc_watch_init (&w);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 200, .progress = alloc_watch_progress, .progress_data = &w };
    DfqRunResult r;
    g_assert_true (dfq_runner_run (registry, p, &o, &r, &error));
    g_assert_no_error (error);
    g_test_message ("gdfq: %u windows, at most %" G_GINT64_FORMAT " allocations", w.windows, w.worst);
    g_assert_cmpuint (w.windows, ==, 3); /* one per epoch, warm-up included */
    g_assert_cmpint (w.worst, ==, 0);
    dfq_run_result_clear (&r);

    /* Again with a ResNet-20 teacher (random interop weights): a graph of
     * hundreds of nodes, residual adds, 21 BN taps, stride-2 convs. */
    g_autofree char *weights = g_test_build_filename (G_TEST_DIST, "interop", "resnet-cifar-d20-w8-c1.safetensors",
                                                      NULL);
    g_autofree char *set_weights = g_strdup_printf ("teacher.weights=%s", weights);
    const char *const sets20[] = { "threads=1", set_weights,
                                   "teacher.model={use: resnet-cifar, depth: 20, width: 8, in_channels: 1, classes: 10, "
                                   "image_size: 28}",
                                   NULL };
    g_autoptr (DfqPipeline) p20 = load ("smoke-gdfq.yaml", sets20);
    g_autofree char *dir20 = g_build_filename (tmpdir, "allocs-r20", NULL);
    alloc_watch_init (&w);
    DfqRunOptions o20 = { .run_dir = dir20, .eval_limit = 200, .progress = alloc_watch_progress, .progress_data = &w };
    gboolean ok20 = dfq_runner_run (registry, p20, &o20, &r, &error);
    g_assert_no_error (error);
    g_assert_true (ok20);
    g_test_message ("gdfq, resnet-20 teacher: %u windows, at most %" G_GINT64_FORMAT " allocations", w.windows, w.worst);
    g_assert_cmpuint (w.windows, ==, 3);
    g_assert_cmpint (w.worst, ==, 0);
    dfq_run_result_clear (&r);
}

static char *
read_file (const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    char *text = NULL;
    g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
    return text;
}

static void
test_resume (void)
{
    g_test_summary ("Interrupted after one epoch and resumed: same weights, metrics and result as an uninterrupted run");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *a_dir = g_build_filename (tmpdir, "uninterrupted", NULL);
    g_autofree char *b_dir = g_build_filename (tmpdir, "interrupted", NULL);
    DfqRunResult ra, rb;
    {
        g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", NULL);
        DfqRunOptions o = { .run_dir = a_dir, .eval_limit = 300 };
        g_assert_true (dfq_runner_run (registry, p, &o, &ra, &error));
        g_assert_no_error (error);
    }
    {
        g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", NULL);
        DfqRunOptions o = { .run_dir = b_dir, .eval_limit = 300, .stop_after_epochs = 1 };
        g_assert_false (dfq_runner_run (registry, p, &o, &rb, &error));
        g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED);
        g_clear_error (&error);
        dfq_run_result_clear (&rb);
    }
    {
        g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", NULL);
        DfqRunOptions o = { .run_dir = b_dir, .eval_limit = 300 };
        g_assert_true (dfq_runner_run (registry, p, &o, &rb, &error));
        g_assert_no_error (error);
    }
    g_assert_cmpfloat (ra.last_top1, ==, rb.last_top1);
    g_assert_cmpfloat (ra.best_top1, ==, rb.best_top1);
    g_autofree char *wa = read_file (a_dir, "student.safetensors");
    g_autofree char *wb = read_file (b_dir, "student.safetensors");
    g_assert_cmpstr (wa, ==, wb);
    gsize la, lb;
    g_autofree char *pa = g_build_filename (a_dir, "student.safetensors", NULL);
    g_autofree char *pb = g_build_filename (b_dir, "student.safetensors", NULL);
    g_autofree char *ba = NULL, *bb = NULL;
    g_assert_true (g_file_get_contents (pa, &ba, &la, NULL));
    g_assert_true (g_file_get_contents (pb, &bb, &lb, NULL));
    g_assert_cmpmem (ba, la, bb, lb);
    /* the same epochs in metrics.jsonl (a resumed run does not repeat lines) */
    g_autofree char *ma = read_file (a_dir, "metrics.jsonl");
    g_autofree char *mb = read_file (b_dir, "metrics.jsonl");
    g_auto (GStrv) la_lines = g_strsplit (ma, "\n", -1);
    g_auto (GStrv) lb_lines = g_strsplit (mb, "\n", -1);
    g_assert_cmpuint (g_strv_length (la_lines), ==, g_strv_length (lb_lines));
    dfq_run_result_clear (&ra);
    dfq_run_result_clear (&rb);
}

static void
test_diverge (void)
{
    g_test_summary ("A NaN loss stops the run with DFQ_RUN_ERROR_DIVERGED; result.json says so; the checkpoint stays");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    const char *sets[] = { "train.optimizer.lr=10", "train.losses.0.weight=1e9", NULL };
    g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", sets);
    g_autofree char *dir = g_build_filename (tmpdir, "diverge", NULL);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 100 };
    DfqRunResult r;
    g_assert_false (dfq_runner_run (registry, p, &o, &r, &error));
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED);
    g_test_message ("%s", error->message);
    g_assert_cmpstr (r.status, ==, "diverged");
    g_autofree char *result = read_file (dir, "result.json");
    g_assert_nonnull (strstr (result, "\"diverged\""));
    g_autofree char *ckpt = g_build_filename (dir, "checkpoint.safetensors", NULL);
    g_assert_true (g_file_test (ckpt, G_FILE_TEST_EXISTS));
    dfq_run_result_clear (&r);
}

static void
test_other_config (void)
{
    g_test_summary ("A run directory holding another configuration's checkpoint is refused (DFQ_RUN_ERROR_STATE)");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = g_build_filename (tmpdir, "smoke", NULL); /* written by /pipelines/smoke-gdfq */
    const char *sets[] = { "seed=7", NULL };
    g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", sets);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 100 };
    DfqRunResult r;
    g_assert_false (dfq_runner_run (registry, p, &o, &r, &error));
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE);
    dfq_run_result_clear (&r);
}

/* ------------------------------------------------------------ PTQ phases */

static GBytes *
read_bytes (const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    char *data = NULL;
    gsize len = 0;
    g_assert_true (g_file_get_contents (path, &data, &len, NULL));
    return g_bytes_new_take (data, len);
}

/* metrics.jsonl without the "seconds" members (wall time differs per run). */
static char *
metrics_without_seconds (const char *dir)
{
    g_autofree char *text = read_file (dir, "metrics.jsonl");
    g_autoptr (GRegex) re = g_regex_new (",\"seconds\":[0-9.e+-]+", 0, 0, NULL);
    return g_regex_replace_literal (re, text, -1, 0, "", 0, NULL);
}

static char *
result_without_wall (const char *dir)
{
    g_autofree char *text = read_file (dir, "result.json");
    g_autoptr (GRegex) re = g_regex_new ("\"wall_seconds\" : [0-9.e+-]+", 0, 0, NULL);
    return g_regex_replace_literal (re, text, -1, 0, "", 0, NULL);
}

/* Checkpoint metadata @key of the run in @dir as a number (NaN when absent). */
static double
ckpt_meta (const char *dir, const char *key)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *path = g_build_filename (dir, "checkpoint.safetensors", NULL);
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, &error);
    g_assert_no_error (error);
    const char *v = dfq_safetensors_get_metadata (st, key);
    return v != NULL ? g_ascii_strtod (v, NULL) : NAN;
}

/* The runs in @a and @b end alike: the tensors of their weights file @name
 * (its metadata may hold times), metrics.jsonl and result.json (but times). */
static void
assert_same_run (const char *a, const char *b, const char *name)
{
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) ba = read_bytes (a, name);
    g_autoptr (GBytes) bb = read_bytes (b, name);
    g_autoptr (DfqSafetensors) sa = dfq_safetensors_new_from_bytes (ba, "a", &error);
    g_assert_no_error (error);
    g_autoptr (DfqSafetensors) sb = dfq_safetensors_new_from_bytes (bb, "b", &error);
    g_assert_no_error (error);
    g_assert_cmpuint (dfq_safetensors_get_n_tensors (sa), ==, dfq_safetensors_get_n_tensors (sb));
    for (guint i = 0; i < dfq_safetensors_get_n_tensors (sa); i++) {
        const char *tname = dfq_safetensors_get_info (sa, i)->name;
        gsize na, nb;
        gconstpointer da = dfq_safetensors_get_data (sa, tname, &na);
        gconstpointer db = dfq_safetensors_get_data (sb, tname, &nb);
        g_assert_nonnull (db);
        g_assert_cmpmem (da, na, db, nb);
    }
    g_autofree char *ma = metrics_without_seconds (a);
    g_autofree char *mb = metrics_without_seconds (b);
    g_assert_cmpstr (ma, ==, mb);
    g_autofree char *ra = result_without_wall (a);
    g_autofree char *rb = result_without_wall (b);
    g_assert_cmpstr (ra, ==, rb);
}

typedef struct {
    guint synthesize; /* progress reports of the synthesize phase */
    guint calibrate;
} PhaseCount;

static void
phase_count_progress (const DfqProgress *p, gpointer data)
{
    PhaseCount *c = data;
    if (g_str_equal (p->phase, "synthesize"))
        c->synthesize++;
    else if (g_str_equal (p->phase, "calibrate"))
        c->calibrate++;
}

static gboolean
run_ptq (const char *dir, const char *const *sets, gint stop_after, PhaseCount *count, DfqRunResult *r,
         GError **error)
{
    g_autoptr (DfqPipeline) p = load ("smoke-ptq.yaml", sets);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 500, .stop_after_epochs = stop_after };
    if (count != NULL) {
        o.progress = phase_count_progress;
        o.progress_data = count;
    }
    return dfq_runner_run (registry, p, &o, r, error);
}

/* The "git_revision" of @dir's manifest.json: the build that ran it. */
static char *
manifest_revision (const char *dir)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *path = g_build_filename (dir, "manifest.json", NULL);
    g_autoptr (JsonParser) parser = json_parser_new ();
    g_assert_true (json_parser_load_from_file (parser, path, &error));
    g_assert_no_error (error);
    JsonObject *o = json_node_get_object (json_parser_get_root (parser));
    return g_strdup (json_object_get_string_member (o, "git_revision"));
}

static void
test_ptq_smoke (void)
{
    g_test_summary ("PTQ smoke: synthesize (3 batches) -> calibrate (3) -> evaluate; images.safetensors written; "
                    "metrics lines name their phase in order; the student beats chance");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = g_build_filename (tmpdir, "ptq", NULL);
    g_autofree char *cache = g_build_filename (tmpdir, "ptq-cache", NULL);
    g_autofree char *set_cache = g_strdup_printf ("synthesize.cache=%s", cache);
    const char *sets[] = { set_cache, NULL };
    PhaseCount count = { 0 };
    DfqRunResult r;
    g_assert_true (run_ptq (dir, sets, 0, &count, &r, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (r.status, ==, "finished");
    g_test_message ("PTQ smoke: FP %.1f %%, W4A4 %.1f %%", r.fp_top1, r.last_top1);
    g_assert_cmpfloat (r.last_top1, >, 20.0);
    g_assert_cmpint (r.best_epoch, ==, -1);
    g_assert_cmpuint (count.synthesize, >, 0);
    g_autofree char *images = g_build_filename (dir, "images.safetensors", NULL);
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (images, &error);
    g_assert_no_error (error);
    const DfqSafetensorsInfo *info = dfq_safetensors_lookup (st, "images");
    g_assert_nonnull (info);
    g_assert_cmpint (info->shape[0], ==, 24);
    g_assert_null (dfq_safetensors_lookup (st, "labels")); /* zeroq has none */
    /* the build that made the set, as the manifest names it */
    g_autofree char *revision = manifest_revision (dir);
    g_assert_cmpuint (strlen (revision), >, 0);
    g_assert_cmpstr (dfq_safetensors_get_metadata (st, "git_revision"), ==, revision);
    g_autofree char *m = read_file (dir, "metrics.jsonl");
    g_auto (GStrv) lines = g_strsplit (m, "\n", -1);
    const char *expect[] = { "synthesize", "synthesize", "synthesize", "calibrate", "calibrate", "calibrate", "evaluate" };
    for (guint i = 0; i < G_N_ELEMENTS (expect); i++) {
        g_autofree char *want = g_strdup_printf ("{\"phase\":\"%s\"", expect[i]);
        g_assert_true (g_str_has_prefix (lines[i], want));
    }
    g_assert_cmpstr (lines[G_N_ELEMENTS (expect)], ==, "");
    dfq_run_result_clear (&r);
}

/* The "sqnr_db" member of the last metrics line of @dir, as JSON text. */
static char *
last_sqnr_db (const char *dir)
{
    g_autofree char *m = read_file (dir, "metrics.jsonl");
    g_auto (GStrv) lines = g_strsplit (g_strstrip (m), "\n", -1);
    const char *last = lines[g_strv_length (lines) - 1];
    g_autoptr (JsonParser) parser = json_parser_new ();
    g_assert_true (json_parser_load_from_data (parser, last, -1, NULL));
    JsonObject *o = json_node_get_object (json_parser_get_root (parser));
    g_assert_true (json_object_has_member (o, "sqnr_db"));
    g_assert_cmpint (json_object_get_int_member (o, "sqnr_images"), >, 0);
    JsonObject *db = json_object_get_object_member (o, "sqnr_db");
    g_assert_cmpuint (json_object_get_size (db), >, 0);
    return json_to_string (json_object_get_member (o, "sqnr_db"), FALSE);
}

static void
test_ptq_sqnr_batch (void)
{
    g_test_summary ("The per-layer SQNR diagnostic runs in forwards of a fixed size: the same sqnr_db bits with "
                    "eval.batch 10 and 500 (it kept a whole eval batch's activations alive before)");
    if (!need_teacher ())
        return;
    g_autofree char *cache = g_build_filename (tmpdir, "ptq-cache", NULL);
    g_autofree char *set_cache = g_strdup_printf ("synthesize.cache=%s", cache);
    char *db[2] = { NULL, NULL };
    const char *batches[2] = { "eval.batch=10", "eval.batch=500" };
    for (int k = 0; k < 2; k++) {
        g_autoptr (GError) error = NULL;
        g_autofree char *leaf = g_strdup_printf ("ptq-sqnr-%d", k);
        g_autofree char *dir = g_build_filename (tmpdir, leaf, NULL);
        const char *sets[] = { set_cache, batches[k], "eval.sqnr_images=40", NULL };
        DfqRunResult r;
        g_assert_true (run_ptq (dir, sets, 0, NULL, &r, &error));
        g_assert_no_error (error);
        db[k] = last_sqnr_db (dir);
        dfq_run_result_clear (&r);
    }
    g_test_message ("sqnr_db %s", db[0]);
    g_assert_cmpstr (db[0], ==, db[1]);
    g_free (db[0]);
    g_free (db[1]);
}

/* A PTQ run into tmpdir/@leaf stopped after @stop units, its metrics then
 * given the line @kill_line (killed after that unit's metrics line, before
 * its checkpoint) unless NULL, and rerun: ends with @ref_result, @ref_metrics
 * and the bytes @ref_bytes of the file @name. */
static void
assert_resume_matches (const char *leaf, const char *const *sets, gint stop, const char *kill_line,
                       const char *ref_result, const char *ref_metrics, const char *name, GBytes *ref_bytes)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = g_build_filename (tmpdir, leaf, NULL);
    DfqRunResult r;
    g_assert_false (run_ptq (dir, sets, stop, NULL, &r, &error));
    g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED);
    g_clear_error (&error);
    dfq_run_result_clear (&r);
    if (kill_line != NULL) {
        g_autofree char *path = g_build_filename (dir, "metrics.jsonl", NULL);
        g_autofree char *m = read_file (dir, "metrics.jsonl");
        g_autofree char *more = g_strconcat (m, kill_line, "\n", NULL);
        g_assert_true (g_file_set_contents (path, more, -1, NULL));
    }
    g_assert_true (run_ptq (dir, sets, 0, NULL, &r, &error));
    g_assert_no_error (error);
    dfq_run_result_clear (&r);
    g_autofree char *res = result_without_wall (dir);
    g_autofree char *met = metrics_without_seconds (dir);
    g_autoptr (GBytes) bytes = read_bytes (dir, name);
    g_assert_cmpstr (res, ==, ref_result);
    g_assert_cmpstr (met, ==, ref_metrics);
    g_assert_true (g_bytes_equal (bytes, ref_bytes));
}

static void
test_ptq_resume (void)
{
    g_test_summary ("A PTQ run stopped after every unit (synthesis, calibration) and rerun, and one killed between a "
                    "metrics line and its checkpoint, end with the result.json and metrics of an uninterrupted run");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    const char *sets[] = { "synthesize.reuse=false", NULL };
    g_autofree char *ref = g_build_filename (tmpdir, "ptq-ref", NULL);
    DfqRunResult r;
    g_assert_true (run_ptq (ref, sets, 0, NULL, &r, &error));
    g_assert_no_error (error);
    dfq_run_result_clear (&r);
    g_autofree char *ref_result = result_without_wall (ref);
    g_autofree char *ref_metrics = metrics_without_seconds (ref);
    g_autoptr (GBytes) ref_images = read_bytes (ref, "images.safetensors");
    for (gint k = 1; k <= 6; k++) {
        g_autofree char *leaf = g_strdup_printf ("ptq-stop-%d", k);
        assert_resume_matches (leaf, sets, k, k % 2 == 1 ? "{\"phase\":\"calibrate\",\"batch\":9}" : NULL, ref_result,
                               ref_metrics, "images.safetensors", ref_images);
    }
}

/* The number after "@key": in a metrics line (NaN when absent). */
static double
metrics_number (const char *line, const char *key)
{
    g_autofree char *pat = g_strdup_printf ("\"%s\":", key);
    const char *at = strstr (line, pat);
    return at != NULL ? g_ascii_strtod (at + strlen (pat), NULL) : NAN;
}

/* The tiny CNN's 3 units (stage1, stage2, fc), 30 GENIE-M steps each. */
static const char *const recon_sets[] = {
    "synthesize.reuse=false", "student.quantizer={use: genie-m, w_bits: 3, a_bits: 3}",
    "phases=[synthesize, calibrate, reconstruct, evaluate]", "reconstruct.iters=30", "reconstruct.batch=8", NULL,
};

static void
test_recon_resume (void)
{
    g_test_summary ("Block reconstruction (GENIE-M W3A3 on the tiny CNN) stopped after each of its units and rerun, "
                    "and one killed between a unit's metrics line and its checkpoint, ends with the result.json, "
                    "metrics and quantized weights of an uninterrupted run; the 3-bit units lower their reconstruction "
                    "error, the 8-bit first conv's stays within 1 %; the "
                    "inner layer's quantized weights are on the 3-bit grid");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *ref = g_build_filename (tmpdir, "recon-ref", NULL);
    DfqRunResult r;
    g_assert_true (run_ptq (ref, recon_sets, 0, NULL, &r, &error));
    g_assert_no_error (error);
    dfq_run_result_clear (&r);
    g_autofree char *ref_result = result_without_wall (ref);
    g_autofree char *ref_metrics = metrics_without_seconds (ref);
    g_autoptr (GBytes) ref_q = read_bytes (ref, "student-quantized.safetensors");
    /* per unit: the hardened unit reconstructs its output better than nearest
     * rounding did; stage1 holds only the 8-bit first conv, whose nearest
     * rounding is already at the noise floor (its error moves by a fraction
     * of a percent either way with the teacher's last bits): there, no more
     * than 1 % worse */
    g_auto (GStrv) lines = g_strsplit (ref_metrics, "\n", -1);
    guint units = 0;
    for (guint i = 0; lines[i] != NULL; i++) {
        if (!g_str_has_prefix (lines[i], "{\"phase\":\"reconstruct\""))
            continue;
        const double before = metrics_number (lines[i], "rec_before"), after = metrics_number (lines[i], "rec_after");
        if (strstr (lines[i], "\"block\":\"stage1\"") != NULL)
            g_assert_cmpfloat (after, <=, 1.01 * before);
        else
            g_assert_cmpfloat (after, <, 0.99 * before);
        g_assert_cmpfloat (metrics_number (lines[i], "iters"), ==, 30);
        units++;
    }
    g_assert_cmpuint (units, ==, 3);
    /* hard rounding on the 3-bit grid (72 weights per channel); conv1 and fc
     * (8 bits) have fewer weights per channel than levels */
    g_assert_cmpuint (quantized_levels (ref, "conv2"), <=, 8);
    /* units: synthesize 3, calibrate 3, reconstruct 3: stop after each reconstruct unit */
    for (gint k = 6; k <= 9; k++) {
        g_autofree char *leaf = g_strdup_printf ("recon-stop-%d", k);
        assert_resume_matches (leaf, recon_sets, k, k == 7 ? "{\"phase\":\"reconstruct\",\"unit\":2}" : NULL,
                               ref_result, ref_metrics, "student-quantized.safetensors", ref_q);
    }
}

static void
test_ptq_reuse (void)
{
    g_test_summary ("A second run with the same synthesizer config (another quantizer) takes the image set from the "
                    "cache: no synthesis iteration runs, the images are the same bytes");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *cache = g_build_filename (tmpdir, "ptq-cache", NULL); /* filled by /pipelines/ptq-smoke */
    g_autofree char *set_cache = g_strdup_printf ("synthesize.cache=%s", cache);
    const char *sets[] = { set_cache, "student.quantizer.w_bits=3", "student.quantizer.a_bits=3", NULL };
    g_autofree char *first = g_build_filename (tmpdir, "ptq", NULL);
    g_autofree char *dir = g_build_filename (tmpdir, "ptq-w3a3", NULL);
    PhaseCount count = { 0 };
    DfqRunResult r;
    g_assert_true (run_ptq (dir, sets, 0, &count, &r, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (count.synthesize, ==, 0);
    g_assert_cmpuint (count.calibrate, >, 0);
    g_autoptr (GBytes) a = read_bytes (first, "images.safetensors");
    g_autoptr (GBytes) b = read_bytes (dir, "images.safetensors");
    g_assert_true (g_bytes_equal (a, b));
    g_autofree char *m = read_file (dir, "metrics.jsonl");
    g_assert_null (strstr (m, "\"synthesize\""));
    dfq_run_result_clear (&r);
    /* another synthesizer config: synthesised again */
    const char *other[] = { set_cache, "synthesizer.iters=20", NULL };
    g_autofree char *dir2 = g_build_filename (tmpdir, "ptq-iters20", NULL);
    PhaseCount count2 = { 0 };
    g_assert_true (run_ptq (dir2, other, 0, &count2, &r, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (count2.synthesize, >, 0);
    dfq_run_result_clear (&r);
}

/* Cancels the run (as Ctrl-C does) at a training iteration. */
typedef struct {
    GCancellable *cancellable;
    gint epoch;
    gint iter;
} CancelAt;

static void
cancel_at_progress (const DfqProgress *p, gpointer data)
{
    CancelAt *c = data;
    if ((g_str_equal (p->phase, "train") || g_str_equal (p->phase, "warmup")) && p->epoch == c->epoch
        && p->iter == c->iter)
        g_cancellable_cancel (c->cancellable);
}

static void
test_ptq_reuse_other_revision (void)
{
    g_test_summary ("A cached image set made by another revision is reused (no synthesis) with one warning naming "
                    "both revisions; the run directory's copy records the revision that made the set");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    /* /pipelines/ptq-smoke's set, as another build would have cached it */
    g_autofree char *first = g_build_filename (tmpdir, "ptq", NULL);
    g_autofree char *src = g_build_filename (first, "images.safetensors", NULL);
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (src, &error);
    g_assert_no_error (error);
    g_autofree char *leaf = g_strndup (dfq_safetensors_get_metadata (st, "key_sha256"), 16);
    g_autofree char *cache = g_build_filename (tmpdir, "ptq-cache-other", NULL);
    g_autofree char *cached = g_build_filename (cache, leaf, "images.safetensors", NULL);
    g_autofree char *entry = g_path_get_dirname (cached);
    g_assert_cmpint (g_mkdir_with_parents (entry, 0755), ==, 0);
    g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init (&it, dfq_safetensors_get_metadata_table (st));
    while (g_hash_table_iter_next (&it, &k, &v))
        g_hash_table_insert (meta, g_strdup (k), g_strdup (v));
    g_hash_table_insert (meta, g_strdup ("git_revision"), g_strdup ("0123abc-other"));
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *images = dfq_safetensors_get_tensor (st, "images", a, &error);
    g_assert_no_error (error);
    const char *names[] = { "images" };
    g_assert_true (dfq_safetensors_save_list (cached, names, &images, 1, meta, &error));
    g_assert_no_error (error);

    g_autofree char *set_cache = g_strdup_printf ("synthesize.cache=%s", cache);
    const char *sets[] = { set_cache, "student.quantizer.w_bits=3", "student.quantizer.a_bits=3", NULL };
    g_autofree char *dir = g_build_filename (tmpdir, "ptq-other-revision", NULL);
    g_autofree char *revision = manifest_revision (first);
    g_autofree char *pattern = g_strdup_printf ("reusing the cached image set %s made by revision 0123abc-other "
                                                "(this build: %s)", cached, revision);
    PhaseCount count = { 0 };
    DfqRunResult r;
    g_test_expect_message ("dfq", G_LOG_LEVEL_WARNING, pattern);
    g_assert_true (run_ptq (dir, sets, 0, &count, &r, &error));
    g_test_assert_expected_messages ();
    g_assert_no_error (error);
    g_assert_cmpuint (count.synthesize, ==, 0);
    dfq_run_result_clear (&r);
    g_autofree char *copy = g_build_filename (dir, "images.safetensors", NULL);
    g_autoptr (DfqSafetensors) st2 = dfq_safetensors_new_from_file (copy, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dfq_safetensors_get_metadata (st2, "git_revision"), ==, "0123abc-other");
    gsize n1, n2;
    gconstpointer d1 = dfq_safetensors_get_data (st, "images", &n1);
    gconstpointer d2 = dfq_safetensors_get_data (st2, "images", &n2);
    g_assert_cmpmem (d1, n1, d2, n2);
}

static void
test_train_resume (void)
{
    g_test_summary ("dfq train (the train-fp phase) cancelled inside epoch 0 (a checkpoint there), stopped at the end "
                    "of epoch 0 (stop_after_epochs) and inside epoch 1 (stop_after_iters), and rerun: the same "
                    "model.safetensors, metrics and result as the uninterrupted training of /pipelines/ setup");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *ref = g_build_filename (tmpdir, "teacher", NULL); /* trained by setup_teacher() */
    g_autofree char *dir = g_build_filename (tmpdir, "teacher-resumed", NULL);
    g_autoptr (GCancellable) cancellable = g_cancellable_new ();
    /* 80 iterations per epoch: cancelled at the report of iteration 30
     * (0-based), it checkpoints after 31 iterations; then the other 49 of
     * epoch 0; then 21 of epoch 1 */
    CancelAt at = { cancellable, 0, 30 };
    const gint stop_epochs[] = { 0, 1, 0, 0 }, stop_iters[] = { 0, 0, 21, 0 };
    const double want_units[] = { 0, 1, 1 }, want_iters[] = { 31, NAN, 21 };
    for (guint call = 0; call < 4; call++) {
        g_autoptr (DfqPipeline) p = load ("smoke-teacher-tiny.yaml", NULL);
        DfqRunOptions o = { .run_dir = dir, .eval_limit = 1000, .stop_after_epochs = stop_epochs[call],
                            .stop_after_iters = stop_iters[call] };
        if (call == 0) {
            o.cancellable = cancellable;
            o.progress = cancel_at_progress;
            o.progress_data = &at;
        }
        DfqRunResult r;
        gboolean ok = dfq_runner_train (registry, p, &o, &r, &error);
        dfq_run_result_clear (&r);
        if (call == 3) {
            g_assert_no_error (error);
            g_assert_true (ok);
            break;
        }
        g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED);
        g_test_message ("call %u: %s", call, error->message);
        g_clear_error (&error);
        g_assert_false (ok);
        g_assert_cmpfloat (ckpt_meta (dir, "units_done"), ==, want_units[call]);
        g_assert_cmpfloat (ckpt_meta (dir, "metrics_lines"), ==, want_units[call]);
        if (isnan (want_iters[call]))
            g_assert_true (isnan (ckpt_meta (dir, "unit_iters"))); /* at an epoch's end: none */
        else
            g_assert_cmpfloat (ckpt_meta (dir, "unit_iters"), ==, want_iters[call]);
    }
    assert_same_run (ref, dir, "model.safetensors");
}

/* What a kill -9 at a training iteration leaves: a copy of the run
 * directory's checkpoint and metrics, taken from the progress callback (the
 * report of iteration k comes before the checkpoint after it, if any). */
typedef struct {
    const char *dir;
    const char *copy;
    gint epoch;
    gint iter;
    gboolean taken;
} Snapshot;

static void
snapshot_progress (const DfqProgress *p, gpointer data)
{
    Snapshot *s = data;
    if (s->taken || p->epoch != s->epoch || p->iter != s->iter
        || (!g_str_equal (p->phase, "train") && !g_str_equal (p->phase, "warmup")))
        return;
    g_assert_cmpint (g_mkdir_with_parents (s->copy, 0755), ==, 0);
    for (const char *f = "checkpoint.safetensors\0metrics.jsonl\0"; *f; f += strlen (f) + 1) {
        g_autofree char *from = g_build_filename (s->dir, f, NULL);
        g_autofree char *to = g_build_filename (s->copy, f, NULL);
        g_autofree char *data = NULL;
        gsize len = 0;
        g_assert_true (g_file_get_contents (from, &data, &len, NULL));
        g_assert_true (g_file_set_contents (to, data, (gssize) len, NULL));
    }
    s->taken = TRUE;
}

static gboolean
run_gdfq (const char *dir, const char *const *sets, gint stop_after_iters, Snapshot *snap, GError **error)
{
    g_autoptr (DfqPipeline) p = load ("smoke-gdfq.yaml", sets);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 300, .stop_after_iters = stop_after_iters };
    if (snap != NULL) {
        o.progress = snapshot_progress;
        o.progress_data = snap;
    }
    DfqRunResult r;
    gboolean ok = dfq_runner_run (registry, p, &o, &r, error);
    dfq_run_result_clear (&r);
    return ok;
}

static void
test_gdfq_resume_mid_epoch (void)
{
    g_test_summary ("QAT (train phase, GDFQ generator) stopped inside a warm-up, a calibrating and a training epoch "
                    "and rerun, and one killed after a periodic checkpoint inside an epoch (train.checkpoint_minutes) "
                    "and rerun, end with the student, metrics and result of an uninterrupted run; checkpoint_minutes "
                    "at its default leaves config.yaml (the config hash) as it was");
    if (!need_teacher ())
        return;
    g_autoptr (GError) error = NULL;
    g_autofree char *ref = g_build_filename (tmpdir, "mid-ref", NULL);
    g_assert_true (run_gdfq (ref, NULL, 0, NULL, &error));
    g_assert_no_error (error);
    g_autofree char *ref_config = read_file (ref, "config.yaml");
    g_assert_null (strstr (ref_config, "checkpoint_minutes"));

    /* 3 epochs of 6 iterations: epoch 0 warms up, 0-1 calibrate, 1-2 train the student */
    g_autofree char *dir = g_build_filename (tmpdir, "mid-stop", NULL);
    const gint stops[] = { 4, 5, 6 };
    const double want_units[] = { 0, 1, 2 }, want_iters[] = { 4, 3, 3 };
    for (guint i = 0; i < G_N_ELEMENTS (stops); i++) {
        g_assert_false (run_gdfq (dir, NULL, stops[i], NULL, &error));
        g_assert_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED);
        g_clear_error (&error);
        g_assert_cmpfloat (ckpt_meta (dir, "units_done"), ==, want_units[i]);
        g_assert_cmpfloat (ckpt_meta (dir, "unit_iters"), ==, want_iters[i]);
    }
    g_assert_true (run_gdfq (dir, NULL, 0, NULL, &error));
    g_assert_no_error (error);
    assert_same_run (ref, dir, "student.safetensors");

    /* a checkpoint after every iteration; a copy of the run directory taken
     * in iteration 3 of epoch 1 (after 2 checkpointed ones), as a kill -9
     * there would leave it */
    const char *const every[] = { "train.checkpoint_minutes=1e-9", NULL };
    g_autofree char *periodic = g_build_filename (tmpdir, "mid-periodic", NULL);
    g_autofree char *killed = g_build_filename (tmpdir, "mid-killed", NULL);
    Snapshot snap = { periodic, killed, 1, 2, FALSE };
    g_assert_true (run_gdfq (periodic, every, 0, &snap, &error));
    g_assert_no_error (error);
    g_assert_true (snap.taken);
    assert_same_run (ref, periodic, "student.safetensors");
    g_autofree char *config = read_file (periodic, "config.yaml");
    g_assert_nonnull (strstr (config, "checkpoint_minutes"));
    g_assert_cmpfloat (ckpt_meta (killed, "units_done"), ==, 1);
    g_assert_cmpfloat (ckpt_meta (killed, "unit_iters"), ==, 2);
    g_assert_true (run_gdfq (killed, every, 0, NULL, &error));
    g_assert_no_error (error);
    assert_same_run (ref, killed, "student.safetensors");
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_test_registry_new ();
    tmpdir = g_dir_make_tmp ("dfq-pipelines-XXXXXX", NULL);
    setup_teacher ();
    g_test_add_func ("/pipelines/smoke-gdfq", test_smoke_gdfq);
    g_test_add_func ("/pipelines/resume", test_resume);
    g_test_add_func ("/pipelines/diverge", test_diverge);
    g_test_add_func ("/pipelines/other-config", test_other_config);
    g_test_add_func ("/pipelines/ptq-smoke", test_ptq_smoke);
    g_test_add_func ("/pipelines/ptq-sqnr-batch", test_ptq_sqnr_batch);
    g_test_add_func ("/pipelines/ptq-resume", test_ptq_resume);
    g_test_add_func ("/pipelines/ptq-reuse", test_ptq_reuse);
    g_test_add_func ("/pipelines/ptq-reuse-other-revision", test_ptq_reuse_other_revision);
    g_test_add_func ("/pipelines/recon-resume", test_recon_resume);
    g_test_add_func ("/pipelines/train-resume", test_train_resume);
    g_test_add_func ("/pipelines/gdfq-resume-mid-epoch", test_gdfq_resume_mid_epoch);
    /* Only where allocations can be counted (not under sanitizers). */
    if (dfq_test_malloc_count != NULL)
        g_test_add_func ("/pipelines/steady-state-allocations", test_steady_state_allocations);
    int rc = g_test_run ();
    dfq_test_rm_rf (tmpdir);
    g_free (tmpdir);
    g_free (teacher_weights);
    dfq_registry_free (registry);
    return rc;
}
