/* dfq run | train | eval (core/cli): execute a pipeline. Progress goes to
 * stderr (a live line on a terminal, one line per epoch otherwise); the last
 * line on stdout is one JSON object with the result, so external tuners can use
 * `dfq run` as a trial command. Ctrl-C (SIGINT), SIGTERM and SIGUSR1 (what
 * Slurm sends before a time limit or on preemption, docs/sweeps.md) stop after
 * the current step (training: the current iteration, checkpointed there),
 * keep the last checkpoint and exit with DFQ_EXIT_REQUEUE; running the same
 * command again resumes. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <dfq/dfq.h>
#include <dfq/dfq-runner.h>

#include "dfq-cli.h"

/* The signal that asked the run to stop (0: none). */
static volatile sig_atomic_t dfq_cmd_interrupted = 0;

static void
dfq_cmd_on_signal (int sig)
{
    if (dfq_cmd_interrupted == 0)
        dfq_cmd_interrupted = sig;
}

/* The signals that stop a run cleanly: Ctrl-C, kill/scancel/time limit
 * (SIGTERM), and the advance warning of `sbatch --signal=B:USR1@T` that the
 * batch script forwards. */
static const int dfq_cmd_stop_signals[] = { SIGINT, SIGTERM, SIGUSR1 };

typedef struct {
    GCancellable *cancellable;
    gboolean tty;
    gint last_epoch_printed;
    double last_line; /* elapsed seconds at the last in-epoch line (logs, not a tty) */
} DfqCmdProgress;

/* Without a tty, a line inside a long training epoch at most this often, so a
 * log shows progress and an ETA long before the epoch ends. */
#define DFQ_CMD_LOG_INTERVAL_S 60.0

static void
dfq_cmd_format_seconds (double s, char *buf, gsize n)
{
    if (!isfinite (s) || s < 0) {
        g_strlcpy (buf, "--:--", n);
        return;
    }
    long t = (long) s;
    if (t >= 3600)
        g_snprintf (buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        g_snprintf (buf, n, "%02ld:%02ld", t / 60, t % 60);
}

/* What one unit of a phase is called on the console. */
static const char *
dfq_cmd_unit_name (const char *phase)
{
    if (g_str_equal (phase, "synthesize") || g_str_equal (phase, "calibrate"))
        return "batch";
    if (g_str_equal (phase, "evaluate"))
        return "pass";
    return "epoch";
}

static void
dfq_cmd_progress (const DfqProgress *p, gpointer data)
{
    DfqCmdProgress *cp = data;
    if (dfq_cmd_interrupted && !g_cancellable_is_cancelled (cp->cancellable)) {
        g_cancellable_cancel (cp->cancellable);
        fprintf (stderr, "\ndfq: %s, stopping after this step (training: with a checkpoint after it)\n",
                 g_strsignal (dfq_cmd_interrupted));
    }
    char eta[32], el[32];
    dfq_cmd_format_seconds (p->eta, eta, sizeof eta);
    dfq_cmd_format_seconds (p->elapsed, el, sizeof el);
    if (cp->tty) {
        int width = 24, filled = p->iters > 0 ? (int) ((double) (p->iter + 1) / p->iters * width) : 0;
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        fprintf (stderr, "\r%-10s %s %d/%d [%s] loss %.4f", p->phase, dfq_cmd_unit_name (p->phase), p->epoch + 1,
                 p->epochs, bar, p->loss);
        if (p->gen_loss != 0.0)
            fprintf (stderr, " gen %.4f", p->gen_loss);
        if (isfinite (p->top1))
            fprintf (stderr, " top1 %.2f%%", p->top1);
        fprintf (stderr, " %s ETA %s   ", el, eta);
        if (g_str_equal (p->phase, "done"))
            fprintf (stderr, "\n");
        fflush (stderr);
    } else if (g_str_equal (p->phase, "eval") && p->epoch != cp->last_epoch_printed) {
        cp->last_epoch_printed = p->epoch;
        cp->last_line = p->elapsed;
        fprintf (stderr, "epoch %d/%d loss %.4f elapsed %s ETA %s\n", p->epoch + 1, p->epochs, p->loss, el, eta);
    } else if (g_str_equal (p->phase, "train") && p->elapsed - cp->last_line >= DFQ_CMD_LOG_INTERVAL_S) {
        cp->last_line = p->elapsed;
        char top1[40] = "";
        if (isfinite (p->top1))
            g_snprintf (top1, sizeof top1, " (top1 %.2f%% after the last epoch)", p->top1);
        fprintf (stderr, "train epoch %d/%d iteration %d/%d loss %.4f elapsed %s ETA %s%s\n", p->epoch + 1,
                 p->epochs, p->iter + 1, p->iters, p->loss, el, eta, top1);
    } else if (g_str_equal (p->phase, "synthesize") && p->iters > 0
               && ((p->iter + 1) % MAX (p->iters / 5, 1) == 0 || p->iter + 1 == p->iters)) {
        fprintf (stderr, "synthesize batch %d/%d iteration %d/%d loss %.4f elapsed %s\n", p->epoch + 1, p->epochs,
                 p->iter + 1, p->iters, p->loss, el);
    } else if (g_str_equal (p->phase, "calibrate") || g_str_equal (p->phase, "evaluate")) {
        fprintf (stderr, "%s %s %d/%d elapsed %s\n", p->phase, dfq_cmd_unit_name (p->phase), p->epoch + 1, p->epochs, el);
    } else if (g_str_equal (p->phase, "done")) {
        fprintf (stderr, "done: top1 %.2f%% after %s\n", p->top1, el);
    }
}

static gboolean
dfq_cmd_execute (DfqCli *cli, int argc, char **argv, gboolean train, GError **error)
{
    g_auto (GStrv) sets = NULL;
    g_autofree char *run_dir = NULL;
    gboolean restart = FALSE, help = FALSE;
    gint eval_limit = 0, stop_after = 0, stop_after_iters = 0;
    const GOptionEntry entries[] = {
        { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets, "Override a key: a.b.c=value (repeatable)", "KEY=VALUE" },
        { "run-dir", 0, 0, G_OPTION_ARG_FILENAME, &run_dir, "Run directory (default <output_dir>/<name>-s<seed>)", "DIR" },
        { "restart", 0, 0, G_OPTION_ARG_NONE, &restart, "Start over instead of resuming from the checkpoint", NULL },
        { "eval-limit", 0, 0, G_OPTION_ARG_INT, &eval_limit, "Evaluate on the first N images only (smoke tests)", "N" },
        { "stop-after", 0, 0, G_OPTION_ARG_INT, &stop_after, "Stop after N units (epochs, image batches) of this invocation (resume later)", "N" },
        { "stop-after-iters", 0, 0, G_OPTION_ARG_INT, &stop_after_iters, "Stop after N training iterations of this invocation, with a checkpoint inside the epoch (resume later)", "N" },
        { NULL }
    };
    const char *name = train ? "train" : "run";
    const char *summary = train ? "Train a model (a teacher) on real data" : "Run a quantization pipeline";
    const char *description =
        train ? "Writes the run directory <output_dir>/<name>-s<seed> (or --run-dir): config.yaml, manifest.json, "
                "metrics.jsonl, checkpoint.safetensors, result.json and the trained weights, model.safetensors "
                "(also written to train.save when set; use it as teacher.weights). Resumes from its checkpoint "
                "when run again."
              : "Writes the run directory <output_dir>/<name>-s<seed> (or --run-dir): config.yaml, manifest.json, "
                "metrics.jsonl, checkpoint.safetensors, result.json and the student's weights, student.safetensors "
                "(float) and, with a quantizer, student-quantized.safetensors. Resumes from its checkpoint when run again.";
    if (!dfq_cli_parse (cli, name, "PIPELINE.yaml", summary, description,
                        entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if (argc != 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "%s: expected one pipeline file (see --help)", name);
        return FALSE;
    }
    DfqRegistry *registry = dfq_cli_get_registry (cli);
    g_autoptr (DfqPipeline) pipeline = dfq_pipeline_new_from_file (registry, argv[1], (const char *const *) sets, error);
    /* As dfq validate: a tap pattern that matches nothing fails here, located,
     * not steps into the run. */
    if (pipeline == NULL) {
        dfq_cli_hint_sweep_file (argv[1], error);
        return FALSE;
    }
    if (!dfq_pipeline_check_taps (pipeline, error))
        return FALSE;
    g_autoptr (GCancellable) cancellable = g_cancellable_new ();
    DfqCmdProgress cp = { cancellable, isatty (STDERR_FILENO), -1, 0.0 };
    DfqRunOptions opts = { 0 };
    opts.run_dir = run_dir;
    opts.restart = restart;
    opts.eval_limit = (guint) MAX (eval_limit, 0);
    opts.stop_after_epochs = stop_after;
    opts.stop_after_iters = stop_after_iters;
    opts.progress = dfq_cmd_progress;
    opts.progress_data = &cp;
    opts.cancellable = cancellable;
    struct sigaction sa = { 0 }, old[G_N_ELEMENTS (dfq_cmd_stop_signals)];
    sa.sa_handler = dfq_cmd_on_signal;
    for (guint i = 0; i < G_N_ELEMENTS (dfq_cmd_stop_signals); i++)
        sigaction (dfq_cmd_stop_signals[i], &sa, &old[i]);
    DfqRunResult result;
    gboolean ok = train ? dfq_runner_train (registry, pipeline, &opts, &result, error)
                        : dfq_runner_run (registry, pipeline, &opts, &result, error);
    for (guint i = 0; i < G_N_ELEMENTS (dfq_cmd_stop_signals); i++)
        sigaction (dfq_cmd_stop_signals[i], &old[i], NULL);
    if (cp.tty)
        fprintf (stderr, "\n");
    if (ok) {
        printf ("run directory: %s\n", result.run_dir);
        if (result.best_epoch >= 0)
            printf ("FP top-1 %.2f %%, last top-1 %.2f %%, best top-1 %.2f %% (epoch %d, selected on the %s split), "
                    "%.0f s\n",
                    result.fp_top1, result.last_top1, result.best_top1, result.best_epoch + 1, result.best_split,
                    result.wall_seconds);
        else
            printf ("FP top-1 %.2f %%, top-1 %.2f %% (%s split), %.0f s\n", result.fp_top1, result.last_top1,
                    result.best_split, result.wall_seconds);
        printf ("{\"status\": \"%s\", \"run_dir\": \"%s\", \"fp_top1\": %.4f, \"last_top1\": %.4f, "
                "\"best_top1\": %.4f, \"wall_seconds\": %.1f}\n",
                result.status, result.run_dir, result.fp_top1, result.last_top1, result.best_top1, result.wall_seconds);
    } else if (result.run_dir != NULL) {
        fprintf (stderr, "dfq: run directory %s (rerun the same command to resume)\n", result.run_dir);
    }
    dfq_run_result_clear (&result);
    return ok;
}

gboolean
dfq_cmd_run (DfqCli *cli, int argc, char **argv, GError **error)
{
    return dfq_cmd_execute (cli, argc, argv, FALSE, error);
}

gboolean
dfq_cmd_train (DfqCli *cli, int argc, char **argv, GError **error)
{
    return dfq_cmd_execute (cli, argc, argv, TRUE, error);
}

gboolean
dfq_cmd_eval (DfqCli *cli, int argc, char **argv, GError **error)
{
    g_auto (GStrv) sets = NULL;
    g_autofree char *weights = NULL, *confusion = NULL, *split = NULL;
    gboolean help = FALSE, json = FALSE;
    gint limit = 0;
    const GOptionEntry entries[] = {
        { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets, "Override a key: a.b.c=value (repeatable)", "KEY=VALUE" },
        { "weights", 'w', 0, G_OPTION_ARG_FILENAME, &weights, "Weights to evaluate (default: teacher.weights)", "FILE" },
        { "split", 0, 0, G_OPTION_ARG_STRING, &split, "test or train (default: eval.split)", "SPLIT" },
        { "confusion", 0, 0, G_OPTION_ARG_FILENAME, &confusion, "Write the confusion matrix as CSV", "FILE" },
        { "limit", 0, 0, G_OPTION_ARG_INT, &limit, "Evaluate the first N images only", "N" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the result as JSON", NULL },
        { NULL }
    };
    if (!dfq_cli_parse (cli, "eval", "PIPELINE.yaml", "Evaluate a model's weights on a dataset split",
                        "Uses the pipeline's teacher.model, data and eval sections. Prints top-1, top-5 and "
                        "per-class accuracy.",
                        entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if (argc != 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "eval: expected one pipeline file (see --help)");
        return FALSE;
    }
    DfqRegistry *registry = dfq_cli_get_registry (cli);
    g_autoptr (DfqPipeline) pipeline = dfq_pipeline_new_from_file (registry, argv[1], (const char *const *) sets, error);
    if (pipeline == NULL)
        return FALSE;
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    DfqModel *model = (DfqModel *) cfg->teacher.model;
    const char *path = weights ? weights : cfg->teacher.weights;
    if (path == NULL) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                     "eval: no weights: give --weights FILE or set teacher.weights in the pipeline");
        return FALSE;
    }
    if (!dfq_model_load (model, path, weights ? NULL : (const char *const *) cfg->teacher.rename, error))
        return FALSE;
    DfqDatasetSplit sp = (DfqDatasetSplit) cfg->eval.split;
    if (split != NULL) {
        if (g_str_equal (split, "test"))
            sp = DFQ_DATASET_SPLIT_TEST;
        else if (g_str_equal (split, "train"))
            sp = DFQ_DATASET_SPLIT_TRAIN;
        else {
            g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "eval: --split must be test or train, not '%s'", split);
            return FALSE;
        }
    }
    dfq_set_num_threads (MAX (cfg->threads, 1));
    g_autoptr (DfqDataset) ds = dfq_dataset_open (dfq_pipeline_dataset_names[cfg->data.dataset], sp, cfg->data.dir, error);
    if (ds == NULL)
        return FALSE;
    DfqEvalResult r;
    if (!dfq_evaluate (model, NULL, ds, (guint) cfg->eval.batch, (guint) MAX (limit, 0), &r, error))
        return FALSE;
    g_autofree double *per_class = g_new0 (double, r.classes);
    dfq_eval_result_per_class (&r, per_class);
    if (json) {
        printf ("{\"weights\": \"%s\", \"dataset\": \"%s\", \"split\": \"%s\", \"n\": %u, \"top1\": %.4f, "
                "\"top5\": %.4f, \"loss\": %.6f, \"per_class\": [",
                path, dfq_dataset_get_name (ds), dfq_pipeline_split_names[sp], r.n, r.top1, r.top5, r.loss);
        for (guint k = 0; k < r.classes; k++)
            printf ("%s%.2f", k ? ", " : "", per_class[k]);
        printf ("]}\n");
    } else {
        printf ("%s on %s/%s (%u images, %.1f s)\n", path, dfq_dataset_get_name (ds), dfq_pipeline_split_names[sp],
                r.n, r.seconds);
        printf ("top-1 %.2f %%  top-5 %.2f %%  loss %.4f\n", r.top1, r.top5, r.loss);
        printf ("per class:");
        for (guint k = 0; k < r.classes; k++)
            printf (" %u:%.1f", k, per_class[k]);
        printf ("\n");
    }
    gboolean ok = TRUE;
    if (confusion != NULL) {
        g_autofree char *csv = dfq_eval_result_confusion_csv (&r);
        GError *e = NULL;
        if (!g_file_set_contents (confusion, csv, -1, &e)) {
            g_propagate_prefixed_error (error, e, "eval: ");
            ok = FALSE;
        }
    }
    dfq_eval_result_clear (&r);
    return ok;
}
