/* Per-layer SQNR of the quantized student (core/runner): a diagnostic of every
 * quantization run, whatever the method. After each evaluation the student
 * runs, with the quantizer in EVAL mode, over the first eval.sqnr_images
 * images of the evaluation split (in forwards of DFQ_SQNR_CHUNK images: the
 * taps keep every site's X and Q(X) of a forward alive, 2.6 GB for 256
 * MobileNetV2 images in one forward) with the quantization taps on
 * ("<site>:quant", "<layer>:wquant": Q(X) and X at every site the quantizer
 * changes); per site
 *   SQNR = 10 log10( sum X^2 / (sum (X - Q(X))^2 + 1e-12) )
 * over those images (sums in double, in order), written to the unit's
 * metrics line: "sqnr_db" {site: dB} for activation sites in forward order,
 * "sqnr_db_weight" {layer: dB}, "sqnr_db_mean" (the mean over activation
 * sites) and "sqnr_images". Sites whose signal is all zero are left out. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

#include "dfq-run.h"

/* Images per forward of the SQNR pass: a constant, so that the sums' grouping,
 * and so their bits, depend neither on eval.batch nor on the thread count. */
#define DFQ_SQNR_CHUNK 32

typedef struct {
    char *site;
    gboolean weight;
    double signal;
    double noise;
} DfqSqnrSite;

static void
dfq_sqnr_site_clear (gpointer p)
{
    g_free (((DfqSqnrSite *) p)->site);
}

/* Adds the taps of one forward to the per-site sums (@sites in first-seen
 * order; @index maps site names to positions). */
static void
dfq_sqnr_accumulate (const DfqTapSet *set, GArray *sites, GHashTable *index)
{
    for (guint i = 0; i < dfq_tap_set_size (set); i++) {
        const DfqTap *t = dfq_tap_set_get (set, i);
        if (t->aux0 == NULL || dfq_tensor_numel (t->aux0) != dfq_tensor_numel (t->tensor))
            continue;
        gpointer pos;
        if (!g_hash_table_lookup_extended (index, t->name, NULL, &pos)) {
            const char *colon = strrchr (t->name, ':');
            DfqSqnrSite s = { g_strndup (t->name, (gsize) (colon - t->name)), t->kind == DFQ_TAP_QUANT_WEIGHT,
                              0.0, 0.0 };
            pos = GUINT_TO_POINTER (sites->len);
            g_array_append_val (sites, s);
            g_hash_table_insert (index, g_strdup (t->name), pos);
        }
        DfqSqnrSite *s = &g_array_index (sites, DfqSqnrSite, GPOINTER_TO_UINT (pos));
        const float *x = dfq_tensor_f32 (t->aux0), *q = dfq_tensor_f32 (t->tensor);
        gint64 n = dfq_tensor_numel (t->aux0);
        double sig = 0.0, noise = 0.0;
        for (gint64 k = 0; k < n; k++) {
            double e = (double) x[k] - q[k];
            sig += (double) x[k] * x[k];
            noise += e * e;
        }
        s->signal += sig;
        s->noise += noise;
    }
}

static void
dfq_sqnr_write (JsonBuilder *b, GArray *sites, guint n_images)
{
    double sum = 0.0;
    guint n = 0;
    for (int weight = 0; weight < 2; weight++) {
        json_builder_set_member_name (b, weight ? "sqnr_db_weight" : "sqnr_db");
        json_builder_begin_object (b);
        for (guint i = 0; i < sites->len; i++) {
            const DfqSqnrSite *s = &g_array_index (sites, DfqSqnrSite, i);
            if (s->weight != weight || !(s->signal > 0.0))
                continue;
            double db = 10.0 * log10 (s->signal / (s->noise + 1e-12));
            json_builder_set_member_name (b, s->site);
            json_builder_add_double_value (b, db);
            if (!weight) {
                sum += db;
                n++;
            }
        }
        json_builder_end_object (b);
    }
    json_builder_set_member_name (b, "sqnr_db_mean");
    json_builder_add_double_value (b, n > 0 ? sum / n : 0.0);
    json_builder_set_member_name (b, "sqnr_images");
    json_builder_add_int_value (b, n_images);
}

gboolean
dfq_run_sqnr (DfqRun *r, JsonBuilder *line, GError **error)
{
    if (r->quantizer == NULL || r->eval_set == NULL || r->cfg->eval.sqnr_images <= 0)
        return TRUE;
    guint n = MIN ((guint) r->cfg->eval.sqnr_images, dfq_dataset_get_n (r->eval_set));
    guint batch = DFQ_SQNR_CHUNK, c, h, w;
    dfq_dataset_get_shape (r->eval_set, &c, &h, &w);
    static const char *const patterns[] = { "*:quant", "*:wquant", NULL };
    g_autoptr (DfqTapSet) set = dfq_tap_set_new (patterns);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    GArray *sites = g_array_new (FALSE, TRUE, sizeof (DfqSqnrSite));
    g_array_set_clear_func (sites, dfq_sqnr_site_clear);
    GHashTable *index = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    guint32 *idx = g_new (guint32, batch);
    DfqQuantMode mode = dfq_quantizer_get_mode (r->quantizer);
    dfq_quantizer_set_mode (r->quantizer, DFQ_QUANT_MODE_EVAL);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    gboolean ok = TRUE;
    for (guint start = 0; start < n && ok; start += batch) {
        guint b = MIN (batch, n - start);
        dfq_arena_reset (arena);
        for (guint i = 0; i < b; i++)
            idx[i] = start + i;
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, b, c, h, w);
        dfq_dataset_fill_batch (r->eval_set, idx, b, x, NULL);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        dfq_quantizer_hook (r->quantizer, &fwd);
        dfq_tap_set_clear (set);
        dfq_forward_add_taps (&fwd, set);
        DfqTensor *logits = dfq_model_forward (r->student, &fwd, x);
        if (!dfq_tensor_all_finite (logits)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                         "non-finite logits while measuring SQNR on images %u..%u", start, start + b - 1);
            ok = FALSE;
            break;
        }
        dfq_sqnr_accumulate (set, sites, index);
        dfq_tap_set_clear (set);
    }
    dfq_set_grad_enabled (prev);
    dfq_quantizer_set_mode (r->quantizer, mode);
    if (ok)
        dfq_sqnr_write (line, sites, n);
    g_free (idx);
    g_hash_table_unref (index);
    g_array_unref (sites);
    return ok;
}
