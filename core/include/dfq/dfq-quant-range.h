/* Clip-range search for quantizers: the range [lo, hi] that a quantizer
 * starts from (or calibrates to), chosen on a sample of the values to be
 * quantized. Two searches, shared by the quantizer plugins:
 *
 * - percentile: the (100-p)th and pth percentiles of the sample;
 * - clip ratios: over r = 1.00, 0.99, 0.98, ... the range [lo r, hi r] whose
 *   quantization error on the sample is least (the first one on ties). The
 *   error is measured with the quantizer of the reference code the plugin
 *   ports (DfqQuantRangeGrid), in its arithmetic, so that a plugin keeps the
 *   bits of its reference.
 *
 * Plain functions on float arrays: no tensors, no allocation, thread-safe
 * (plugins call them per channel from parallel loops). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>

G_BEGIN_DECLS

typedef enum {
    /* GDFQ / ZeroQ (dfq_fake_quant): scale s = (2^b - 1) / max(hi - lo, 1e-8),
     * zp = round(s lo) + 2^(b-1), q = clamp(round(s x - zp), -2^(b-1),
     * 2^(b-1) - 1), x^ = (q + zp) / s. Ratios r_i = 1 - 0.01 i in float; the
     * error is the sum of (x - x^)^2 (p is not used). */
    DFQ_QUANT_RANGE_GDFQ = 0,
    /* BRECQ / GENIE (UniformAffineQuantizer): d = max((hi - lo) / (2^b - 1),
     * 1e-8), z = round(-lo / d), x^ = (clamp(round(x / d) + z, 0, 2^b - 1) - z) d.
     * Ratios r_i = 1 - 0.01 i in double, rounded to float; the error is the
     * mean of |x - x^|^p. */
    DFQ_QUANT_RANGE_BRECQ = 1,
} DfqQuantRangeGrid;

/* How dfq_quant_range_search() measures and which ratios it tries. */
typedef struct {
    DfqQuantRangeGrid grid;
    gint bits;     /* 1..16 */
    gint n_ratios; /* ratios 1.00, 0.99, ..., 1 - 0.01 (n_ratios - 1); 1..100 */
    gdouble p;     /* DFQ_QUANT_RANGE_BRECQ: the norm p of the error (> 0) */
} DfqQuantRangeSearch;

/**
 * dfq_quant_range_ratio:
 * The @i-th clip ratio of the search on @grid (1.0 for i = 0), exactly as
 * dfq_quant_range_search() computes it.
 */
DFQ_API float dfq_quant_range_ratio (DfqQuantRangeGrid grid, gint i);

/**
 * dfq_quant_range_search:
 * @lo, @hi: in: the full range (usually the sample's min and max); out: the
 *   chosen clipped range [lo r, hi r].
 * @ratio: (out) (optional): the chosen r.
 * Tries the ratios of @search on x[0], x[stride], ... (the elements below
 * @n) and keeps the one with the least error. Returns FALSE, leaving @lo, @hi
 * and @ratio unset, when no ratio has a finite error (NaN or infinite values
 * in the sample).
 */
DFQ_API gboolean dfq_quant_range_search (const DfqQuantRangeSearch *search, const float *x, gint64 n, gint64 stride,
                                         float *lo, float *hi, float *ratio);

/**
 * dfq_quant_range_percentile:
 * @v: @n > 0 values, reordered in place (quickselect, no allocation).
 * @percentile: p in [50, 100].
 * *hi = the value of rank round(p/100 (n - 1)) in ascending order, *lo = that
 * of rank round((1 - p/100) (n - 1)) (ranks from 0, ties rounded up).
 */
DFQ_API void dfq_quant_range_percentile (float *v, gint64 n, gdouble percentile, float *lo, float *hi);

G_END_DECLS
