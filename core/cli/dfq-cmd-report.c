/* dfq report (core/cli): tables and plots from a directory of run
 * directories (a sweep's output or any runs/), by core/sweep/dfq-report.c:
 * writes report.md, report.csv and report.html, prints the Markdown and the
 * HTML path. */
#include <stdio.h>

#include <dfq/dfq.h>

#include "../sweep/dfq-sweep-private.h"
#include "dfq-cli.h"

gboolean
dfq_cmd_report (DfqCli *cli, int argc, char **argv, GError **error)
{
    gboolean help = FALSE;
    g_autofree char *out_opt = NULL;
    gboolean timings = FALSE;
    const GOptionEntry entries[] = {
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_opt, "Where to write report.md, .csv, .html (default: DIR)", "OUT" },
        { "timings", 't', 0, G_OPTION_ARG_NONE, &timings,
          "Add each run's wall time to report.md and report.csv (they then differ between an interrupted and an "
          "uninterrupted sweep)", NULL },
        { NULL }
    };
    if (!dfq_cli_parse (cli, "report", "DIR", "Tables and plots from run directories",
                        "Reads every run directory under DIR, groups runs whose configs differ only in the seed, and "
                        "reports mean +- sample std over seeds. Runs of different protocols are never averaged "
                        "together; failed and diverged runs are listed, never averaged. See docs/sweeps.md.",
                        entries, &argc, &argv, &help, error))
        return FALSE;
    if (help)
        return TRUE;
    if (argc != 2) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "report: expected one directory (see --help)");
        return FALSE;
    }
    g_autoptr (DfqReport) report = dfq_report_new_from_dir (argv[1], error);
    if (report == NULL)
        return FALSE;
    report->timings = timings;
    const char *out = out_opt != NULL ? out_opt : argv[1];
    if (!dfq_report_write (report, out, error))
        return FALSE;
    g_autofree char *md = dfq_report_to_markdown (report);
    g_autofree char *html = g_build_filename (out, "report.html", NULL);
    g_autofree char *html_abs = g_canonicalize_filename (html, NULL);
    fputs (md, stdout);
    printf ("\nreport: %s (also report.md, report.csv)\n", html_abs);
    return TRUE;
}
