/* dfq sweep --launcher slurm (core/cli): the trials of a sweep as one Slurm
 * job array. dfqlab describes the trials and collects the results; Slurm
 * schedules. One batch script, <out>/slurm/sweep.sbatch, lists the pending
 * trials (array task i runs trial DFQ_SWEEP_OFFSET + i: the same `dfq run`
 * command as the local pool, output appended to the trial's log.txt); it is
 * submitted with `sbatch --parsable`, in chunks of MaxArraySize tasks, and
 * each submission is recorded in <out>/slurm/jobs.json. Accounting may be off,
 * so the outcome is read from each trial's directory: result.json, and the
 * marker slurm.done that the script writes when its `dfq run` ends ("<job>_<task>
 * <exit status> <signal received>"); squeue says which tasks are pending or
 * running. Before its time limit a task gets SIGUSR1 (#SBATCH --signal), which
 * the script forwards: dfq run stops after its step, keeps its checkpoint and
 * exits DFQ_EXIT_REQUEUE, and the rerun (or, with --requeue, Slurm) resumes it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include <dfq/dfq.h>

#include "dfq-cli.h"
#include "dfq-sweep-pool.h"

#define DFQ_SLURM_POLL_SECONDS 2
#define DFQ_SLURM_SIGNAL_SECONDS 120 /* SIGUSR1 this long before the time limit */
#define DFQ_SLURM_DEFAULT_MAX_ARRAY 1001

typedef struct {
    DfqSweepPool *pool;
    GHashTable *task_of;  /* trial id -> "<job>_<task>" of its last submission */
    GHashTable *squeue;   /* "<job>_<task>" -> Slurm state, for the tasks pending or running */
    JsonArray *submissions; /* jobs.json */
    JsonParser *parser;
    GPtrArray *job_ids;   /* char *: array jobs submitted by this invocation */
    guint n_signals;
    GError *poll_error;
} DfqSlurm;

static void
dfq_slurm_clear (DfqSlurm *s)
{
    g_clear_pointer (&s->task_of, g_hash_table_unref);
    g_clear_pointer (&s->squeue, g_hash_table_unref);
    g_clear_pointer (&s->submissions, json_array_unref);
    g_clear_object (&s->parser);
    g_clear_pointer (&s->job_ids, g_ptr_array_unref);
    g_clear_error (&s->poll_error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DfqSlurm, dfq_slurm_clear)

/* Slurm's commands ------------------------------------------------------------- */

static gboolean
dfq_slurm_need_tool (const char *tool, GError **error)
{
    g_autofree char *path = g_find_program_in_path (tool);
    if (path != NULL)
        return TRUE;
    g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_SLURM,
                 "--launcher slurm: '%s' is not on PATH: run dfq sweep on a machine with the Slurm client commands "
                 "(a cluster's login node; on Debian apt-get install slurm-client, and tools/slurm-local.sh start for "
                 "a one-machine cluster), or drop --launcher slurm to run the trials here",
                 tool);
    return FALSE;
}

/* Runs @argv; its stdout in *@out. A failure (exit status, or no such program)
 * is DFQ_SWEEP_ERROR_SLURM with the command's stderr and @hint. */
static gboolean
dfq_slurm_command (const char *const *argv, char **out, const char *hint, GError **error)
{
    g_autofree char *err = NULL;
    gint status = 0;
    GError *e = NULL;
    if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, &err, &status, &e)) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_SLURM, "%s: %s; %s", argv[0], e->message, hint);
        g_error_free (e);
        return FALSE;
    }
    if (!g_spawn_check_wait_status (status, NULL)) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_SLURM, "%s failed: %s; %s", argv[0],
                     g_strstrip (err), hint);
        return FALSE;
    }
    return TRUE;
}

/* MaxArraySize from `scontrol show config` (the largest array index is one less). */
static guint
dfq_slurm_max_array_size (void)
{
    const char *argv[] = { "scontrol", "show", "config", NULL };
    g_autofree char *out = NULL;
    if (!dfq_slurm_command (argv, &out, "", NULL))
        return DFQ_SLURM_DEFAULT_MAX_ARRAY;
    g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        g_auto (GStrv) kv = g_strsplit (lines[i], "=", 2);
        if (kv[0] != NULL && kv[1] != NULL && g_str_equal (g_strstrip (kv[0]), "MaxArraySize")) {
            guint64 v = g_ascii_strtoull (g_strstrip (kv[1]), NULL, 10);
            return v >= 1 ? (guint) v : DFQ_SLURM_DEFAULT_MAX_ARRAY;
        }
    }
    return DFQ_SLURM_DEFAULT_MAX_ARRAY;
}

/* s->squeue: every array task of the user that Slurm still holds. */
static gboolean
dfq_slurm_squeue (DfqSlurm *s, GError **error)
{
    const char *argv[] = { "squeue", "--me", "--noheader", "--array", "--format=%F_%K %T", NULL };
    g_autofree char *out = NULL;
    if (!dfq_slurm_command (argv, &out, "is the cluster up (sinfo; tools/slurm-local.sh status on one machine)?", error))
        return FALSE;
    g_hash_table_remove_all (s->squeue);
    g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        g_auto (GStrv) f = g_strsplit (g_strstrip (lines[i]), " ", 2);
        if (f[0] != NULL && f[1] != NULL)
            g_hash_table_insert (s->squeue, g_strdup (f[0]), g_strdup (f[1]));
    }
    return TRUE;
}

/* The submissions (jobs.json) ---------------------------------------------------- */

static char *
dfq_slurm_path (DfqSweepPool *pool, const char *name)
{
    return g_build_filename (pool->out, "slurm", name, NULL);
}

/* Reads jobs.json (absent: no submission yet) into s->submissions and s->task_of. */
static void
dfq_slurm_load (DfqSlurm *s)
{
    s->task_of = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    s->squeue = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    s->job_ids = g_ptr_array_new_with_free_func (g_free);
    g_autofree char *path = dfq_slurm_path (s->pool, "jobs.json");
    JsonObject *root = dfq_sweep_json_load_object (path, &s->parser);
    JsonArray *subs = root != NULL && json_object_has_member (root, "submissions")
                          ? json_object_get_array_member (root, "submissions")
                          : NULL;
    s->submissions = subs != NULL ? json_array_ref (subs) : json_array_new ();
    for (guint i = 0; i < json_array_get_length (s->submissions); i++) {
        JsonObject *sub = json_array_get_object_element (s->submissions, i);
        const char *job = json_object_get_string_member_with_default (sub, "job", NULL);
        JsonArray *trials = json_object_has_member (sub, "trials") ? json_object_get_array_member (sub, "trials") : NULL;
        for (guint k = 0; job != NULL && trials != NULL && k < json_array_get_length (trials); k++)
            g_hash_table_insert (s->task_of, g_strdup (json_array_get_string_element (trials, k)),
                                 g_strdup_printf ("%s_%u", job, k));
    }
    for (guint i = 0; i < s->pool->all->len; i++) {
        DfqSweepJob *job = s->pool->all->pdata[i];
        g_free (job->slurm_task);
        job->slurm_task = g_strdup (g_hash_table_lookup (s->task_of, job->trial->id));
    }
}

/* Appends one submission (array job @job_id running @trials, DfqSweepJob *)
 * to jobs.json, rewritten atomically right after sbatch answered. */
static gboolean
dfq_slurm_record (DfqSlurm *s, const char *job_id, GPtrArray *trials, GError **error)
{
    JsonObject *sub = json_object_new ();
    json_object_set_string_member (sub, "job", job_id);
    g_autoptr (GDateTime) now = g_date_time_new_now_local ();
    g_autofree char *iso = g_date_time_format_iso8601 (now);
    json_object_set_string_member (sub, "submitted", iso);
    JsonArray *ids = json_array_new ();
    for (guint k = 0; k < trials->len; k++) {
        DfqSweepJob *job = trials->pdata[k];
        json_array_add_string_element (ids, job->trial->id);
        g_free (job->slurm_task);
        job->slurm_task = g_strdup_printf ("%s_%u", job_id, k);
        job->in_slurm = TRUE;
        g_hash_table_insert (s->task_of, g_strdup (job->trial->id), g_strdup (job->slurm_task));
    }
    json_object_set_array_member (sub, "trials", ids);
    json_array_add_object_element (s->submissions, sub);

    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "submissions");
    json_builder_add_value (b, json_node_init_array (json_node_alloc (), s->submissions));
    json_builder_end_object (b);
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    json_generator_set_root (gen, root);
    json_generator_set_pretty (gen, TRUE);
    g_autofree char *text = json_generator_to_data (gen, NULL);
    g_autofree char *path = dfq_slurm_path (s->pool, "jobs.json");
    GError *e = NULL;
    if (!g_file_set_contents (path, text, -1, &e)) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO,
                     "%s (Slurm job %s was submitted: scancel %s, or wait for it and rerun)", e->message, job_id, job_id);
        g_error_free (e);
        return FALSE;
    }
    return TRUE;
}

/* Where each trial is -------------------------------------------------------------- */

/* slurm.done of the trial's last task: its exit status and the signal the
 * script received. FALSE when that task left no marker. */
static gboolean
dfq_slurm_read_marker (DfqSweepJob *job, gint *rc, char **signal_name)
{
    g_autofree char *path = g_build_filename (job->dir, "slurm.done", NULL);
    g_autofree char *text = NULL;
    if (job->slurm_task == NULL || !g_file_get_contents (path, &text, NULL, NULL))
        return FALSE;
    g_auto (GStrv) f = g_strsplit (g_strstrip (text), " ", 3);
    if (g_strv_length (f) < 3 || !g_str_equal (f[0], job->slurm_task))
        return FALSE;
    *rc = (gint) g_ascii_strtoll (f[1], NULL, 10);
    *signal_name = g_strdup (f[2]);
    return TRUE;
}

/* A trial's state from its files and squeue; TRUE when it changed. */
static gboolean
dfq_slurm_update_job (DfqSlurm *s, DfqSweepJob *job)
{
    DfqTrialState old = job->state;
    const char *sq = job->slurm_task != NULL ? g_hash_table_lookup (s->squeue, job->slurm_task) : NULL;
    job->in_slurm = sq != NULL;
    gint rc = 0;
    g_autofree char *sig = NULL;
    if (dfq_sweep_job_read_result (job))
        ; /* finished or diverged */
    else if (sq != NULL)
        job->state = g_str_equal (sq, "PENDING") || g_str_equal (sq, "REQUEUED") || g_str_equal (sq, "REQUEUE_HOLD")
                         ? DFQ_TRIAL_QUEUED
                         : DFQ_TRIAL_RUNNING;
    else if (dfq_slurm_read_marker (job, &rc, &sig)) {
        g_free (job->exit_text);
        if (rc > 128)
            job->exit_text = g_strdup_printf ("signal %d (%s)", rc - 128, g_strsignal (rc - 128));
        else
            job->exit_text = g_strdup_printf ("exit status %d%s%s", rc, g_str_equal (sig, "none") ? "" : " after SIG",
                                              g_str_equal (sig, "none") ? "" : sig);
        job->state = rc == DFQ_EXIT_REQUEUE ? DFQ_TRIAL_INTERRUPTED : rc > 128 ? DFQ_TRIAL_CRASHED : DFQ_TRIAL_FAILED;
    } else if (job->slurm_task != NULL) {
        g_free (job->exit_text);
        job->exit_text = g_strdup_printf ("Slurm task %s ended without a result or exit record (killed before its "
                                          "script could write one; see %s/slurm/%s.out)",
                                          job->slurm_task, s->pool->out, job->slurm_task);
        job->state = DFQ_TRIAL_FAILED;
    } else
        job->state = DFQ_TRIAL_QUEUED; /* never submitted */
    if (job->state != old && job->state != DFQ_TRIAL_QUEUED && job->state != DFQ_TRIAL_RUNNING) {
        g_free (job->log_tail);
        job->log_tail = dfq_sweep_log_tail (job->dir);
    }
    return job->state != old;
}

/* The batch script ------------------------------------------------------------------ */

static void
dfq_slurm_script_env (GString *sh, const char *name)
{
    const char *v = g_getenv (name);
    if (v == NULL) {
        g_string_append_printf (sh, "unset %s\n", name);
        return;
    }
    g_autofree char *q = g_shell_quote (v);
    g_string_append_printf (sh, "export %s=%s\n", name, q);
}

static void
dfq_slurm_script_header (GString *sh, DfqSweepPool *pool, const DfqSweepSlurmOptions *o, guint n, gint cpus)
{
    g_autoptr (GDateTime) now = g_date_time_new_now_local ();
    g_autofree char *iso = g_date_time_format_iso8601 (now);
    g_autofree char *file = g_canonicalize_filename (pool->sweep->path, NULL);
    g_string_append_printf (sh,
                            "#!/bin/bash\n"
                            "# dfq sweep %s: %u trial%s as one Slurm job array, written by `dfq sweep --launcher slurm`\n"
                            "# (dfqlab %s) on %s from %s.\n"
                            "# Array task i runs trial DFQ_SWEEP_OFFSET + i below: `dfq run` into the trial's run\n"
                            "# directory, its output appended to log.txt there, its exit recorded in slurm.done.\n"
                            "# Rerun the same dfq sweep command to resubmit the trials that did not finish.\n",
                            pool->sweep->name, n, n == 1 ? "" : "s", DFQ_VERSION_STRING, iso, file);
    g_string_append_printf (sh, "#SBATCH --job-name=dfq-%s\n", pool->sweep->name);
    g_string_append_printf (sh, "#SBATCH --output=%s/slurm/%%A_%%a.out\n", pool->out);
    g_string_append_printf (sh, "#SBATCH --open-mode=append\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=%d\n", cpus);
    g_string_append_printf (sh, "#SBATCH --signal=B:USR1@%d\n", DFQ_SLURM_SIGNAL_SECONDS);
    if (o->partition != NULL)
        g_string_append_printf (sh, "#SBATCH --partition=%s\n", o->partition);
    if (o->time != NULL)
        g_string_append_printf (sh, "#SBATCH --time=%s\n", o->time);
    for (guint i = 0; o->sbatch_args != NULL && o->sbatch_args[i] != NULL; i++)
        g_string_append_printf (sh, "#SBATCH %s\n", o->sbatch_args[i]);
    g_string_append (sh, "\nset -u\n"
                         "# The trials' environment, as dfq sweep saw it: plugins, and no thread pool\n"
                         "# larger than the task's CPUs (set per trial below).\n");
    dfq_slurm_script_env (sh, "DFQ_PLUGIN_PATH");
    dfq_slurm_script_env (sh, "DFQ_PLUGIN_SYSTEM_PATH");
    g_string_append_printf (sh, "requeue=%d # --requeue: a trial stopped by its time-limit signal requeues itself\n",
                            o->requeue ? 1 : 0);
    g_string_append_printf (sh, "exit_requeue=%d # dfq run stopped by a signal, checkpoint kept\n", DFQ_EXIT_REQUEUE);
}

/* One `case` branch per trial: its directory, threads and command. */
static void
dfq_slurm_script_trials (GString *sh, DfqSweepPool *pool, GPtrArray *trials)
{
    g_string_append (sh, "\ntrial=$(( ${DFQ_SWEEP_OFFSET:-0} + ${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array} ))\n"
                         "case $trial in\n");
    for (guint k = 0; k < trials->len; k++) {
        DfqSweepJob *job = trials->pdata[k];
        g_autofree char *label = g_shell_quote (job->trial->label);
        g_autofree char *dir = g_shell_quote (job->dir);
        g_autoptr (GPtrArray) argv = dfq_sweep_job_argv (pool, job);
        g_autofree char *command = dfq_sweep_quote_argv ((char **) argv->pdata);
        g_string_append_printf (sh, "%u) index=%u label=%s threads=%d\n   dir=%s\n   set -- %s ;;\n", k,
                                job->trial->index + 1, label, job->threads, dir, command);
    }
    g_string_append (sh, "*) echo \"dfq sweep: no trial $trial in this script\" >&2; exit 2 ;;\nesac\n");
}

static void
dfq_slurm_script_body (GString *sh, DfqSweepPool *pool)
{
    g_autofree char *name = g_shell_quote (pool->sweep->name);
    g_autofree char *cwd = g_shell_quote (pool->sweep->dir);
    g_string_append_printf (sh,
                            "export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads\n"
                            "task=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\n"
                            "mkdir -p \"$dir\" || exit 1\n"
                            "rm -f \"$dir/slurm.done\"\n"
                            "# without a checkpoint the run starts over: drop a killed attempt's metrics\n"
                            "[ -e \"$dir/checkpoint.safetensors\" ] || rm -f \"$dir/metrics.jsonl\"\n"
                            "printf -v command '%%q ' \"$@\"\n"
                            "printf '==== dfq sweep %%s, trial %%s/%u (%%s), %%s, Slurm task %%s\\n==== cd %%s && %%s\\n' \\\n"
                            "    %s \"$index\" \"$label\" \"$(date -Iseconds)\" \"$task\" %s \"$command\" >>\"$dir/log.txt\"\n"
                            "cd %s || exit 1\n"
                            "# Forward the time-limit warning (USR1), scancel/preemption (TERM) and INT to\n"
                            "# dfq run, which stops after its step, keeps its checkpoint and exits $exit_requeue.\n"
                            "got= child=\n"
                            "ckpt_before=$(stat -c %%Y \"$dir/checkpoint.safetensors\" 2>/dev/null)\n"
                            "trap 'got=USR1; [ -n \"$child\" ] && kill -USR1 \"$child\"' USR1\n"
                            "trap 'got=TERM; [ -n \"$child\" ] && kill -TERM \"$child\"' TERM\n"
                            "trap 'got=INT; [ -n \"$child\" ] && kill -INT \"$child\"' INT\n"
                            "\"$@\" >>\"$dir/log.txt\" 2>&1 &\n"
                            "child=$!\n"
                            "[ -n \"$got\" ] && kill -\"$got\" \"$child\"\n"
                            "while :; do\n"
                            "    wait \"$child\"; rc=$?\n"
                            "    kill -0 \"$child\" 2>/dev/null || break # else wait was interrupted by a trap\n"
                            "done\n"
                            "printf '%%s %%s %%s\\n' \"$task\" \"$rc\" \"${got:-none}\" >\"$dir/slurm.done.tmp\" &&\n"
                            "    mv -f \"$dir/slurm.done.tmp\" \"$dir/slurm.done\"\n"
                            "echo \"dfq sweep: trial $index ($label) in $dir: exit status $rc${got:+ after SIG$got}\"\n"
                            "if [ \"$rc\" -eq \"$exit_requeue\" ] && [ \"$got\" = USR1 ] && [ \"$requeue\" = 1 ]; then\n"
                            "    # only when this attempt checkpointed: else it would loop without progress\n"
                            "    if [ \"$(stat -c %%Y \"$dir/checkpoint.safetensors\" 2>/dev/null)\" != \"$ckpt_before\" ]; then\n"
                            "        echo \"dfq sweep: requeueing $task; it resumes from its checkpoint\"\n"
                            "        scontrol requeue \"$task\"\n"
                            "    else\n"
                            "        echo \"dfq sweep: not requeued: no epoch finished before the signal (raise --time)\"\n"
                            "    fi\n"
                            "fi\n"
                            "exit \"$rc\"\n",
                            pool->all->len, name, cwd, cwd);
}

static gboolean
dfq_slurm_write_script (DfqSweepPool *pool, const DfqSweepSlurmOptions *o, GPtrArray *trials, const char *path,
                        GError **error)
{
    gint cpus = 1;
    for (guint k = 0; k < trials->len; k++)
        cpus = MAX (cpus, ((DfqSweepJob *) trials->pdata[k])->threads);
    GString *sh = g_string_new (NULL);
    dfq_slurm_script_header (sh, pool, o, trials->len, cpus);
    dfq_slurm_script_trials (sh, pool, trials);
    dfq_slurm_script_body (sh, pool);
    GError *e = NULL;
    gboolean ok = g_file_set_contents (path, sh->str, -1, &e);
    g_string_free (sh, TRUE);
    if (!ok) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "%s", e->message);
        g_error_free (e);
        return FALSE;
    }
    g_chmod (path, 0755);
    return TRUE;
}

/* Submission -------------------------------------------------------------------------- */

/* sbatch --parsable for tasks [@offset, @offset + @n) of the script. Returns:
 * (transfer full) the array job's id, or NULL with @error. */
static char *
dfq_slurm_sbatch (const char *script, guint offset, guint n, gint array_limit, GError **error)
{
    g_autofree char *array = array_limit > 0 ? g_strdup_printf ("--array=0-%u%%%d", n - 1, array_limit)
                                             : g_strdup_printf ("--array=0-%u", n - 1);
    g_autofree char *export = g_strdup_printf ("--export=ALL,DFQ_SWEEP_OFFSET=%u", offset);
    const char *argv[] = { "sbatch", "--parsable", array, export, script, NULL };
    g_autofree char *out = NULL;
    g_autofree char *hint = g_strdup_printf ("the batch script is %s: fix what Slurm refused (--partition, --time, "
                                             "--sbatch-arg; sinfo lists the partitions) and rerun the same command",
                                             script);
    if (!dfq_slurm_command (argv, &out, hint, error)) {
        g_prefix_error (error, "Slurm refused the job array: ");
        return NULL;
    }
    /* "<job id>" or "<job id>;<cluster>" */
    g_strstrip (out);
    gsize len = strspn (out, "0123456789");
    if (len == 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_SLURM, "sbatch --parsable answered '%s', not a job id", out);
        return NULL;
    }
    return g_strndup (out, len);
}

/* Submits @pending in chunks of MaxArraySize tasks, recording each. */
static gboolean
dfq_slurm_submit (DfqSlurm *s, const DfqSweepSlurmOptions *o, GPtrArray *pending, GError **error)
{
    DfqSweepPool *pool = s->pool;
    g_autofree char *script = dfq_slurm_path (pool, "sweep.sbatch");
    if (!dfq_slurm_write_script (pool, o, pending, script, error))
        return FALSE;
    guint chunk = dfq_slurm_max_array_size ();
    for (guint offset = 0; offset < pending->len; offset += chunk) {
        guint n = MIN (chunk, pending->len - offset);
        g_autofree char *job_id = dfq_slurm_sbatch (script, offset, n, o->array_limit, error);
        if (job_id == NULL)
            return FALSE;
        g_autoptr (GPtrArray) part = g_ptr_array_new ();
        for (guint k = 0; k < n; k++)
            g_ptr_array_add (part, pending->pdata[offset + k]);
        if (!dfq_slurm_record (s, job_id, part, error))
            return FALSE;
        g_ptr_array_add (s->job_ids, g_strdup (job_id));
        fprintf (stderr, "submitted %u trial%s as Slurm job array %s (tasks 0-%u%s)\n", n, n == 1 ? "" : "s", job_id,
                 n - 1, offset > 0 ? ", a further chunk: MaxArraySize" : "");
        for (guint k = 0; k < n; k++) {
            DfqSweepJob *job = pending->pdata[offset + k];
            if (g_mkdir_with_parents (job->dir, 0755) != 0) /* the task creates it too */
                fprintf (stderr, "dfq sweep: warning: cannot create %s: %s\n", job->dir, g_strerror (errno));
            job->state = DFQ_TRIAL_QUEUED;
            job->before = FALSE;
            g_clear_pointer (&job->exit_text, g_free);
            dfq_sweep_write_trial_json (pool, job);
        }
    }
    dfq_sweep_write_index (pool);
    return TRUE;
}

/* Following the tasks ------------------------------------------------------------------- */

static void
dfq_slurm_report_change (DfqSlurm *s, DfqSweepJob *job, DfqTrialState old)
{
    DfqSweepPool *pool = s->pool;
    char detail[512];
    if (job->state == DFQ_TRIAL_QUEUED && old == DFQ_TRIAL_RUNNING) { /* --requeue, or preempted */
        g_snprintf (detail, sizeof detail, "Slurm task %s is pending again; it resumes from its checkpoint",
                    job->slurm_task);
        dfq_sweep_event (pool, job, "requeued", detail);
    } else if (job->state == DFQ_TRIAL_RUNNING) {
        job->started = g_get_monotonic_time ();
        g_snprintf (detail, sizeof detail, "%s (Slurm task %s, %d thread%s)", job->trial->id, job->slurm_task,
                    job->threads, job->threads == 1 ? "" : "s");
        dfq_sweep_event (pool, job, "started", detail);
    } else if (job->state == DFQ_TRIAL_FINISHED) {
        g_snprintf (detail, sizeof detail, "last %.2f%%, best %.2f%% (Slurm task %s)", job->last_top1, job->best_top1,
                    job->slurm_task);
        dfq_sweep_event (pool, job, "finished", detail);
    } else if (job->state != DFQ_TRIAL_QUEUED) {
        g_snprintf (detail, sizeof detail, "%s; log: %s/log.txt",
                    job->state == DFQ_TRIAL_DIVERGED && job->error ? job->error
                    : job->exit_text                               ? job->exit_text
                                                                   : "",
                    job->dir);
        dfq_sweep_event (pool, job, dfq_trial_state_names[job->state], detail);
    }
    if (job->started > 0 && job->state != DFQ_TRIAL_RUNNING && job->state != DFQ_TRIAL_QUEUED) {
        job->seconds = (g_get_monotonic_time () - job->started) / 1e6; /* as seen from here, for the ETA */
        pool->done_seconds += job->seconds;
        pool->done_count++;
    }
    dfq_sweep_write_trial_json (pool, job);
}

/* squeue and the run directories; the trials that changed are reported.
 * Returns: the trials still pending or running in Slurm. */
static guint
dfq_slurm_poll (DfqSlurm *s, gboolean report, GError **error)
{
    if (!dfq_slurm_squeue (s, error))
        return 0;
    guint active = 0;
    gboolean changed = FALSE;
    for (guint i = 0; i < s->pool->all->len; i++) {
        DfqSweepJob *job = s->pool->all->pdata[i];
        if (job->held || job->before)
            continue;
        DfqTrialState old = job->state;
        if (dfq_slurm_update_job (s, job) && report) {
            dfq_slurm_report_change (s, job, old);
            changed = TRUE;
        }
        active += job->in_slurm;
    }
    if (changed)
        dfq_sweep_write_index (s->pool);
    return active;
}

static gboolean
dfq_slurm_on_tick (gpointer data)
{
    DfqSlurm *s = data;
    GError *e = NULL;
    guint active = dfq_slurm_poll (s, TRUE, &e);
    if (e != NULL) {
        g_clear_error (&s->poll_error);
        s->poll_error = e;
        g_main_loop_quit (s->pool->loop);
        return G_SOURCE_CONTINUE;
    }
    if (active == 0)
        g_main_loop_quit (s->pool->loop);
    return G_SOURCE_CONTINUE;
}

/* Ctrl-C stops following the tasks; Slurm keeps running them. */
static gboolean
dfq_slurm_on_signal (gpointer data)
{
    DfqSlurm *s = data;
    s->pool->interrupted = TRUE;
    g_autofree char *jobs = g_strjoinv (" ", (char **) s->job_ids->pdata);
    fprintf (stderr, "dfq sweep: no longer following the Slurm tasks; they keep running (--status shows them, "
                     "scancel %s cancels them, the same command collects and resubmits)\n",
             jobs);
    g_main_loop_quit (s->pool->loop);
    return G_SOURCE_CONTINUE;
}

static gboolean
dfq_slurm_wait (DfqSlurm *s, GError **error)
{
    DfqSweepPool *pool = s->pool;
    g_ptr_array_add (s->job_ids, NULL); /* for g_strjoinv */
    g_autoptr (GMainLoop) loop = pool->loop = g_main_loop_new (NULL, FALSE);
    guint tick = g_timeout_add_seconds (DFQ_SLURM_POLL_SECONDS, dfq_slurm_on_tick, s);
    guint sigint = g_unix_signal_add (SIGINT, dfq_slurm_on_signal, s);
    guint sigterm = g_unix_signal_add (SIGTERM, dfq_slurm_on_signal, s);
    g_main_loop_run (loop);
    g_source_remove (tick);
    g_source_remove (sigint);
    g_source_remove (sigterm);
    pool->loop = NULL;
    if (s->poll_error != NULL) {
        g_propagate_error (error, g_steal_pointer (&s->poll_error));
        return FALSE;
    }
    return TRUE;
}

/* The entry points --------------------------------------------------------------------------- */

gboolean
dfq_sweep_slurm_run (DfqSweepPool *pool, const DfqSweepSlurmOptions *o, GError **error)
{
    if (!dfq_slurm_need_tool ("sbatch", error) || !dfq_slurm_need_tool ("squeue", error))
        return FALSE;
    g_auto (DfqSlurm) s = { .pool = pool };
    int lock_fd = -1;
    g_autofree char *slurm_dir = g_build_filename (pool->out, "slurm", NULL);
    if (g_mkdir_with_parents (slurm_dir, 0755) != 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot create %s: %s", slurm_dir, g_strerror (errno));
        return FALSE;
    }
    lock_fd = dfq_sweep_lock (pool->out, error);
    if (lock_fd < 0)
        return FALSE;
    dfq_slurm_load (&s);
    GError *e = NULL;
    dfq_slurm_poll (&s, FALSE, &e);
    gboolean ok = e == NULL;
    if (e != NULL)
        g_propagate_error (error, e);
    guint before = 0, active = 0;
    g_autoptr (GPtrArray) pending = g_ptr_array_new ();
    for (guint i = 0; ok && i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        before += job->before;
        active += job->in_slurm;
        if (!job->before && !job->held && !job->in_slurm && job->state != DFQ_TRIAL_FINISHED &&
            job->state != DFQ_TRIAL_DIVERGED)
            g_ptr_array_add (pending, job);
    }
    if (ok) {
        fprintf (stderr, "dfq sweep %s: %u trials (%u done before, %u in Slurm already, %u to run) from %s\n",
                 pool->sweep->name, pool->all->len, before, active, pending->len, pool->sweep->path);
        fprintf (stderr, "output %s; Slurm job array, %d thread%s (CPUs) per trial\n", pool->out, pool->threads,
                 pool->threads == 1 ? "" : "s");
        dfq_sweep_write_index (pool);
    }
    if (ok && pending->len > 0)
        ok = dfq_slurm_submit (&s, o, pending, error);
    if (ok && o->no_wait) {
        printf ("sweep %s: %u trial%s submitted, %u in Slurm before; `dfq sweep %s --out %s --status` shows "
                "them; the same command without --no-wait follows them, collects and resubmits what did not finish\n",
                pool->sweep->name, pending->len, pending->len == 1 ? "" : "s", active, pool->sweep->path, pool->out);
        close (lock_fd);
        return TRUE;
    }
    if (ok && active + pending->len > 0)
        ok = dfq_slurm_wait (&s, error);
    close (lock_fd);
    if (!ok)
        return FALSE;
    dfq_sweep_write_index (pool);
    return dfq_sweep_summarize (pool, before, error);
}

gboolean
dfq_sweep_slurm_status (DfqSweepPool *pool, GError **error)
{
    if (!dfq_slurm_need_tool ("squeue", error))
        return FALSE;
    g_auto (DfqSlurm) s = { .pool = pool };
    dfq_slurm_load (&s);
    if (!dfq_slurm_squeue (&s, error))
        return FALSE;
    guint c[DFQ_TRIAL_N_STATES] = { 0 };
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        if (!job->before)
            dfq_slurm_update_job (&s, job);
        c[job->state]++;
    }
    printf ("sweep %s: %u trials: %u finished, %u running, %u queued", pool->sweep->name, pool->all->len,
            c[DFQ_TRIAL_FINISHED], c[DFQ_TRIAL_RUNNING], c[DFQ_TRIAL_QUEUED]);
    for (guint st = DFQ_TRIAL_DIVERGED; st < DFQ_TRIAL_N_STATES; st++)
        if (c[st] > 0)
            printf (", %u %s", c[st], dfq_trial_state_names[st]);
    printf ("\n");
    for (guint i = 0; i < pool->all->len; i++) {
        DfqSweepJob *job = pool->all->pdata[i];
        const char *where = job->state == DFQ_TRIAL_QUEUED && !job->in_slurm ? "not submitted"
                            : job->state == DFQ_TRIAL_QUEUED               ? "pending"
                                                                           : dfq_trial_state_names[job->state];
        printf ("%3u  %-13s %-40s %s%s\n", i + 1, where, job->trial->label,
                job->slurm_task != NULL ? "Slurm task " : "", job->slurm_task != NULL ? job->slurm_task : "");
        if (job->exit_text != NULL && job->state != DFQ_TRIAL_FINISHED && job->state != DFQ_TRIAL_RUNNING &&
            job->state != DFQ_TRIAL_QUEUED)
            printf ("     %s%s\n", job->exit_text,
                    job->state == DFQ_TRIAL_INTERRUPTED ? " (stopped with its checkpoint: the rerun resumes it)" : "");
    }
    return TRUE;
}
