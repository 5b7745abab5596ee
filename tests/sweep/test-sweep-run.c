/* dfq sweep end to end (tests/sweep): trials of the GDFQ smoke pipeline on a
 * tiny teacher trained here, run as child processes of the dfq binary.
 * - one trial crashes (the crash-test fixture plugin segfaults) and one
 *   diverges: the others finish, both failures are recorded (exit signal,
 *   error, log tail) and reported, and a rerun skips what finished;
 * - a sweep killed (SIGKILL) while its second trial trains, then rerun:
 *   the finished trial is not rerun, the killed one resumes from its
 *   checkpoint, and the report equals an uninterrupted sweep's;
 * - SIGINT stops the running trials cleanly, recorded as interrupted.
 * Skipped when Fashion-MNIST is not installed. */
#include <signal.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include "sweep/dfq-sweep-private.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;
static char *tmpdir;
static char *teacher_weights; /* NULL when Fashion-MNIST is absent */

static char *
smoke_pipeline (void)
{
    return g_test_build_filename (G_TEST_DIST, "..", "pipelines", "smoke-gdfq.yaml", NULL);
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
    g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "pipelines", "smoke-teacher-tiny.yaml", NULL);
    const char *sets[] = { "train.epochs=2", NULL };
    g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (registry, path, sets, &error);
    g_assert_no_error (error);
    g_autofree char *dir = g_build_filename (tmpdir, "teacher", NULL);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 500 };
    DfqRunResult r;
    g_assert_true (dfq_runner_train (registry, p, &o, &r, &error));
    g_assert_no_error (error);
    teacher_weights = g_build_filename (dir, "model.safetensors", NULL);
    dfq_run_result_clear (&r);
}

/* A sweep of the smoke pipeline on the tiny teacher: 2 epochs x 2 iterations
 * unless @body sets them. */
static char *
write_sweep (const char *name, const char *body)
{
    g_autofree char *base = smoke_pipeline ();
    g_autofree char *text = g_strdup_printf ("version: 1\nname: %s\npipeline: %s\neval_limit: 200\n%s"
                                             "  teacher.weights: %s\n",
                                             name, base, body, teacher_weights);
    g_autofree char *file = g_strdup_printf ("%s.yaml", name);
    char *path = g_build_filename (tmpdir, file, NULL);
    g_assert_true (g_file_set_contents (path, text, -1, NULL));
    return path;
}

/* Runs `dfq ARGS...` to completion; returns its exit status (-signal if killed). */
static int
run_dfq (char **out, const char *first, ...)
{
    g_autoptr (GPtrArray) argv = g_ptr_array_new ();
    g_ptr_array_add (argv, (gpointer) DFQ_CLI_PATH);
    va_list ap;
    va_start (ap, first);
    for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
        g_ptr_array_add (argv, (gpointer) a);
    va_end (ap);
    g_ptr_array_add (argv, NULL);
    g_autoptr (GError) error = NULL;
    g_autofree char *stdout_text = NULL, *stderr_text = NULL;
    gint status = 0;
    g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &stdout_text,
                                 &stderr_text, &status, &error));
    g_assert_no_error (error);
    g_test_message ("dfq %s ...:\n%s%s", first, stdout_text, stderr_text);
    if (out != NULL)
        *out = g_strconcat (stdout_text, stderr_text, NULL);
    if (WIFSIGNALED (status))
        return -WTERMSIG (status);
    return WEXITSTATUS (status);
}

static JsonObject *
load_json (const char *dir, const char *name, JsonParser **parser)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    return dfq_sweep_json_load_object (path, parser);
}

/* The index entry of the trial whose label starts with @label. */
static JsonObject *
index_trial (JsonObject *index, const char *label)
{
    JsonArray *trials = json_object_get_array_member (index, "trials");
    for (guint i = 0; i < json_array_get_length (trials); i++) {
        JsonObject *t = json_array_get_object_element (trials, i);
        if (g_str_has_prefix (json_object_get_string_member (t, "label"), label))
            return t;
    }
    g_assert_not_reached ();
    return NULL;
}

static guint
count_substrings (const char *text, const char *needle)
{
    guint n = 0;
    for (const char *p = strstr (text, needle); p != NULL; p = strstr (p + 1, needle))
        n++;
    return n;
}

static char *
read_text (const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    char *text = NULL;
    if (!g_file_get_contents (path, &text, NULL, NULL))
        return g_strdup ("");
    return text;
}

static void
test_failures (void)
{
    g_test_summary ("A trial that segfaults and one that diverges are recorded (exit signal, error, log tail) "
                    "while the others finish; dfq report lists both, averages neither; a rerun skips what finished");
    if (!need_teacher ())
        return;
    g_autofree char *sweep = write_sweep ("failures", "zip:\n"
                                                      "  seed: [1, 2, 1, 1]\n"
                                                      "  synthesizer: [{use: gdfq}, {use: gdfq}, {use: gdfq}, {use: crash-test}]\n"
                                                      "  train.optimizer.lr: [1e-4, 1e-4, 10, 1e-4]\n"
                                                      "  train.losses.0.weight: [1, 1, 1e9, 1]\n"
                                                      "set:\n"
                                                      "  train.epochs: 2\n"
                                                      "  train.iters: 2\n");
    g_autofree char *out = g_build_filename (tmpdir, "failures", NULL);
    g_autofree char *text = NULL;

    /* --dry-run lists the trials and their overrides and runs nothing */
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "--out", out, "--dry-run",
                              NULL),
                     ==, 0);
    g_assert_nonnull (strstr (text, "sweep failures: 4 trials"));
    g_assert_nonnull (strstr (text, "--set synthesizer={use: crash-test}"));
    g_assert_nonnull (strstr (text, "--set train.losses.0.weight=1e9"));
    g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
    g_clear_pointer (&text, g_free);
    /* without the fixture's directory the crash-test trial does not validate: nothing runs */
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "--out", out, NULL), ==, 2);
    g_assert_nonnull (strstr (text, "crash-test"));
    g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
    g_clear_pointer (&text, g_free);

    /* --only: a glob that matches nothing is an error listing the trials;
     * one that matches runs those trials only and leaves the others queued */
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "--out", out, "--only",
                              "seed=9*", NULL),
                     ==, 2);
    g_assert_nonnull (strstr (text, "--only 'seed=9*' matches no trial of failures"));
    g_assert_nonnull (strstr (text, "seed=1,crash-test"));
    g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
    g_clear_pointer (&text, g_free);
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "--out", out, "--only",
                              "seed=2,*", "--threads", "3", "--dry-run", NULL),
                     ==, 0);
    g_assert_nonnull (strstr (text, "-j 1, 3 threads per trial"));
    g_assert_cmpuint (count_substrings (text, "not selected (--only)"), ==, 3);
    g_assert_cmpuint (count_substrings (text, "to run"), ==, 1);
    g_clear_pointer (&text, g_free);
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "--out", out, "--only",
                              "seed=2,*", "--threads", "1", NULL),
                     ==, 0);
    g_assert_nonnull (strstr (text, "4 trials in"));
    g_assert_nonnull (strstr (text, ": 1 finished; 3 not selected (--only)\n"));
    g_clear_pointer (&text, g_free);
    {
        g_autoptr (JsonParser) only_parser = NULL;
        JsonObject *only_index = load_json (out, "sweep.json", &only_parser);
        g_assert_nonnull (only_index);
        JsonObject *only_counts = json_object_get_object_member (only_index, "counts");
        g_assert_cmpint (json_object_get_int_member (only_counts, "finished"), ==, 1);
        g_assert_cmpint (json_object_get_int_member (only_counts, "queued"), ==, 3);
        JsonObject *ran = NULL;
        JsonArray *all = json_object_get_array_member (only_index, "trials");
        for (guint i = 0; i < json_array_get_length (all); i++) {
            JsonObject *t = json_array_get_object_element (all, i);
            if (g_str_equal (json_object_get_string_member (t, "status"), "finished"))
                ran = t;
        }
        g_assert_nonnull (ran);
        g_assert_cmpint (json_object_get_int_member (ran, "threads"), ==, 1); /* --threads */
        JsonObject *held = index_trial (only_index, "seed=1,crash-test");
        g_autofree char *held_dir = g_build_filename (out, json_object_get_string_member (held, "dir"), NULL);
        g_assert_false (g_file_test (held_dir, G_FILE_TEST_EXISTS));
    }

    /* the whole sweep: the seed-2 trial is done, the others run */
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "-j", "2", "--out", out, NULL),
                     ==, 1);
    g_assert_nonnull (strstr (text, "2 finished, 1 diverged, 1 crashed; 1 skipped (done before this run)\n"));
    g_clear_pointer (&text, g_free);
    g_autoptr (JsonParser) parser = NULL;
    JsonObject *index = load_json (out, "sweep.json", &parser);
    g_assert_nonnull (index);
    JsonObject *counts = json_object_get_object_member (index, "counts");
    g_assert_cmpint (json_object_get_int_member (counts, "finished"), ==, 2);
    g_assert_cmpint (json_object_get_int_member (counts, "diverged"), ==, 1);
    g_assert_cmpint (json_object_get_int_member (counts, "crashed"), ==, 1);
    JsonObject *crash = index_trial (index, "seed=1,crash-test");
    g_assert_cmpstr (json_object_get_string_member (crash, "status"), ==, "crashed");
    g_assert_true (g_str_has_prefix (json_object_get_string_member (crash, "exit"), "signal 11"));
    g_assert_nonnull (strstr (json_object_get_string_member (crash, "log_tail"), "segfaulting on purpose"));
    JsonObject *diverged = index_trial (index, "seed=1,gdfq,lr=10");
    g_assert_cmpstr (json_object_get_string_member (diverged, "status"), ==, "diverged");
    g_assert_nonnull (strstr (json_object_get_string_member (diverged, "error"), "diverged"));
    g_assert_cmpstr (json_object_get_string_member (diverged, "exit"), ==, "exit status 1");

    /* every trial ran the config the sweep expanded */
    JsonArray *trials = json_object_get_array_member (index, "trials");
    for (guint i = 0; i < json_array_get_length (trials); i++) {
        JsonObject *t = json_array_get_object_element (trials, i);
        g_autofree char *dir = g_build_filename (out, json_object_get_string_member (t, "dir"), NULL);
        g_autofree char *config = read_text (dir, "config.yaml");
        g_autofree char *id = dfq_sweep_config_id (config, 200);
        g_assert_cmpstr (id, ==, json_object_get_string_member (t, "id"));
        g_autofree char *log = read_text (dir, "log.txt");
        g_assert_cmpuint (count_substrings (log, "==== dfq sweep failures"), ==, 1);
    }

    /* the report flags both failures and averages the two finished seeds */
    g_assert_cmpint (run_dfq (&text, "report", out, NULL), ==, 0);
    g_assert_nonnull (strstr (text, "## Runs not averaged"));
    g_assert_nonnull (strstr (text, "| crashed | signal 11 (Segmentation fault)"));
    g_assert_nonnull (strstr (text, "| diverged | "));
    g_assert_nonnull (strstr (text, "report.html"));
    g_clear_pointer (&text, g_free);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqReport) report = dfq_report_new_from_dir (out, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (report->groups->len, ==, 3);
    guint averaged = 0, failed = 0;
    for (guint i = 0; i < report->groups->len; i++) {
        DfqReportGroup *g = report->groups->pdata[i];
        averaged += g->n;
        failed += g->n_failed;
        if (g->n == 2)
            g_assert_nonnull (strstr (g->label, "gdfq / uniform / kd+ce"));
    }
    g_assert_cmpuint (averaged, ==, 2);
    g_assert_cmpuint (failed, ==, 2);

    /* rerun: finished and diverged trials are skipped, the crash is retried */
    g_assert_cmpint (run_dfq (&text, "--plugin-path", CRASH_PLUGIN_DIR, "sweep", sweep, "-j", "2", "--out", out, NULL),
                     ==, 1);
    g_assert_nonnull (strstr (text, "2 finished, 1 diverged, 1 crashed; 3 skipped (done before this run)"));
    for (guint i = 0; i < json_array_get_length (trials); i++) {
        JsonObject *t = json_array_get_object_element (trials, i);
        g_autofree char *dir = g_build_filename (out, json_object_get_string_member (t, "dir"), NULL);
        g_autofree char *log = read_text (dir, "log.txt");
        gboolean crashed = g_str_equal (json_object_get_string_member (t, "status"), "crashed");
        g_assert_cmpuint (count_substrings (log, "==== dfq sweep failures"), ==, crashed ? 2 : 1);
    }
}

/* The trial directories under @out, sorted. */
static GPtrArray *
trial_dirs (const char *out)
{
    GPtrArray *dirs = g_ptr_array_new_with_free_func (g_free);
    GDir *d = g_dir_open (out, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
        g_autofree char *path = g_build_filename (out, name, NULL);
        if (g_file_test (path, G_FILE_TEST_IS_DIR))
            g_ptr_array_add (dirs, g_steal_pointer (&path));
    }
    if (d != NULL)
        g_dir_close (d);
    g_ptr_array_sort (dirs, (GCompareFunc) g_strcmp0);
    return dirs;
}

static gboolean
has_result (const char *dir, const char *status)
{
    g_autofree char *text = read_text (dir, "result.json");
    g_autofree char *needle = g_strdup_printf ("\"%s\"", status);
    return strstr (text, needle) != NULL;
}

static guint
metrics_lines (const char *dir)
{
    g_autofree char *text = read_text (dir, "metrics.jsonl");
    return count_substrings (text, "\n");
}

static GSubprocess *
spawn_sweep (const char *sweep, const char *out, const char *jobs)
{
    g_autoptr (GError) error = NULL;
    const char *argv[] = { DFQ_CLI_PATH, "sweep", sweep, "-j", jobs, "--out", out, NULL };
    GSubprocess *p = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                                        &error);
    g_assert_no_error (error);
    return p;
}

static void
test_kill_and_resume (void)
{
    g_test_summary ("A sweep killed (SIGKILL) while its second trial trains, then rerun: the finished trial is not "
                    "rerun, the killed one resumes from its checkpoint, and the report equals an uninterrupted "
                    "sweep's");
    if (!need_teacher ())
        return;
    g_autofree char *sweep = write_sweep ("kill", "seeds: [1, 2, 3]\nset:\n  train.epochs: 3\n  train.iters: 2\n");
    g_autofree char *a = g_build_filename (tmpdir, "a", "kill", NULL);
    g_autofree char *b = g_build_filename (tmpdir, "b", "kill", NULL);
    g_assert_cmpint (run_dfq (NULL, "sweep", sweep, "-j", "1", "--out", a, NULL), ==, 0);

    /* B: killed after its first trial finished, once the second has a checkpoint */
    g_autoptr (GSubprocess) proc = spawn_sweep (sweep, b, "1");
    gint64 deadline = g_get_monotonic_time () + 300 * G_USEC_PER_SEC;
    gboolean killed = FALSE;
    while (!killed && g_get_monotonic_time () < deadline) {
        g_usleep (50 * 1000);
        g_autoptr (GPtrArray) dirs = trial_dirs (b);
        guint finished = 0, training = 0;
        for (guint i = 0; i < dirs->len; i++) {
            g_autofree char *ckpt = g_build_filename (dirs->pdata[i], "checkpoint.safetensors", NULL);
            if (has_result (dirs->pdata[i], "finished"))
                finished++;
            else if (g_file_test (ckpt, G_FILE_TEST_EXISTS))
                training++;
        }
        g_assert_cmpuint (finished, <, 3);
        if (finished >= 1 && training >= 1) {
            g_subprocess_force_exit (proc); /* SIGKILL: no chance to clean up */
            killed = TRUE;
        }
    }
    g_assert_true (killed);
    g_subprocess_wait (proc, NULL, NULL);
    g_assert_true (g_subprocess_get_if_signaled (proc));
    g_usleep (300 * 1000); /* the children die with the sweep (PR_SET_PDEATHSIG) */

    g_autoptr (GPtrArray) before = trial_dirs (b);
    g_autoptr (GPtrArray) snapshots = g_ptr_array_new_with_free_func (g_free);
    char *resumed = NULL;
    for (guint i = 0; i < before->len; i++) {
        const char *dir = before->pdata[i];
        if (has_result (dir, "finished")) {
            g_ptr_array_add (snapshots, g_strdup (dir));
            g_ptr_array_add (snapshots, read_text (dir, "result.json"));
            g_ptr_array_add (snapshots, read_text (dir, "log.txt"));
        } else {
            g_autofree char *ckpt = g_build_filename (dir, "checkpoint.safetensors", NULL);
            if (g_file_test (ckpt, G_FILE_TEST_EXISTS))
                resumed = before->pdata[i];
        }
    }
    g_assert_cmpuint (snapshots->len, >=, 3);
    g_assert_nonnull (resumed);

    g_autofree char *text = NULL;
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "-j", "1", "--out", b, NULL), ==, 0);
    g_assert_nonnull (strstr (text, "3 finished"));
    /* finished trials were not rerun */
    for (guint i = 0; i < snapshots->len; i += 3) {
        g_autofree char *result = read_text (snapshots->pdata[i], "result.json");
        g_autofree char *log = read_text (snapshots->pdata[i], "log.txt");
        g_assert_cmpstr (result, ==, snapshots->pdata[i + 1]);
        g_assert_cmpstr (log, ==, snapshots->pdata[i + 2]);
    }
    /* the killed one resumed (a second attempt in its log, which says so) */
    g_autofree char *log = read_text (resumed, "log.txt");
    g_assert_cmpuint (count_substrings (log, "==== dfq sweep kill"), ==, 2);
    g_assert_cmpuint (metrics_lines (resumed), ==, 3);

    /* the same report as the uninterrupted sweep */
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqReport) ra = dfq_report_new_from_dir (a, &error);
    g_assert_no_error (error);
    g_autoptr (DfqReport) rb = dfq_report_new_from_dir (b, &error);
    g_assert_no_error (error);
    g_autofree char *ma = dfq_report_to_markdown (ra), *mb = dfq_report_to_markdown (rb);
    g_autofree char *ca = dfq_report_to_csv (ra), *cb = dfq_report_to_csv (rb);
    g_assert_cmpstr (ma, ==, mb);
    g_assert_cmpstr (ca, ==, cb);
    g_assert_cmpuint (((DfqReportGroup *) ra->groups->pdata[0])->n, ==, 3);
    g_test_message ("%s", mb);
}

static void
test_interrupt (void)
{
    g_test_summary ("SIGINT stops the running trials after their current step; they are recorded as interrupted "
                    "and the next run finishes them");
    if (!need_teacher ())
        return;
    g_autofree char *sweep = write_sweep ("interrupt", "seeds: [1, 2]\nset:\n  train.epochs: 3\n  train.iters: 2\n");
    g_autofree char *out = g_build_filename (tmpdir, "interrupt", NULL);
    g_autoptr (GSubprocess) proc = spawn_sweep (sweep, out, "2");
    gint64 deadline = g_get_monotonic_time () + 300 * G_USEC_PER_SEC;
    gboolean sent = FALSE;
    while (!sent && g_get_monotonic_time () < deadline) {
        g_usleep (50 * 1000);
        g_autoptr (GPtrArray) dirs = trial_dirs (out);
        for (guint i = 0; i < dirs->len && !sent; i++) {
            if (metrics_lines (dirs->pdata[i]) >= 1 && !has_result (dirs->pdata[i], "finished")) {
                g_subprocess_send_signal (proc, SIGINT);
                sent = TRUE;
            }
        }
    }
    g_assert_true (sent);
    g_subprocess_wait (proc, NULL, NULL);
    g_assert_true (g_subprocess_get_if_exited (proc));
    g_assert_cmpint (g_subprocess_get_exit_status (proc), ==, 1);
    g_autoptr (JsonParser) parser = NULL;
    JsonObject *index = load_json (out, "sweep.json", &parser);
    g_assert_nonnull (index);
    JsonObject *counts = json_object_get_object_member (index, "counts");
    g_assert_cmpint (json_object_get_int_member (counts, "interrupted"), >=, 1);
    g_assert_cmpint (json_object_get_int_member (counts, "running"), ==, 0);
    g_assert_cmpint (json_object_get_int_member (counts, "crashed"), ==, 0);
    g_assert_cmpint (json_object_get_int_member (counts, "failed"), ==, 0);

    g_autofree char *text = NULL;
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "-j", "2", "--out", out, NULL), ==, 0);
    g_assert_nonnull (strstr (text, "2 finished"));
}


int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_test_registry_new ();
    tmpdir = g_dir_make_tmp ("dfq-sweep-run-XXXXXX", NULL);
    setup_teacher ();
    g_test_add_func ("/sweep/run/failures", test_failures);
    g_test_add_func ("/sweep/run/kill-and-resume", test_kill_and_resume);
    g_test_add_func ("/sweep/run/interrupt", test_interrupt);
    int rc = g_test_run ();
    dfq_test_rm_rf (tmpdir);
    g_free (tmpdir);
    g_free (teacher_weights);
    dfq_registry_free (registry);
    return rc;
}
