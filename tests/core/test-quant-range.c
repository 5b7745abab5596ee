/* Tests of the clip-range search (core/runner/dfq-quant-range.c) on tiny
 * hand-computed cases: the clip-ratio search on both grids, ties, the strided
 * sample, samples without a finite error, percentiles and the two ratio
 * conventions. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

static void
test_gdfq_exact_grid (void)
{
    g_test_summary ("GDFQ, 2 bits, x = {0, 1, 2, 3} from the range [0, 3 / 0.98]: r = 0.98 puts the grid "
                    "on the integers (error ~0; r = 1: 0.0058, r = 0.97: 0.0015), so it is chosen");
    const float x[] = { 0.0f, 1.0f, 2.0f, 3.0f };
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, 2, 100, 2.0 };
    float lo = 0.0f, hi = 3.0f / 0.98f, ratio = -1.0f;
    g_assert_true (dfq_quant_range_search (&search, x, 4, 1, &lo, &hi, &ratio));
    g_assert_cmpfloat (ratio, ==, 1.0f - 0.01f * 2.0f);
    g_assert_cmpfloat (lo, ==, 0.0f);
    g_assert_cmpfloat_with_epsilon (hi, 3.0f, 1e-6);
}

static void
test_gdfq_clips_outlier (void)
{
    g_test_summary ("GDFQ, 1 bit, x = {0, 1 x 8, 2} on [0, 2]: levels {0, h = 2r}; the error "
                    "8 (h - 1)^2 + (2 - h)^2 (h > 1) is least at h = 10/9, on the grid r = 0.56 "
                    "(0.8896; r = 0.55: 0.89, r = 0.57: 0.8964, r = 1: 8, r = 0.5: 1)");
    const float x[] = { 0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 2.0f };
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, 1, 100, 2.0 };
    float lo = 0.0f, hi = 2.0f, ratio = -1.0f;
    g_assert_true (dfq_quant_range_search (&search, x, G_N_ELEMENTS (x), 1, &lo, &hi, &ratio));
    g_assert_cmpfloat (ratio, ==, dfq_quant_range_ratio (DFQ_QUANT_RANGE_GDFQ, 44));
    g_assert_cmpfloat_with_epsilon (hi, 1.12f, 1e-6);
    g_assert_cmpfloat (lo, ==, 0.0f);
}

static void
test_gdfq_tie_keeps_first (void)
{
    g_test_summary ("All zeros on [0, 0]: every ratio has error 0, the first (r = 1) is kept");
    const float x[] = { 0.0f, 0.0f, 0.0f };
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, 4, 100, 2.0 };
    float lo = 0.0f, hi = 0.0f, ratio = -1.0f;
    g_assert_true (dfq_quant_range_search (&search, x, 3, 1, &lo, &hi, &ratio));
    g_assert_cmpfloat (ratio, ==, 1.0f);
}

static void
test_brecq_lp_strided (void)
{
    g_test_summary ("BRECQ, 2 bits, p 2.4, every second value of {0, 100, 1, 100, 2, 100, 3, 100} (the 100s "
                    "skipped) on [0, 3 / 0.97]: r = 0.97 gives the step 1 (error ~0) out of 5 ratios; with "
                    "2 ratios r = 0.99 beats r = 1 (step 1.021 vs 1.031)");
    const float x[] = { 0.0f, 100.0f, 1.0f, 100.0f, 2.0f, 100.0f, 3.0f, 100.0f };
    DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_BRECQ, 2, 5, 2.4 };
    float lo = 0.0f, hi = 3.0f / 0.97f, ratio = -1.0f;
    g_assert_true (dfq_quant_range_search (&search, x, G_N_ELEMENTS (x), 2, &lo, &hi, &ratio));
    g_assert_cmpfloat (ratio, ==, (float) 0.97);
    g_assert_cmpfloat_with_epsilon (hi, 3.0f, 1e-6);
    search.n_ratios = 2;
    lo = 0.0f;
    hi = 3.0f / 0.97f;
    g_assert_true (dfq_quant_range_search (&search, x, G_N_ELEMENTS (x), 2, &lo, &hi, &ratio));
    g_assert_cmpfloat (ratio, ==, (float) 0.99);
}

static void
test_no_finite_error (void)
{
    g_test_summary ("A NaN in the sample: no ratio has a finite error; FALSE, lo / hi / ratio untouched");
    const float x[] = { 0.0f, NAN, 1.0f };
    for (int g = DFQ_QUANT_RANGE_GDFQ; g <= DFQ_QUANT_RANGE_BRECQ; g++) {
        const DfqQuantRangeSearch search = { g, 4, 10, 2.0 };
        float lo = -1.0f, hi = 1.0f, ratio = 7.0f;
        g_assert_false (dfq_quant_range_search (&search, x, 3, 1, &lo, &hi, &ratio));
        g_assert_cmpfloat (lo, ==, -1.0f);
        g_assert_cmpfloat (hi, ==, 1.0f);
        g_assert_cmpfloat (ratio, ==, 7.0f);
    }
}

static void
test_ratio_conventions (void)
{
    g_test_summary ("r_0 = 1 on both grids; r_16 = 0.84 differs in the last bit between GDFQ's float "
                    "and BRECQ's double arithmetic");
    g_assert_cmpfloat (dfq_quant_range_ratio (DFQ_QUANT_RANGE_GDFQ, 0), ==, 1.0f);
    g_assert_cmpfloat (dfq_quant_range_ratio (DFQ_QUANT_RANGE_BRECQ, 0), ==, 1.0f);
    g_assert_cmpfloat (dfq_quant_range_ratio (DFQ_QUANT_RANGE_GDFQ, 16), ==, 1.0f - 0.16f);
    g_assert_cmpfloat (dfq_quant_range_ratio (DFQ_QUANT_RANGE_BRECQ, 16), ==, (float) 0.84);
    g_assert_cmpfloat (dfq_quant_range_ratio (DFQ_QUANT_RANGE_GDFQ, 16), !=,
                       dfq_quant_range_ratio (DFQ_QUANT_RANGE_BRECQ, 16));
}

static void
test_percentile (void)
{
    g_test_summary ("{5, 1, 4, 2, 3}: p 75 gives ranks round(3) = 3 and round(1) = 1 (4 and 2); "
                    "p 100 the max and min; p 50 the median twice; p 62.5: ranks 2.5 and 1.5 round up to 3 and 2 (4 and 3)");
    float v[5];
    const float src[5] = { 5.0f, 1.0f, 4.0f, 2.0f, 3.0f };
    const struct {
        double p;
        float lo, hi;
    } cases[] = { { 75.0, 2.0f, 4.0f }, { 100.0, 1.0f, 5.0f }, { 50.0, 3.0f, 3.0f }, { 62.5, 3.0f, 4.0f } };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        memcpy (v, src, sizeof v);
        float lo = NAN, hi = NAN;
        dfq_quant_range_percentile (v, 5, cases[i].p, &lo, &hi);
        g_assert_cmpfloat (lo, ==, cases[i].lo);
        g_assert_cmpfloat (hi, ==, cases[i].hi);
    }
}

static void
test_bad_bits (void)
{
    g_test_summary ("bits 0 is a programmer error: CRITICAL and FALSE");
    if (g_test_subprocess ()) {
        const float x[] = { 1.0f };
        const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, 0, 10, 2.0 };
        float lo = 0.0f, hi = 1.0f;
        g_assert_false (dfq_quant_range_search (&search, x, 1, 1, &lo, &hi, NULL));
        return;
    }
    g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed ();
    g_test_trap_assert_stderr ("*CRITICAL*dfq_quant_range_search*");
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/quant-range/search/gdfq-exact-grid", test_gdfq_exact_grid);
    g_test_add_func ("/quant-range/search/gdfq-clips-outlier", test_gdfq_clips_outlier);
    g_test_add_func ("/quant-range/search/tie-keeps-first", test_gdfq_tie_keeps_first);
    g_test_add_func ("/quant-range/search/brecq-lp-strided", test_brecq_lp_strided);
    g_test_add_func ("/quant-range/search/no-finite-error", test_no_finite_error);
    g_test_add_func ("/quant-range/search/bad-bits", test_bad_bits);
    g_test_add_func ("/quant-range/ratio/conventions", test_ratio_conventions);
    g_test_add_func ("/quant-range/percentile/ranks", test_percentile);
    return g_test_run ();
}
