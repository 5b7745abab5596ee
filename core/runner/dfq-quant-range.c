/* Clip-range search for quantizers (core/runner, next to the quantizer glue):
 * percentiles by quickselect and the clip-ratio search of the GDFQ-family
 * quantizers (uniform, acd) and of BRECQ / GENIE (soft-rounding). Each error
 * is computed in the arithmetic of the code it came from, so that moving it
 * here changed no bit of any plugin. */
#include <math.h>

#include <dfq/dfq-quant-range.h>

/* ------------------------------------------------------------ clip ratios */

float
dfq_quant_range_ratio (DfqQuantRangeGrid grid, gint i)
{
    /* The two reference codes round differently: 1 - 0.01 i differs in 404 of
     * the first 1000 i between float and double arithmetic. */
    if (grid == DFQ_QUANT_RANGE_BRECQ)
        return (float) (1.0 - 0.01 * i);
    return 1.0f - 0.01f * (float) i;
}

/* Sum of squared errors of the GDFQ quantizer (dfq_fake_quant's formula) on
 * [lo, hi] over x[0], x[stride], ... */
static double
dfq_quant_range_gdfq_error (const float *x, gint64 n, gint64 stride, float lo, float hi, int bits)
{
    const float levels = (float) ((1 << bits) - 1);
    const float half = (float) (1 << (bits - 1));
    float scale = levels / fmaxf (hi - lo, 1e-8f);
    float zp = nearbyintf (scale * lo) + half;
    double sse = 0.0;
    for (gint64 k = 0; k < n; k += stride) {
        float q = fminf (fmaxf (nearbyintf (scale * x[k] - zp), -half), half - 1.0f);
        double e = (double) ((q + zp) / scale - x[k]);
        sse += e * e;
    }
    return sse;
}

/* Mean |x - x^|^p of BRECQ's UniformAffineQuantizer on [lo, hi] over x[0],
 * x[stride], ... (GENIE's uniform_quantize is the same). */
static double
dfq_quant_range_brecq_error (const float *x, gint64 n, gint64 stride, float lo, float hi, int bits, double p)
{
    const float levels = (float) ((1 << bits) - 1);
    float d = fmaxf ((hi - lo) / levels, 1e-8f);
    float z = nearbyintf (-lo / d);
    double score = 0.0;
    gint64 m = 0;
    for (gint64 k = 0; k < n; k += stride, m++) {
        float q = fminf (fmaxf (nearbyintf (x[k] / d) + z, 0.0f), levels);
        score += pow (fabs ((double) x[k] - (double) ((q - z) * d)), p);
    }
    return score / (double) MAX (m, 1);
}

gboolean
dfq_quant_range_search (const DfqQuantRangeSearch *search, const float *x, gint64 n, gint64 stride, float *lo,
                        float *hi, float *ratio)
{
    g_return_val_if_fail (search != NULL && lo != NULL && hi != NULL, FALSE);
    g_return_val_if_fail (search->bits >= 1 && search->bits <= 16, FALSE);
    g_return_val_if_fail (search->n_ratios >= 1 && search->n_ratios <= 100, FALSE);
    g_return_val_if_fail (n >= 0 && stride >= 1 && (x != NULL || n == 0), FALSE);
    double best = INFINITY;
    gint best_i = -1;
    for (gint i = 0; i < search->n_ratios; i++) {
        float r = dfq_quant_range_ratio (search->grid, i);
        float l = *lo * r, h = *hi * r;
        double err = search->grid == DFQ_QUANT_RANGE_BRECQ
                         ? dfq_quant_range_brecq_error (x, n, stride, l, h, search->bits, search->p)
                         : dfq_quant_range_gdfq_error (x, n, stride, l, h, search->bits);
        if (err < best) {
            best = err;
            best_i = i;
        }
    }
    if (best_i < 0)
        return FALSE;
    float r = dfq_quant_range_ratio (search->grid, best_i);
    *lo *= r;
    *hi *= r;
    if (ratio != NULL)
        *ratio = r;
    return TRUE;
}

/* ------------------------------------------------------------ percentiles */

/* The @k-th smallest of v[0..n) (v is reordered): Hoare quickselect. */
static float
dfq_quant_range_select (float *v, gint64 n, gint64 k)
{
    gint64 lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        gint64 i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

void
dfq_quant_range_percentile (float *v, gint64 n, gdouble percentile, float *lo, float *hi)
{
    g_return_if_fail (v != NULL && n > 0 && lo != NULL && hi != NULL);
    double p = percentile / 100.0;
    /* upper first: the lower selection then runs on the reordered values, as
     * it always did (the result does not depend on the order, the work does) */
    *hi = dfq_quant_range_select (v, n, (gint64) floor (p * (double) (n - 1) + 0.5));
    *lo = dfq_quant_range_select (v, n, (gint64) floor ((1.0 - p) * (double) (n - 1) + 0.5));
}
