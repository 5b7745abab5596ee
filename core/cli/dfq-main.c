/* The dfq command line (core/cli): global options, the subcommand table and
 * the only place that turns a GError into an exit status (2: usage or an
 * invalid pipeline; DFQ_EXIT_REQUEUE: a run stopped by a signal, to resume;
 * 1: anything else at run time). Each subcommand lives in its own
 * dfq-cmd-<name>.c. */
#include <stdio.h>
#include <string.h>

#include <dfq/dfq.h>
#include "../params/dfq-params-private.h"
#include "dfq-cli.h"

static const DfqCliCommand dfq_cli_commands[] = {
    { "validate", "Check a pipeline file (and print the resolved config)", dfq_cmd_validate },
    { "inspect", "List features, or show one feature's parameters (text, JSON, Markdown)", dfq_cmd_inspect },
    { "run", "Run a quantization pipeline into a run directory (resumes)", dfq_cmd_run },
    { "train", "Train a model (a teacher) on real data (resumes)", dfq_cmd_train },
    { "eval", "Evaluate weights on a dataset split (top-1/top-5, per class, confusion)", dfq_cmd_eval },
    { "sweep", "Expand a sweep file and run its trials in a local process pool (resumes)", dfq_cmd_sweep },
    { "report", "Tables (Markdown, CSV) and an HTML page with plots from run directories", dfq_cmd_report },
    { "images", "A PNG grid of a run's images (or of a dataset's)", dfq_cmd_images },
    /* one row per subcommand; each lives in its own dfq-cmd-<name>.c */
};

/* Options common to every subcommand ------------------------------------------ */

static gboolean
dfq_cli_plugin_path_cb (const char *option_name, const char *value, gpointer data, GError **error)
{
    DfqCli *cli = data;
    g_free (cli->plugin_path);
    cli->plugin_path = g_strdup (value);
    return TRUE;
}

gboolean
dfq_cli_parse (DfqCli *cli, const char *command, const char *parameter_string, const char *summary,
               const char *description, const GOptionEntry *entries, int *argc, char ***argv,
               gboolean *help, GError **error)
{
    const GOptionEntry common[] = {
        { "plugin-path", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer) dfq_cli_plugin_path_cb,
          "Directories searched for plugins before $DFQ_PLUGIN_PATH (':'-separated)", "DIRS" },
        { "help", 'h', 0, G_OPTION_ARG_NONE, help, "Show this help", NULL },
        { NULL }
    };
    *help = FALSE;
    /* The usage line names the program: "dfq <command>" (set once, before
     * GLib derives it from argv[0]). */
    g_autofree char *program = g_strdup_printf ("dfq %s", command);
    g_set_prgname (program);
    g_autoptr (GOptionContext) context = g_option_context_new (parameter_string);
    g_autofree char *summary_text = g_strdup_printf ("dfq %s: %s", command, summary);
    g_option_context_set_summary (context, summary_text);
    if (description != NULL)
        g_option_context_set_description (context, description);
    /* GLib's --help calls exit(): dfq handles --help itself. */
    g_option_context_set_help_enabled (context, FALSE);
    GOptionGroup *main_group = g_option_group_new (NULL, NULL, NULL, cli, NULL);
    if (entries != NULL)
        g_option_group_add_entries (main_group, entries);
    g_option_group_add_entries (main_group, common);
    g_option_context_set_main_group (context, main_group);
    if (!g_option_context_parse (context, argc, argv, error))
        return FALSE;
    if (*help) {
        g_autofree char *text = g_option_context_get_help (context, TRUE, NULL);
        fputs (text, stdout);
    }
    return TRUE;
}

DfqRegistry *
dfq_cli_get_registry (DfqCli *cli)
{
    if (cli->registry != NULL)
        return cli->registry;
    cli->registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    dfq_registry_scan (cli->registry, cli->plugin_path, failures);
    for (guint i = 0; i < failures->len; i++)
        fprintf (stderr, "dfq: warning: %s\n", ((GError *) failures->pdata[i])->message);
    return cli->registry;
}

/* main ---------------------------------------------------------------------- */

static void
dfq_cli_print_usage (FILE *out)
{
    fprintf (out,
             "Usage: dfq [--plugin-path DIRS] COMMAND [OPTION...]\n"
             "\n"
             "dfqlab: data-free quantization workbench.\n"
             "\n"
             "Commands:\n");
    for (guint i = 0; i < G_N_ELEMENTS (dfq_cli_commands); i++)
        fprintf (out, "  %-10s %s\n", dfq_cli_commands[i].name, dfq_cli_commands[i].summary);
    fprintf (out,
             "\n"
             "Options:\n"
             "  --plugin-path DIRS  Search DIRS (':'-separated) for plugins first\n"
             "  --version           Print the version\n"
             "  -h, --help          Show this help\n"
             "\n"
             "'dfq COMMAND --help' describes a command.\n");
}

static int
dfq_cli_exit_status (const GError *error)
{
    if (error->domain == DFQ_PIPELINE_ERROR || error->domain == G_OPTION_ERROR)
        return 2;
    if (g_error_matches (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_CANCELLED))
        return DFQ_EXIT_REQUEUE;
    return 1;
}

int
main (int argc, char **argv)
{
    DfqCli cli = { 0 };
    g_autoptr (GError) error = NULL;
    int i = 1;
    int status = 0;

    /* Global options, before the command. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp (argv[i], "--version") == 0) {
            printf ("dfq %s (plugin ABI %d)\n", DFQ_VERSION_STRING, DFQ_PLUGIN_ABI_VERSION);
            return 0;
        } else if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            dfq_cli_print_usage (stdout);
            return 0;
        } else if (strcmp (argv[i], "--plugin-path") == 0 && i + 1 < argc) {
            g_free (cli.plugin_path);
            cli.plugin_path = g_strdup (argv[++i]);
        } else if (g_str_has_prefix (argv[i], "--plugin-path=")) {
            g_free (cli.plugin_path);
            cli.plugin_path = g_strdup (argv[i] + strlen ("--plugin-path="));
        } else {
            fprintf (stderr, "dfq: unknown option %s\n\n", argv[i]);
            dfq_cli_print_usage (stderr);
            g_free (cli.plugin_path);
            return 2;
        }
    }
    if (i >= argc) {
        dfq_cli_print_usage (stderr);
        g_free (cli.plugin_path);
        return 2;
    }

    const DfqCliCommand *command = NULL;
    const char *names[G_N_ELEMENTS (dfq_cli_commands)];
    for (guint c = 0; c < G_N_ELEMENTS (dfq_cli_commands); c++) {
        names[c] = dfq_cli_commands[c].name;
        if (strcmp (argv[i], dfq_cli_commands[c].name) == 0)
            command = &dfq_cli_commands[c];
    }
    if (command == NULL) {
        const char *suggestion = dfq_priv_suggest (argv[i], names, G_N_ELEMENTS (names));
        fprintf (stderr, "dfq: unknown command '%s'%s%s%s (see dfq --help)\n", argv[i],
                 suggestion != NULL ? "; did you mean '" : "", suggestion != NULL ? suggestion : "",
                 suggestion != NULL ? "'?" : "");
        g_free (cli.plugin_path);
        return 2;
    }

    if (!command->run (&cli, argc - i, argv + i, &error)) {
        if (error == NULL)
            g_set_error (&error, g_quark_from_static_string ("dfq-cli-error"), 0, "failed");
        /* Pipeline messages start with file:line:col: print them as they are. */
        if (error->domain == DFQ_PIPELINE_ERROR)
            fprintf (stderr, "%s\n", error->message);
        else
            fprintf (stderr, "dfq %s: %s\n", command->name, error->message);
        status = dfq_cli_exit_status (error);
    }
    g_clear_pointer (&cli.registry, dfq_registry_free);
    g_free (cli.plugin_path);
    return status;
}
