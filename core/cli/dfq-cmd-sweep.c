/* dfq sweep (core/cli): expands a sweep file (core/sweep/dfq-sweep.c) and runs
 * its trials in a local pool of child processes. Each trial is this same dfq
 * binary, `dfq run <base> --set ... --run-dir <out>/<trial>`, started in the
 * sweep file's directory (so relative paths mean what they mean to the sweep
 * file) with its output in <trial>/log.txt. A crash, a divergence or a
 * failure is recorded (exit status, log tail) in <trial>/trial.json and
 * <out>/sweep.json and the sweep goes on; a rerun skips the trials that
 * finished and resumes the others from their checkpoints. SIGINT/SIGTERM are
 * forwarded to the trials, which stop after their current step (a second one
 * kills them); children die with the sweep (PR_SET_PDEATHSIG). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include <dfq/dfq.h>

#include "../sweep/dfq-sweep-private.h"
#include "dfq-cli.h"
#include "dfq-sweep-pool.h"

#define DFQ_SWEEP_LOG_TAIL_BYTES 2048
#define DFQ_SWEEP_LOG_TAIL_LINES 12

const char *const dfq_trial_state_names[DFQ_TRIAL_N_STATES] = { "queued",  "running", "finished",   "diverged",
                                                                "crashed", "failed",  "interrupted" };

void
dfq_sweep_job_free (DfqSweepJob *job)
{
    g_free (job->dir);
    g_clear_object (&job->proc);
    g_free (job->exit_text);
    g_free (job->log_tail);
    g_free (job->error);
    g_free (job->slurm_task);
    g_free (job);
}

void
dfq_sweep_format_seconds (double s, char *buf, gsize n)
{
    if (!isfinite (s) || s < 0) {
        g_strlcpy (buf, "--:--", n);
        return;
    }
    long t = (long) (s + 0.5);
    if (t >= 3600)
        g_snprintf (buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        g_snprintf (buf, n, "%02ld:%02ld", t / 60, t % 60);
}

/* Reading a trial's directory -------------------------------------------------- */

static JsonObject *
dfq_sweep_read_json (const char *dir, const char *name, JsonParser **parser)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    return dfq_sweep_json_load_object (path, parser);
}

/* From result.json: finished or diverged (else FALSE: no result yet). */
gboolean
dfq_sweep_job_read_result (DfqSweepJob *job)
{
    g_autoptr (JsonParser) parser = NULL;
    JsonObject *o = dfq_sweep_read_json (job->dir, "result.json", &parser);
    if (o == NULL)
        return FALSE;
    const char *status = json_object_get_string_member_with_default (o, "status", "");
    if (g_str_equal (status, "finished"))
        job->state = DFQ_TRIAL_FINISHED;
    else if (g_str_equal (status, "diverged"))
        job->state = DFQ_TRIAL_DIVERGED;
    else
        return FALSE;
    job->last_top1 = json_object_get_double_member_with_default (o, "last_top1", NAN);
    job->best_top1 = json_object_get_double_member_with_default (o, "best_top1", NAN);
    g_free (job->error);
    job->error = g_strdup (json_object_get_string_member_with_default (o, "error", NULL));
    return TRUE;
}

/* The thread count recorded in an interrupted trial's config.yaml: resuming
 * needs the same config (its checkpoint is keyed by the config's hash). */
static gint
dfq_sweep_recorded_threads (const char *dir)
{
    g_autofree char *path = g_build_filename (dir, "config.yaml", NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents (path, &text, NULL, NULL))
        return 0;
    g_autoptr (DfqConfigNode) tree = dfq_config_parse (text, -1, path, NULL);
    const DfqConfigNode *t = tree != NULL && tree->kind == DFQ_CONFIG_MAPPING ? dfq_config_mapping_get (tree, "threads") : NULL;
    if (t == NULL || t->kind != DFQ_CONFIG_SCALAR)
        return 0;
    return (gint) g_ascii_strtoll (t->scalar, NULL, 10);
}

/* The last lines of log.txt. */
char *
dfq_sweep_log_tail (const char *dir)
{
    g_autofree char *path = g_build_filename (dir, "log.txt", NULL);
    FILE *f = g_fopen (path, "rb");
    if (f == NULL)
        return g_strdup ("");
    char buf[DFQ_SWEEP_LOG_TAIL_BYTES + 1];
    long size = 0;
    if (fseek (f, 0, SEEK_END) == 0)
        size = ftell (f);
    long start = size > DFQ_SWEEP_LOG_TAIL_BYTES ? size - DFQ_SWEEP_LOG_TAIL_BYTES : 0;
    gsize n = 0;
    if (fseek (f, start, SEEK_SET) == 0)
        n = fread (buf, 1, DFQ_SWEEP_LOG_TAIL_BYTES, f);
    fclose (f);
    buf[n] = '\0';
    /* progress lines redrawn with '\r' keep their last state */
    g_auto (GStrv) lines = g_strsplit (buf, "\n", -1);
    guint total = g_strv_length (lines);
    GString *tail = g_string_new (NULL);
    guint first = total > DFQ_SWEEP_LOG_TAIL_LINES + 1 ? total - DFQ_SWEEP_LOG_TAIL_LINES - 1 : (start > 0 ? 1 : 0);
    for (guint i = first; i < total; i++) {
        const char *line = strrchr (lines[i], '\r');
        line = line != NULL ? line + 1 : lines[i];
        if (i + 1 == total && line[0] == '\0')
            break;
        gchar *valid = g_utf8_make_valid (line, -1);
        g_string_append_printf (tail, "%s\n", valid);
        g_free (valid);
    }
    return g_string_free (tail, FALSE);
}

/* The index ---------------------------------------------------------------------- */

static void
dfq_sweep_json_member_string (JsonBuilder *b, const char *name, const char *value)
{
    json_builder_set_member_name (b, name);
    if (value != NULL)
        json_builder_add_string_value (b, value);
    else
        json_builder_add_null_value (b);
}

static void
dfq_sweep_json_member_double (JsonBuilder *b, const char *name, double value)
{
    json_builder_set_member_name (b, name);
    if (isfinite (value))
        json_builder_add_double_value (b, value);
    else
        json_builder_add_null_value (b);
}

/* The trial's description and state, as trial.json and in sweep.json. */
static void
dfq_sweep_job_to_json (DfqSweepPool *pool, DfqSweepJob *job, JsonBuilder *b, gboolean in_index)
{
    DfqSweepTrial *t = job->trial;
    json_builder_begin_object (b);
    dfq_sweep_json_member_string (b, "id", t->id);
    json_builder_set_member_name (b, "index");
    json_builder_add_int_value (b, t->index + 1);
    dfq_sweep_json_member_string (b, "label", t->label);
    if (in_index) {
        g_autofree char *rel = g_path_get_basename (job->dir);
        dfq_sweep_json_member_string (b, "dir", rel);
    } else {
        dfq_sweep_json_member_string (b, "sweep", pool->sweep->name);
        g_autofree char *file = g_canonicalize_filename (pool->sweep->path, NULL);
        dfq_sweep_json_member_string (b, "sweep_file", file);
        dfq_sweep_json_member_string (b, "pipeline", pool->sweep->pipeline);
    }
    dfq_sweep_json_member_string (b, "status", dfq_trial_state_names[job->state]);
    json_builder_set_member_name (b, "seed");
    json_builder_add_int_value (b, job->seed);
    json_builder_set_member_name (b, "threads");
    json_builder_add_int_value (b, job->threads);
    json_builder_set_member_name (b, "eval_limit");
    json_builder_add_int_value (b, pool->sweep->eval_limit);
    json_builder_set_member_name (b, "overrides");
    json_builder_begin_array (b);
    for (guint i = 0; i < t->overrides->len; i++)
        json_builder_add_string_value (b, t->overrides->pdata[i]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "axes");
    json_builder_begin_object (b);
    for (guint i = 0; i < t->axis_keys->len; i++) {
        json_builder_set_member_name (b, t->axis_keys->pdata[i]);
        json_builder_add_value (b, dfq_sweep_config_to_json (t->axis_values->pdata[i]));
    }
    json_builder_end_object (b);
    if (job->before) {
        json_builder_set_member_name (b, "skipped");
        json_builder_add_boolean_value (b, TRUE);
    }
    if (job->slurm_task != NULL)
        dfq_sweep_json_member_string (b, "slurm_job", job->slurm_task);
    dfq_sweep_json_member_string (b, "exit", job->exit_text);
    dfq_sweep_json_member_string (b, "error", job->error);
    dfq_sweep_json_member_string (b, "log_tail", job->log_tail);
    dfq_sweep_json_member_double (b, "seconds", job->proc != NULL || job->seconds > 0 ? job->seconds : NAN);
    dfq_sweep_json_member_double (b, "last_top1", job->last_top1);
    dfq_sweep_json_member_double (b, "best_top1", job->best_top1);
    json_builder_end_object (b);
}

static gboolean
dfq_sweep_write_json (const char *path, JsonBuilder *b, GError **error)
{
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    json_generator_set_root (gen, root);
    json_generator_set_pretty (gen, TRUE);
    g_autofree char *text = json_generator_to_data (gen, NULL);
    g_autofree char *with_newline = g_strconcat (text, "\n", NULL);
    GError *e = NULL;
    if (!g_file_set_contents (path, with_newline, -1, &e)) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "%s", e->message);
        g_error_free (e);
        return FALSE;
    }
    return TRUE;
}

void
dfq_sweep_note_io_error (DfqSweepPool *pool, GError *e)
{
    if (e == NULL)
        return;
    if (pool->io_error == NULL)
        pool->io_error = e;
    else
        g_error_free (e);
}

void
dfq_sweep_write_trial_json (DfqSweepPool *pool, DfqSweepJob *job)
{
    g_autoptr (JsonBuilder) b = json_builder_new ();
    dfq_sweep_job_to_json (pool, job, b, FALSE);
    g_autofree char *path = g_build_filename (job->dir, "trial.json", NULL);
    GError *e = NULL;
    dfq_sweep_write_json (path, b, &e);
    dfq_sweep_note_io_error (pool, e);
}

void
dfq_sweep_count (DfqSweepPool *pool, guint counts[DFQ_TRIAL_N_STATES])
{
    memset (counts, 0, sizeof (guint) * DFQ_TRIAL_N_STATES);
    for (guint i = 0; i < pool->all->len; i++)
        counts[((DfqSweepJob *) pool->all->pdata[i])->state]++;
}

void
dfq_sweep_write_index (DfqSweepPool *pool)
{
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    dfq_sweep_json_member_string (b, "sweep", pool->sweep->name);
    g_autofree char *file = g_canonicalize_filename (pool->sweep->path, NULL);
    dfq_sweep_json_member_string (b, "sweep_file", file);
    dfq_sweep_json_member_string (b, "pipeline", pool->sweep->pipeline);
    dfq_sweep_json_member_string (b, "dfqlab_version", DFQ_VERSION_STRING);
    dfq_sweep_json_member_string (b, "launcher", pool->launcher);
    json_builder_set_member_name (b, "jobs");
    json_builder_add_int_value (b, pool->jobs);
    json_builder_set_member_name (b, "eval_limit");
    json_builder_add_int_value (b, pool->sweep->eval_limit);
    guint counts[DFQ_TRIAL_N_STATES];
    dfq_sweep_count (pool, counts);
    json_builder_set_member_name (b, "counts");
    json_builder_begin_object (b);
    for (guint s = 0; s < DFQ_TRIAL_N_STATES; s++) {
        json_builder_set_member_name (b, dfq_trial_state_names[s]);
        json_builder_add_int_value (b, counts[s]);
    }
    json_builder_end_object (b);
    json_builder_set_member_name (b, "trials");
    json_builder_begin_array (b);
    for (guint i = 0; i < pool->all->len; i++)
        dfq_sweep_job_to_json (pool, pool->all->pdata[i], b, TRUE);
    json_builder_end_array (b);
    json_builder_end_object (b);
    g_autofree char *path = g_build_filename (pool->out, "sweep.json", NULL);
    GError *e = NULL;
    dfq_sweep_write_json (path, b, &e);
    dfq_sweep_note_io_error (pool, e);
}

/* Progress ----------------------------------------------------------------------- */

static double
dfq_sweep_eta (DfqSweepPool *pool)
{
    if (pool->done_count == 0)
        return NAN;
    double avg = pool->done_seconds / pool->done_count;
    double work = 0.0;
    gint64 now = g_get_monotonic_time ();
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        if (job->state == DFQ_TRIAL_QUEUED && !job->held)
            work += avg;
        else if (job->state == DFQ_TRIAL_RUNNING)
            work += MAX (avg - (now - job->started) / 1e6, 0.0);
    }
    return work / MAX (pool->jobs, 1);
}

/* Queued trials that --only left out. */
guint
dfq_sweep_count_held (DfqSweepPool *pool)
{
    guint held = 0;
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        held += job->held && job->state == DFQ_TRIAL_QUEUED;
    }
    return held;
}

char *
dfq_sweep_status_text (DfqSweepPool *pool)
{
    guint c[DFQ_TRIAL_N_STATES];
    dfq_sweep_count (pool, c);
    guint held = dfq_sweep_count_held (pool);
    guint failed = c[DFQ_TRIAL_DIVERGED] + c[DFQ_TRIAL_CRASHED] + c[DFQ_TRIAL_FAILED];
    char el[32], eta[32];
    dfq_sweep_format_seconds ((g_get_monotonic_time () - pool->t0) / 1e6, el, sizeof el);
    dfq_sweep_format_seconds (dfq_sweep_eta (pool), eta, sizeof eta);
    g_autofree char *interrupted = c[DFQ_TRIAL_INTERRUPTED] ? g_strdup_printf (", %u interrupted",
                                                                               c[DFQ_TRIAL_INTERRUPTED])
                                                            : g_strdup ("");
    g_autofree char *held_text = held > 0 ? g_strdup_printf (", %u not selected", held) : g_strdup ("");
    return g_strdup_printf ("%u/%u done, %u running, %u failed, %u queued%s%s, %s elapsed, ETA %s",
                            c[DFQ_TRIAL_FINISHED], pool->all->len, c[DFQ_TRIAL_RUNNING], failed,
                            c[DFQ_TRIAL_QUEUED] - held, held_text, interrupted, el, eta);
}

static void
dfq_sweep_show_status (DfqSweepPool *pool)
{
    if (!pool->tty)
        return;
    g_autofree char *text = dfq_sweep_status_text (pool);
    fprintf (stderr, "\r\033[K[sweep] %s", text);
    fflush (stderr);
    pool->status_shown = TRUE;
}

/* One line about one trial; on a terminal the live status line is redrawn below it. */
void
dfq_sweep_event (DfqSweepPool *pool, DfqSweepJob *job, const char *what, const char *detail)
{
    if (pool->tty && pool->status_shown)
        fprintf (stderr, "\r\033[K");
    char total[16];
    g_snprintf (total, sizeof total, "%u", pool->all->len);
    fprintf (stderr, "[%*u/%s] %-11s %s%s%s\n", (int) strlen (total), job->trial->index + 1, total, what,
             job->trial->label, detail ? ": " : "", detail ? detail : "");
    if (!pool->tty) {
        g_autofree char *text = dfq_sweep_status_text (pool);
        fprintf (stderr, "        %s\n", text);
    }
    fflush (stderr);
    dfq_sweep_show_status (pool);
}

static gboolean
dfq_sweep_tick (gpointer data)
{
    dfq_sweep_show_status (data);
    return G_SOURCE_CONTINUE;
}

/* Running trials ------------------------------------------------------------------- */

/* In the child, between fork and exec: die with the sweep, so a killed sweep
 * leaves no trial writing into a directory its rerun will use. */
static void
dfq_sweep_child_setup (gpointer data)
{
    (void) data;
    prctl (PR_SET_PDEATHSIG, SIGKILL);
}

GPtrArray *
dfq_sweep_job_argv (DfqSweepPool *pool, DfqSweepJob *job)
{
    GPtrArray *argv = g_ptr_array_new_with_free_func (g_free);
    g_ptr_array_add (argv, g_strdup (pool->exe));
    if (pool->plugin_path != NULL) {
        g_ptr_array_add (argv, g_strdup ("--plugin-path"));
        g_ptr_array_add (argv, g_strdup (pool->plugin_path));
    }
    g_ptr_array_add (argv, g_strdup ("run"));
    g_ptr_array_add (argv, g_strdup (pool->sweep->pipeline));
    for (guint i = 0; i < job->trial->overrides->len; i++) {
        g_ptr_array_add (argv, g_strdup ("--set"));
        g_ptr_array_add (argv, g_strdup (job->trial->overrides->pdata[i]));
    }
    if (!job->trial->sets_threads) {
        g_ptr_array_add (argv, g_strdup ("--set"));
        g_ptr_array_add (argv, g_strdup_printf ("threads=%d", job->threads));
    }
    g_ptr_array_add (argv, g_strdup ("--run-dir"));
    g_ptr_array_add (argv, g_strdup (job->dir));
    if (pool->sweep->eval_limit > 0) {
        g_ptr_array_add (argv, g_strdup ("--eval-limit"));
        g_ptr_array_add (argv, g_strdup_printf ("%d", pool->sweep->eval_limit));
    }
    g_ptr_array_add (argv, NULL);
    return argv;
}

char *
dfq_sweep_quote_argv (char **argv)
{
    GString *s = g_string_new (NULL);
    for (guint i = 0; argv[i] != NULL; i++) {
        g_autofree char *q = g_shell_quote (argv[i]);
        g_string_append_printf (s, "%s%s", i ? " " : "", q);
    }
    return g_string_free (s, FALSE);
}

static void dfq_sweep_launch_more (DfqSweepPool *pool);

static void
dfq_sweep_on_exit (GObject *source, GAsyncResult *res, gpointer data)
{
    DfqSweepJob *job = data;
    DfqSweepPool *pool = g_object_get_data (source, "dfq-sweep-pool");
    GSubprocess *proc = G_SUBPROCESS (source);
    g_subprocess_wait_finish (proc, res, NULL);
    job->seconds = (g_get_monotonic_time () - job->started) / 1e6;
    g_clear_pointer (&job->exit_text, g_free);
    if (g_subprocess_get_if_signaled (proc)) {
        int sig = g_subprocess_get_term_sig (proc);
        job->exit_text = g_strdup_printf ("signal %d (%s)", sig, g_strsignal (sig));
    } else {
        job->exit_text = g_strdup_printf ("exit status %d", g_subprocess_get_exit_status (proc));
    }
    g_free (job->log_tail);
    job->log_tail = dfq_sweep_log_tail (job->dir);
    if (dfq_sweep_job_read_result (job))
        ; /* finished or diverged: result.json says so */
    else if (pool->interrupted ||
             (g_subprocess_get_if_exited (proc) && g_subprocess_get_exit_status (proc) == DFQ_EXIT_REQUEUE))
        job->state = DFQ_TRIAL_INTERRUPTED; /* by the sweep, or stopped by a signal from elsewhere */
    else if (g_subprocess_get_if_signaled (proc))
        job->state = DFQ_TRIAL_CRASHED;
    else
        job->state = DFQ_TRIAL_FAILED;
    if (job->state == DFQ_TRIAL_FINISHED && g_subprocess_get_if_exited (proc) && g_subprocess_get_exit_status (proc) == 0)
        g_clear_pointer (&job->exit_text, g_free);
    if (job->state != DFQ_TRIAL_INTERRUPTED) {
        pool->done_seconds += job->seconds;
        pool->done_count++;
    }
    pool->running--;

    /* The run's config must be the one the sweep expanded (same id). */
    g_autofree char *config_path = g_build_filename (job->dir, "config.yaml", NULL);
    g_autofree char *config = NULL;
    if (g_file_get_contents (config_path, &config, NULL, NULL)) {
        g_autofree char *id = dfq_sweep_config_id (config, pool->sweep->eval_limit);
        if (id != NULL && !g_str_equal (id, job->trial->id))
            fprintf (stderr, "dfq sweep: warning: trial %s ran config %s, not the expanded %s\n", job->trial->label, id,
                     job->trial->id);
    }

    dfq_sweep_write_trial_json (pool, job);
    dfq_sweep_write_index (pool);
    char detail[512];
    char secs[32];
    dfq_sweep_format_seconds (job->seconds, secs, sizeof secs);
    switch (job->state) {
    case DFQ_TRIAL_FINISHED:
        g_snprintf (detail, sizeof detail, "last %.2f%%, best %.2f%% (%s)", job->last_top1, job->best_top1, secs);
        break;
    case DFQ_TRIAL_DIVERGED:
        g_snprintf (detail, sizeof detail, "%s (%s)", job->error ? job->error : "diverged", secs);
        break;
    default:
        g_snprintf (detail, sizeof detail, "%s after %s; log: %s/log.txt", job->exit_text, secs, job->dir);
    }
    dfq_sweep_event (pool, job, dfq_trial_state_names[job->state], detail);
    g_clear_object (&job->proc);
    dfq_sweep_launch_more (pool);
}

static gboolean
dfq_sweep_launch (DfqSweepPool *pool, DfqSweepJob *job, GError **error)
{
    if (g_mkdir_with_parents (job->dir, 0755) != 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot create %s: %s", job->dir, g_strerror (errno));
        return FALSE;
    }
    /* Without a checkpoint the run starts over: drop the metrics lines an
     * attempt killed before its first checkpoint left (dfq run appends). */
    g_autofree char *ckpt = g_build_filename (job->dir, "checkpoint.safetensors", NULL);
    if (!g_file_test (ckpt, G_FILE_TEST_EXISTS)) {
        g_autofree char *metrics = g_build_filename (job->dir, "metrics.jsonl", NULL);
        g_unlink (metrics);
    }
    g_autoptr (GPtrArray) argv = dfq_sweep_job_argv (pool, job);
    g_autofree char *command = dfq_sweep_quote_argv ((char **) argv->pdata);
    g_autofree char *log_path = g_build_filename (job->dir, "log.txt", NULL);
    int fd = g_open (log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot open %s: %s", log_path, g_strerror (errno));
        return FALSE;
    }
    g_autoptr (GDateTime) now = g_date_time_new_now_local ();
    g_autofree char *iso = g_date_time_format_iso8601 (now);
    g_autofree char *header = g_strdup_printf ("==== dfq sweep %s, trial %u/%u (%s), %s\n==== cd %s && %s\n",
                                               pool->sweep->name, job->trial->index + 1, pool->all->len,
                                               job->trial->label, iso, pool->sweep->dir, command);
    if (write (fd, header, strlen (header)) < 0) {
        /* the log is for people; the trial runs without its header */
    }
    g_autoptr (GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_MERGE);
    g_subprocess_launcher_take_stdout_fd (launcher, fd);
    g_subprocess_launcher_set_cwd (launcher, pool->sweep->dir);
    g_subprocess_launcher_set_child_setup (launcher, dfq_sweep_child_setup, NULL, NULL);
    job->state = DFQ_TRIAL_RUNNING;
    job->before = FALSE;
    g_clear_pointer (&job->exit_text, g_free);
    g_clear_pointer (&job->log_tail, g_free);
    job->started = g_get_monotonic_time ();
    job->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, error);
    if (job->proc == NULL) {
        job->state = DFQ_TRIAL_FAILED;
        return FALSE;
    }
    g_object_set_data (G_OBJECT (job->proc), "dfq-sweep-pool", pool);
    pool->running++;
    dfq_sweep_write_trial_json (pool, job);
    dfq_sweep_write_index (pool);
    g_autofree char *detail = g_strdup_printf ("%s (%d thread%s)", job->trial->id, job->threads,
                                               job->threads == 1 ? "" : "s");
    dfq_sweep_event (pool, job, "started", detail);
    g_subprocess_wait_async (job->proc, NULL, dfq_sweep_on_exit, job);
    return TRUE;
}

static void
dfq_sweep_launch_more (DfqSweepPool *pool)
{
    for (guint i = 0; i < pool->all->len && !pool->interrupted && pool->running < (guint) pool->jobs; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        if (job->state != DFQ_TRIAL_QUEUED || job->held)
            continue;
        GError *e = NULL;
        if (!dfq_sweep_launch (pool, job, &e)) {
            job->exit_text = g_strdup (e->message);
            dfq_sweep_event (pool, job, "failed", e->message);
            g_error_free (e);
        }
    }
    if (pool->running == 0)
        g_main_loop_quit (pool->loop);
}

static gboolean
dfq_sweep_on_signal (gpointer data)
{
    DfqSweepPool *pool = data;
    pool->n_signals++;
    pool->interrupted = TRUE;
    if (pool->tty && pool->status_shown)
        fprintf (stderr, "\r\033[K");
    if (pool->n_signals == 1) {
        fprintf (stderr, "dfq sweep: interrupted: stopping %u running trial%s after their current step (again to "
                         "kill them); rerun the same command to continue\n",
                 pool->running, pool->running == 1 ? "" : "s");
    } else {
        fprintf (stderr, "dfq sweep: killing %u running trial%s\n", pool->running, pool->running == 1 ? "" : "s");
    }
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        if (job->proc == NULL)
            continue;
        if (pool->n_signals == 1)
            g_subprocess_send_signal (job->proc, SIGINT);
        else
            g_subprocess_force_exit (job->proc);
    }
    if (pool->running == 0)
        g_main_loop_quit (pool->loop);
    return G_SOURCE_CONTINUE;
}

/* The trial's directory: an existing one of the same id (whatever its label
 * was when it ran), else <out>/<label>-<id>. */
static char *
dfq_sweep_find_dir (const char *out, const DfqSweepTrial *trial)
{
    g_autofree char *suffix = g_strdup_printf ("-%s", trial->id);
    GDir *d = g_dir_open (out, 0, NULL);
    g_autofree char *found = NULL;
    const char *name;
    while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
        if (!g_str_has_suffix (name, suffix))
            continue;
        g_autofree char *path = g_build_filename (out, name, NULL);
        if (g_file_test (path, G_FILE_TEST_IS_DIR) && (found == NULL || strcmp (path, found) < 0)) {
            g_free (found);
            found = g_steal_pointer (&path);
        }
    }
    if (d != NULL)
        g_dir_close (d);
    return found != NULL ? g_steal_pointer (&found) : g_build_filename (out, trial->dir_name, NULL);
}

/* An integer at the top of the trial's resolved config ("seed", "threads"). */
static gint
dfq_sweep_trial_int (const DfqSweepTrial *trial, const char *key)
{
    g_autoptr (DfqConfigNode) tree = dfq_config_parse (trial->config_yaml, -1, "config", NULL);
    const DfqConfigNode *v = tree != NULL && tree->kind == DFQ_CONFIG_MAPPING ? dfq_config_mapping_get (tree, key) : NULL;
    return v != NULL && v->kind == DFQ_CONFIG_SCALAR ? (gint) g_ascii_strtoll (v->scalar, NULL, 10) : -1;
}

static char *
dfq_sweep_self_exe (void)
{
    char *exe = g_file_read_link ("/proc/self/exe", NULL);
    return exe != NULL ? exe : g_find_program_in_path ("dfq");
}

/* --only: holds back the trials whose label and id match none of @globs; an
 * error naming the labels when that leaves nothing. */
static gboolean
dfq_sweep_select (DfqSweepPool *pool, const char *const *globs, GError **error)
{
    g_autoptr (GPtrArray) specs = g_ptr_array_new_with_free_func ((GDestroyNotify) g_pattern_spec_free);
    for (guint k = 0; globs[k] != NULL; k++)
        g_ptr_array_add (specs, g_pattern_spec_new (globs[k]));
    guint selected = 0;
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        gboolean match = FALSE;
        for (guint k = 0; k < specs->len && !match; k++)
            match = g_pattern_spec_match_string (specs->pdata[k], job->trial->label) ||
                    g_pattern_spec_match_string (specs->pdata[k], job->trial->id);
        job->held = !match;
        selected += match;
    }
    if (selected > 0)
        return TRUE;
    g_autofree char *wanted = g_strjoinv ("', '", (char **) globs);
    GString *labels = g_string_new (NULL);
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        g_string_append_printf (labels, "\n  %s  %s", job->trial->id, job->trial->label);
    }
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "--only '%s' matches no trial of %s; the trials (id, label) are:%s", wanted,
                 pool->sweep->name, labels->str);
    g_string_free (labels, TRUE);
    return FALSE;
}

static void
dfq_sweep_print_dry_run (DfqSweepPool *pool)
{
    DfqSweep *sweep = pool->sweep;
    printf ("sweep %s: %u trial%s of %s (from %s)\n", sweep->name, sweep->trials->len,
            sweep->trials->len == 1 ? "" : "s", sweep->pipeline, sweep->path);
    printf ("output %s; -j %d, %d thread%s per trial\n", pool->out, pool->jobs, pool->threads,
            pool->threads == 1 ? "" : "s");
    if (sweep->eval_limit > 0)
        printf ("evaluation on the first %d images of the split (--eval-limit)\n", sweep->eval_limit);
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        g_autofree char *rel = g_path_get_basename (job->dir);
        const char *state = job->state != DFQ_TRIAL_QUEUED ? dfq_trial_state_names[job->state]
                            : job->held                   ? "not selected (--only)"
                            : g_file_test (job->dir, G_FILE_TEST_IS_DIR) ? "to resume"
                                                                         : "to run";
        printf ("%3u  %s  %-40s  %s\n", i + 1, job->trial->id, job->trial->label, state);
        printf ("     dir %s\n", rel);
        for (guint k = 0; k < job->trial->overrides->len; k++)
            printf ("     --set %s\n", (char *) job->trial->overrides->pdata[k]);
    }
}

typedef struct {
    gboolean dry_run, status, no_wait, requeue;
    gint jobs, threads, array_limit;
    char *out, *launcher, *partition, *time;
    GStrv only, sbatch_args;
} DfqSweepArgs;

static void
dfq_sweep_args_clear (DfqSweepArgs *a)
{
    g_free (a->out);
    g_free (a->launcher);
    g_free (a->partition);
    g_free (a->time);
    g_strfreev (a->only);
    g_strfreev (a->sbatch_args);
}

static gboolean
dfq_sweep_parse_args (DfqCli *cli, int *argc, char ***argv, DfqSweepArgs *a, gboolean *help, GError **error)
{
    const GOptionEntry entries[] = {
        { "jobs", 'j', 0, G_OPTION_ARG_INT, &a->jobs, "Trials run at once (default 1); each gets cores/N threads", "N" },
        { "threads", 't', 0, G_OPTION_ARG_INT, &a->threads,
          "Threads per trial (default cores/N; with Slurm 1, = --cpus-per-task); a sweep that sets threads, or a trial "
          "resumed with another count, keeps its own", "T" },
        { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &a->dry_run, "Validate and list the trials and their overrides; run nothing", NULL },
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &a->out, "Output directory (default runs/<sweep name>)", "DIR" },
        { "only", 0, 0, G_OPTION_ARG_STRING_ARRAY, &a->only,
          "Run only the trials whose label or id matches this glob (repeatable; e.g. 'w_bits=3,*')", "GLOB" },
        { "launcher", 0, 0, G_OPTION_ARG_STRING, &a->launcher,
          "local (default: a pool of -j processes here) or slurm (one job array, submitted with sbatch)", "NAME" },
        { "partition", 'p', 0, G_OPTION_ARG_STRING, &a->partition, "Slurm partition (default: the cluster's)", "P" },
        { "time", 0, 0, G_OPTION_ARG_STRING, &a->time, "Slurm time limit per trial, as sbatch --time takes it", "T" },
        { "array-limit", 0, 0, G_OPTION_ARG_INT, &a->array_limit, "At most N array tasks run at once (sbatch --array=...%N)", "N" },
        { "sbatch-arg", 0, 0, G_OPTION_ARG_STRING_ARRAY, &a->sbatch_args,
          "One more #SBATCH line, e.g. --sbatch-arg=--account=A (repeatable; later lines win)", "ARG" },
        { "no-wait", 0, 0, G_OPTION_ARG_NONE, &a->no_wait, "Slurm: submit and return (--status shows progress)", NULL },
        { "requeue", 0, 0, G_OPTION_ARG_NONE, &a->requeue,
          "Slurm: a trial stopped by its time-limit signal requeues itself and resumes (default: the rerun resumes it)", NULL },
        { "status", 0, 0, G_OPTION_ARG_NONE, &a->status, "Slurm: where the submitted trials are; submits nothing", NULL },
        { NULL }
    };
    return dfq_cli_parse (cli, "sweep", "SWEEP.yaml", "Expand a sweep file and run its trials",
                          "Each trial runs as `dfq run` in its own process, into <out>/<label>-<id>/ (log in log.txt); "
                          "<out>/sweep.json indexes them. Running the same command again skips finished trials and "
                          "resumes the others. Ctrl-C stops the running trials after their current step. With "
                          "--launcher slurm the trials are one Slurm job array (<out>/slurm/sweep.sbatch) and the "
                          "rerun resubmits only the unfinished ones. See docs/sweeps.md.",
                          entries, argc, argv, help, error);
}

static gboolean
dfq_sweep_check_args (const DfqSweepArgs *a, int argc, GError **error)
{
    if (argc != 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "sweep: expected one sweep file (see --help)");
        return FALSE;
    }
    if (a->jobs < 1 || a->jobs > 256) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "sweep: -j must be in 1 .. 256, not %d", a->jobs);
        return FALSE;
    }
    if (a->threads < 0 || a->threads > 1024) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "sweep: --threads must be in 1 .. 1024 (or 0: cores / -j), not %d", a->threads);
        return FALSE;
    }
    if (a->array_limit < 0) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "sweep: --array-limit must be >= 1 (or 0: no limit), not %d", a->array_limit);
        return FALSE;
    }
    gboolean slurm = a->launcher != NULL && g_str_equal (a->launcher, "slurm");
    if (a->launcher != NULL && !slurm && !g_str_equal (a->launcher, "local")) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "sweep: unknown --launcher '%s' (known: local, slurm)", a->launcher);
        return FALSE;
    }
    const char *slurm_only = a->partition != NULL ? "--partition"
                             : a->time != NULL    ? "--time"
                             : a->array_limit > 0 ? "--array-limit"
                             : a->sbatch_args     ? "--sbatch-arg"
                             : a->no_wait         ? "--no-wait"
                             : a->requeue         ? "--requeue"
                                                  : NULL;
    if (!slurm && slurm_only != NULL) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "sweep: %s is an option of --launcher slurm (the local pool runs the trials here)", slurm_only);
        return FALSE;
    }
    return TRUE;
}

/* One job per trial, with its directory and the state its files say. */
static void
dfq_sweep_add_jobs (DfqSweepPool *pool)
{
    DfqSweep *sweep = pool->sweep;
    for (guint i = 0; i < sweep->trials->len; i++) {
        DfqSweepJob *job = g_new0 (DfqSweepJob, 1);
        job->trial = sweep->trials->pdata[i];
        job->dir = dfq_sweep_find_dir (pool->out, job->trial);
        job->seed = dfq_sweep_trial_int (job->trial, "seed");
        job->last_top1 = job->best_top1 = NAN;
        job->state = DFQ_TRIAL_QUEUED;
        job->before = dfq_sweep_job_read_result (job);
        /* threads: the sweep's own value, else what an earlier attempt
         * recorded (its checkpoint needs the same config), else cores / -j */
        gint recorded = dfq_sweep_recorded_threads (job->dir);
        job->threads = job->trial->sets_threads ? dfq_sweep_trial_int (job->trial, "threads")
                       : recorded > 0           ? recorded
                                                : pool->threads;
        g_ptr_array_add (pool->all, job);
    }
}

int
dfq_sweep_lock (const char *out, GError **error)
{
    if (g_mkdir_with_parents (out, 0755) != 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot create %s: %s", out, g_strerror (errno));
        return -1;
    }
    g_autofree char *lock_path = g_build_filename (out, ".sweep.lock", NULL);
    int lock_fd = g_open (lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock (lock_fd, LOCK_EX | LOCK_NB) != 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_LOCKED,
                     "%s: another dfq sweep is running into this directory (%s)", out,
                     lock_fd < 0 ? g_strerror (errno) : "locked");
        if (lock_fd >= 0)
            close (lock_fd);
        return -1;
    }
    return lock_fd;
}

gboolean
dfq_sweep_summarize (DfqSweepPool *pool, guint before, GError **error)
{
    GPtrArray *all = pool->all;
    guint held = dfq_sweep_count_held (pool);
    guint c[DFQ_TRIAL_N_STATES];
    dfq_sweep_count (pool, c);
    char el[32];
    dfq_sweep_format_seconds ((g_get_monotonic_time () - pool->t0) / 1e6, el, sizeof el);
    printf ("sweep %s: %u trials in %s: %u finished", pool->sweep->name, all->len, el, c[DFQ_TRIAL_FINISHED]);
    for (guint s = DFQ_TRIAL_DIVERGED; s < DFQ_TRIAL_N_STATES; s++)
        if (c[s] > 0)
            printf (", %u %s", c[s], dfq_trial_state_names[s]);
    if (c[DFQ_TRIAL_QUEUED] > held)
        printf (", %u not started", c[DFQ_TRIAL_QUEUED] - held);
    if (before > 0)
        printf ("; %u skipped (done before this run)", before);
    if (held > 0)
        printf ("; %u not selected (--only)", held);
    printf ("\n");
    for (guint i = 0; i < all->len; i++) {
        DfqSweepJob *job = all->pdata[i];
        if (job->state == DFQ_TRIAL_FINISHED || job->state == DFQ_TRIAL_QUEUED)
            continue;
        g_autofree char *rel = g_path_get_basename (job->dir);
        printf ("  %-11s %s: %s\n", dfq_trial_state_names[job->state], rel,
                job->state == DFQ_TRIAL_DIVERGED && job->error != NULL ? job->error
                : job->exit_text                                       ? job->exit_text
                                                                       : "");
    }
    printf ("index: %s/sweep.json; tables and plots: dfq report %s\n", pool->out, pool->out);
    fflush (stdout);

    if (pool->io_error != NULL) {
        g_propagate_error (error, g_steal_pointer (&pool->io_error));
        return FALSE;
    }
    if (pool->interrupted || c[DFQ_TRIAL_INTERRUPTED] > 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_INTERRUPTED,
                     "interrupted; run the same command again to continue (finished trials are skipped)");
        return FALSE;
    }
    guint bad = c[DFQ_TRIAL_DIVERGED] + c[DFQ_TRIAL_CRASHED] + c[DFQ_TRIAL_FAILED];
    if (bad > 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_TRIALS, "%u of %u trials did not finish (see above)", bad,
                     all->len);
        return FALSE;
    }
    return TRUE;
}

/* The local process pool: -j trials at once until none is queued. */
static gboolean
dfq_sweep_run_local (DfqSweepPool *pool, GError **error)
{
    GPtrArray *all = pool->all;
    gint cores = (gint) g_get_num_processors ();
    int lock_fd = dfq_sweep_lock (pool->out, error);
    if (lock_fd < 0)
        return FALSE;
    guint before = 0, to_run = 0;
    gboolean over = FALSE;
    for (guint i = 0; i < all->len; i++) {
        DfqSweepJob *job = all->pdata[i];
        before += job->before;
        to_run += job->state == DFQ_TRIAL_QUEUED && !job->held;
        over |= job->state == DFQ_TRIAL_QUEUED && !job->held && job->threads * MIN (pool->jobs, (gint) to_run) > cores;
    }
    guint held = dfq_sweep_count_held (pool);
    g_autofree char *held_text = held > 0 ? g_strdup_printf (", %u not selected by --only", held) : g_strdup ("");
    fprintf (stderr, "dfq sweep %s: %u trials (%u done before, %u to run%s) from %s\n", pool->sweep->name, all->len,
             before, to_run, held_text, pool->sweep->path);
    fprintf (stderr, "output %s; -j %d x %d thread%s (%d cores)\n", pool->out, pool->jobs, pool->threads,
             pool->threads == 1 ? "" : "s", cores);
    if (over)
        fprintf (stderr, "dfq sweep: warning: -j %d x the trials' threads exceeds the %d cores (set by the sweep, or "
                         "recorded by interrupted trials): they will compete for the cores\n",
                 pool->jobs, cores);
    pool->t0 = g_get_monotonic_time ();
    dfq_sweep_write_index (pool);

    g_autoptr (GMainLoop) loop = pool->loop = g_main_loop_new (NULL, FALSE);
    guint sigint = g_unix_signal_add (SIGINT, dfq_sweep_on_signal, pool);
    guint sigterm = g_unix_signal_add (SIGTERM, dfq_sweep_on_signal, pool);
    guint tick = pool->tty ? g_timeout_add_seconds (1, dfq_sweep_tick, pool) : 0;
    if (to_run > 0) {
        dfq_sweep_launch_more (pool);
        if (pool->running > 0)
            g_main_loop_run (loop);
    }
    g_source_remove (sigint);
    g_source_remove (sigterm);
    if (tick != 0)
        g_source_remove (tick);
    if (pool->tty && pool->status_shown)
        fprintf (stderr, "\r\033[K");
    dfq_sweep_write_index (pool);
    close (lock_fd);
    return dfq_sweep_summarize (pool, before, error);
}

static gboolean
dfq_sweep_dispatch (DfqCli *cli, const char *file, const DfqSweepArgs *a, GError **error)
{
    gboolean slurm = a->launcher != NULL && g_str_equal (a->launcher, "slurm");
    DfqRegistry *registry = dfq_cli_get_registry (cli);
    g_autoptr (DfqSweep) sweep = dfq_sweep_new_from_file (registry, file, error);
    if (sweep == NULL)
        return FALSE;

    DfqSweepPool pool = { 0 };
    pool.sweep = sweep;
    g_autofree char *out_rel = a->out != NULL ? g_strdup (a->out) : g_build_filename ("runs", sweep->name, NULL);
    g_autofree char *out = g_canonicalize_filename (out_rel, NULL);
    pool.out = out;
    pool.jobs = a->jobs;
    pool.launcher = slurm ? "slurm" : "local";
    gint cores = (gint) g_get_num_processors ();
    /* on a cluster the node is not this machine: one core per trial unless told */
    pool.threads = a->threads > 0 ? a->threads : slurm ? 1 : MAX (1, cores / a->jobs);
    pool.plugin_path = cli->plugin_path;
    pool.tty = isatty (STDERR_FILENO);
    g_autoptr (GPtrArray) all = pool.all = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_sweep_job_free);
    dfq_sweep_add_jobs (&pool);
    if (a->only != NULL && !dfq_sweep_select (&pool, (const char *const *) a->only, error))
        return FALSE;
    if (a->dry_run) {
        dfq_sweep_print_dry_run (&pool);
        return TRUE;
    }
    pool.exe = dfq_sweep_self_exe ();
    g_autofree char *exe = pool.exe;
    if (exe == NULL) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot find the dfq executable to run the trials");
        return FALSE;
    }
    pool.t0 = g_get_monotonic_time ();
    if (a->status)
        return dfq_sweep_slurm_status (&pool, error);
    if (!slurm)
        return dfq_sweep_run_local (&pool, error);
    DfqSweepSlurmOptions so = { a->partition, a->time, a->array_limit, (const char *const *) a->sbatch_args,
                                a->no_wait, a->requeue };
    return dfq_sweep_slurm_run (&pool, &so, error);
}

gboolean
dfq_cmd_sweep (DfqCli *cli, int argc, char **argv, GError **error)
{
    gboolean help = FALSE;
    DfqSweepArgs a = { .jobs = 1 };
    gboolean ok = dfq_sweep_parse_args (cli, &argc, &argv, &a, &help, error);
    if (ok && !help)
        ok = dfq_sweep_check_args (&a, argc, error) && dfq_sweep_dispatch (cli, argv[1], &a, error);
    dfq_sweep_args_clear (&a);
    return ok;
}
