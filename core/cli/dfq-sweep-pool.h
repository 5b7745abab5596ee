/* dfq sweep (core/cli), private: the trials of one invocation and what the
 * launchers share. dfq-cmd-sweep.c expands the sweep, runs the local pool and
 * writes the index (sweep.json, trial.json); dfq-sweep-slurm.c hands the
 * trials to Slurm as a job array and reads their outcome back from the run
 * directories. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "../sweep/dfq-sweep-private.h"

G_BEGIN_DECLS

typedef enum {
    DFQ_TRIAL_QUEUED,
    DFQ_TRIAL_RUNNING,
    DFQ_TRIAL_FINISHED,
    DFQ_TRIAL_DIVERGED,
    DFQ_TRIAL_CRASHED,     /* killed by a signal it did not ask for */
    DFQ_TRIAL_FAILED,      /* a non-zero exit without a result */
    DFQ_TRIAL_INTERRUPTED, /* stopped because the sweep was, or by a signal (exit DFQ_EXIT_REQUEUE) */
    DFQ_TRIAL_N_STATES
} DfqTrialState;

extern const char *const dfq_trial_state_names[DFQ_TRIAL_N_STATES];

typedef struct {
    DfqSweepTrial *trial; /* borrowed from the sweep */
    char *dir;            /* absolute */
    DfqTrialState state;
    gboolean before; /* its state was reached by an earlier invocation */
    gboolean held;   /* not selected by --only: this invocation leaves it as it is */
    gint threads;
    gint seed;
    GSubprocess *proc;
    gint64 started;  /* monotonic, microseconds */
    double seconds;  /* wall time in this invocation */
    char *exit_text; /* "exit status 1", "signal 11 (Segmentation fault)" */
    char *log_tail;
    char *error; /* result.json's error (diverged) */
    double last_top1, best_top1;
    char *slurm_task; /* --launcher slurm: "<array job>_<task>" of its last submission, or NULL */
    gboolean in_slurm; /* --launcher slurm: that task is pending or running (squeue) */
} DfqSweepJob;

typedef struct {
    DfqSweep *sweep;
    char *out;
    char *exe;
    const char *plugin_path;
    const char *launcher; /* "local" or "slurm" (in sweep.json) */
    gint jobs;
    gint threads;   /* per trial, when the sweep does not set it */
    GPtrArray *all; /* DfqSweepJob * */
    guint running;
    guint n_signals;
    gboolean interrupted;
    gboolean tty;
    gboolean status_shown;
    GMainLoop *loop;
    gint64 t0;
    double done_seconds; /* trials completed in this invocation, for the ETA */
    guint done_count;
    GError *io_error; /* the first failure to write the index */
} DfqSweepPool;

void dfq_sweep_job_free (DfqSweepJob *job);
/* One sweep at a time per output directory (created; the lock dies with the
 * process). Returns: the lock's file descriptor, or -1 with @error
 * (DFQ_SWEEP_ERROR_LOCKED, _IO). */
int dfq_sweep_lock (const char *out, GError **error);
/* "mm:ss" or "h:mm:ss" into @buf ("--:--" when unknown). */
void dfq_sweep_format_seconds (double s, char *buf, gsize n);
/* From the trial's result.json: finished or diverged, with top-1 and error;
 * FALSE when it has no result yet (the state is left as it is). */
gboolean dfq_sweep_job_read_result (DfqSweepJob *job);
/* The last lines of the trial's log.txt. Returns: (transfer full). */
char *dfq_sweep_log_tail (const char *dir);
/* Rewrite <trial>/trial.json and <out>/sweep.json (atomically); a failure is
 * kept in pool->io_error and reported at the end. */
void dfq_sweep_write_trial_json (DfqSweepPool *pool, DfqSweepJob *job);
void dfq_sweep_write_index (DfqSweepPool *pool);
void dfq_sweep_note_io_error (DfqSweepPool *pool, GError *e);
void dfq_sweep_count (DfqSweepPool *pool, guint counts[DFQ_TRIAL_N_STATES]);
/* Queued trials that --only left out. */
guint dfq_sweep_count_held (DfqSweepPool *pool);
/* "3/12 done, 2 running, ..." Returns: (transfer full). */
char *dfq_sweep_status_text (DfqSweepPool *pool);
/* One progress line about one trial on stderr ("[2/4] finished  label: detail"). */
void dfq_sweep_event (DfqSweepPool *pool, DfqSweepJob *job, const char *what, const char *detail);
/* The trial's `dfq run` command line (NULL-terminated). Returns: (transfer full). */
GPtrArray *dfq_sweep_job_argv (DfqSweepPool *pool, DfqSweepJob *job);
/* @argv quoted for a shell. Returns: (transfer full). */
char *dfq_sweep_quote_argv (char **argv);
/* The closing summary on stdout, and the error for the exit status (FALSE when
 * a trial did not finish, the sweep was interrupted or the index could not be
 * written). */
gboolean dfq_sweep_summarize (DfqSweepPool *pool, guint before, GError **error);

/* Options of `dfq sweep --launcher slurm` (dfq-sweep-slurm.c). */
typedef struct {
    const char *partition;   /* --partition, or NULL: the cluster's default */
    const char *time;        /* --time (sbatch syntax), or NULL: the partition's default */
    gint array_limit;        /* --array-limit: tasks running at once (%N), 0: no limit */
    const char *const *sbatch_args; /* --sbatch-arg (each one #SBATCH line), or NULL */
    gboolean no_wait;        /* submit and return */
    gboolean requeue;        /* --requeue: a task stopped by its time-limit signal requeues itself */
} DfqSweepSlurmOptions;

/**
 * dfq_sweep_slurm_run:
 * Submits the trials of @pool that are neither done nor queued or running in
 * Slurm already as one job array (chunked by MaxArraySize) from one batch
 * script, <out>/slurm/sweep.sbatch, records the submission in
 * <out>/slurm/jobs.json and, unless @o->no_wait, follows the tasks (squeue and
 * the run directories) until none is left, then prints the summary.
 * Errors: DFQ_SWEEP_ERROR_SLURM (sbatch missing or refusing the job),
 * DFQ_SWEEP_ERROR_IO, DFQ_SWEEP_ERROR_TRIALS, DFQ_SWEEP_ERROR_INTERRUPTED.
 */
gboolean dfq_sweep_slurm_run (DfqSweepPool *pool, const DfqSweepSlurmOptions *o, GError **error);

/**
 * dfq_sweep_slurm_status:
 * `dfq sweep FILE --status`: where each trial is (done, failed, queued or
 * running in Slurm job J_T, not submitted) from the run directories, the
 * submissions recorded under <out>/slurm and squeue; submits nothing.
 */
gboolean dfq_sweep_slurm_status (DfqSweepPool *pool, GError **error);

G_END_DECLS
