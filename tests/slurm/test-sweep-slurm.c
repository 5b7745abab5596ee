/* dfq sweep --launcher slurm against a real single-node Slurm (tests/slurm),
 * started here with tools/slurm-local.sh (and stopped again if this test
 * started it). A 4-trial sweep of the GDFQ smoke pipeline on a tiny teacher:
 * - run by the local pool (beside the rest) and submitted to Slurm
 *   (--no-wait), in two array jobs when the test started the cluster with
 *   MaxArraySize 3: the batch script carries the options and the per-trial
 *   environment;
 * - one trial is cancelled with scancel while it trains, another is stopped
 *   by its time limit (SIGUSR1 before the limit, scontrol update TimeLimit=1):
 *   both exit with the requeue code and keep their checkpoints, the other two
 *   finish; --status says so;
 * - the rerun resubmits only those two, which resume (the metrics of the
 *   epochs before the stop are kept byte for byte, timings included), the
 *   others are not rerun, and report.csv is byte-identical to the local
 *   pool's.
 * Skipped when not root, when Slurm or munge is not installed, or when
 * Fashion-MNIST is absent. */
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include "sweep/dfq-sweep-private.h"
#include <dfq/dfq.h>

#define DEADLINE_SECONDS 900 /* generous: a loaded 2-core machine */

static DfqRegistry *registry;
static char *tmpdir;
static gboolean cluster_started; /* by this test: stop it at the end */

/* Runs @argv to completion; its exit status (-signal if killed). */
static int
run_argv (const char *const *argv, char **out)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *o = NULL, *e = NULL;
    gint status = 0;
    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e, &status, &error));
    g_assert_no_error (error);
    g_test_message ("%s %s ...:\n%s%s", argv[0], argv[1] ? argv[1] : "", o, e);
    if (out != NULL)
        *out = g_strconcat (o, e, NULL);
    if (WIFSIGNALED (status))
        return -WTERMSIG (status);
    return WEXITSTATUS (status);
}

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
    return run_argv ((const char *const *) argv->pdata, out);
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

static gboolean
has_file (const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    return g_file_test (path, G_FILE_TEST_EXISTS);
}

static guint
count_substrings (const char *text, const char *needle)
{
    guint n = 0;
    for (const char *p = strstr (text, needle); p != NULL; p = strstr (p + 1, needle))
        n++;
    return n;
}

/* The run directory under @out whose name starts with @label, or NULL. */
static char *
trial_dir (const char *out, const char *label)
{
    GDir *d = g_dir_open (out, 0, NULL);
    const char *name;
    char *found = NULL;
    while (d != NULL && found == NULL && (name = g_dir_read_name (d)) != NULL)
        if (g_str_has_prefix (name, label))
            found = g_build_filename (out, name, NULL);
    if (d != NULL)
        g_dir_close (d);
    return found;
}

/* Why this machine cannot run the test, or NULL. */
static const char *
slurm_missing (void)
{
    if (getuid () != 0)
        return "needs root: it starts munged, slurmctld and slurmd (tools/slurm-local.sh)";
    const char *tools[] = { "sbatch", "squeue", "scancel", "scontrol", "sinfo", "slurmctld", "slurmd", "munged" };
    for (guint i = 0; i < G_N_ELEMENTS (tools); i++) {
        g_autofree char *p = g_find_program_in_path (tools[i]);
        g_autofree char *sbin = g_build_filename ("/usr/sbin", tools[i], NULL);
        if (p == NULL && !g_file_test (sbin, G_FILE_TEST_IS_EXECUTABLE))
            return "Slurm is not installed (apt-get install slurm-wlm munge)";
    }
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqDataset) probe = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    if (probe == NULL)
        return "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";
    return NULL;
}

static void
start_cluster (void)
{
    const char *status[] = { "bash", SLURM_LOCAL_SH, "status", NULL };
    if (run_argv (status, NULL) == 0)
        return; /* somebody's cluster: use it, leave it running */
    /* MaxArraySize 3: the 4 trials go in two chunks (3 + 1) */
    const char *start[] = { "env", "SLURM_LOCAL_MAX_ARRAY_SIZE=3", "bash", SLURM_LOCAL_SH, "start", NULL };
    g_autofree char *out = NULL;
    int rc = run_argv (start, &out);
    if (rc != 0)
        g_error ("tools/slurm-local.sh start failed (%d):\n%s", rc, out);
    cluster_started = TRUE;
}

static char *
train_teacher (void)
{
    g_autoptr (GError) error = NULL;
    g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "pipelines", "smoke-teacher-tiny.yaml", NULL);
    const char *sets[] = { "train.epochs=2", NULL };
    g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (registry, path, sets, &error);
    g_assert_no_error (error);
    g_autofree char *dir = g_build_filename (tmpdir, "teacher", NULL);
    DfqRunOptions o = { .run_dir = dir, .eval_limit = 500 };
    DfqRunResult r;
    g_assert_true (dfq_runner_train (registry, p, &o, &r, &error));
    g_assert_no_error (error);
    dfq_run_result_clear (&r);
    return g_build_filename (dir, "model.safetensors", NULL);
}

/* Four trials: two short ones; seed 3 (6 epochs of 20 iterations) is the one
 * scancel stops, seed 4 (10 epochs of 100 iterations, over a minute on one
 * core) the one its time limit stops. */
static char *
write_sweep (const char *teacher)
{
    g_autofree char *base = g_test_build_filename (G_TEST_DIST, "..", "pipelines", "smoke-gdfq.yaml", NULL);
    g_autofree char *text = g_strdup_printf ("version: 1\nname: slurm-smoke\npipeline: %s\neval_limit: 200\n"
                                             "zip:\n"
                                             "  seed: [1, 2, 3, 4]\n"
                                             "  train.epochs: [2, 2, 6, 10]\n"
                                             "  train.iters: [2, 2, 20, 100]\n"
                                             "set:\n"
                                             "  teacher.weights: %s\n",
                                             base, teacher);
    char *path = g_build_filename (tmpdir, "slurm-smoke.yaml", NULL);
    g_assert_true (g_file_set_contents (path, text, -1, NULL));
    return path;
}

/* The array jobs submitted so far (jobs.json), as squeue's --jobs takes them. */
static char *
submitted_jobs (const char *out, guint *n)
{
    g_autofree char *path = g_build_filename (out, "slurm", "jobs.json", NULL);
    g_autoptr (JsonParser) parser = NULL;
    JsonObject *o = dfq_sweep_json_load_object (path, &parser);
    g_assert_nonnull (o);
    JsonArray *subs = json_object_get_array_member (o, "submissions");
    *n = json_array_get_length (subs);
    GString *jobs = g_string_new (NULL);
    for (guint i = 0; i < *n; i++)
        g_string_append_printf (jobs, "%s%s", i ? "," : "",
                                json_object_get_string_member (json_array_get_object_element (subs, i), "job"));
    return g_string_free (jobs, FALSE);
}

/* The Slurm task ("<job>_<task>") of a trial, from its trial.json. */
static char *
slurm_task (const char *dir)
{
    g_autofree char *path = g_build_filename (dir, "trial.json", NULL);
    g_autoptr (JsonParser) parser = NULL;
    JsonObject *o = dfq_sweep_json_load_object (path, &parser);
    g_assert_nonnull (o);
    return g_strdup (json_object_get_string_member (o, "slurm_job"));
}

/* MaxArraySize of the running cluster. */
static guint
max_array_size (void)
{
    const char *argv[] = { "scontrol", "show", "config", NULL };
    g_autofree char *out = NULL;
    g_assert_cmpint (run_argv (argv, &out), ==, 0);
    const char *line = strstr (out, "MaxArraySize");
    g_assert_nonnull (line);
    return (guint) g_ascii_strtoull (strchr (line, '=') + 1, NULL, 10);
}

static gboolean
jobs_in_squeue (const char *jobs)
{
    const char *argv[] = { "squeue", "--noheader", "--array", "--jobs", jobs, "--format=%i", NULL };
    g_autofree char *out = NULL;
    run_argv (argv, &out);
    return g_strstrip (out)[0] != '\0';
}

/* While the first submission runs: scancel the seed-3 task once it has a
 * checkpoint, cut the seed-4 task's time limit to a minute once it has one
 * (Slurm then sends SIGUSR1, --signal=B:USR1@120), and wait for the arrays. */
static void
disrupt_and_wait (const char *out, const char *jobs)
{
    gboolean cancelled = FALSE, limited = FALSE;
    gint64 deadline = g_get_monotonic_time () + DEADLINE_SECONDS * G_USEC_PER_SEC;
    while (g_get_monotonic_time () < deadline) {
        g_usleep (100 * 1000);
        g_autofree char *d3 = trial_dir (out, "seed=3,");
        g_autofree char *d4 = trial_dir (out, "seed=4,");
        if (!cancelled && d3 != NULL && has_file (d3, "checkpoint.safetensors")) {
            g_assert_false (has_file (d3, "result.json")); /* it must still be training */
            g_autofree char *task = slurm_task (d3);
            const char *argv[] = { "scancel", task, NULL };
            g_assert_cmpint (run_argv (argv, NULL), ==, 0);
            cancelled = TRUE;
        }
        if (!limited && d4 != NULL && has_file (d4, "checkpoint.safetensors")) {
            g_autofree char *task = slurm_task (d4);
            g_autofree char *id = g_strdup_printf ("JobId=%s", task);
            const char *argv[] = { "scontrol", "update", id, "TimeLimit=1", NULL };
            g_assert_cmpint (run_argv (argv, NULL), ==, 0);
            limited = TRUE;
        }
        if (cancelled && limited && !jobs_in_squeue (jobs))
            break;
        if (cancelled && limited)
            g_usleep (900 * 1000);
    }
    g_assert_true (cancelled);
    g_assert_true (limited);
    g_assert_false (jobs_in_squeue (jobs));
}

static void
assert_script (const char *out)
{
    g_autofree char *dir = g_build_filename (out, "slurm", NULL);
    g_autofree char *script = read_text (dir, "sweep.sbatch");
    g_assert_nonnull (strstr (script, "#SBATCH --cpus-per-task=1\n"));
    g_assert_nonnull (strstr (script, "#SBATCH --signal=B:USR1@120\n"));
    g_assert_nonnull (strstr (script, "#SBATCH --partition=debug\n"));
    g_assert_nonnull (strstr (script, "#SBATCH --time=30\n"));
    g_assert_nonnull (strstr (script, "#SBATCH --comment=dfq-test\n"));
    g_assert_nonnull (strstr (script, "export DFQ_PLUGIN_PATH="));
    g_assert_nonnull (strstr (script, "export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads\n"));
    g_assert_nonnull (strstr (script, "'" DFQ_CLI_PATH "' 'run' "));
}

static void
test_slurm_sweep (void)
{
    g_test_summary ("A 4-trial sweep through a real Slurm: one trial cancelled with scancel and one stopped by its "
                    "time limit keep their checkpoints; the rerun resubmits only them, they resume, the others are "
                    "not rerun, and report.csv is byte-identical to the local pool's");
    const char *missing = slurm_missing ();
    if (missing != NULL) {
        g_test_skip (missing);
        return;
    }
    gint64 t0 = g_get_monotonic_time ();
    start_cluster ();
    g_autofree char *teacher = train_teacher ();
    g_autofree char *sweep = write_sweep (teacher);
    g_autofree char *a = g_build_filename (tmpdir, "local", NULL);
    g_autofree char *b = g_build_filename (tmpdir, "slurm", NULL);
    g_autofree char *text = NULL;
    /* the local pool runs beside the Slurm phase: its long trial would leave a core idle */
    g_autoptr (GError) error = NULL;
    const char *local_argv[] = { DFQ_CLI_PATH, "sweep", sweep, "--out", a, "-j", "2", "--threads", "1", NULL };
    g_autoptr (GSubprocess) local = g_subprocess_newv (local_argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                                                       G_SUBPROCESS_FLAGS_STDERR_SILENCE, &error);
    g_assert_no_error (error);

    /* submit and return; the batch script carries the options */
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "--out", b, "--launcher", "slurm", "--no-wait", "--threads", "1",
                              "--partition", "debug", "--time", "30", "--sbatch-arg=--comment=dfq-test", NULL),
                     ==, 0);
    /* chunked by MaxArraySize (3 when this test started the cluster) */
    guint max = max_array_size (), n_submissions = 0;
    g_autofree char *jobs = submitted_jobs (b, &n_submissions);
    g_assert_cmpuint (n_submissions, ==, (4 + max - 1) / max);
    g_assert_nonnull (strstr (text, max >= 4 ? "submitted 4 trials as Slurm job array" : "a further chunk: MaxArraySize"));
    g_clear_pointer (&text, g_free);
    assert_script (b);
    disrupt_and_wait (b, jobs);

    /* two finished, two stopped with the requeue code and their checkpoints */
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "--out", b, "--status", NULL), ==, 0);
    g_assert_nonnull (strstr (text, "4 trials: 2 finished, 0 running, 0 queued, 2 interrupted"));
    g_assert_nonnull (strstr (text, "exit status 75 after SIGTERM"));
    g_assert_nonnull (strstr (text, "exit status 75 after SIGUSR1"));
    g_clear_pointer (&text, g_free);
    const char *labels[] = { "seed=1,", "seed=2,", "seed=3,", "seed=4," };
    char *dirs[4];
    char *snapshots[4];
    for (guint i = 0; i < 4; i++) {
        dirs[i] = trial_dir (b, labels[i]);
        g_assert_nonnull (dirs[i]);
        if (i < 2) {
            g_assert_true (has_file (dirs[i], "result.json"));
            snapshots[i] = g_strconcat (read_text (dirs[i], "result.json"), read_text (dirs[i], "log.txt"), NULL);
        } else {
            g_assert_false (has_file (dirs[i], "result.json"));
            g_assert_true (has_file (dirs[i], "checkpoint.safetensors"));
            snapshots[i] = read_text (dirs[i], "metrics.jsonl");
            g_assert_cmpuint (count_substrings (snapshots[i], "\n"), >=, 1);
            g_autofree char *done = read_text (dirs[i], "slurm.done");
            g_autofree char *task = slurm_task (dirs[i]);
            g_autofree char *want = g_strdup_printf ("%s 75 %s\n", task, i == 2 ? "TERM" : "USR1");
            g_assert_cmpstr (done, ==, want);
        }
    }

    /* the rerun resubmits the two, follows them and collects */
    g_assert_cmpint (run_dfq (&text, "sweep", sweep, "--out", b, "--launcher", "slurm", "--threads", "1", "--partition",
                              "debug", "--time", "30", NULL),
                     ==, 0);
    g_assert_nonnull (strstr (text, "(2 done before, 0 in Slurm already, 2 to run)"));
    g_assert_nonnull (strstr (text, "submitted 2 trials as Slurm job array"));
    g_assert_nonnull (strstr (text, ": 4 finished; 2 skipped (done before this run)"));
    g_autofree char *slurm_dir = g_build_filename (b, "slurm", NULL);
    g_autofree char *script = read_text (slurm_dir, "sweep.sbatch");
    g_assert_cmpuint (count_substrings (script, ") index="), ==, 2);
    for (guint i = 0; i < 4; i++) {
        g_autofree char *log = read_text (dirs[i], "log.txt");
        if (i < 2) { /* not rerun */
            g_autofree char *now = g_strconcat (read_text (dirs[i], "result.json"), log, NULL);
            g_assert_cmpstr (now, ==, snapshots[i]);
        } else { /* resumed: the epochs before the stop kept as they were, then the rest */
            g_autofree char *metrics = read_text (dirs[i], "metrics.jsonl");
            g_assert_true (g_str_has_prefix (metrics, snapshots[i]));
            g_assert_cmpuint (count_substrings (metrics, "\n"), ==, i == 2 ? 6 : 10);
            g_assert_cmpuint (count_substrings (log, "==== dfq sweep slurm-smoke"), ==, 2);
            g_assert_true (has_file (dirs[i], "result.json"));
        }
        g_free (dirs[i]);
        g_free (snapshots[i]);
    }

    /* the same report as the local pool's */
    g_assert_true (g_subprocess_wait (local, NULL, &error));
    g_assert_no_error (error);
    g_assert_true (g_subprocess_get_if_exited (local));
    g_assert_cmpint (g_subprocess_get_exit_status (local), ==, 0);
    g_assert_cmpint (run_dfq (NULL, "report", a, NULL), ==, 0);
    g_assert_cmpint (run_dfq (NULL, "report", b, NULL), ==, 0);
    g_autofree char *csv_a = read_text (a, "report.csv");
    g_autofree char *csv_b = read_text (b, "report.csv");
    g_assert_cmpstr (csv_a, !=, "");
    g_assert_cmpstr (csv_b, ==, csv_a);
    g_test_message ("the slurm test took %.0f s", (g_get_monotonic_time () - t0) / 1e6);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_test_registry_new ();
    tmpdir = g_dir_make_tmp ("dfq-sweep-slurm-XXXXXX", NULL);
    g_test_add_func ("/slurm/sweep/cancel-timelimit-resume", test_slurm_sweep);
    int rc = g_test_run ();
    if (cluster_started) {
        const char *stop[] = { "bash", SLURM_LOCAL_SH, "stop", NULL };
        run_argv (stop, NULL);
    }
    dfq_test_rm_rf (tmpdir);
    g_free (tmpdir);
    dfq_registry_free (registry);
    return rc;
}
