/* The HTML report (core/sweep): one self-contained page (inline CSS and SVG,
 * no script, no external asset) with the table of dfq-report.c, top-1 against
 * bit-width per method with +-std error bars, per-epoch top-1 curves from
 * metrics.jsonl (each seed thin, the mean over seeds thick), and the runs
 * that were not averaged. tools/render-report.sh renders it in headless
 * Chromium. */
#include <math.h>
#include <string.h>

#include "dfq-sweep-private.h"

static const char *const dfq_report_palette[] = {
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
};

static void
dfq_report_html_escape (GString *out, const char *text)
{
    for (const char *p = text != NULL ? text : ""; *p; p++) {
        switch (*p) {
        case '&':
            g_string_append (out, "&amp;");
            break;
        case '<':
            g_string_append (out, "&lt;");
            break;
        case '>':
            g_string_append (out, "&gt;");
            break;
        case '"':
            g_string_append (out, "&quot;");
            break;
        default:
            g_string_append_c (out, *p);
        }
    }
}

/* Series (one colour each): the group labels without the bit-widths, sorted. */
static GPtrArray *
dfq_report_html_series (const DfqReport *report)
{
    GPtrArray *series = g_ptr_array_new ();
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        gboolean seen = FALSE;
        for (guint j = 0; j < series->len && !seen; j++)
            seen = g_str_equal (series->pdata[j], g->series);
        if (!seen)
            g_ptr_array_add (series, g->series);
    }
    return series;
}

static const char *
dfq_report_html_color (GPtrArray *series, const char *name)
{
    for (guint i = 0; i < series->len; i++)
        if (g_str_equal (series->pdata[i], name))
            return dfq_report_palette[i % G_N_ELEMENTS (dfq_report_palette)];
    return "#000";
}

/* Bit-width columns, fewest bits left: "W2A2", "W3A3", "W4A4", ... */
static gint
dfq_report_html_bits_order (gconstpointer a, gconstpointer b)
{
    const DfqReportGroup *x = *(DfqReportGroup *const *) a, *y = *(DfqReportGroup *const *) b;
    gint xw = x->w_bits < 0 ? 1000 : x->w_bits, yw = y->w_bits < 0 ? 1000 : y->w_bits;
    if (xw != yw)
        return xw - yw;
    if (x->a_bits != y->a_bits)
        return x->a_bits - y->a_bits;
    return g_strcmp0 (x->bits, y->bits);
}

static GPtrArray *
dfq_report_html_bits (const DfqReport *report)
{
    g_autoptr (GPtrArray) groups = g_ptr_array_new ();
    for (guint i = 0; i < report->groups->len; i++)
        g_ptr_array_add (groups, report->groups->pdata[i]);
    g_ptr_array_sort (groups, dfq_report_html_bits_order);
    GPtrArray *bits = g_ptr_array_new ();
    for (guint i = 0; i < groups->len; i++) {
        const char *b = ((DfqReportGroup *) groups->pdata[i])->bits;
        if (bits->len == 0 || !g_str_equal (bits->pdata[bits->len - 1], b))
            g_ptr_array_add (bits, (gpointer) b);
    }
    return bits;
}

/* Round axis ticks covering [lo, hi]. */
static double
dfq_report_html_tick_step (double lo, double hi)
{
    double span = hi - lo > 1e-9 ? hi - lo : 1.0;
    double raw = span / 5.0;
    double mag = pow (10.0, floor (log10 (raw)));
    double r = raw / mag;
    return (r < 1.5 ? 1.0 : r < 3.0 ? 2.0
                        : r < 7.0   ? 5.0
                                    : 10.0)
           * mag;
}

typedef struct {
    double x0, y0, w, h; /* the plot area in SVG units */
    double xmin, xmax, ymin, ymax;
} DfqHtmlFrame;

static double
dfq_report_html_x (const DfqHtmlFrame *f, double x)
{
    return f->x0 + (f->xmax > f->xmin ? (x - f->xmin) / (f->xmax - f->xmin) : 0.5) * f->w;
}

static double
dfq_report_html_y (const DfqHtmlFrame *f, double y)
{
    return f->y0 + f->h - (y - f->ymin) / (f->ymax - f->ymin) * f->h;
}

/* Grid lines, y ticks and the axis titles. */
static void
dfq_report_html_axes (GString *svg, DfqHtmlFrame *f, double lo, double hi, const char *xtitle, const char *ytitle)
{
    double step = dfq_report_html_tick_step (lo, hi);
    f->ymin = floor (lo / step) * step;
    f->ymax = ceil (hi / step) * step;
    if (f->ymax - f->ymin < step)
        f->ymax = f->ymin + step;
    for (double t = f->ymin; t <= f->ymax + step * 0.01; t += step) {
        double y = dfq_report_html_y (f, t);
        g_string_append_printf (svg,
                                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                                "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%g</text>\n",
                                f->x0, y, f->x0 + f->w, y, f->x0 - 6, y + 4, t);
    }
    g_string_append_printf (svg, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n", f->x0,
                            f->y0, f->w, f->h);
    g_string_append_printf (svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\" text-anchor=\"middle\">%s</text>\n",
                            f->x0 + f->w / 2, f->y0 + f->h + 40, xtitle);
    g_string_append_printf (svg,
                            "<text transform=\"translate(%.1f %.1f) rotate(-90)\" class=\"axis\" "
                            "text-anchor=\"middle\">%s</text>\n",
                            f->x0 - 44, f->y0 + f->h / 2, ytitle);
}

/* Top-1 (last epoch) against bit-width, one line per series, +-std bars. */
static void
dfq_report_html_bits_plot (GString *out, const DfqReport *report, GPtrArray *series, GPtrArray *bits)
{
    double lo = INFINITY, hi = -INFINITY;
    g_autoptr (GArray) fps = g_array_new (FALSE, FALSE, sizeof (double));
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        if (g->n == 0)
            continue;
        double s = isfinite (g->last_std) ? g->last_std : 0.0;
        lo = MIN (lo, g->last_mean - s);
        hi = MAX (hi, g->last_mean + s);
        if (isfinite (g->fp_mean)) {
            gboolean seen = FALSE;
            for (guint k = 0; k < fps->len; k++)
                seen |= fabs (g_array_index (fps, double, k) - g->fp_mean) < 0.005;
            if (!seen)
                g_array_append_val (fps, g->fp_mean);
            lo = MIN (lo, g->fp_mean);
            hi = MAX (hi, g->fp_mean);
        }
    }
    if (!isfinite (lo)) {
        g_string_append (out, "<p class=\"note\">No finished run to plot.</p>\n");
        return;
    }
    double pad = MAX ((hi - lo) * 0.08, 0.5);
    DfqHtmlFrame f = { 64, 16, 640, 300, -0.5, bits->len - 0.5, 0, 1 };
    GString *svg = g_string_new (NULL);
    g_string_append_printf (svg,
                            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                            "role=\"img\" aria-label=\"top-1 against bit-width\">\n",
                            724, 372, 724, 372);
    dfq_report_html_axes (svg, &f, lo - pad, hi + pad, "bit-width (weights, activations)", "top-1 % (last epoch)");
    for (guint b = 0; b < bits->len; b++)
        g_string_append_printf (svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%s</text>\n",
                                dfq_report_html_x (&f, b), f.y0 + f.h + 18, (char *) bits->pdata[b]);
    for (guint k = 0; k < fps->len; k++) {
        double v = g_array_index (fps, double, k);
        double y = dfq_report_html_y (&f, v);
        g_string_append_printf (svg,
                                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"fp\"/>"
                                "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">FP %.2f</text>\n",
                                f.x0, y, f.x0 + f.w, y, f.x0 + f.w - 4, y - 4, v);
    }
    /* series side by side within a column, so that error bars do not overlap */
    double step = MIN (0.05, 0.3 / MAX (series->len, 1));
    for (guint s = 0; s < series->len; s++) {
        const char *name = series->pdata[s];
        const char *color = dfq_report_html_color (series, name);
        double dx = (s - (series->len - 1) / 2.0) * step;
        GString *line = g_string_new (NULL);
        GString *marks = g_string_new (NULL);
        for (guint b = 0; b < bits->len; b++) {
            for (guint i = 0; i < report->groups->len; i++) {
                const DfqReportGroup *g = report->groups->pdata[i];
                if (g->n == 0 || !g_str_equal (g->series, name) || !g_str_equal (g->bits, bits->pdata[b]))
                    continue;
                double x = dfq_report_html_x (&f, b + dx), y = dfq_report_html_y (&f, g->last_mean);
                g_string_append_printf (line, "%s%.1f,%.1f", line->len ? " " : "", x, y);
                if (isfinite (g->last_std) && g->last_std > 0) {
                    double y1 = dfq_report_html_y (&f, g->last_mean - g->last_std);
                    double y2 = dfq_report_html_y (&f, g->last_mean + g->last_std);
                    g_string_append_printf (marks,
                                            "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fh10M%.1f %.1fh10\" stroke=\"%s\" "
                                            "class=\"err\"/>\n",
                                            x, y1, y2, x - 5, y1, x - 5, y2, color);
                }
                g_string_append_printf (marks, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"><title>", x, y,
                                        color);
                dfq_report_html_escape (marks, g->label);
                g_autofree char *ms = dfq_report_format_mean_std (g->last_mean, g->last_std, g->n);
                g_string_append_printf (marks, " %s: %s (n=%u)</title></circle>\n", g->bits, ms, g->n);
            }
        }
        if (strchr (line->str, ' ') != NULL)
            g_string_append_printf (svg, "<polyline points=\"%s\" stroke=\"%s\" class=\"series\"/>\n", line->str,
                                    color);
        g_string_append (svg, marks->str);
        g_string_free (line, TRUE);
        g_string_free (marks, TRUE);
    }
    g_string_append (svg, "</svg>\n");
    g_string_append (out, svg->str);
    g_string_free (svg, TRUE);
}

/* Per-epoch top-1 of every group of one bit-width. */
static void
dfq_report_html_curves_panel (GString *out, const DfqReport *report, GPtrArray *series, const char *bits)
{
    double lo = INFINITY, hi = -INFINITY;
    guint epochs = 0;
    for (guint i = 0; i < report->runs->len; i++) {
        const DfqReportRun *run = report->runs->pdata[i];
        if (!g_str_equal (run->bits, bits))
            continue;
        for (guint e = 0; e < run->curve->len; e++) {
            double v = g_array_index (run->curve, double, e);
            if (isfinite (v)) {
                lo = MIN (lo, v);
                hi = MAX (hi, v);
                epochs = MAX (epochs, e + 1);
            }
        }
    }
    if (epochs == 0)
        return;
    double pad = MAX ((hi - lo) * 0.08, 0.5);
    DfqHtmlFrame f = { 56, 12, 276, 200, 1, MAX (epochs, 2), 0, 1 };
    g_string_append (out, "<figure>\n");
    g_string_append_printf (out,
                            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                            "role=\"img\" aria-label=\"top-1 per epoch, %s\">\n",
                            344, 264, 344, 264, bits);
    dfq_report_html_axes (out, &f, lo - pad, hi + pad, "epoch", "top-1 %");
    guint xstep = epochs <= 10 ? 1 : (epochs + 9) / 10;
    for (guint e = 1; e <= epochs; e += xstep)
        g_string_append_printf (out, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%u</text>\n",
                                dfq_report_html_x (&f, e), f.y0 + f.h + 18, e);
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        if (!g_str_equal (g->bits, bits))
            continue;
        const char *color = dfq_report_html_color (series, g->series);
        g_autoptr (GArray) sum = g_array_new (FALSE, TRUE, sizeof (double));
        g_autoptr (GArray) count = g_array_new (FALSE, TRUE, sizeof (guint));
        g_array_set_size (sum, epochs);
        g_array_set_size (count, epochs);
        for (guint r = 0; r < g->runs->len; r++) {
            const DfqReportRun *run = g->runs->pdata[r];
            GString *pts = g_string_new (NULL);
            for (guint e = 0; e < run->curve->len; e++) {
                double v = g_array_index (run->curve, double, e);
                if (!isfinite (v))
                    continue;
                g_string_append_printf (pts, "%s%.1f,%.1f", pts->len ? " " : "", dfq_report_html_x (&f, e + 1),
                                        dfq_report_html_y (&f, v));
                if (run->averaged) {
                    g_array_index (sum, double, e) += v;
                    g_array_index (count, guint, e)++;
                }
            }
            if (pts->len > 0) {
                g_string_append_printf (out, "<polyline points=\"%s\" stroke=\"%s\" class=\"%s\"><title>", pts->str,
                                        color, run->averaged ? "seed" : "failed");
                dfq_report_html_escape (out, g->label);
                g_string_append_printf (out, ", seed %d (%s)</title></polyline>\n", run->seed, run->status);
            }
            g_string_free (pts, TRUE);
        }
        /* the mean over seeds, where every averaged run has the epoch */
        GString *mean = g_string_new (NULL);
        for (guint e = 0; e < epochs && g->n > 0; e++) {
            guint c = g_array_index (count, guint, e);
            if (c == g->n)
                g_string_append_printf (mean, "%s%.1f,%.1f", mean->len ? " " : "", dfq_report_html_x (&f, e + 1),
                                        dfq_report_html_y (&f, g_array_index (sum, double, e) / c));
        }
        if (mean->len > 0) {
            g_string_append_printf (out, "<polyline points=\"%s\" stroke=\"%s\" class=\"mean\"><title>", mean->str,
                                    color);
            dfq_report_html_escape (out, g->label);
            g_string_append_printf (out, ", mean of %u seed%s</title></polyline>\n", g->n, g->n == 1 ? "" : "s");
        }
        g_string_free (mean, TRUE);
    }
    g_string_append (out, "</svg>\n<figcaption>");
    dfq_report_html_escape (out, bits);
    g_string_append (out, "</figcaption>\n</figure>\n");
}

static void dfq_report_html_legend (GString *out, GPtrArray *series);

/* Per-layer SQNR of the groups of @bits: x the activation site in forward
 * order, y dB, one line per group (the mean over its seeds); nothing when no
 * group of @bits has figures. */
static void
dfq_report_html_sqnr_panel (GString *out, const DfqReport *report, GPtrArray *series, GPtrArray *sites,
                            const char *bits)
{
    double lo = INFINITY, hi = -INFINITY;
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        if (!g_str_equal (g->bits, bits) || !dfq_report_sqnr_group_has (g))
            continue;
        for (guint s = 0; s < sites->len; s++) {
            double v = dfq_report_sqnr_group_mean (g, sites->pdata[s]);
            if (isfinite (v)) {
                lo = MIN (lo, v);
                hi = MAX (hi, v);
            }
        }
    }
    if (!isfinite (lo))
        return;
    DfqHtmlFrame f = { 56, 12, 980, 240, 1, MAX (sites->len, 2), 0, 1 };
    g_string_append_printf (out,
                            "<figure>\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1050 304\" width=\"1050\" "
                            "height=\"304\" role=\"img\" aria-label=\"SQNR per layer, %s\">\n",
                            bits);
    dfq_report_html_axes (out, &f, lo - 1.0, hi + 1.0, "activation site (forward order; hover for names)", "SQNR dB");
    guint xstep = sites->len <= 20 ? 1 : (sites->len + 19) / 20;
    for (guint s = 0; s < sites->len; s += xstep)
        g_string_append_printf (out, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%u</text>\n",
                                dfq_report_html_x (&f, s + 1), f.y0 + f.h + 18, s + 1);
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        if (!g_str_equal (g->bits, bits) || !dfq_report_sqnr_group_has (g))
            continue;
        const char *color = dfq_report_html_color (series, g->series);
        GString *pts = g_string_new (NULL), *dots = g_string_new (NULL);
        for (guint s = 0; s < sites->len; s++) {
            double v = dfq_report_sqnr_group_mean (g, sites->pdata[s]);
            if (!isfinite (v))
                continue;
            double x = dfq_report_html_x (&f, s + 1), y = dfq_report_html_y (&f, v);
            g_string_append_printf (pts, "%s%.1f,%.1f", pts->len ? " " : "", x, y);
            g_string_append_printf (dots, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"><title>", x, y, color);
            dfq_report_html_escape (dots, sites->pdata[s]);
            g_string_append_printf (dots, ": %.2f dB (", v);
            dfq_report_html_escape (dots, g->label);
            g_string_append (dots, ")</title></circle>\n");
        }
        g_string_append_printf (out, "<polyline points=\"%s\" stroke=\"%s\" class=\"series\"><title>", pts->str, color);
        dfq_report_html_escape (out, g->label);
        g_string_append_printf (out, ", mean of %u seed%s</title></polyline>\n%s", g->n, g->n == 1 ? "" : "s", dots->str);
        g_string_free (pts, TRUE);
        g_string_free (dots, TRUE);
    }
    g_string_append (out, "</svg>\n<figcaption>");
    dfq_report_html_escape (out, bits);
    g_string_append (out, "</figcaption>\n</figure>\n");
}

static void
dfq_report_html_sqnr (GString *out, const DfqReport *report, GPtrArray *series, GPtrArray *bits)
{
    gboolean any = FALSE;
    for (guint i = 0; i < report->groups->len && !any; i++)
        any = dfq_report_sqnr_group_has (report->groups->pdata[i]);
    if (!any)
        return;
    g_autoptr (GPtrArray) sites = dfq_report_sqnr_sites (report);
    g_string_append (out, "<h2>Per-layer SQNR</h2>\n<p class=\"note\">SQNR in dB of each quantized activation at the "
                          "last evaluation (metrics.jsonl <code>sqnr_db</code>), mean over seeds; the table is in "
                          "report.md.</p>\n");
    for (guint b = 0; b < bits->len; b++)
        dfq_report_html_sqnr_panel (out, report, series, sites, bits->pdata[b]);
    dfq_report_html_legend (out, series);
}

static void
dfq_report_html_legend (GString *out, GPtrArray *series)
{
    g_string_append (out, "<ul class=\"legend\">\n");
    for (guint s = 0; s < series->len; s++) {
        g_string_append_printf (out, "<li><span class=\"swatch\" style=\"background:%s\"></span>",
                                dfq_report_html_color (series, series->pdata[s]));
        dfq_report_html_escape (out, series->pdata[s]);
        g_string_append (out, "</li>\n");
    }
    g_string_append (out, "</ul>\n");
}

static const char dfq_report_html_style[] = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#222;"
                                            "margin:24px auto;max-width:1120px;padding:0 16px}\n"
                                            "h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}\n"
                                            "table{border-collapse:collapse;margin:8px 0;font-size:13px}\n"
                                            "th,td{border:1px solid #d0d0d0;padding:4px 8px;text-align:left;vertical-align:top}\n"
                                            "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
                                            "tr.bad td{background:#fdecea}.status-bad{color:#b00020;font-weight:600}\n"
                                            ".warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px}\n"
                                            ".note{color:#555}.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;flex-wrap:wrap;gap:4px 18px}\n"
                                            ".swatch{display:inline-block;width:14px;height:14px;border-radius:3px;margin-right:6px;vertical-align:-2px}\n"
                                            ".panels{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figcaption{text-align:center;font-weight:600}\n"
                                            "svg{font:12px system-ui,'DejaVu Sans',sans-serif}.grid{stroke:#e6e6e6}.frame{fill:none;stroke:#999}\n"
                                            ".tick{fill:#444}.axis{fill:#222;font-size:13px}.fp{stroke:#777;stroke-dasharray:6 4}\n"
                                            ".series{fill:none;stroke-width:2}.err{stroke-width:1.5;fill:none}\n"
                                            ".seed{fill:none;stroke-width:1.2;stroke-opacity:.45}.mean{fill:none;stroke-width:2.6}\n"
                                            ".failed{fill:none;stroke-width:1.2;stroke-dasharray:4 3;stroke-opacity:.6}\n"
                                            "code{font-size:12px}footer{margin-top:28px;color:#777;font-size:12px}\n";

static void
dfq_report_html_cell (GString *out, const char *text, gboolean num)
{
    g_string_append (out, num ? "<td class=\"num\">" : "<td>");
    dfq_report_html_escape (out, text);
    g_string_append (out, "</td>");
}

char *
dfq_report_to_html (const DfqReport *report)
{
    g_return_val_if_fail (report != NULL, NULL);
    GString *out = g_string_new ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    g_string_append (out, "dfq report: ");
    dfq_report_html_escape (out, report->title);
    g_string_append_printf (out, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>dfq report: ", dfq_report_html_style);
    dfq_report_html_escape (out, report->title);
    g_string_append (out, "</h1>\n");

    guint n_bad = 0;
    for (guint i = 0; i < report->runs->len; i++)
        n_bad += !((DfqReportRun *) report->runs->pdata[i])->averaged;
    g_string_append_printf (out,
                            "<p>%u run%s in %u group%s; %u not averaged. Top-1 in %%: mean ± sample std over the seeds "
                            "that finished (n); per seed: last/best.</p>\n",
                            report->runs->len, report->runs->len == 1 ? "" : "s", report->groups->len,
                            report->groups->len == 1 ? "" : "s", n_bad);
    gboolean mixed = report->protocol_keys->len > 0;
    if (report->common_protocol[0]) {
        g_string_append_printf (out, "<p class=\"note\">Protocol%s: ", mixed ? " shared by every row" : " of every row");
        dfq_report_html_escape (out, report->common_protocol);
        g_string_append (out, ".</p>\n");
    }
    if (mixed) {
        g_string_append (out, "<p class=\"warn\"><b>Protocols differ between rows</b> (");
        for (guint i = 0; i < report->protocol_keys->len; i++) {
            g_string_append (out, i ? ", <code>" : "<code>");
            dfq_report_html_escape (out, report->protocol_keys->pdata[i]);
            g_string_append (out, "</code>");
        }
        g_string_append (out, "): such runs are never averaged together, and rows of different protocols are not "
                              "comparable.</p>\n");
    }

    /* the table */
    g_autoptr (GPtrArray) series = dfq_report_html_series (report);
    g_string_append (out, "<table>\n<tr><th>method</th><th>bits</th>");
    if (mixed)
        g_string_append (out, "<th>protocol</th>");
    g_string_append (out, "<th>n</th><th>last top-1</th><th>best top-1</th><th>FP top-1</th>"
                          "<th>per seed (last/best)</th><th>not averaged</th></tr>\n");
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        g_string_append_printf (out, "<tr%s><td><span class=\"swatch\" style=\"background:%s\"></span>",
                                g->n_failed ? " class=\"bad\"" : "", dfq_report_html_color (series, g->series));
        dfq_report_html_escape (out, g->label);
        g_string_append (out, "</td>");
        dfq_report_html_cell (out, g->bits, FALSE);
        if (mixed)
            dfq_report_html_cell (out, g->protocol, FALSE);
        g_autofree char *n = g_strdup_printf ("%u", g->n);
        g_autofree char *last = dfq_report_format_mean_std (g->last_mean, g->last_std, g->n);
        g_autofree char *best = dfq_report_format_mean_std (g->best_mean, g->best_std, g->n);
        g_autofree char *fp = isfinite (g->fp_mean) ? g_strdup_printf ("%.2f", g->fp_mean) : g_strdup ("—");
        dfq_report_html_cell (out, n, TRUE);
        dfq_report_html_cell (out, last, TRUE);
        dfq_report_html_cell (out, best, TRUE);
        dfq_report_html_cell (out, fp, TRUE);
        GString *seeds = g_string_new (NULL), *bad = g_string_new (NULL);
        for (guint r = 0; r < g->runs->len; r++) {
            const DfqReportRun *run = g->runs->pdata[r];
            if (run->averaged)
                g_string_append_printf (seeds, "%ss%d %.2f/%.2f", seeds->len ? ", " : "", run->seed, run->last_top1,
                                        run->best_top1);
            else
                g_string_append_printf (bad, "%ss%d %s", bad->len ? ", " : "", run->seed,
                                        g_str_equal (run->status, "finished") ? "duplicate" : run->status);
        }
        dfq_report_html_cell (out, seeds->str, FALSE);
        g_string_append (out, "<td class=\"status-bad\">");
        dfq_report_html_escape (out, bad->str);
        g_string_append (out, "</td></tr>\n");
        g_string_free (seeds, TRUE);
        g_string_free (bad, TRUE);
    }
    g_string_append (out, "</table>\n");

    /* the plots */
    g_autoptr (GPtrArray) bits = dfq_report_html_bits (report);
    g_string_append (out, "<h2>Top-1 against bit-width</h2>\n");
    g_string_append (out, "<p class=\"note\">Last-epoch top-1, mean over seeds, bars ± one sample std; dashed: the "
                          "full-precision teacher.</p>\n");
    dfq_report_html_bits_plot (out, report, series, bits);
    dfq_report_html_legend (out, series);
    g_string_append (out, "<h2>Top-1 per epoch</h2>\n<p class=\"note\">Thin: each seed; thick: the mean over seeds; "
                          "dashed: runs not averaged (failed, diverged or incomplete).</p>\n<div class=\"panels\">\n");
    for (guint b = 0; b < bits->len; b++)
        dfq_report_html_curves_panel (out, report, series, bits->pdata[b]);
    g_string_append (out, "</div>\n");
    dfq_report_html_legend (out, series);
    dfq_report_html_sqnr (out, report, series, bits);

    /* every run */
    g_string_append (out, "<h2>Runs</h2>\n<table>\n<tr><th>run</th><th>method</th><th>bits</th><th>seed</th>"
                          "<th>status</th><th>last</th><th>best (epoch)</th><th>epochs</th><th>detail</th></tr>\n");
    for (guint i = 0; i < report->runs->len; i++) {
        const DfqReportRun *run = report->runs->pdata[i];
        g_string_append_printf (out, "<tr%s>", run->averaged ? "" : " class=\"bad\"");
        dfq_report_html_cell (out, run->path, FALSE);
        dfq_report_html_cell (out, run->method, FALSE);
        dfq_report_html_cell (out, run->bits, FALSE);
        g_autofree char *seed = g_strdup_printf ("%d", run->seed);
        dfq_report_html_cell (out, seed, TRUE);
        g_string_append_printf (out, "<td%s>", run->averaged ? "" : " class=\"status-bad\"");
        dfq_report_html_escape (out, g_str_equal (run->status, "finished") && !run->averaged ? "duplicate" : run->status);
        g_string_append (out, "</td>");
        g_autofree char *last = isfinite (run->last_top1) ? g_strdup_printf ("%.2f", run->last_top1) : g_strdup ("—");
        g_autofree char *best = isfinite (run->best_top1) ? g_strdup_printf ("%.2f (%d)", run->best_top1,
                                                                             run->best_epoch + 1)
                                                          : g_strdup ("—");
        g_autofree char *epochs = g_strdup_printf ("%d", run->epochs_done);
        dfq_report_html_cell (out, last, TRUE);
        dfq_report_html_cell (out, best, TRUE);
        dfq_report_html_cell (out, epochs, TRUE);
        dfq_report_html_cell (out, run->detail, FALSE);
        g_string_append (out, "</tr>\n");
    }
    g_string_append (out, "</table>\n");
    g_string_append_printf (out, "<footer>Made by <code>dfq report</code> (dfqlab %s) from the run directories under "
                                 "<code>",
                            DFQ_VERSION_STRING);
    dfq_report_html_escape (out, report->title);
    g_string_append (out, "</code>.</footer>\n</body>\n</html>\n");
    return g_string_free (out, FALSE);
}
