/* Reports over run directories (core/sweep): reads each run directory's
 * config.yaml, result.json, manifest.json, metrics.jsonl and (for sweep
 * trials) trial.json; groups runs whose resolved configs are equal but for
 * the seed, so runs of different protocols can never be averaged together;
 * computes mean and sample std over the seeds that finished; writes the
 * Markdown and CSV tables (the HTML page is in dfq-report-html.c). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-sweep-private.h"

#define DFQ_REPORT_MAX_DEPTH 6
#define DFQ_REPORT_MAX_LABEL_KEYS 4

/* Keys that change neither the experiment nor its comparability. */
static const char *const dfq_report_ignored_keys[] = {
    "seed",
    "threads",
    "output_dir",
    "name",
    "teacher.weights",
    "data.dir",
    "train.save",
};

/* Protocol keys, in the order they are described; the parameters of the
 * quantizer (student.quantizer.* other than use, w_bits and a_bits:
 * granularity, symmetry, first/last overrides, range tracking) are protocol
 * keys too, between rows of the same quantizer (dfq_report_protocol_differences). */
static const char *const dfq_report_protocol_keys[] = {
    "teacher",
    "data.dataset",
    "eval.split",
    "eval.limit",
    "selected_on",
    "budget",
    "train.epochs",
    "train.iters",
    "train.batch",
    "reconstruct.iters",
    "reconstruct.batch",
};

static void
dfq_report_run_free (DfqReportRun *run)
{
    g_free (run->path);
    g_free (run->id);
    g_free (run->status);
    g_free (run->detail);
    g_clear_pointer (&run->curve, g_array_unref);
    g_free (run->method);
    g_free (run->bits);
    g_clear_pointer (&run->flat, g_hash_table_unref);
    g_clear_pointer (&run->sqnr_sites, g_ptr_array_unref);
    g_clear_pointer (&run->sqnr_db, g_array_unref);
    g_free (run);
}

static void
dfq_report_group_free (DfqReportGroup *group)
{
    g_free (group->method);
    g_free (group->bits);
    g_free (group->label);
    g_free (group->series);
    g_free (group->protocol);
    g_ptr_array_unref (group->runs);
    g_free (group);
}

void
dfq_report_free (DfqReport *report)
{
    if (report == NULL)
        return;
    g_free (report->root);
    g_free (report->title);
    g_clear_pointer (&report->groups, g_ptr_array_unref);
    g_clear_pointer (&report->runs, g_ptr_array_unref);
    g_clear_pointer (&report->protocol_keys, g_ptr_array_unref);
    g_free (report->common_protocol);
    g_free (report);
}

static gint
dfq_report_strcmp_p (gconstpointer a, gconstpointer b)
{
    return g_strcmp0 (*(const char *const *) a, *(const char *const *) b);
}

/* A parameter of the chosen quantizer (not its name, not the bit-widths). */
static gboolean
dfq_report_is_quantizer_param (const char *key)
{
    return g_str_has_prefix (key, "student.quantizer.") && !g_str_equal (key, "student.quantizer.use")
           && !g_str_equal (key, "student.quantizer.w_bits") && !g_str_equal (key, "student.quantizer.a_bits");
}

static gboolean
dfq_report_is_protocol_key (const char *key)
{
    for (guint i = 0; i < G_N_ELEMENTS (dfq_report_protocol_keys); i++)
        if (g_str_equal (key, dfq_report_protocol_keys[i]))
            return TRUE;
    return dfq_report_is_quantizer_param (key);
}

/* Reading one run directory -------------------------------------------------- */

static JsonObject *
dfq_report_read_json (const char *dir, const char *name, JsonParser **parser_out)
{
    g_autofree char *path = g_build_filename (dir, name, NULL);
    return dfq_sweep_json_load_object (path, parser_out);
}

static double
dfq_report_json_double (JsonObject *o, const char *member)
{
    if (o == NULL || !json_object_has_member (o, member))
        return NAN;
    JsonNode *n = json_object_get_member (o, member);
    if (!JSON_NODE_HOLDS_VALUE (n))
        return NAN;
    GType t = json_node_get_value_type (n);
    if (t == G_TYPE_DOUBLE || t == G_TYPE_INT64)
        return json_node_get_double (n);
    return NAN;
}

static const char *
dfq_report_json_string (JsonObject *o, const char *member)
{
    if (o == NULL || !json_object_has_member (o, member))
        return NULL;
    JsonNode *n = json_object_get_member (o, member);
    if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
        return NULL;
    return json_node_get_string (n);
}

static void
dfq_report_flatten (const DfqConfigNode *node, const char *prefix, GHashTable *flat)
{
    if (node->kind == DFQ_CONFIG_MAPPING) {
        for (guint i = 0; i < node->keys->len; i++) {
            const char *k = ((DfqConfigNode *) node->keys->pdata[i])->scalar;
            g_autofree char *path = prefix[0] ? g_strdup_printf ("%s.%s", prefix, k) : g_strdup (k);
            dfq_report_flatten (node->values->pdata[i], path, flat);
        }
        return;
    }
    if (node->kind == DFQ_CONFIG_SEQUENCE) {
        gboolean scalars = TRUE;
        for (guint i = 0; i < node->values->len; i++)
            if (((DfqConfigNode *) node->values->pdata[i])->kind >= DFQ_CONFIG_MAPPING)
                scalars = FALSE;
        if (!scalars) {
            for (guint i = 0; i < node->values->len; i++) {
                g_autofree char *path = g_strdup_printf ("%s.%u", prefix, i);
                dfq_report_flatten (node->values->pdata[i], path, flat);
            }
            return;
        }
    }
    g_hash_table_insert (flat, g_strdup (prefix), dfq_sweep_config_to_flow (node));
}

static gint
dfq_report_flat_int (GHashTable *flat, const char *key, gint fallback)
{
    const char *v = g_hash_table_lookup (flat, key);
    if (v == NULL)
        return fallback;
    char *end = NULL;
    gint64 x = g_ascii_strtoll (v, &end, 10);
    return end != v && *end == '\0' ? (gint) x : fallback;
}

/* "gdfq / uniform / kd+ce"; "zeroq / uniform" for a run without student
 * losses (post-training) */
static char *
dfq_report_method (GHashTable *flat)
{
    const char *synth = g_hash_table_lookup (flat, "synthesizer.use");
    const char *quant = g_hash_table_lookup (flat, "student.quantizer.use");
    GString *losses = g_string_new (NULL);
    for (guint i = 0;; i++) {
        g_autofree char *key = g_strdup_printf ("train.losses.%u.use", i);
        const char *use = g_hash_table_lookup (flat, key);
        if (use == NULL)
            break;
        g_string_append_printf (losses, "%s%s", i ? "+" : "", use);
    }
    char *method = losses->len ? g_strdup_printf ("%s / %s / %s", synth ? synth : "none", quant ? quant : "fp",
                                                  losses->str)
                               : g_strdup_printf ("%s / %s", synth ? synth : "none", quant ? quant : "fp");
    g_string_free (losses, TRUE);
    return method;
}

/* What a run's config.yaml leaves out because it equals its plugin's default
 * (DFQ_PARAM_FLAG_OMIT_DEFAULT: uniform's percentile 99.99, say) but its sweep
 * set explicitly: the trial's overrides (trial.json) say it, so a sweep of
 * percentile 99.9 against the default 99.99 labels both rows. The overrides
 * are applied to an empty tree as `--set` applies them and flattened like the
 * config; keys the config has are kept (it is what ran). */
static void
dfq_report_fill_from_overrides (JsonObject *trial, GHashTable *flat)
{
    JsonNode *node = json_object_get_member (trial, "overrides");
    if (node == NULL || !JSON_NODE_HOLDS_ARRAY (node))
        return;
    JsonArray *overrides = json_node_get_array (node);
    g_autoptr (DfqConfigNode) root = dfq_config_node_new (DFQ_CONFIG_MAPPING, NULL);
    for (guint i = 0; i < json_array_get_length (overrides); i++) {
        JsonNode *o = json_array_get_element (overrides, i);
        if (JSON_NODE_HOLDS_VALUE (o) && json_node_get_value_type (o) == G_TYPE_STRING)
            dfq_config_apply_override (&root, json_node_get_string (o), NULL);
    }
    g_autoptr (GHashTable) set = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    dfq_report_flatten (root, "", set);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, set);
    while (g_hash_table_iter_next (&it, &key, &value))
        if (!g_hash_table_contains (flat, key) && !g_str_equal (value, "~") && !g_str_equal (value, "null")) {
            g_hash_table_iter_steal (&it);
            g_hash_table_insert (flat, key, value);
        }
}

static DfqReportRun *
dfq_report_read_run (const char *root, const char *rel)
{
    g_autofree char *dir = g_str_equal (rel, ".") ? g_strdup (root) : g_build_filename (root, rel, NULL);
    DfqReportRun *run = g_new0 (DfqReportRun, 1);
    run->path = g_strdup (rel);
    run->fp_top1 = run->last_top1 = run->best_top1 = run->wall_seconds = NAN;
    run->best_epoch = -1;
    run->seed = -1;
    run->w_bits = run->a_bits = -1;
    run->curve = g_array_new (FALSE, FALSE, sizeof (double));
    run->flat = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

    g_autoptr (JsonParser) rp = NULL, tp = NULL, mp = NULL;
    JsonObject *result = dfq_report_read_json (dir, "result.json", &rp);
    JsonObject *trial = dfq_report_read_json (dir, "trial.json", &tp);
    JsonObject *manifest = dfq_report_read_json (dir, "manifest.json", &mp);

    /* config.yaml: the grouping key */
    g_autofree char *config_path = g_build_filename (dir, "config.yaml", NULL);
    g_autofree char *config_text = NULL;
    g_autoptr (DfqConfigNode) config = NULL;
    if (g_file_get_contents (config_path, &config_text, NULL, NULL))
        config = dfq_config_parse (config_text, -1, config_path, NULL);
    if (config != NULL && config->kind == DFQ_CONFIG_MAPPING) {
        dfq_report_flatten (config, "", run->flat);
        if (trial != NULL)
            dfq_report_fill_from_overrides (trial, run->flat);
        run->seed = dfq_report_flat_int (run->flat, "seed", -1);
        if (trial != NULL && dfq_report_json_string (trial, "id") != NULL)
            run->id = g_strdup (dfq_report_json_string (trial, "id"));
    }
    gboolean have_config = g_hash_table_size (run->flat) > 0;
    if (!have_config && trial != NULL && json_object_has_member (trial, "seed"))
        run->seed = (gint) json_object_get_int_member (trial, "seed");
    run->method = have_config ? dfq_report_method (run->flat) : g_strdup ("?");
    if (have_config && g_hash_table_lookup (run->flat, "student.quantizer.use") == NULL)
        run->bits = g_strdup ("FP");
    else {
        run->w_bits = dfq_report_flat_int (run->flat, "student.quantizer.w_bits", -1);
        run->a_bits = dfq_report_flat_int (run->flat, "student.quantizer.a_bits", -1);
        if (run->w_bits > 0 && run->a_bits > 0)
            run->bits = g_strdup_printf ("W%dA%d", run->w_bits, run->a_bits);
        else
            run->bits = g_strdup ("?");
    }

    /* pseudo keys: what the config does not say but the protocol is */
    for (guint i = 0; i < G_N_ELEMENTS (dfq_report_ignored_keys); i++)
        g_hash_table_remove (run->flat, dfq_report_ignored_keys[i]);
    if (have_config) {
        const char *sha = manifest != NULL ? dfq_report_json_string (manifest, "teacher_sha256") : NULL;
        const char *weights = manifest != NULL ? dfq_report_json_string (manifest, "teacher_weights") : NULL;
        g_hash_table_insert (run->flat, g_strdup ("teacher"),
                             sha != NULL ? g_strndup (sha, 12) : g_strdup (weights != NULL ? weights : "unknown"));
        gint limit = 0;
        if (trial != NULL && json_object_has_member (trial, "eval_limit"))
            limit = (gint) json_object_get_int_member (trial, "eval_limit");
        g_hash_table_insert (run->flat, g_strdup ("eval.limit"),
                             limit > 0 ? g_strdup_printf ("%d", limit) : g_strdup ("all"));
        const char *selected = result != NULL ? dfq_report_json_string (result, "best_selected_on") : NULL;
        const char *split = g_hash_table_lookup (run->flat, "eval.split");
        g_hash_table_insert (run->flat, g_strdup ("selected_on"),
                             g_strdup (selected != NULL ? selected : split != NULL ? split
                                                                                   : "?"));
        g_hash_table_insert (run->flat, g_strdup ("budget"),
                             g_strdup_printf ("%dx%dx%d", dfq_report_flat_int (run->flat, "train.epochs", 0),
                                              dfq_report_flat_int (run->flat, "train.iters", 0),
                                              dfq_report_flat_int (run->flat, "train.batch", 0)));
    }

    /* per-epoch top-1 */
    gboolean ptq = FALSE, trained = FALSE;
    g_autofree char *metrics_path = g_build_filename (dir, "metrics.jsonl", NULL);
    g_autofree char *metrics = NULL;
    if (g_file_get_contents (metrics_path, &metrics, NULL, NULL)) {
        g_auto (GStrv) lines = g_strsplit (metrics, "\n", -1);
        for (guint i = 0; lines[i] != NULL; i++) {
            if (lines[i][0] == '\0')
                continue;
            g_autoptr (JsonParser) lp = json_parser_new ();
            if (!json_parser_load_from_data (lp, lines[i], -1, NULL) || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (lp)))
                continue;
            JsonObject *o = json_node_get_object (json_parser_get_root (lp));
            const char *phase = json_object_has_member (o, "phase") ? dfq_report_json_string (o, "phase") : "train";
            if (phase != NULL && (g_str_equal (phase, "synthesize") || g_str_equal (phase, "calibrate")))
                ptq = TRUE;
            if (phase != NULL && g_str_has_prefix (phase, "train"))
                trained = TRUE;
            dfq_report_sqnr_read (run, o);
            /* the curve: evaluations only (PTQ phases write lines without top1) */
            if (!json_object_has_member (o, "top1"))
                continue;
            double top1 = dfq_report_json_double (o, "top1");
            g_array_append_val (run->curve, top1);
        }
    }
    if (have_config && ptq && !trained) {
        /* post-training: the budget is the image set, not epochs x iterations */
        gint images = dfq_report_flat_int (run->flat, "synthesize.images", 64);
        g_hash_table_insert (run->flat, g_strdup ("budget"), g_strdup_printf ("ptq %d", images));
    }

    /* status */
    const char *status = result != NULL ? dfq_report_json_string (result, "status") : NULL;
    const char *trial_status = trial != NULL ? dfq_report_json_string (trial, "status") : NULL;
    if (status != NULL && (g_str_equal (status, "finished") || g_str_equal (status, "diverged"))) {
        run->status = g_strdup (status);
        run->fp_top1 = dfq_report_json_double (result, "fp_top1");
        run->last_top1 = dfq_report_json_double (result, "last_top1");
        run->best_top1 = dfq_report_json_double (result, "best_top1");
        run->best_epoch = (gint) dfq_report_json_double (result, "best_epoch");
        run->epochs_done = (gint) dfq_report_json_double (result, "epochs_done");
        run->wall_seconds = dfq_report_json_double (result, "wall_seconds");
        if (run->best_top1 < 0) /* diverged before its first evaluation */
            run->best_top1 = NAN;
        if (g_str_equal (status, "diverged")) {
            const char *e = dfq_report_json_string (result, "error");
            run->detail = g_strdup (e != NULL ? e : "training diverged");
        }
    } else if (trial_status != NULL && (g_str_equal (trial_status, "crashed") || g_str_equal (trial_status, "failed") || g_str_equal (trial_status, "interrupted"))) {
        run->status = g_strdup (trial_status);
        const char *exit_text = dfq_report_json_string (trial, "exit");
        const char *tail = dfq_report_json_string (trial, "log_tail");
        g_autofree char *last_line = NULL;
        if (tail != NULL) {
            g_auto (GStrv) lines = g_strsplit (tail, "\n", -1);
            for (guint i = g_strv_length (lines); i-- > 0;) {
                if (g_strstrip (lines[i])[0] != '\0') {
                    last_line = g_strdup (lines[i]);
                    break;
                }
            }
        }
        run->detail = g_strdup_printf ("%s%s%s", exit_text != NULL ? exit_text : trial_status,
                                       last_line != NULL ? "; log: " : "", last_line != NULL ? last_line : "");
        run->epochs_done = (gint) run->curve->len;
    } else {
        run->status = g_strdup ("incomplete");
        run->epochs_done = (gint) run->curve->len;
        run->detail = have_config ? g_strdup_printf ("no result yet (%u epoch%s in metrics.jsonl): still running, or "
                                                     "stopped; rerun to resume",
                                                     run->curve->len, run->curve->len == 1 ? "" : "s")
                                  : g_strdup ("no config.yaml");
    }
    return run;
}

/* Finding run directories ------------------------------------------------------- */

static gboolean
dfq_report_is_run_dir (const char *dir)
{
    static const char *const markers[] = { "config.yaml", "result.json", "trial.json" };
    for (guint i = 0; i < G_N_ELEMENTS (markers); i++) {
        g_autofree char *p = g_build_filename (dir, markers[i], NULL);
        if (g_file_test (p, G_FILE_TEST_IS_REGULAR))
            return TRUE;
    }
    return FALSE;
}

static void
dfq_report_scan (const char *root, const char *rel, guint depth, GPtrArray *found)
{
    g_autofree char *dir = rel[0] ? g_build_filename (root, rel, NULL) : g_strdup (root);
    if (dfq_report_is_run_dir (dir)) {
        g_ptr_array_add (found, g_strdup (rel[0] ? rel : "."));
        return;
    }
    if (depth >= DFQ_REPORT_MAX_DEPTH)
        return;
    GDir *d = g_dir_open (dir, 0, NULL);
    if (d == NULL)
        return;
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
    const char *name;
    while ((name = g_dir_read_name (d)) != NULL) {
        if (name[0] == '.')
            continue;
        g_autofree char *child = g_build_filename (dir, name, NULL);
        if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
            g_ptr_array_add (names, g_strdup (name));
    }
    g_dir_close (d);
    g_ptr_array_sort (names, dfq_report_strcmp_p);
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *child_rel = rel[0] ? g_build_filename (rel, names->pdata[i], NULL) : g_strdup (names->pdata[i]);
        dfq_report_scan (root, child_rel, depth + 1, found);
    }
}

/* Grouping --------------------------------------------------------------------- */

static char *
dfq_report_group_key (GHashTable *flat)
{
    g_autoptr (GPtrArray) keys = g_ptr_array_new ();
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init (&it, flat);
    while (g_hash_table_iter_next (&it, &k, NULL))
        g_ptr_array_add (keys, k);
    g_ptr_array_sort (keys, dfq_report_strcmp_p);
    GString *key = g_string_new (NULL);
    for (guint i = 0; i < keys->len; i++)
        g_string_append_printf (key, "%s=%s\n", (char *) keys->pdata[i],
                                (char *) g_hash_table_lookup (flat, keys->pdata[i]));
    return g_string_free (key, FALSE);
}

static gint
dfq_report_run_by_seed (gconstpointer a, gconstpointer b)
{
    const DfqReportRun *x = *(DfqReportRun *const *) a, *y = *(DfqReportRun *const *) b;
    if (x->seed != y->seed)
        return x->seed < y->seed ? -1 : 1;
    return g_strcmp0 (x->path, y->path);
}

static void
dfq_report_group_stats (DfqReportGroup *g)
{
    g_ptr_array_sort (g->runs, dfq_report_run_by_seed);
    double sl = 0, sb = 0, sf = 0, ql = 0, qb = 0;
    guint nf = 0;
    gint last_seed = G_MININT;
    for (guint i = 0; i < g->runs->len; i++) {
        DfqReportRun *run = g->runs->pdata[i];
        if (!g_str_equal (run->status, "finished")) {
            g->n_failed++;
            continue;
        }
        if (run->seed == last_seed) {
            /* the same seed twice (two copies of one run): count it once */
            g_free (run->detail);
            run->detail = g_strdup_printf ("a second run of seed %d in this group: not averaged", run->seed);
            g->n_failed++;
            continue;
        }
        last_seed = run->seed;
        run->averaged = TRUE;
        g->n++;
        sl += run->last_top1;
        sb += run->best_top1;
        if (isfinite (run->fp_top1)) {
            sf += run->fp_top1;
            nf++;
        }
    }
    g->last_mean = g->n ? sl / g->n : NAN;
    g->best_mean = g->n ? sb / g->n : NAN;
    g->fp_mean = nf ? sf / nf : NAN;
    for (guint i = 0; i < g->runs->len; i++) {
        DfqReportRun *run = g->runs->pdata[i];
        if (!run->averaged)
            continue;
        ql += (run->last_top1 - g->last_mean) * (run->last_top1 - g->last_mean);
        qb += (run->best_top1 - g->best_mean) * (run->best_top1 - g->best_mean);
    }
    g->last_std = g->n > 1 ? sqrt (ql / (g->n - 1)) : NAN;
    g->best_std = g->n > 1 ? sqrt (qb / (g->n - 1)) : NAN;
}

/* The keys whose values differ between @groups (a key missing in one differs). */
static GPtrArray *
dfq_report_differing_keys (GPtrArray *all_groups, gboolean (*keep) (const char *key))
{
    g_autoptr (GHashTable) all = g_hash_table_new (g_str_hash, g_str_equal);
    g_autoptr (GPtrArray) groups = g_ptr_array_new ();
    for (guint i = 0; i < all_groups->len; i++) {
        DfqReportGroup *g = all_groups->pdata[i];
        if (g_hash_table_size (((DfqReportRun *) g->runs->pdata[0])->flat) > 0)
            g_ptr_array_add (groups, g);
    }
    GPtrArray *diff = g_ptr_array_new_with_free_func (g_free);
    if (groups->len < 2)
        return diff;
    for (guint i = 0; i < groups->len; i++) {
        DfqReportRun *run = ((DfqReportGroup *) groups->pdata[i])->runs->pdata[0];
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init (&it, run->flat);
        while (g_hash_table_iter_next (&it, &k, NULL))
            g_hash_table_add (all, k);
    }
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init (&it, all);
    while (g_hash_table_iter_next (&it, &k, NULL)) {
        if (keep != NULL && !keep (k))
            continue;
        const char *first = g_hash_table_lookup (((DfqReportRun *) ((DfqReportGroup *) groups->pdata[0])->runs->pdata[0])->flat, k);
        for (guint i = 1; i < groups->len; i++) {
            const char *v = g_hash_table_lookup (((DfqReportRun *) ((DfqReportGroup *) groups->pdata[i])->runs->pdata[0])->flat, k);
            if (g_strcmp0 (first, v) != 0) {
                g_ptr_array_add (diff, g_strdup (k));
                break;
            }
        }
    }
    return diff;
}

/* Protocol keys first, in their fixed order; then the rest alphabetically. */
static gint
dfq_report_key_order (gconstpointer a, gconstpointer b)
{
    const char *x = *(const char *const *) a, *y = *(const char *const *) b;
    gint rx = G_N_ELEMENTS (dfq_report_protocol_keys), ry = rx;
    for (guint i = 0; i < G_N_ELEMENTS (dfq_report_protocol_keys); i++) {
        if (g_str_equal (x, dfq_report_protocol_keys[i]))
            rx = (gint) i;
        if (g_str_equal (y, dfq_report_protocol_keys[i]))
            ry = (gint) i;
    }
    gboolean px = dfq_report_is_protocol_key (x), py = dfq_report_is_protocol_key (y);
    if (px != py)
        return px ? -1 : 1;
    if (rx != ry)
        return rx - ry;
    /* the quantizer's granularity, symmetry and first/last overrides lead */
    static const char *const first[] = { "student.quantizer.per_channel", "student.quantizer.symmetric",
                                         "student.quantizer.overrides" };
    gint fx = G_N_ELEMENTS (first), fy = fx;
    for (guint i = 0; i < G_N_ELEMENTS (first); i++) {
        if (g_str_equal (x, first[i]))
            fx = (gint) i;
        if (g_str_equal (y, first[i]))
            fy = (gint) i;
    }
    if (fx != fy)
        return fx - fy;
    return g_strcmp0 (x, y);
}

/* "budget" says epochs, iterations and batch at once. */
static void
dfq_report_drop_implied (GPtrArray *keys)
{
    gboolean budget = FALSE;
    for (guint i = 0; i < keys->len; i++)
        budget |= g_str_equal (keys->pdata[i], "budget");
    for (guint i = keys->len; budget && i-- > 0;) {
        const char *k = keys->pdata[i];
        if (g_str_equal (k, "train.epochs") || g_str_equal (k, "train.iters") || g_str_equal (k, "train.batch"))
            g_ptr_array_remove_index (keys, i);
    }
}

/* How many of @groups the values of @keys (with the bit-widths) tell apart. */
static guint
dfq_report_n_distinct (GPtrArray *groups, GPtrArray *keys)
{
    g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    for (guint i = 0; i < groups->len; i++) {
        DfqReportGroup *g = groups->pdata[i];
        GHashTable *flat = ((DfqReportRun *) g->runs->pdata[0])->flat;
        GString *sig = g_string_new (g->bits);
        for (guint k = 0; k < keys->len; k++) {
            const char *v = g_hash_table_lookup (flat, keys->pdata[k]);
            g_string_append_printf (sig, "\n%s", v != NULL ? v : "\x01");
        }
        g_hash_table_add (seen, g_string_free (sig, FALSE));
    }
    return g_hash_table_size (seen);
}

/* Where a plugin choice X.use differs between @groups (a transform added to
 * one row, say), the other keys of X (its parameters, present in one row and
 * absent in the other) are left out of the labels when the groups stay just
 * as distinct without them: "X.use=swing-conv" says what "X.pad=1, X.use=
 * swing-conv, X.weight=1.0" says. */
static void
dfq_report_drop_use_siblings (GPtrArray *keys, GPtrArray *groups)
{
    const guint distinct = dfq_report_n_distinct (groups, keys);
    for (guint i = 0; i < keys->len; i++) {
        const char *use = keys->pdata[i];
        if (!g_str_has_suffix (use, ".use"))
            continue;
        g_autofree char *prefix = g_strndup (use, strlen (use) - strlen ("use"));
        g_autoptr (GPtrArray) rest = g_ptr_array_new ();
        for (guint j = 0; j < keys->len; j++)
            if (j == i || !g_str_has_prefix (keys->pdata[j], prefix))
                g_ptr_array_add (rest, keys->pdata[j]);
        if (rest->len == keys->len || dfq_report_n_distinct (groups, rest) < distinct)
            continue;
        for (guint j = keys->len; j-- > 0;)
            if (j != i && g_str_has_prefix (keys->pdata[j], prefix)) {
                g_ptr_array_remove_index (keys, j);
                if (j < i)
                    i--;
            }
    }
}

static gboolean
dfq_report_not_bits (const char *key)
{
    return !g_str_equal (key, "student.quantizer.w_bits") && !g_str_equal (key, "student.quantizer.a_bits");
}

static gboolean
dfq_report_protocol_only (const char *key)
{
    return dfq_report_is_protocol_key (key);
}

static gboolean
dfq_report_protocol_not_quantizer (const char *key)
{
    return dfq_report_is_protocol_key (key) && !dfq_report_is_quantizer_param (key);
}

/* The protocol keys that differ between @groups. A quantizer's parameters
 * differ only between groups of the same quantizer: where the quantizer is
 * itself compared (uniform vs adaround vs genie-m, whose parameter sets
 * differ), its parameters are part of the method, not of the protocol. */
static GPtrArray *
dfq_report_protocol_differences (GPtrArray *groups)
{
    GPtrArray *diff = dfq_report_differing_keys (groups, dfq_report_protocol_not_quantizer);
    g_autoptr (GHashTable) by_quantizer
        = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) g_ptr_array_unref);
    g_autoptr (GPtrArray) order = g_ptr_array_new (); /* the quantizers in group order */
    for (guint i = 0; i < groups->len; i++) {
        DfqReportGroup *g = groups->pdata[i];
        const char *use = g_hash_table_lookup (((DfqReportRun *) g->runs->pdata[0])->flat, "student.quantizer.use");
        use = use != NULL ? use : ""; /* full precision */
        GPtrArray *same = g_hash_table_lookup (by_quantizer, use);
        if (same == NULL) {
            same = g_ptr_array_new ();
            g_hash_table_insert (by_quantizer, (gpointer) use, same);
            g_ptr_array_add (order, (gpointer) use);
        }
        g_ptr_array_add (same, g);
    }
    for (guint i = 0; i < order->len; i++) {
        g_autoptr (GPtrArray) d = dfq_report_differing_keys (g_hash_table_lookup (by_quantizer, order->pdata[i]),
                                                             dfq_report_is_quantizer_param);
        for (guint j = 0; j < d->len; j++)
            if (!g_ptr_array_find_with_equal_func (diff, d->pdata[j], g_str_equal, NULL))
                g_ptr_array_add (diff, g_strdup (d->pdata[j]));
    }
    return diff;
}

/* "k=v, k2=v2"; past @max keys "..., +N more #1a2b3c", the hash of them all,
 * so that labels cut short still tell groups apart. */
static char *
dfq_report_keys_text (GHashTable *flat, GPtrArray *keys, guint max)
{
    GString *s = g_string_new (NULL);
    GString *all = g_string_new (NULL);
    for (guint i = 0; i < keys->len; i++) {
        const char *v = g_hash_table_lookup (flat, keys->pdata[i]);
        g_string_append_printf (all, "%s=%s\n", (char *) keys->pdata[i], v != NULL ? v : "");
        if (i < max)
            g_string_append_printf (s, "%s%s=%s", i ? ", " : "", (char *) keys->pdata[i], v != NULL ? v : "(absent)");
    }
    if (keys->len > max) {
        g_autofree char *sha = g_compute_checksum_for_string (G_CHECKSUM_SHA256, all->str, (gssize) all->len);
        g_string_append_printf (s, ", +%u more #%.6s", keys->len - max, sha);
    }
    g_string_free (all, TRUE);
    return g_string_free (s, FALSE);
}

static gint
dfq_report_group_order (gconstpointer a, gconstpointer b)
{
    const DfqReportGroup *x = *(DfqReportGroup *const *) a, *y = *(DfqReportGroup *const *) b;
    gint c = g_strcmp0 (x->method, y->method);
    if (c != 0)
        return c;
    if (x->w_bits != y->w_bits)
        return x->w_bits > y->w_bits ? -1 : 1;
    if (x->a_bits != y->a_bits)
        return x->a_bits > y->a_bits ? -1 : 1;
    c = g_strcmp0 (x->bits, y->bits);
    return c != 0 ? c : g_strcmp0 (x->label, y->label);
}

/* "teacher 1a2b3c; fashion-mnist, evaluated on the first 200 images of the
 * test split; best top-1 selected on the test split; budget ...; quantizer
 * per_channel=true, symmetric=false, ..." */
static char *
dfq_report_describe_protocol (GHashTable *flat, GPtrArray *keys)
{
    GString *s = g_string_new (NULL);
    GString *quantizer = g_string_new (NULL);
    const char *split = NULL, *limit = NULL;
    for (guint i = 0; i < keys->len; i++) {
        const char *k = keys->pdata[i];
        if (g_str_equal (k, "eval.split"))
            split = g_hash_table_lookup (flat, k);
        else if (g_str_equal (k, "eval.limit"))
            limit = g_hash_table_lookup (flat, k);
    }
    for (guint i = 0; i < keys->len; i++) {
        const char *k = keys->pdata[i];
        const char *v = g_hash_table_lookup (flat, k);
        if (v == NULL || g_str_equal (k, "eval.split") || g_str_equal (k, "eval.limit"))
            continue;
        if (g_str_has_prefix (k, "student.quantizer.")) {
            g_string_append_printf (quantizer, "%s%s=%s", quantizer->len ? ", " : "", k + strlen ("student.quantizer."), v);
            continue;
        }
        if (s->len)
            g_string_append (s, "; ");
        if (g_str_equal (k, "teacher"))
            g_string_append_printf (s, "teacher %s", v);
        else if (g_str_equal (k, "data.dataset")) {
            g_string_append (s, v);
            if (split != NULL && limit != NULL && !g_str_equal (limit, "all"))
                g_string_append_printf (s, ", evaluated on the first %s images of the %s split", limit, split);
            else if (split != NULL)
                g_string_append_printf (s, ", evaluated on the whole %s split", split);
        } else if (g_str_equal (k, "selected_on"))
            g_string_append_printf (s, "best top-1 selected on the %s split", v);
        else if (g_str_equal (k, "budget")) {
            gint e = 0, it = 0, b = 0;
            if (sscanf (v, "%dx%dx%d", &e, &it, &b) == 3)
                g_string_append_printf (s, "budget %d epochs x %d iterations x batch %d (%" G_GINT64_FORMAT " training images)",
                                        e, it, b, (gint64) e * it * b);
            else if (sscanf (v, "ptq %d", &e) == 1)
                g_string_append_printf (s, "post-training: %d calibration images, no training", e);
        } else
            g_string_append_printf (s, "%s=%s", k, v);
    }
    if (quantizer->len)
        g_string_append_printf (s, "%squantizer %s", s->len ? "; " : "", quantizer->str);
    g_string_free (quantizer, TRUE);
    return g_string_free (s, FALSE);
}

DfqReport *
dfq_report_new_from_dir (const char *dir, GError **error)
{
    g_return_val_if_fail (dir != NULL, NULL);
    if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "%s is not a directory", dir);
        return NULL;
    }
    g_autoptr (DfqReport) report = g_new0 (DfqReport, 1);
    report->root = g_canonicalize_filename (dir, NULL);
    report->title = g_path_get_basename (report->root);
    report->runs = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_report_run_free);
    report->groups = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_report_group_free);
    report->protocol_keys = g_ptr_array_new_with_free_func (g_free);

    g_autoptr (GPtrArray) found = g_ptr_array_new_with_free_func (g_free);
    dfq_report_scan (report->root, "", 0, found);
    if (found->len == 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_NO_RUNS,
                     "no run directory (one holding config.yaml or result.json) under %s", dir);
        return NULL;
    }
    g_autoptr (GHashTable) by_key = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    for (guint i = 0; i < found->len; i++) {
        DfqReportRun *run = dfq_report_read_run (report->root, found->pdata[i]);
        g_ptr_array_add (report->runs, run);
        g_autofree char *key = dfq_report_group_key (run->flat);
        /* a run without a config cannot be compared to anything: alone */
        if (g_hash_table_size (run->flat) == 0) {
            g_free (key);
            key = g_strdup_printf ("?%s", run->path);
        }
        DfqReportGroup *g = g_hash_table_lookup (by_key, key);
        if (g == NULL) {
            g = g_new0 (DfqReportGroup, 1);
            g->method = g_strdup (run->method);
            g->bits = g_strdup (run->bits);
            g->w_bits = run->w_bits;
            g->a_bits = run->a_bits;
            g->runs = g_ptr_array_new ();
            g_ptr_array_add (report->groups, g);
            g_hash_table_insert (by_key, g_steal_pointer (&key), g);
        }
        g_ptr_array_add (g->runs, run);
        run->group = g;
    }
    for (guint i = 0; i < report->groups->len; i++)
        dfq_report_group_stats (report->groups->pdata[i]);

    /* Labels: what separates a group from the other groups of its method
     * (the bit-widths are a column of their own). */
    for (guint i = 0; i < report->groups->len; i++) {
        DfqReportGroup *g = report->groups->pdata[i];
        g_autoptr (GPtrArray) same = g_ptr_array_new ();
        for (guint j = 0; j < report->groups->len; j++) {
            DfqReportGroup *o = report->groups->pdata[j];
            if (g_str_equal (o->method, g->method))
                g_ptr_array_add (same, o);
        }
        g_autoptr (GPtrArray) diff = same->len > 1 ? dfq_report_differing_keys (same, dfq_report_not_bits)
                                                   : g_ptr_array_new_with_free_func (g_free);
        dfq_report_drop_implied (diff);
        dfq_report_drop_use_siblings (diff, same);
        g_ptr_array_sort (diff, dfq_report_key_order);
        DfqReportRun *first = g->runs->pdata[0];
        if (diff->len > 0) {
            g_autofree char *keys = dfq_report_keys_text (first->flat, diff, DFQ_REPORT_MAX_LABEL_KEYS);
            g->series = g_strdup_printf ("%s [%s]", g->method, keys);
        } else {
            g->series = g_strdup (g->method);
        }
        g->label = g_strdup (g->series);
    }

    /* Protocols: the keys that differ between rows that ought to be
     * comparable (pdiff), and those not the same in every row (pdiff_all:
     * what the shared protocol leaves out). */
    g_autoptr (GPtrArray) pdiff_all = dfq_report_differing_keys (report->groups, dfq_report_protocol_only);
    g_autoptr (GPtrArray) pdiff = dfq_report_protocol_differences (report->groups);
    dfq_report_drop_implied (pdiff);
    g_ptr_array_sort (pdiff, dfq_report_key_order);
    for (guint i = 0; i < pdiff->len; i++)
        g_ptr_array_add (report->protocol_keys, g_strdup (pdiff->pdata[i]));
    for (guint i = 0; i < report->groups->len; i++) {
        DfqReportGroup *g = report->groups->pdata[i];
        DfqReportRun *first = g->runs->pdata[0];
        g->protocol = dfq_report_keys_text (first->flat, pdiff, G_MAXUINT);
    }
    /* the protocol keys every group shares, described once */
    {
        DfqReportRun *first = NULL;
        for (guint i = 0; i < report->runs->len && first == NULL; i++)
            if (g_hash_table_size (((DfqReportRun *) report->runs->pdata[i])->flat) > 0)
                first = report->runs->pdata[i];
        g_autoptr (GPtrArray) common = g_ptr_array_new_with_free_func (g_free);
        if (first != NULL) {
            GHashTableIter it;
            gpointer k;
            g_hash_table_iter_init (&it, first->flat);
            gboolean budget_differs = FALSE;
            for (guint i = 0; i < pdiff_all->len; i++)
                budget_differs |= g_str_equal (pdiff_all->pdata[i], "budget");
            while (g_hash_table_iter_next (&it, &k, NULL)) {
                gboolean differs = FALSE;
                for (guint i = 0; i < pdiff_all->len; i++)
                    differs |= g_str_equal (pdiff_all->pdata[i], k);
                /* a differing budget says epochs, iterations and batch per row */
                if (budget_differs && g_str_has_prefix (k, "train."))
                    differs = TRUE;
                if (!differs && dfq_report_is_protocol_key (k))
                    g_ptr_array_add (common, g_strdup (k));
            }
        }
        dfq_report_drop_implied (common);
        g_ptr_array_sort (common, dfq_report_key_order);
        report->common_protocol = first != NULL ? dfq_report_describe_protocol (first->flat, common) : g_strdup ("");
    }
    g_ptr_array_sort (report->groups, dfq_report_group_order);
    return g_steal_pointer (&report);
}

/* Tables --------------------------------------------------------------------------- */

char *
dfq_report_format_mean_std (double mean, double std, guint n)
{
    if (n == 0 || !isfinite (mean))
        return g_strdup ("—");
    if (n == 1 || !isfinite (std))
        return g_strdup_printf ("%.2f", mean);
    return g_strdup_printf ("%.2f ± %.2f", mean, std);
}

/* "s1 56.08/56.08, s2 ..." over the averaged runs. */
/* " (m:ss)" or " (h:mm:ss)": a run's wall time, resumptions included */
static void
dfq_report_append_wall (GString *s, double seconds)
{
    if (!isfinite (seconds) || seconds < 0) {
        g_string_append (s, " (—)");
        return;
    }
    gint64 t = (gint64) (seconds + 0.5);
    if (t >= 3600)
        g_string_append_printf (s, " (%" G_GINT64_FORMAT ":%02d:%02d)", t / 3600, (int) (t / 60 % 60), (int) (t % 60));
    else
        g_string_append_printf (s, " (%d:%02d)", (int) (t / 60), (int) (t % 60));
}

static char *
dfq_report_per_seed (const DfqReport *report, const DfqReportGroup *g)
{
    GString *s = g_string_new (NULL);
    for (guint i = 0; i < g->runs->len; i++) {
        const DfqReportRun *run = g->runs->pdata[i];
        if (!run->averaged)
            continue;
        g_string_append_printf (s, "%ss%d %.2f/%.2f", s->len ? ", " : "", run->seed, run->last_top1, run->best_top1);
        if (report->timings)
            dfq_report_append_wall (s, run->wall_seconds);
    }
    return g_string_free (s, FALSE);
}

/* "1: s2 diverged" */
static char *
dfq_report_not_averaged (const DfqReportGroup *g)
{
    if (g->n_failed == 0)
        return g_strdup ("");
    GString *s = g_string_new (NULL);
    g_string_append_printf (s, "%u:", g->n_failed);
    for (guint i = 0; i < g->runs->len; i++) {
        const DfqReportRun *run = g->runs->pdata[i];
        if (!run->averaged)
            g_string_append_printf (s, " s%d %s", run->seed,
                                    g_str_equal (run->status, "finished") ? "duplicate" : run->status);
    }
    return g_string_free (s, FALSE);
}

static char *
dfq_report_md_cell (const char *text)
{
    g_autofree char *one_line = g_strdup (text != NULL ? text : "");
    for (char *p = one_line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    GString *s = g_string_new (NULL);
    for (const char *p = one_line; *p; p++) {
        if (*p == '|')
            g_string_append (s, "\\|");
        else
            g_string_append_c (s, *p);
    }
    if (s->len > 200) {
        g_string_truncate (s, 197);
        g_string_append (s, "...");
    }
    return g_string_free (s, FALSE);
}

char *
dfq_report_to_markdown (const DfqReport *report)
{
    g_return_val_if_fail (report != NULL, NULL);
    GString *md = g_string_new (NULL);
    guint n_failed = 0;
    for (guint i = 0; i < report->runs->len; i++)
        n_failed += !((DfqReportRun *) report->runs->pdata[i])->averaged;
    g_string_append_printf (md, "# dfq report: %s\n\n", report->title);
    g_string_append_printf (md,
                            "%u run%s in %u group%s; %u not averaged%s. Top-1 in %%: mean ± sample std over the seeds "
                            "that finished (n); per seed: last/best%s.\n\n",
                            report->runs->len, report->runs->len == 1 ? "" : "s", report->groups->len,
                            report->groups->len == 1 ? "" : "s", n_failed, n_failed ? " (listed below)" : "",
                            report->timings ? " (wall time of the run)" : "");
    gboolean mixed = report->protocol_keys->len > 0;
    if (report->common_protocol[0])
        g_string_append_printf (md, "Protocol%s: %s.\n\n", mixed ? " shared by every row" : " of every row",
                                report->common_protocol);
    if (mixed) {
        g_string_append (md, "**Protocols differ between rows** (");
        for (guint i = 0; i < report->protocol_keys->len; i++)
            g_string_append_printf (md, "%s%s", i ? ", " : "", (char *) report->protocol_keys->pdata[i]);
        g_string_append (md, "): such runs are never averaged together, and rows of different protocols are not "
                             "comparable.\n\n");
    }
    g_string_append (md, "| method | bits |");
    if (mixed)
        g_string_append (md, " protocol |");
    g_string_append (md, " n | last top-1 | best top-1 | FP top-1 | per seed (last/best) | not averaged |\n");
    g_string_append (md, "|---|---|");
    if (mixed)
        g_string_append (md, "---|");
    g_string_append (md, "---:|---:|---:|---:|---|---|\n");
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        g_autofree char *label = dfq_report_md_cell (g->label);
        g_autofree char *last = dfq_report_format_mean_std (g->last_mean, g->last_std, g->n);
        g_autofree char *best = dfq_report_format_mean_std (g->best_mean, g->best_std, g->n);
        g_autofree char *fp = isfinite (g->fp_mean) ? g_strdup_printf ("%.2f", g->fp_mean) : g_strdup ("—");
        g_autofree char *seeds = dfq_report_per_seed (report, g);
        g_autofree char *failed = dfq_report_not_averaged (g);
        g_string_append_printf (md, "| %s | %s |", label, g->bits);
        if (mixed) {
            g_autofree char *protocol = dfq_report_md_cell (g->protocol);
            g_string_append_printf (md, " %s |", protocol);
        }
        g_string_append_printf (md, " %u | %s | %s | %s | %s | %s |\n", g->n, last, best, fp, seeds, failed);
    }
    if (n_failed > 0) {
        g_string_append (md, "\n## Runs not averaged\n\n| run | method | bits | seed | status | detail |\n"
                             "|---|---|---|---:|---|---|\n");
        for (guint i = 0; i < report->runs->len; i++) {
            const DfqReportRun *run = report->runs->pdata[i];
            if (run->averaged)
                continue;
            g_autofree char *path = dfq_report_md_cell (run->path);
            g_autofree char *method = dfq_report_md_cell (run->method);
            g_autofree char *detail = dfq_report_md_cell (run->detail);
            g_string_append_printf (md, "| %s | %s | %s | %d | %s | %s |\n", path, method, run->bits, run->seed,
                                    g_str_equal (run->status, "finished") ? "duplicate" : run->status, detail);
        }
    }
    dfq_report_sqnr_markdown (md, report);
    return g_string_free (md, FALSE);
}

static void
dfq_report_csv_field (GString *csv, const char *text, gboolean last)
{
    const char *t = text != NULL ? text : "";
    if (strpbrk (t, ",\"\n\r") != NULL) {
        g_string_append_c (csv, '"');
        for (const char *p = t; *p; p++) {
            if (*p == '"')
                g_string_append_c (csv, '"');
            g_string_append_c (csv, *p);
        }
        g_string_append_c (csv, '"');
    } else {
        g_string_append (csv, t);
    }
    g_string_append_c (csv, last ? '\n' : ',');
}

static char *
dfq_report_csv_number (double v)
{
    return isfinite (v) ? g_strdup_printf ("%.4f", v) : g_strdup ("");
}

char *
dfq_report_to_csv (const DfqReport *report)
{
    g_return_val_if_fail (report != NULL, NULL);
    GString *csv = g_string_new ("method,bits,w_bits,a_bits,label,protocol,n,last_mean,last_std,best_mean,best_std,"
                                 "fp_mean,seeds,last_per_seed,best_per_seed,n_not_averaged,not_averaged");
    g_string_append (csv, report->timings ? ",wall_seconds_per_seed\n" : "\n");
    for (guint i = 0; i < report->groups->len; i++) {
        const DfqReportGroup *g = report->groups->pdata[i];
        GString *seeds = g_string_new (NULL), *lasts = g_string_new (NULL), *bests = g_string_new (NULL);
        GString *walls = g_string_new (NULL);
        guint n_walls = 0;
        for (guint r = 0; r < g->runs->len; r++) {
            const DfqReportRun *run = g->runs->pdata[r];
            if (!run->averaged)
                continue;
            g_string_append_printf (seeds, "%s%d", seeds->len ? ";" : "", run->seed);
            g_string_append_printf (lasts, "%s%.4f", lasts->len ? ";" : "", run->last_top1);
            g_string_append_printf (bests, "%s%.4f", bests->len ? ";" : "", run->best_top1);
            g_autofree char *wall = dfq_report_csv_number (run->wall_seconds);
            g_string_append_printf (walls, "%s%s", n_walls++ ? ";" : "", wall);
        }
        g_autofree char *w = g->w_bits > 0 ? g_strdup_printf ("%d", g->w_bits) : g_strdup ("");
        g_autofree char *a = g->a_bits > 0 ? g_strdup_printf ("%d", g->a_bits) : g_strdup ("");
        g_autofree char *n = g_strdup_printf ("%u", g->n);
        g_autofree char *lm = dfq_report_csv_number (g->last_mean), *ls = dfq_report_csv_number (g->last_std);
        g_autofree char *bm = dfq_report_csv_number (g->best_mean), *bs = dfq_report_csv_number (g->best_std);
        g_autofree char *fm = dfq_report_csv_number (g->fp_mean);
        g_autofree char *nf = g_strdup_printf ("%u", g->n_failed);
        g_autofree char *failed = dfq_report_not_averaged (g);
        const char *fields[] = { g->method, g->bits, w, a, g->label, g->protocol, n, lm, ls, bm, bs, fm,
                                 seeds->str, lasts->str, bests->str, nf, failed, walls->str };
        const guint n_fields = G_N_ELEMENTS (fields) - (report->timings ? 0 : 1);
        for (guint f = 0; f < n_fields; f++)
            dfq_report_csv_field (csv, fields[f], f + 1 == n_fields);
        g_string_free (seeds, TRUE);
        g_string_free (lasts, TRUE);
        g_string_free (bests, TRUE);
        g_string_free (walls, TRUE);
    }
    return g_string_free (csv, FALSE);
}

gboolean
dfq_report_write (const DfqReport *report, const char *out_dir, GError **error)
{
    g_return_val_if_fail (report != NULL && out_dir != NULL, FALSE);
    if (g_mkdir_with_parents (out_dir, 0755) != 0) {
        g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "cannot create %s: %s", out_dir, g_strerror (errno));
        return FALSE;
    }
    struct {
        const char *name;
        char *(*render) (const DfqReport *);
    } files[] = {
        { "report.md", dfq_report_to_markdown },
        { "report.csv", dfq_report_to_csv },
        { "report.html", dfq_report_to_html },
    };
    for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
        g_autofree char *text = files[i].render (report);
        g_autofree char *path = g_build_filename (out_dir, files[i].name, NULL);
        GError *e = NULL;
        if (!g_file_set_contents (path, text, -1, &e)) {
            g_set_error (error, DFQ_SWEEP_ERROR, DFQ_SWEEP_ERROR_IO, "%s", e->message);
            g_error_free (e);
            return FALSE;
        }
    }
    return TRUE;
}
