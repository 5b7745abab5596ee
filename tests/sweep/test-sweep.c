/* Sweep files and reports without running anything (tests/sweep): trial
 * expansion (grid x zip x seeds) is deterministic, in the documented order,
 * with stable ids equal to the hash of what `dfq run --set ...` resolves;
 * sweep file errors have file:line:col; reports over hand-made run
 * directories average over seeds, never across protocols, never failed runs;
 * the HTML page is self-contained and renders in headless Chromium when one
 * is installed (tools/render-report.sh). */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include "sweep/dfq-sweep-private.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;
static char *tmpdir;

static char *
smoke_pipeline (void)
{
    return g_test_build_filename (G_TEST_DIST, "..", "pipelines", "smoke-gdfq.yaml", NULL);
}

/* Writes @body after a header naming the smoke pipeline; returns the path. */
static char *
write_sweep (const char *name, const char *body)
{
    g_autofree char *base = smoke_pipeline ();
    g_autofree char *text = g_strdup_printf ("version: 1\npipeline: %s\n%s", base, body);
    char *path = g_build_filename (tmpdir, name, NULL);
    g_assert_true (g_file_set_contents (path, text, -1, NULL));
    return path;
}

static const char expand_body[] = "grid:\n"
                                  "  train.iters: [2, 3]\n"
                                  "zip:\n"
                                  "  synthesizer.latent: [32, 64]\n"
                                  "  train.losses: [[kd], [{use: kd, temperature: 4}, ce]]\n"
                                  "seeds: [1, 2, 3]\n";

static void
test_expand_order (void)
{
    g_test_summary ("grid x zip x seeds: 2 x 2 x 3 = 12 trials, first axis slowest, readable labels, "
                    "the same ids on every expansion");
    g_autoptr (GError) error = NULL;
    g_autofree char *path = write_sweep ("expand.yaml", expand_body);
    g_autoptr (DfqSweep) a = dfq_sweep_new_from_file (registry, path, &error);
    g_assert_no_error (error);
    g_autoptr (DfqSweep) b = dfq_sweep_new_from_file (registry, path, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (a->trials->len, ==, 12);
    g_assert_cmpstr (a->name, ==, "expand");
    static const char *const labels[] = {
        "iters=2,latent=32,kd,s1",
        "iters=2,latent=32,kd,s2",
        "iters=2,latent=32,kd,s3",
        "iters=2,latent=64,kd+ce,s1",
        "iters=2,latent=64,kd+ce,s2",
        "iters=2,latent=64,kd+ce,s3",
        "iters=3,latent=32,kd,s1",
        "iters=3,latent=32,kd,s2",
        "iters=3,latent=32,kd,s3",
        "iters=3,latent=64,kd+ce,s1",
        "iters=3,latent=64,kd+ce,s2",
        "iters=3,latent=64,kd+ce,s3",
    };
    g_autoptr (GHashTable) ids = g_hash_table_new (g_str_hash, g_str_equal);
    for (guint i = 0; i < a->trials->len; i++) {
        DfqSweepTrial *ta = a->trials->pdata[i], *tb = b->trials->pdata[i];
        g_assert_cmpuint (ta->index, ==, i);
        g_assert_cmpstr (ta->label, ==, labels[i]);
        g_assert_cmpstr (ta->id, ==, tb->id);
        g_assert_cmpstr (ta->label, ==, tb->label);
        g_assert_cmpuint (strlen (ta->id), ==, DFQ_SWEEP_ID_LENGTH);
        g_assert_true (g_hash_table_add (ids, ta->id)); /* distinct */
        g_autofree char *dir = g_strdup_printf ("%s-%s", labels[i], ta->id);
        g_assert_cmpstr (ta->dir_name, ==, dir);
    }
    DfqSweepTrial *t3 = a->trials->pdata[3];
    g_assert_cmpuint (t3->overrides->len, ==, 4);
    g_assert_cmpstr (t3->overrides->pdata[0], ==, "train.iters=2");
    g_assert_cmpstr (t3->overrides->pdata[1], ==, "synthesizer.latent=64");
    g_assert_cmpstr (t3->overrides->pdata[2], ==, "train.losses=[{use: kd, temperature: 4}, ce]");
    g_assert_cmpstr (t3->overrides->pdata[3], ==, "seed=1");
    g_assert_cmpstr (t3->axis_keys->pdata[3], ==, "seed");
    g_assert_nonnull (strstr (t3->config_yaml, "latent: 64"));
    g_assert_nonnull (strstr (t3->config_yaml, "temperature: 4.0"));
}

static void
test_expand_ids (void)
{
    g_test_summary ("A trial's id is the hash of what `dfq run BASE --set ...` resolves (threads aside), so the "
                    "child runs exactly the expanded config; ids do not depend on threads or on other axes");
    g_autoptr (GError) error = NULL;
    g_autofree char *path = write_sweep ("ids.yaml", expand_body);
    g_autoptr (DfqSweep) sweep = dfq_sweep_new_from_file (registry, path, &error);
    g_assert_no_error (error);
    g_autofree char *base = smoke_pipeline ();
    for (guint i = 0; i < sweep->trials->len; i++) {
        DfqSweepTrial *t = sweep->trials->pdata[i];
        g_autoptr (GPtrArray) sets = g_ptr_array_new ();
        for (guint k = 0; k < t->overrides->len; k++)
            g_ptr_array_add (sets, t->overrides->pdata[k]);
        g_ptr_array_add (sets, (gpointer) "threads=7");
        g_ptr_array_add (sets, NULL);
        g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (registry, base, (const char *const *) sets->pdata, &error);
        g_assert_no_error (error);
        g_autofree char *yaml = dfq_pipeline_to_yaml (p);
        g_autofree char *id = dfq_sweep_config_id (yaml, 0);
        g_assert_cmpstr (id, ==, t->id);
        g_autofree char *limited = dfq_sweep_config_id (yaml, 100);
        g_assert_cmpstr (limited, !=, t->id);
    }
    /* the same config reached through other axes has the same id */
    g_autofree char *other = write_sweep ("ids-other.yaml", "set: {train.iters: 3, synthesizer.latent: 64, threads: 1,\n"
                                                            "      train.losses: [{use: kd, temperature: 4}, ce]}\n"
                                                            "seeds: [2]\n");
    g_autoptr (DfqSweep) single = dfq_sweep_new_from_file (registry, other, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (single->trials->len, ==, 1);
    g_assert_cmpstr (((DfqSweepTrial *) single->trials->pdata[0])->id, ==,
                     ((DfqSweepTrial *) sweep->trials->pdata[10])->id);
    g_assert_true (((DfqSweepTrial *) single->trials->pdata[0])->sets_threads);
    g_assert_cmpstr (((DfqSweepTrial *) single->trials->pdata[0])->label, ==, "s2");
}

static void
test_expand_set_after_axes (void)
{
    g_test_summary ("set: applies after the axes (it adjusts a feature an axis replaced); zip: may be a list of "
                    "groups, each an axis; flow mappings merge like --set");
    g_autoptr (GError) error = NULL;
    g_autofree char *path = write_sweep ("set.yaml", "zip:\n"
                                                     "  - student.quantizer: [{w_bits: 4, a_bits: 4}, {w_bits: 3, a_bits: 3}]\n"
                                                     "  - synthesizer: [{use: gdfq, bn_eps_inner: 0.5}, {use: crash-free, latent: 1}]\n"
                                                     "    train.batch: [8, 4]\n"
                                                     "set:\n"
                                                     "  synthesizer.latent: 16\n");
    /* an unknown feature in an axis value: the error points at it and names the trial */
    g_autoptr (DfqSweep) bad = dfq_sweep_new_from_file (registry, path, &error);
    g_assert_null (bad);
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE);
    g_autofree char *where = g_strdup_printf ("%s:5:", path);
    g_assert_true (g_str_has_prefix (error->message, where));
    g_assert_nonnull (strstr (error->message, "(in trial 2 of the sweep: w_bits=4,a_bits=4,crash-free,batch=4)"));
    g_clear_error (&error);

    g_autofree char *good = write_sweep ("set2.yaml", "zip:\n"
                                                      "  - student.quantizer: [{w_bits: 4, a_bits: 4}, {w_bits: 3, a_bits: 3}]\n"
                                                      "  - synthesizer: [{use: gdfq, bn_eps_inner: 0.5}, {use: gdfq, losses: [ce]}]\n"
                                                      "    train.batch: [8, 4]\n"
                                                      "set:\n"
                                                      "  synthesizer.latent: 16\n");
    g_autoptr (DfqSweep) sweep = dfq_sweep_new_from_file (registry, good, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (sweep->trials->len, ==, 4);
    for (guint i = 0; i < 4; i++) {
        DfqSweepTrial *t = sweep->trials->pdata[i];
        g_assert_nonnull (strstr (t->config_yaml, "latent: 16"));
        g_assert_nonnull (strstr (t->config_yaml, i < 2 ? "w_bits: 4" : "w_bits: 3"));
        g_assert_nonnull (strstr (t->config_yaml, "per_channel: true")); /* merged, not replaced */
        g_assert_cmpstr (t->overrides->pdata[t->overrides->len - 1], ==, "synthesizer.latent=16");
    }
    DfqSweepTrial *t0 = sweep->trials->pdata[0], *t1 = sweep->trials->pdata[1];
    g_assert_nonnull (strstr (t0->config_yaml, "bn_eps_inner: 0.5"));
    g_assert_nonnull (strstr (t1->config_yaml, "bn_eps_inner: 0.8")); /* the default: the base's value stays */
    g_assert_cmpstr (t0->label, ==, "w_bits=4,a_bits=4,gdfq,batch=8");
}

static void
test_errors (void)
{
    g_test_summary ("Sweep file problems are DFQ_PIPELINE_ERROR with the file:line:col of the offending node");
    static const struct {
        const char *body;
        DfqPipelineError code;
        const char *where; /* ":line:col" after the path */
        const char *says;
    } cases[] = {
        { "gird: {train.iters: [1, 2]}\n", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, ":3:1:", "did you mean 'grid'?" },
        { "grid: {train.iters: 3}\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:21:", "expected a non-empty list" },
        { "zip: {train.iters: [1, 2], train.batch: [4]}\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:41:", "same length" },
        { "grid: {train.itres: [1, 2]}\n", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, ":3:8:", "did you mean 'iters'?" },
        { "grid:\n  train.iters: [2, -5]\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":4:20:", "out of range" },
        { "grid: {train.iters: [2, 2]}\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":", "resolve to the same configuration" },
        { "seeds: [1, x]\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:12:", "expected an integer" },
        { "seeds: [1, 1]\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:12:", "listed twice" },
        { "set: {seed: 3}\nseeds: [1]\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":4:1:", "already set or swept" },
        { "set: {train.iters: 2}\ngrid: {train.iters: [3]}\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":4:8:", "already set" },
        { "grid: {train..iters: [1]}\n", DFQ_PIPELINE_ERROR_SYNTAX, ":3:8:", "empty key" },
        { "eval_limit: -1\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:13:", "integer >= 0" },
        { "name: [x]\n", DFQ_PIPELINE_ERROR_BAD_VALUE, ":3:7:", "expected a string" },
        { "grid: {train.iters: [1,\n", DFQ_PIPELINE_ERROR_SYNTAX, ":", "" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        g_autoptr (GError) error = NULL;
        g_autofree char *name = g_strdup_printf ("error-%u.yaml", i);
        g_autofree char *path = write_sweep (name, cases[i].body);
        g_autoptr (DfqSweep) sweep = dfq_sweep_new_from_file (registry, path, &error);
        g_assert_null (sweep);
        g_assert_error (error, DFQ_PIPELINE_ERROR, (gint) cases[i].code);
        g_autofree char *prefix = g_strconcat (path, cases[i].where, NULL);
        if (!g_str_has_prefix (error->message, prefix) || strstr (error->message, cases[i].says) == NULL)
            g_test_fail_printf ("case %u: '%s' does not start with '%s' or lacks '%s'", i, error->message, prefix,
                                cases[i].says);
    }
    /* no pipeline: */
    g_autoptr (GError) error = NULL;
    g_autofree char *path = g_build_filename (tmpdir, "no-pipeline.yaml", NULL);
    g_assert_true (g_file_set_contents (path, "seeds: [1]\n", -1, NULL));
    g_autoptr (DfqSweep) sweep = dfq_sweep_new_from_file (registry, path, &error);
    g_assert_null (sweep);
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_MISSING_PARAM);
}

static void
test_flow (void)
{
    g_test_summary ("Values go to `dfq run --set` as flow YAML that reads back to the same tree");
    const char *text = "{a: '*:in', b: [1, 'x y', -2, 1e-3], c: \"4\", d: ~, e: 'a: b', f: {use: kd, g: [true]},"
                       " h: 'it''s', i: \"tab\\there\", j: '', k: -x, l: '#no'}";
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqConfigNode) node = dfq_config_parse (text, -1, "flow", &error);
    g_assert_no_error (error);
    g_autofree char *flow = dfq_sweep_config_to_flow (node);
    g_autoptr (DfqConfigNode) back = dfq_config_parse (flow, -1, "flow", &error);
    g_assert_no_error (error);
    g_autofree char *y1 = dfq_config_to_yaml (node);
    g_autofree char *y2 = dfq_config_to_yaml (back);
    g_assert_cmpstr (y1, ==, y2);
    g_autoptr (JsonNode) json = dfq_sweep_config_to_json (node);
    JsonObject *o = json_node_get_object (json);
    g_assert_cmpstr (json_object_get_string_member (o, "c"), ==, "4"); /* quoted: a string */
    g_assert_cmpint (json_array_get_int_element (json_object_get_array_member (o, "b"), 0), ==, 1);
    g_assert_true (json_object_get_null_member (o, "d"));
}

/* Reports ------------------------------------------------------------------------ */

/* A hand-made run directory: the config @sets resolve to, and its outcome. */
static void
make_run (const char *root, const char *name, const char *const *sets, const char *status, double last,
          double best, const char *trial_status)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = g_build_filename (root, name, NULL);
    g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
    g_autofree char *base = smoke_pipeline ();
    g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (registry, base, sets, &error);
    g_assert_no_error (error);
    g_autofree char *yaml = dfq_pipeline_to_yaml (p);
    g_autofree char *config = g_build_filename (dir, "config.yaml", NULL);
    g_assert_true (g_file_set_contents (config, yaml, -1, NULL));
    g_autofree char *manifest = g_build_filename (dir, "manifest.json", NULL);
    g_assert_true (g_file_set_contents (manifest, "{\"teacher_sha256\": \"0123456789abcdef\"}", -1, NULL));
    g_autofree char *metrics = g_build_filename (dir, "metrics.jsonl", NULL);
    g_autofree char *lines = g_strdup_printf ("{\"epoch\": 0, \"top1\": %g}\n{\"epoch\": 1, \"top1\": %g}\n",
                                              best - 1, last);
    g_assert_true (g_file_set_contents (metrics, lines, -1, NULL));
    if (status != NULL) {
        g_autofree char *result = g_build_filename (dir, "result.json", NULL);
        /* json-glib writes NaN as nan.0 (not JSON): the report copes */
        g_autofree char *last_text = isnan (last) ? g_strdup ("nan.0") : g_strdup_printf ("%g", last);
        g_autofree char *json = g_strdup_printf ("{\"status\": \"%s\", \"fp_top1\": 80.0, \"last_top1\": %s, "
                                                 "\"best_top1\": %g, \"best_epoch\": 1, \"best_selected_on\": "
                                                 "\"test\", \"epochs_done\": 2, \"wall_seconds\": 3.0%s}",
                                                 status, last_text, best,
                                                 g_str_equal (status, "diverged")
                                                     ? ", \"error\": \"student loss is nan at epoch 1\""
                                                     : "");
        g_assert_true (g_file_set_contents (result, json, -1, NULL));
    }
    if (trial_status != NULL) {
        g_autofree char *trial = g_build_filename (dir, "trial.json", NULL);
        g_autofree char *json = g_strdup_printf ("{\"id\": \"x\", \"status\": \"%s\", \"eval_limit\": 0, "
                                                 "\"exit\": \"signal 11 (Segmentation fault)\", "
                                                 "\"log_tail\": \"epoch 1/3\\ncrash-test: segfaulting\\n\"}",
                                                 trial_status);
        g_assert_true (g_file_set_contents (trial, json, -1, NULL));
    }
}

static char *
report_root (void)
{
    char *root = g_build_filename (tmpdir, "report", NULL);
    if (g_file_test (root, G_FILE_TEST_IS_DIR))
        return root;
    const char *s1[] = { "seed=1", NULL }, *s2[] = { "seed=2", NULL }, *s3[] = { "seed=3", NULL };
    const char *s4[] = { "seed=4", NULL };
    make_run (root, "a-s1", s1, "finished", 50, 51, NULL);
    make_run (root, "a-s2", s2, "finished", 52, 53, NULL);
    make_run (root, "sub/a-s3", s3, "finished", 54, 55, NULL);
    make_run (root, "a-s4", s4, "diverged", NAN, 20, NULL);
    /* the same seed again (a copy): counted once */
    make_run (root, "a-s1-copy", s1, "finished", 50, 51, NULL);
    /* W3A3, two seeds */
    const char *w3s1[] = { "seed=1", "student.quantizer.w_bits=3", "student.quantizer.a_bits=3", NULL };
    const char *w3s2[] = { "seed=2", "student.quantizer.w_bits=3", "student.quantizer.a_bits=3", NULL };
    make_run (root, "w3-s1", w3s1, "finished", 30, 31, NULL);
    make_run (root, "w3-s2", w3s2, "finished", 34, 35, NULL);
    /* another protocol: a larger budget, and per-tensor weights */
    const char *e4[] = { "seed=1", "train.epochs=4", NULL };
    const char *pt[] = { "seed=1", "student.quantizer.per_channel=false", NULL };
    make_run (root, "epochs4-s1", e4, "finished", 60, 61, NULL);
    make_run (root, "per-tensor-s1", pt, "finished", 40, 41, NULL);
    /* a crashed trial of another method */
    const char *cr[] = { "seed=1", "synthesizer=~", NULL };
    make_run (root, "crash-s1", cr, NULL, 0, 0, "crashed");
    return root;
}

static DfqReportGroup *
find_group (DfqReport *report, const char *label_part, const char *bits)
{
    for (guint i = 0; i < report->groups->len; i++) {
        DfqReportGroup *g = report->groups->pdata[i];
        if (strstr (g->label, label_part) != NULL && g_str_equal (g->bits, bits))
            return g;
    }
    return NULL;
}

static void
test_report_groups (void)
{
    g_test_summary ("Runs are averaged over seeds (mean, sample std) only within one configuration; other protocols "
                    "get their own rows with the differing key in the label; failed runs are listed, never averaged");
    g_autoptr (GError) error = NULL;
    g_autofree char *root = report_root ();
    g_autoptr (DfqReport) report = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (report->runs->len, ==, 10);
    g_assert_cmpuint (report->groups->len, ==, 5);

    DfqReportGroup *a = find_group (report, "budget=3x6x16, student.quantizer.per_channel=true", "W4A4");
    g_assert_nonnull (a);
    g_assert_cmpstr (a->label, ==, "gdfq / uniform / kd+ce [budget=3x6x16, student.quantizer.per_channel=true]");
    g_assert_cmpuint (a->n, ==, 3);
    g_assert_cmpuint (a->n_failed, ==, 2); /* the diverged seed and the copy */
    g_assert_cmpfloat_with_epsilon (a->last_mean, 52.0, 1e-9);
    g_assert_cmpfloat_with_epsilon (a->last_std, 2.0, 1e-9); /* sample std of 50, 52, 54 */
    g_assert_cmpfloat_with_epsilon (a->best_mean, 53.0, 1e-9);
    g_assert_cmpfloat_with_epsilon (a->fp_mean, 80.0, 1e-9);

    DfqReportGroup *w3 = find_group (report, "gdfq", "W3A3");
    g_assert_nonnull (w3);
    g_assert_cmpuint (w3->n, ==, 2);
    g_assert_cmpfloat_with_epsilon (w3->last_std, sqrt (8.0), 1e-9);

    DfqReportGroup *e4 = find_group (report, "budget=4x6x16", "W4A4");
    g_assert_nonnull (e4);
    g_assert_cmpuint (e4->n, ==, 1);
    g_assert_true (isnan (e4->last_std));
    DfqReportGroup *pt = find_group (report, "per_channel=false", "W4A4");
    g_assert_nonnull (pt);
    g_assert_cmpuint (pt->n, ==, 1);
    DfqReportGroup *crash = find_group (report, "none / uniform", "W4A4");
    g_assert_nonnull (crash);
    g_assert_cmpuint (crash->n, ==, 0);
    g_assert_cmpuint (crash->n_failed, ==, 1);

    /* every row has its own label */
    for (guint i = 0; i < report->groups->len; i++)
        for (guint j = i + 1; j < report->groups->len; j++) {
            DfqReportGroup *x = report->groups->pdata[i], *y = report->groups->pdata[j];
            g_assert_false (g_str_equal (x->bits, y->bits) && g_str_equal (x->label, y->label));
        }

    /* the protocol keys that differ are named; the shared ones described once */
    g_assert_cmpuint (report->protocol_keys->len, ==, 2);
    g_assert_cmpstr (report->protocol_keys->pdata[0], ==, "budget");
    g_assert_cmpstr (report->protocol_keys->pdata[1], ==, "student.quantizer.per_channel");
    g_assert_nonnull (strstr (report->common_protocol, "teacher 0123456789ab"));
    g_assert_nonnull (strstr (report->common_protocol, "evaluated on the whole test split"));

    g_autofree char *md = dfq_report_to_markdown (report);
    g_assert_nonnull (strstr (md, "**Protocols differ between rows** (budget, student.quantizer.per_channel)"));
    g_assert_nonnull (strstr (md, "| 3 | 52.00 ± 2.00 | 53.00 ± 2.00 | 80.00 | s1 50.00/51.00, s2 52.00/53.00, "
                                  "s3 54.00/55.00 | 2: s1 duplicate s4 diverged |"));
    g_assert_nonnull (strstr (md, "| crash-s1 | none / uniform / kd+ce | W4A4 | 1 | crashed | signal 11 "
                                  "(Segmentation fault); log: crash-test: segfaulting |"));
    g_assert_nonnull (strstr (md, "| a-s4 | gdfq / uniform / kd+ce | W4A4 | 4 | diverged | student loss is nan"));
    g_test_message ("%s", md);

    g_autofree char *csv = dfq_report_to_csv (report);
    g_auto (GStrv) rows = g_strsplit (csv, "\n", -1);
    g_assert_cmpuint (g_strv_length (rows), ==, 1 + 5 + 1); /* header, groups, "" after the last newline */
    g_assert_nonnull (strstr (csv, ",3,52.0000,2.0000,53.0000,2.0000,80.0000,1;2;3,50.0000;52.0000;54.0000,"));
    g_assert_null (strstr (md, "(0:03)")); /* no timings unless asked for */
    g_assert_null (strstr (csv, "wall"));

    /* --timings: each run's wall time, in the per-seed cell and a last CSV column */
    report->timings = TRUE;
    g_autofree char *md_t = dfq_report_to_markdown (report);
    g_assert_nonnull (strstr (md_t, "s1 50.00/51.00 (0:03), s2 52.00/53.00 (0:03), s3 54.00/55.00 (0:03) |"));
    g_autofree char *csv_t = dfq_report_to_csv (report);
    g_assert_nonnull (strstr (csv_t, ",not_averaged,wall_seconds_per_seed\n"));
    g_assert_nonnull (strstr (csv_t, ",2: s1 duplicate s4 diverged,3.0000;3.0000;3.0000\n"));
    report->timings = FALSE;
}

/* A sweep over quantizers (uniform vs adaround vs genie-m, two uniform
 * seeds), plus @extra runs of its own. */
static DfqReport *
quantizer_report (const char *name, gboolean extra)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *root = g_build_filename (tmpdir, name, NULL);
    const char *u1[] = { "seed=1", NULL }, *u2[] = { "seed=2", NULL };
    const char *ada[] = { "seed=1", "student.quantizer={use: adaround, w_bits: 4, a_bits: 4}", NULL };
    const char *gm[] = { "seed=1", "student.quantizer={use: genie-m, w_bits: 4, a_bits: 4}", NULL };
    make_run (root, "uniform-s1", u1, "finished", 50, 51, NULL);
    make_run (root, "uniform-s2", u2, "finished", 52, 53, NULL);
    make_run (root, "adaround-s1", ada, "finished", 60, 61, NULL);
    make_run (root, "genie-m-s1", gm, "finished", 62, 63, NULL);
    if (extra) {
        /* real protocol differences: another evaluation split, other
         * reconstruction steps, another granularity of the same quantizer */
        const char *split[] = { "seed=1", "eval.split=train", NULL };
        const char *recon[] = { "seed=1", "student.quantizer={use: adaround, w_bits: 4, a_bits: 4}",
                                "reconstruct.iters=300", NULL };
        const char *pt[] = { "seed=1", "student.quantizer.per_channel=false", NULL };
        make_run (root, "uniform-train-split-s1", split, "finished", 70, 71, NULL);
        make_run (root, "adaround-recon300-s1", recon, "finished", 64, 65, NULL);
        make_run (root, "uniform-per-tensor-s1", pt, "finished", 40, 41, NULL);
    }
    DfqReport *report = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    return report;
}

static void
test_report_quantizer_choice (void)
{
    g_test_summary ("Rows that differ in the quantizer (uniform vs adaround vs genie-m) compare methods: their "
                    "parameter sets differ, but no protocol warning; the shared protocol names no quantizer "
                    "parameter");
    g_autoptr (DfqReport) report = quantizer_report ("report-quantizers", FALSE);
    g_assert_cmpuint (report->groups->len, ==, 3);
    g_assert_cmpuint (report->protocol_keys->len, ==, 0);
    g_assert_null (strstr (report->common_protocol, "quantizer"));
    g_assert_nonnull (strstr (report->common_protocol, "evaluated on the whole test split"));
    g_autofree char *md = dfq_report_to_markdown (report);
    g_assert_null (strstr (md, "Protocols differ"));
    g_assert_nonnull (strstr (md, "Protocol of every row: "));
    g_assert_null (strstr (md, "| protocol |"));
}

static void
test_report_quantizer_choice_protocol (void)
{
    g_test_summary ("In a sweep over quantizers, real protocol differences still warn: another eval split, "
                    "other reconstruct.iters, and a quantizer parameter between rows of the same quantizer");
    g_autoptr (DfqReport) report = quantizer_report ("report-quantizers-protocols", TRUE);
    g_assert_cmpuint (report->groups->len, ==, 6);
    g_assert_cmpuint (report->protocol_keys->len, ==, 3);
    g_assert_cmpstr (report->protocol_keys->pdata[0], ==, "eval.split");
    g_assert_cmpstr (report->protocol_keys->pdata[1], ==, "reconstruct.iters");
    g_assert_cmpstr (report->protocol_keys->pdata[2], ==, "student.quantizer.per_channel");
    g_autofree char *md = dfq_report_to_markdown (report);
    g_assert_nonnull (strstr (md, "**Protocols differ between rows** (eval.split, reconstruct.iters, "
                                  "student.quantizer.per_channel)"));
    g_test_message ("%s", md);
}

static void
test_report_use_labels (void)
{
    g_test_summary ("Rows that differ by a plugin choice X.use are labelled by it alone when that keeps every "
                    "row distinct (not by the parameters present in one row and absent in the other); where "
                    "two rows share X.use, X's differing parameters stay in the labels");
    g_autoptr (GError) error = NULL;
    g_autofree char *root = g_build_filename (tmpdir, "report-use-labels", NULL);
    const char *adam[] = { "seed=1", "synthesizer.optimizer={use: adam, lr: 1e-3, betas: [0.5, 0.999]}", NULL };
    const char *sgd[] = { "seed=1", "synthesizer.optimizer={use: sgd, lr: 1e-3, momentum: 0.9}", NULL };
    make_run (root, "adam-s1", adam, "finished", 50, 51, NULL);
    make_run (root, "sgd-s1", sgd, "finished", 52, 53, NULL);
    g_autoptr (DfqReport) two = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (two->groups->len, ==, 2);
    g_assert_nonnull (find_group (two, "[synthesizer.optimizer.use=adam]", "W4A4"));
    g_assert_nonnull (find_group (two, "[synthesizer.optimizer.use=sgd]", "W4A4"));

    const char *sgd5[] = { "seed=1", "synthesizer.optimizer={use: sgd, lr: 1e-3, momentum: 0.5}", NULL };
    make_run (root, "sgd5-s1", sgd5, "finished", 54, 55, NULL);
    g_autoptr (DfqReport) three = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (three->groups->len, ==, 3);
    g_assert_nonnull (find_group (three, "synthesizer.optimizer.momentum=0.5", "W4A4"));
    g_assert_nonnull (find_group (three, "synthesizer.optimizer.momentum=0.9", "W4A4"));
}

/* trial.json with the overrides @sets, as dfq sweep writes it */
static void
write_trial_overrides (const char *root, const char *name, const char *const *sets)
{
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "id");
    json_builder_add_string_value (b, name);
    json_builder_set_member_name (b, "status");
    json_builder_add_string_value (b, "finished");
    json_builder_set_member_name (b, "overrides");
    json_builder_begin_array (b);
    for (guint i = 0; sets[i] != NULL; i++)
        json_builder_add_string_value (b, sets[i]);
    json_builder_end_array (b);
    json_builder_end_object (b);
    g_autoptr (JsonNode) root_node = json_builder_get_root (b);
    g_autofree char *json = json_to_string (root_node, TRUE);
    g_autofree char *path = g_build_filename (root, name, "trial.json", NULL);
    g_assert_true (g_file_set_contents (path, json, -1, NULL));
}

static void
test_report_default_params (void)
{
    g_test_summary ("A parameter the resolved config leaves out because it equals its plugin's default "
                    "(uniform's percentile 99.99) but the sweep set explicitly is labelled from the trial's "
                    "overrides, not as (absent); a trial without overrides keeps (absent)");
    g_autoptr (GError) error = NULL;
    g_autofree char *root = g_build_filename (tmpdir, "report-default-params", NULL);
    const char *p999[] = { "seed=1", "student.quantizer={act_range: percentile, percentile: 99.9}", NULL };
    const char *p9999[] = { "seed=1", "student.quantizer={act_range: percentile, percentile: 99.99}", NULL };
    make_run (root, "p999-s1", p999, "finished", 50, 51, NULL);
    make_run (root, "p9999-s1", p9999, "finished", 52, 53, NULL);
    g_autofree char *config_path = g_build_filename (root, "p9999-s1", "config.yaml", NULL);
    g_autofree char *config = NULL;
    g_assert_true (g_file_get_contents (config_path, &config, NULL, NULL));
    g_assert_null (strstr (config, "99.99")); /* the premise: the default is left out */

    g_autoptr (DfqReport) bare = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_assert_nonnull (find_group (bare, "student.quantizer.percentile=(absent)", "W4A4"));

    write_trial_overrides (root, "p999-s1", p999);
    write_trial_overrides (root, "p9999-s1", p9999);
    g_autoptr (DfqReport) report = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (report->groups->len, ==, 2);
    g_assert_nonnull (find_group (report, "student.quantizer.percentile=99.99", "W4A4"));
    g_assert_nonnull (find_group (report, "student.quantizer.percentile=99.9]", "W4A4"));
    g_autofree char *md = dfq_report_to_markdown (report);
    g_assert_null (strstr (md, "(absent)"));
}

static void
test_report_html (void)
{
    g_test_summary ("report.html is self-contained (inline SVG, no external reference) and, where Chromium is "
                    "installed, renders to a PNG with tools/render-report.sh");
    g_autoptr (GError) error = NULL;
    g_autofree char *root = report_root ();
    g_autoptr (DfqReport) report = dfq_report_new_from_dir (root, &error);
    g_assert_no_error (error);
    g_autofree char *out = g_build_filename (tmpdir, "report-out", NULL);
    g_assert_true (dfq_report_write (report, out, &error));
    g_assert_no_error (error);
    g_autofree char *html_path = g_build_filename (out, "report.html", NULL);
    g_autofree char *html = NULL;
    g_assert_true (g_file_get_contents (html_path, &html, NULL, NULL));
    g_assert_true (g_str_has_prefix (html, "<!DOCTYPE html>"));
    g_assert_nonnull (strstr (html, "<svg"));
    g_assert_nonnull (strstr (html, "<polyline"));
    for (const char *bad = "src=\0href=\0url(\0<script\0@import\0"; *bad; bad += strlen (bad) + 1)
        g_assert_null (strstr (html, bad));
    /* every tag of the table rows and SVG elements closes */
    g_auto (GStrv) opened = g_strsplit (html, "<svg", -1);
    g_auto (GStrv) closed = g_strsplit (html, "</svg>", -1);
    g_assert_cmpuint (g_strv_length (opened), ==, g_strv_length (closed));

    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "..", "tools", "render-report.sh", NULL);
    g_autofree char *png = g_build_filename (tmpdir, "report.png", NULL);
    const char *argv[] = { "bash", script, html_path, png, NULL };
    gint status = 0;
    g_autofree char *out_text = NULL, *err = NULL; /* stdout is TAP: keep the script's output off it */
    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out_text, &err, &status,
                                 &error));
    g_assert_no_error (error);
    if (WIFEXITED (status) && WEXITSTATUS (status) == 77) {
        g_test_skip ("no Chromium (apt-get install -y chromium): the page was not rendered");
        return;
    }
    if (!g_spawn_check_wait_status (status, &error))
        g_test_fail_printf ("render-report.sh failed: %s\n%s", error->message, err);
    g_autofree char *data = NULL;
    gsize length = 0;
    g_assert_true (g_file_get_contents (png, &data, &length, NULL));
    g_assert_cmpuint (length, >, 10000);
    g_assert_cmpmem (data, 8, "\x89PNG\r\n\x1a\n", 8);
}

static void
rm_rf (const char *path)
{
    if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *d = g_dir_open (path, 0, NULL);
        const char *n;
        while (d != NULL && (n = g_dir_read_name (d)) != NULL) {
            g_autofree char *child = g_build_filename (path, n, NULL);
            rm_rf (child);
        }
        if (d != NULL)
            g_dir_close (d);
        g_rmdir (path);
    } else {
        g_unlink (path);
    }
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    dfq_registry_scan (registry, NULL, failures);
    g_assert_cmpuint (failures->len, ==, 0);
    tmpdir = g_dir_make_tmp ("dfq-sweep-XXXXXX", NULL);
    g_test_add_func ("/sweep/expand/order", test_expand_order);
    g_test_add_func ("/sweep/expand/ids", test_expand_ids);
    g_test_add_func ("/sweep/expand/set-after-axes", test_expand_set_after_axes);
    g_test_add_func ("/sweep/file/errors", test_errors);
    g_test_add_func ("/sweep/flow", test_flow);
    g_test_add_func ("/report/groups", test_report_groups);
    g_test_add_func ("/report/quantizer-choice", test_report_quantizer_choice);
    g_test_add_func ("/report/quantizer-choice-protocol", test_report_quantizer_choice_protocol);
    g_test_add_func ("/report/use-labels", test_report_use_labels);
    g_test_add_func ("/report/default-params", test_report_default_params);
    g_test_add_func ("/report/html", test_report_html);
    int rc = g_test_run ();
    rm_rf (tmpdir);
    g_free (tmpdir);
    dfq_registry_free (registry);
    return rc;
}
