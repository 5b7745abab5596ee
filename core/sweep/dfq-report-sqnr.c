/* Per-layer SQNR in reports (core/sweep): every run's last metrics line with
 * "sqnr_db" (the runner's diagnostic, core/runner/dfq-sqnr.c) gives the SQNR
 * of each activation site; a group's value at a site is the mean over its
 * averaged runs that have it. The Markdown table lists the sites (in forward
 * order, the union over groups) against the groups; the HTML page plots
 * them (dfq-report-html.c). Reports of runs without the diagnostic are
 * unchanged. */
#include <math.h>
#include <string.h>

#include "dfq-sweep-private.h"

void
dfq_report_sqnr_read (DfqReportRun *run, JsonObject *line)
{
    if (!json_object_has_member (line, "sqnr_db"))
        return;
    JsonNode *node = json_object_get_member (line, "sqnr_db");
    if (!JSON_NODE_HOLDS_OBJECT (node))
        return;
    JsonObject *o = json_node_get_object (node);
    g_clear_pointer (&run->sqnr_sites, g_ptr_array_unref);
    g_clear_pointer (&run->sqnr_db, g_array_unref);
    run->sqnr_sites = g_ptr_array_new_with_free_func (g_free);
    run->sqnr_db = g_array_new (FALSE, FALSE, sizeof (double));
    g_autoptr (GList) members = json_object_get_members (o); /* in the file's order */
    for (GList *m = members; m != NULL; m = m->next) {
        JsonNode *v = json_object_get_member (o, m->data);
        if (!JSON_NODE_HOLDS_VALUE (v))
            continue;
        double db = json_node_get_double (v);
        g_ptr_array_add (run->sqnr_sites, g_strdup (m->data));
        g_array_append_val (run->sqnr_db, db);
    }
}

/* The mean over @g's averaged runs of the SQNR at @site, NAN when none has it. */
double
dfq_report_sqnr_group_mean (const DfqReportGroup *g, const char *site)
{
    double sum = 0.0;
    guint n = 0;
    for (guint r = 0; r < g->runs->len; r++) {
        const DfqReportRun *run = g->runs->pdata[r];
        if (!run->averaged || run->sqnr_sites == NULL)
            continue;
        for (guint i = 0; i < run->sqnr_sites->len; i++)
            if (g_str_equal (run->sqnr_sites->pdata[i], site)) {
                sum += g_array_index (run->sqnr_db, double, i);
                n++;
                break;
            }
    }
    return n > 0 ? sum / n : NAN;
}

/* The sites of every run of the report, in forward order (the union, each
 * new name after the last one seen before it). (transfer container) */
GPtrArray *
dfq_report_sqnr_sites (const DfqReport *report)
{
    GPtrArray *sites = g_ptr_array_new ();
    for (guint r = 0; r < report->runs->len; r++) {
        const DfqReportRun *run = report->runs->pdata[r];
        guint at = 0;
        for (guint i = 0; run->sqnr_sites != NULL && i < run->sqnr_sites->len; i++) {
            const char *name = run->sqnr_sites->pdata[i];
            guint k;
            for (k = 0; k < sites->len && !g_str_equal (sites->pdata[k], name); k++)
                ;
            if (k == sites->len)
                g_ptr_array_insert (sites, (gint) at++, (gpointer) name);
            else
                at = k + 1;
        }
    }
    return sites;
}

/* Whether @g has SQNR figures. */
gboolean
dfq_report_sqnr_group_has (const DfqReportGroup *g)
{
    for (guint r = 0; r < g->runs->len; r++) {
        const DfqReportRun *run = g->runs->pdata[r];
        if (run->averaged && run->sqnr_sites != NULL && run->sqnr_sites->len > 0)
            return TRUE;
    }
    return FALSE;
}

void
dfq_report_sqnr_markdown (GString *md, const DfqReport *report)
{
    g_autoptr (GPtrArray) groups = g_ptr_array_new ();
    for (guint i = 0; i < report->groups->len; i++)
        if (dfq_report_sqnr_group_has (report->groups->pdata[i]))
            g_ptr_array_add (groups, report->groups->pdata[i]);
    if (groups->len == 0)
        return;
    g_autoptr (GPtrArray) sites = dfq_report_sqnr_sites (report);
    g_string_append (md, "\n## Per-layer SQNR\n\nSQNR in dB of each quantized activation (metrics.jsonl `sqnr_db`, "
                         "last evaluation, mean over the seeds averaged above), in forward order.\n\n| site |");
    for (guint k = 0; k < groups->len; k++) {
        const DfqReportGroup *g = groups->pdata[k];
        g_autofree char *label = g_strdup_printf ("%s %s", g->label, g->bits);
        g_strdelimit (label, "|", '/');
        g_string_append_printf (md, " %s |", label);
    }
    g_string_append (md, "\n|---|");
    for (guint k = 0; k < groups->len; k++)
        g_string_append (md, "---:|");
    g_string_append_c (md, '\n');
    for (int pass = 0; pass < 2; pass++) {
        /* the sites, then their mean */
        for (guint s = 0; s < (pass == 0 ? sites->len : 1); s++) {
            g_string_append_printf (md, "| %s |", pass == 0 ? (const char *) sites->pdata[s] : "**mean**");
            for (guint k = 0; k < groups->len; k++) {
                double v = NAN;
                if (pass == 0)
                    v = dfq_report_sqnr_group_mean (groups->pdata[k], sites->pdata[s]);
                else {
                    double sum = 0.0;
                    guint n = 0;
                    for (guint t = 0; t < sites->len; t++) {
                        double x = dfq_report_sqnr_group_mean (groups->pdata[k], sites->pdata[t]);
                        if (isfinite (x)) {
                            sum += x;
                            n++;
                        }
                    }
                    v = n > 0 ? sum / n : NAN;
                }
                if (isfinite (v))
                    g_string_append_printf (md, " %.2f |", v);
                else
                    g_string_append (md, " — |");
            }
            g_string_append_c (md, '\n');
        }
    }
}
