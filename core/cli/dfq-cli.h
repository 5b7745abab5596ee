/* The dfq command line (core/cli), private: the subcommand table entry and
 * the helpers every subcommand shares. */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

/* The exit status of `dfq run`/`dfq train` stopped by a signal (SIGINT,
 * SIGTERM, SIGUSR1) after keeping its last checkpoint: run the same command
 * again to resume (EX_TEMPFAIL of sysexits.h). Batch scripts of
 * `dfq sweep --launcher slurm` requeue on it. */
#define DFQ_EXIT_REQUEUE 75

typedef struct {
    char *plugin_path;     /* --plugin-path (before or after the subcommand) */
    DfqRegistry *registry; /* scanned on first use */
} DfqCli;

typedef struct {
    const char *name;
    const char *summary;
    /* argv[0] is the subcommand name. Usage errors: G_OPTION_ERROR (exit 2),
     * pipeline errors: DFQ_PIPELINE_ERROR (exit 2), anything else: exit 1. */
    gboolean (*run) (DfqCli *cli, int argc, char **argv, GError **error);
} DfqCliCommand;

/* The registry with every plugin on the search path; load failures are
 * printed to stderr as warnings (a broken plugin does not stop the CLI). */
DfqRegistry *dfq_cli_get_registry (DfqCli *cli);

/**
 * dfq_cli_parse:
 * Parses @argc/@argv of subcommand @command with @entries plus the common
 * options (--plugin-path, --help). GLib's own --help would exit(): here
 * --help prints the help to stdout and sets *@help, so the command returns.
 */
gboolean dfq_cli_parse (DfqCli *cli, const char *command, const char *parameter_string, const char *summary,
                        const char *description, const GOptionEntry *entries, int *argc, char ***argv,
                        gboolean *help, GError **error);

/* When loading @path as a pipeline failed because it is a sweep file (its
 * top level names a base `pipeline:`), says so in @error and how to check and
 * run it instead. */
void dfq_cli_hint_sweep_file (const char *path, GError **error);

gboolean dfq_cmd_validate (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_inspect (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_run (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_train (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_eval (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_sweep (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_report (DfqCli *cli, int argc, char **argv, GError **error);
gboolean dfq_cmd_images (DfqCli *cli, int argc, char **argv, GError **error);

G_END_DECLS
