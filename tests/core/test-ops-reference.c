/* The dense ops (conv2d, linear, batchnorm) against naive reference loops in
 * double precision, forward and backward, on random inputs; plus determinism
 * (bit-identical results run to run and across thread counts) and the
 * no-allocation property of a steady-state training loop. A conv timing runs
 * with `-m perf` only. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

/* Reference errors are measured relative to the size of the reference values:
 * a float sum of L terms of size t is off by about sqrt(L) eps t, and the
 * reference's own largest value grows the same way. */
#define REF_TOL 1e-4

/* Worst errors over the whole run, reported at the end. */
static double worst_conv = 0.0, worst_linear = 0.0, worst_bn = 0.0;

static double
ref_max_abs (const double *ref, gint64 n)
{
    double m = 0.0;
    for (gint64 i = 0; i < n; i++)
        m = MAX (m, fabs (ref[i]));
    return m;
}

/* max |a - ref| / max(1, max |ref|); fails the test when above REF_TOL. */
static double
check_close (const char *what, const float *a, const double *ref, gint64 n)
{
    double err = 0.0;
    for (gint64 i = 0; i < n; i++) {
        double e = fabs ((double) a[i] - ref[i]);
        if (isnan (e))
            e = INFINITY;
        err = MAX (err, e);
    }
    double scale = MAX (1.0, ref_max_abs (ref, n));
    double rel = err / scale;
    if (!(rel <= REF_TOL))
        g_test_fail_printf ("%s: max abs error %.3g (scale %.3g) exceeds %.1g", what, err, scale, REF_TOL);
    return rel;
}

static DfqTensor *
random_tensor (DfqArena *arena, int n_dims, const gint64 *shape, guint64 stream, float std)
{
    DfqTensor *t = dfq_tensor_new (arena, DFQ_DTYPE_F32, n_dims, shape);
    dfq_rand_normal_fill (t, 1234, stream, 0.0f, std);
    return t;
}

/* ------------------------------------------------------------------ conv2d */

typedef struct {
    int n, ci, h, w, co, k, s, p, g;
    gboolean bias;
} ConvCfg;

/* clang-format off */
static const ConvCfg conv_cfgs[] = {
    /* n ci  h  w  co k s p g  bias */
    { 1, 3, 8, 8, 4, 3, 1, 1, 1, TRUE },
    { 4, 3, 8, 8, 4, 3, 1, 1, 1, TRUE },
    { 4, 4, 7, 7, 6, 3, 2, 1, 1, TRUE },
    { 4, 4, 9, 7, 6, 3, 2, 0, 1, FALSE },
    { 4, 5, 6, 6, 3, 3, 1, 0, 1, TRUE },
    { 1, 4, 7, 7, 8, 1, 1, 0, 1, TRUE },   /* 1x1: the input is the column matrix */
    { 4, 6, 7, 7, 4, 1, 2, 0, 1, FALSE },  /* 1x1 stride 2 (ResNet shortcut) */
    { 4, 6, 5, 5, 4, 1, 1, 1, 1, TRUE },   /* 1x1 with padding */
    { 4, 4, 8, 8, 6, 3, 1, 1, 2, TRUE },   /* groups 2 */
    { 4, 6, 9, 9, 6, 3, 2, 1, 2, FALSE },
    { 1, 6, 9, 9, 9, 3, 2, 1, 3, TRUE },
    { 4, 8, 8, 8, 8, 3, 1, 1, 8, TRUE },   /* depthwise */
    { 1, 8, 7, 7, 8, 3, 2, 1, 8, TRUE },
    { 4, 5, 9, 9, 5, 3, 2, 0, 5, FALSE },
    { 4, 4, 9, 9, 8, 5, 2, 2, 4, TRUE },   /* depthwise, channel multiplier 2 */
    { 2, 4, 5, 5, 4, 1, 1, 1, 4, TRUE },   /* depthwise 1x1 with padding: scattered dX */
    { 2, 6, 12, 10, 6, 5, 1, 1, 6, FALSE }, /* depthwise, padding below k/2 */
    { 4, 4, 11, 11, 8, 5, 1, 2, 1, TRUE }, /* 5x5 */
    { 4, 3, 13, 13, 8, 5, 2, 2, 1, FALSE },
    { 1, 3, 13, 11, 4, 5, 1, 0, 1, TRUE },
    { 4, 1, 28, 28, 8, 5, 1, 2, 1, TRUE }, /* single input channel: direct loops */
    { 2, 3, 32, 32, 16, 3, 1, 1, 1, FALSE },
    { 2, 16, 16, 16, 16, 3, 1, 1, 1, TRUE },
    { 3, 12, 9, 10, 10, 3, 1, 1, 1, TRUE }, /* 3x3 kernel: channels not a multiple of 8 */
    { 2, 9, 7, 7, 8, 3, 1, 1, 1, FALSE },   /* 3x3 kernel on a 7x7 plane (tiles of 32) */
    { 1, 16, 8, 8, 16, 3, 1, 1, 1, TRUE },  /* one image: forward only through the 3x3 kernel */
    { 3, 5, 8, 9, 32, 3, 1, 1, 1, FALSE },  /* 3x3 dW kernel, 32-channel tiles */
    { 2, 3, 9, 6, 16, 3, 1, 1, 1, TRUE },   /* 3x3 dW kernel, 16-channel tiles, odd Ci */
    { 2, 8, 13, 12, 12, 3, 2, 1, 1, FALSE }, /* 3x3 kernel at stride 2 (phase planes), odd H */
    { 3, 4, 16, 16, 8, 3, 2, 1, 1, TRUE },  /* the same, even sizes */
    { 4, 32, 8, 8, 64, 3, 2, 1, 1, FALSE },
    { 4, 16, 6, 6, 32, 1, 2, 0, 1, FALSE },
    { 3, 8, 5, 5, 8, 5, 1, 2, 2, TRUE },
    /* 1x1 stride 1 through the AVX-512 pointwise kernel (where the CPU has it):
     * planes of 1, 16, 49 and 50 positions (masked last vectors, vectors
     * spanning images), Co not a multiple of 8, one image, more channels */
    { 5, 6, 7, 7, 12, 1, 1, 0, 1, TRUE },
    { 3, 9, 4, 4, 8, 1, 1, 0, 1, FALSE },
    { 7, 5, 1, 1, 9, 1, 1, 0, 1, TRUE },
    { 1, 40, 5, 10, 24, 1, 1, 0, 1, TRUE },
    { 2, 3, 28, 28, 16, 1, 1, 0, 1, FALSE },
    { 4, 16, 7, 7, 24, 1, 1, 0, 1, TRUE },  /* ... and its input gradient (Ci >= 8) */
    { 3, 12, 14, 14, 8, 1, 1, 0, 1, FALSE },
    /* 1x1 stride 1, small planes, more than 16 images: the weight gradient
     * from one GEMM per chunk of images (chunks of 1 and 2, and of 3) */
    { 20, 6, 7, 7, 12, 1, 1, 0, 1, TRUE },
    { 35, 5, 4, 4, 9, 1, 1, 0, 1, FALSE },
    /* ... with weights so large that the weight-gradient budget allows only 14
     * chunks: chunks of 3 images (the copy buffer sized for the real chunks) */
    { 30, 760, 1, 1, 760, 1, 1, 0, 1, FALSE },
    /* depthwise 3x3 pad 1 through the AVX-512 kernel: small stride-1 planes taken
     * flat (7x7, 4x4, 2x3), rows (14x14, 28x28: two vectors a row), stride 2 */
    { 3, 6, 7, 7, 6, 3, 1, 1, 6, TRUE },
    { 2, 5, 4, 4, 5, 3, 1, 1, 5, FALSE },
    { 2, 3, 2, 3, 3, 3, 1, 1, 3, TRUE },
    { 2, 4, 14, 14, 4, 3, 1, 1, 4, TRUE },
    { 1, 3, 28, 28, 3, 3, 1, 1, 3, FALSE },
    { 2, 4, 28, 28, 4, 3, 2, 1, 4, TRUE },
    { 2, 4, 7, 7, 4, 3, 2, 1, 4, FALSE },
};

/* clang-format on */

static gint64
conv_out_size (gint64 in, int k, int s, int p)
{
    return (in + 2 * p - k) / s + 1;
}

/* Visits every (output, input, weight) triple of the convolution. */
/* clang-format off */
#define CONV_REF_LOOP(c, BODY)                                                          \
    do {                                                                                \
        const gint64 ho_ = conv_out_size ((c)->h, (c)->k, (c)->s, (c)->p);               \
        const gint64 wo_ = conv_out_size ((c)->w, (c)->k, (c)->s, (c)->p);               \
        const int cig_ = (c)->ci / (c)->g, cog_ = (c)->co / (c)->g;                      \
        for (gint64 n = 0; n < (c)->n; n++)                                             \
            for (gint64 co = 0; co < (c)->co; co++)                                     \
                for (gint64 oy = 0; oy < ho_; oy++)                                     \
                    for (gint64 ox = 0; ox < wo_; ox++) {                               \
                        gint64 yi = ((n * (c)->co + co) * ho_ + oy) * wo_ + ox;         \
                        for (gint64 cl = 0; cl < cig_; cl++)                            \
                            for (gint64 i = 0; i < (c)->k; i++)                         \
                                for (gint64 j = 0; j < (c)->k; j++) {                   \
                                    gint64 iy = oy * (c)->s - (c)->p + i;               \
                                    gint64 ix = ox * (c)->s - (c)->p + j;               \
                                    if (iy < 0 || iy >= (c)->h || ix < 0 || ix >= (c)->w) \
                                        continue;                                       \
                                    gint64 cin = (co / cog_) * cig_ + cl;               \
                                    gint64 xi = ((n * (c)->ci + cin) * (c)->h + iy) * (c)->w + ix; \
                                    gint64 wi = ((co * cig_ + cl) * (c)->k + i) * (c)->k + j; \
                                    BODY;                                               \
                                }                                                       \
                    }                                                                   \
    } while (0)

/* clang-format on */

static void
conv_cfg_string (const ConvCfg *c, char *buf, gsize size)
{
    g_snprintf (buf, size, "conv2d n%d ci%d %dx%d co%d k%d s%d p%d g%d%s", c->n, c->ci, c->h, c->w,
                c->co, c->k, c->s, c->p, c->g, c->bias ? " bias" : "");
}

static void
test_conv2d_reference (void)
{
    g_test_summary ("conv2d forward, dX, dW and db match double-precision loops on many configs");
    dfq_set_num_threads (2);
    for (guint ci = 0; ci < G_N_ELEMENTS (conv_cfgs); ci++) {
        const ConvCfg *c = &conv_cfgs[ci];
        g_autoptr (DfqArena) params = dfq_arena_new (0);
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        char name[128];
        conv_cfg_string (c, name, sizeof name);

        gint64 xs[4] = { c->n, c->ci, c->h, c->w };
        gint64 ws[4] = { c->co, c->ci / c->g, c->k, c->k };
        gint64 bs[1] = { c->co };
        const int fan_in = c->ci / c->g * c->k * c->k;
        DfqTensor *x = random_tensor (params, 4, xs, 1, 1.0f);
        DfqTensor *w = random_tensor (params, 4, ws, 2, 1.0f / sqrtf ((float) fan_in));
        DfqTensor *b = c->bias ? random_tensor (params, 1, bs, 3, 1.0f) : NULL;
        dfq_tensor_set_param (x);
        dfq_tensor_set_param (w);
        if (b != NULL)
            dfq_tensor_set_param (b);

        DfqTensor *y = dfq_conv2d (scratch, x, w, b, c->s, c->p, c->g);
        g_assert_nonnull (y);
        g_assert_cmpint (y->shape[2], ==, conv_out_size (c->h, c->k, c->s, c->p));
        g_assert_cmpint (y->shape[3], ==, conv_out_size (c->w, c->k, c->s, c->p));
        DfqTensor *gy = dfq_tensor_new_like (params, y);
        dfq_rand_normal_fill (gy, 1234, 4, 0.0f, 1.0f);
        dfq_backward_with_grad (y, gy, scratch);

        const float *xf = dfq_tensor_f32 (x), *wf = dfq_tensor_f32 (w), *gyf = dfq_tensor_f32 (gy);
        gint64 ny = dfq_tensor_numel (y), nx = dfq_tensor_numel (x), nw = dfq_tensor_numel (w);
        g_autofree double *ry = g_new0 (double, ny);
        g_autofree double *rgx = g_new0 (double, nx);
        g_autofree double *rgw = g_new0 (double, nw);
        g_autofree double *rgb = g_new0 (double, c->co);
        CONV_REF_LOOP (c, {
            ry[yi] += (double) xf[xi] * wf[wi];
            rgx[xi] += (double) gyf[yi] * wf[wi];
            rgw[wi] += (double) gyf[yi] * xf[xi];
        });
        gint64 plane = y->shape[2] * y->shape[3];
        for (gint64 i = 0; i < ny; i++) {
            gint64 co = (i / plane) % c->co;
            if (b != NULL)
                ry[i] += dfq_tensor_f32 (b)[co];
            rgb[co] += gyf[i];
        }

        double e_y = check_close (name, dfq_tensor_f32 (y), ry, ny);
        double e_gx = check_close (name, dfq_tensor_f32 (x->grad), rgx, nx);
        double e_gw = check_close (name, dfq_tensor_f32 (w->grad), rgw, nw);
        double e_gb = b != NULL ? check_close (name, dfq_tensor_f32 (b->grad), rgb, c->co) : 0.0;
        g_test_message ("%s: rel max error y %.2g dx %.2g dw %.2g db %.2g", name, e_y, e_gx, e_gw, e_gb);
        worst_conv = MAX (worst_conv, MAX (MAX (e_y, e_gx), MAX (e_gw, e_gb)));
    }
}

/* ------------------------------------------------------------------ linear */

static void
test_linear_reference (void)
{
    g_test_summary ("linear forward, dX, dW and db match double-precision loops");
    static const struct {
        int n, in, out;
        gboolean bias;
    } cfgs[] = {
        { 1, 7, 3, TRUE },
        { 5, 64, 10, TRUE },
        { 32, 100, 128, FALSE },
        { 3, 256, 17, TRUE },
        { 128, 64, 10, TRUE },
    };
    dfq_set_num_threads (2);
    for (guint k = 0; k < G_N_ELEMENTS (cfgs); k++) {
        const int n = cfgs[k].n, in = cfgs[k].in, out = cfgs[k].out;
        g_autoptr (DfqArena) params = dfq_arena_new (0);
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        gint64 xs[2] = { n, in }, ws[2] = { out, in }, bs[1] = { out };
        DfqTensor *x = random_tensor (params, 2, xs, 1, 1.0f);
        DfqTensor *w = random_tensor (params, 2, ws, 2, 1.0f / sqrtf ((float) in));
        DfqTensor *b = cfgs[k].bias ? random_tensor (params, 1, bs, 3, 1.0f) : NULL;
        dfq_tensor_set_param (x);
        dfq_tensor_set_param (w);
        if (b != NULL)
            dfq_tensor_set_param (b);
        DfqTensor *y = dfq_linear (scratch, x, w, b);
        g_assert_nonnull (y);
        g_assert_cmpint (y->shape[0], ==, n);
        g_assert_cmpint (y->shape[1], ==, out);
        DfqTensor *gy = dfq_tensor_new_like (params, y);
        dfq_rand_normal_fill (gy, 1234, 4, 0.0f, 1.0f);
        dfq_backward_with_grad (y, gy, scratch);

        const float *xf = dfq_tensor_f32 (x), *wf = dfq_tensor_f32 (w), *gyf = dfq_tensor_f32 (gy);
        const gint64 ny = (gint64) n * out, nx = (gint64) n * in, nw = (gint64) out * in;
        g_autofree double *ry = g_new0 (double, ny);
        g_autofree double *rgx = g_new0 (double, nx);
        g_autofree double *rgw = g_new0 (double, nw);
        g_autofree double *rgb = g_new0 (double, out);
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) {
                ry[i * out + o] = b != NULL ? dfq_tensor_f32 (b)[o] : 0.0;
                rgb[o] += gyf[i * out + o];
                for (int q = 0; q < in; q++) {
                    ry[i * out + o] += (double) xf[i * in + q] * wf[o * in + q];
                    rgx[i * in + q] += (double) gyf[i * out + o] * wf[o * in + q];
                    rgw[o * in + q] += (double) gyf[i * out + o] * xf[i * in + q];
                }
            }
        char name[64];
        g_snprintf (name, sizeof name, "linear [%d,%d] -> %d%s", n, in, out, b ? " bias" : "");
        double e_y = check_close (name, dfq_tensor_f32 (y), ry, ny);
        double e_gx = check_close (name, dfq_tensor_f32 (x->grad), rgx, nx);
        double e_gw = check_close (name, dfq_tensor_f32 (w->grad), rgw, nw);
        double e_gb = b != NULL ? check_close (name, dfq_tensor_f32 (b->grad), rgb, out) : 0.0;
        g_test_message ("%s: rel max error y %.2g dx %.2g dw %.2g db %.2g", name, e_y, e_gx, e_gw, e_gb);
        worst_linear = MAX (worst_linear, MAX (MAX (e_y, e_gx), MAX (e_gw, e_gb)));
    }
}

/* --------------------------------------------------------------- batchnorm */

typedef struct {
    int n_dims;
    gint64 shape[4];
    gboolean training, affine, running;
    float eps;
} BnCfg;

static void
test_batchnorm_reference (void)
{
    g_test_summary ("batchnorm (train/eval, affine or not, 4-d and 2-d) forward, backward and "
                    "running-stat update match double-precision loops");
    static const BnCfg cfgs[] = {
        { 4, { 4, 3, 5, 5 }, TRUE, TRUE, TRUE, 1e-5f },
        { 4, { 8, 16, 7, 9 }, TRUE, TRUE, TRUE, 1e-5f },
        { 4, { 4, 3, 5, 5 }, TRUE, FALSE, TRUE, 1e-5f },
        { 4, { 32, 8, 7, 7 }, TRUE, TRUE, FALSE, 0.8f }, /* GDFQ generator: BatchNorm2d(C, 0.8) */
        { 4, { 4, 6, 4, 4 }, FALSE, TRUE, TRUE, 1e-5f },
        { 4, { 4, 6, 4, 4 }, FALSE, FALSE, TRUE, 1e-3f },
        { 4, { 3, 4, 3, 3 }, FALSE, TRUE, FALSE, 1e-5f }, /* eval without running stats: batch stats */
        { 2, { 16, 10 }, TRUE, TRUE, TRUE, 1e-5f },
        { 2, { 16, 10 }, FALSE, TRUE, TRUE, 1e-5f },
    };
    const float momentum = 0.1f;
    dfq_set_num_threads (2);
    for (guint k = 0; k < G_N_ELEMENTS (cfgs); k++) {
        const BnCfg *c = &cfgs[k];
        g_autoptr (DfqArena) params = dfq_arena_new (0);
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        const gint64 n = c->shape[0], ch = c->shape[1];
        const gint64 inner = c->n_dims == 4 ? c->shape[2] * c->shape[3] : 1;
        gint64 cs[1] = { ch };
        DfqTensor *x = random_tensor (params, c->n_dims, c->shape, 1, 2.0f);
        /* a channel-dependent offset, so the mean matters */
        for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
            dfq_tensor_f32 (x)[i] += (float) ((i / inner) % ch) - 1.5f;
        DfqTensor *gamma = c->affine ? random_tensor (params, 1, cs, 2, 1.0f) : NULL;
        DfqTensor *beta = c->affine ? random_tensor (params, 1, cs, 3, 1.0f) : NULL;
        DfqTensor *rm = c->running ? random_tensor (params, 1, cs, 5, 1.0f) : NULL;
        DfqTensor *rv = NULL;
        if (c->running) {
            rv = dfq_tensor_new_1d (params, DFQ_DTYPE_F32, ch);
            dfq_rand_uniform_fill (rv, 1234, 6, 0.5f, 3.0f);
        }
        g_autofree float *rm0 = rm ? g_memdup2 (dfq_tensor_f32 (rm), ch * sizeof (float)) : NULL;
        g_autofree float *rv0 = rv ? g_memdup2 (dfq_tensor_f32 (rv), ch * sizeof (float)) : NULL;
        dfq_tensor_set_param (x);
        if (gamma != NULL) {
            dfq_tensor_set_param (gamma);
            dfq_tensor_set_param (beta);
        }
        DfqTensor *y = dfq_batchnorm (scratch, x, gamma, beta, rm, rv, c->training, momentum, c->eps);
        g_assert_nonnull (y);
        DfqTensor *gy = dfq_tensor_new_like (params, y);
        dfq_rand_normal_fill (gy, 1234, 4, 0.0f, 1.0f);
        dfq_backward_with_grad (y, gy, scratch);

        const float *xf = dfq_tensor_f32 (x), *gyf = dfq_tensor_f32 (gy);
        const gint64 nx = dfq_tensor_numel (x), m = n * inner;
        const gboolean batch_stats = c->training || !c->running;
        g_autofree double *ry = g_new0 (double, nx);
        g_autofree double *rgx = g_new0 (double, nx);
        g_autofree double *rgg = g_new0 (double, ch);
        g_autofree double *rgb = g_new0 (double, ch);
        g_autofree double *rrm = g_new0 (double, ch);
        g_autofree double *rrv = g_new0 (double, ch);
#define BN_IDX(i, j, q) ((ch * (i) + (j)) * inner + (q))
        for (gint64 j = 0; j < ch; j++) {
            double mean = 0.0, var = 0.0;
            for (gint64 i = 0; i < n; i++)
                for (gint64 q = 0; q < inner; q++)
                    mean += xf[BN_IDX (i, j, q)];
            mean /= m;
            for (gint64 i = 0; i < n; i++)
                for (gint64 q = 0; q < inner; q++)
                    var += (xf[BN_IDX (i, j, q)] - mean) * (xf[BN_IDX (i, j, q)] - mean);
            var /= m;
            if (c->running) {
                rrm[j] = (1.0 - momentum) * rm0[j] + momentum * mean;
                rrv[j] = (1.0 - momentum) * rv0[j] + momentum * var * m / (m - 1);
            }
            if (!batch_stats) {
                mean = rm0[j];
                var = rv0[j];
            }
            double istd = 1.0 / sqrt (var + c->eps);
            double gm = gamma ? dfq_tensor_f32 (gamma)[j] : 1.0, bt = beta ? dfq_tensor_f32 (beta)[j] : 0.0;
            double sdy = 0.0, sdyxh = 0.0;
            for (gint64 i = 0; i < n; i++)
                for (gint64 q = 0; q < inner; q++) {
                    gint64 id = BN_IDX (i, j, q);
                    double xh = (xf[id] - mean) * istd;
                    ry[id] = xh * gm + bt;
                    sdy += gyf[id];
                    sdyxh += gyf[id] * xh;
                }
            rgg[j] = sdyxh;
            rgb[j] = sdy;
            for (gint64 i = 0; i < n; i++)
                for (gint64 q = 0; q < inner; q++) {
                    gint64 id = BN_IDX (i, j, q);
                    double xh = (xf[id] - mean) * istd;
                    rgx[id] = batch_stats ? gm * istd * (gyf[id] - sdy / m - xh * sdyxh / m) : gm * istd * gyf[id];
                }
        }
#undef BN_IDX
        char name[96];
        g_snprintf (name, sizeof name, "batchnorm %dd C=%" G_GINT64_FORMAT " %s%s%s eps %g", c->n_dims, ch,
                    c->training ? "train" : "eval", c->affine ? " affine" : "", c->running ? " running" : "", c->eps);
        double e = check_close (name, dfq_tensor_f32 (y), ry, nx);
        e = MAX (e, check_close (name, dfq_tensor_f32 (x->grad), rgx, nx));
        if (gamma != NULL) {
            e = MAX (e, check_close (name, dfq_tensor_f32 (gamma->grad), rgg, ch));
            e = MAX (e, check_close (name, dfq_tensor_f32 (beta->grad), rgb, ch));
        }
        if (c->running && c->training) {
            e = MAX (e, check_close (name, dfq_tensor_f32 (rm), rrm, ch));
            e = MAX (e, check_close (name, dfq_tensor_f32 (rv), rrv, ch));
        } else if (c->running) {
            /* eval leaves the running statistics alone */
            g_assert_cmpmem (dfq_tensor_f32 (rm), ch * sizeof (float), rm0, ch * sizeof (float));
            g_assert_cmpmem (dfq_tensor_f32 (rv), ch * sizeof (float), rv0, ch * sizeof (float));
        }
        g_test_message ("%s: rel max error %.2g", name, e);
        worst_bn = MAX (worst_bn, e);
    }
}

/* ------------------------------------------------------------ determinism */

typedef struct {
    float *y, *gx, *gw, *gb;
    gint64 ny, nx, nw, nb;
} ConvRun;

/* One forward + backward of @c at @threads; results copied into @out (g_free each). */
static void
conv_run (const ConvCfg *c, int threads, ConvRun *out)
{
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    gint64 xs[4] = { c->n, c->ci, c->h, c->w };
    gint64 ws[4] = { c->co, c->ci / c->g, c->k, c->k };
    gint64 bs[1] = { c->co };
    dfq_set_num_threads (threads);
    DfqTensor *x = random_tensor (params, 4, xs, 1, 1.0f);
    DfqTensor *w = random_tensor (params, 4, ws, 2, 0.2f);
    DfqTensor *b = random_tensor (params, 1, bs, 3, 1.0f);
    dfq_tensor_set_param (x);
    dfq_tensor_set_param (w);
    dfq_tensor_set_param (b);
    DfqTensor *y = dfq_conv2d (scratch, x, w, b, c->s, c->p, c->g);
    DfqTensor *gy = dfq_tensor_new_like (params, y);
    dfq_rand_normal_fill (gy, 1234, 4, 0.0f, 1.0f);
    dfq_backward_with_grad (y, gy, scratch);
    out->ny = dfq_tensor_numel (y);
    out->nx = dfq_tensor_numel (x);
    out->nw = dfq_tensor_numel (w);
    out->nb = c->co;
    out->y = g_memdup2 (y->data, out->ny * sizeof (float));
    out->gx = g_memdup2 (x->grad->data, out->nx * sizeof (float));
    out->gw = g_memdup2 (w->grad->data, out->nw * sizeof (float));
    out->gb = g_memdup2 (b->grad->data, out->nb * sizeof (float));
}

static void
conv_run_clear (ConvRun *r)
{
    g_free (r->y);
    g_free (r->gx);
    g_free (r->gw);
    g_free (r->gb);
}

static gboolean
conv_run_equal (const ConvRun *a, const ConvRun *b, const char **what)
{
    *what = "y";
    if (memcmp (a->y, b->y, a->ny * sizeof (float)) != 0)
        return FALSE;
    *what = "dx";
    if (memcmp (a->gx, b->gx, a->nx * sizeof (float)) != 0)
        return FALSE;
    *what = "dw";
    if (memcmp (a->gw, b->gw, a->nw * sizeof (float)) != 0)
        return FALSE;
    *what = "db";
    return memcmp (a->gb, b->gb, a->nb * sizeof (float)) == 0;
}

static void
test_conv2d_deterministic (void)
{
    g_test_summary ("conv2d forward and backward are bit-identical run to run at 2 threads, and "
                    "between 1 and 2 threads (per-image forward; weight gradient summed over chunks "
                    "of images fixed by the shapes, not by the thread count)");
    static const ConvCfg cfgs[] = {
        { 8, 16, 12, 12, 16, 3, 1, 1, 1, TRUE }, /* 3x3 kernel (AVX-512), many images */
        { 8, 3, 12, 12, 4, 3, 1, 1, 1, TRUE },   /* im2col + GEMM, many images */
        { 5, 6, 9, 9, 8, 3, 2, 1, 2, TRUE },     /* groups, stride 2, odd */
        { 1, 16, 14, 14, 32, 3, 1, 1, 1, TRUE }, /* one image: OpenBLAS threads the GEMM */
        { 6, 8, 10, 10, 8, 3, 1, 1, 8, TRUE },   /* depthwise: direct loops */
        { 37, 4, 6, 6, 4, 1, 1, 0, 1, TRUE },    /* 1x1, more images than chunks */
    };
    for (guint k = 0; k < G_N_ELEMENTS (cfgs); k++) {
        ConvRun a, b, c1;
        const char *what;
        char name[128];
        conv_cfg_string (&cfgs[k], name, sizeof name);
        conv_run (&cfgs[k], 2, &a);
        conv_run (&cfgs[k], 2, &b);
        conv_run (&cfgs[k], 1, &c1);
        if (!conv_run_equal (&a, &b, &what))
            g_test_fail_printf ("%s: %s differs between two runs at 2 threads", name, what);
        if (!conv_run_equal (&a, &c1, &what))
            g_test_fail_printf ("%s: %s differs between 1 and 2 threads", name, what);
        conv_run_clear (&a);
        conv_run_clear (&b);
        conv_run_clear (&c1);
    }
    dfq_set_num_threads (2);
}

/* One linear forward + backward at @threads; y, dx, dw, db concatenated (g_free). */
static float *
linear_run (int n, int in, int out, int threads, gsize *size)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    gint64 xs[2] = { n, in }, ws[2] = { out, in }, bs[1] = { out };
    dfq_set_num_threads (threads);
    DfqTensor *x = random_tensor (arena, 2, xs, 1, 1.0f);
    DfqTensor *w = random_tensor (arena, 2, ws, 2, 0.1f);
    DfqTensor *b = random_tensor (arena, 1, bs, 3, 1.0f);
    dfq_tensor_set_param (x);
    dfq_tensor_set_param (w);
    dfq_tensor_set_param (b);
    DfqTensor *y = dfq_linear (arena, x, w, b);
    DfqTensor *gy = dfq_tensor_new_like (arena, y);
    dfq_rand_normal_fill (gy, 1234, 4, 0.0f, 1.0f);
    dfq_backward_with_grad (y, gy, arena);
    const DfqTensor *parts[4] = { y, x->grad, w->grad, b->grad };
    gsize total = 0;
    for (int i = 0; i < 4; i++)
        total += (gsize) dfq_tensor_numel (parts[i]);
    float *all = g_new (float, total), *p = all;
    for (int i = 0; i < 4; i++) {
        memcpy (p, parts[i]->data, (gsize) dfq_tensor_numel (parts[i]) * sizeof (float));
        p += dfq_tensor_numel (parts[i]);
    }
    *size = total * sizeof (float);
    return all;
}

static void
test_linear_deterministic (void)
{
    g_test_summary ("linear forward and backward are bit-identical run to run at 2 threads. (Not "
                    "across thread counts: OpenBLAS threads these GEMMs itself and its 1- and "
                    "2-thread results differ in rounding; DESIGN.md asks for the same thread count.)");
    static const int cfgs[][3] = { { 128, 64, 10 }, { 32, 100, 6272 }, { 64, 256, 256 } };
    for (guint k = 0; k < G_N_ELEMENTS (cfgs); k++) {
        gsize sa, sb;
        g_autofree float *a = linear_run (cfgs[k][0], cfgs[k][1], cfgs[k][2], 2, &sa);
        g_autofree float *b = linear_run (cfgs[k][0], cfgs[k][1], cfgs[k][2], 2, &sb);
        g_assert_cmpmem (a, sa, b, sb);
    }
}

/* --------------------------------------------------- no system allocation */

static void
test_steady_state_no_alloc (void)
{
    g_test_summary ("A conv -> batchnorm -> conv (depthwise) -> pool -> linear training step in a "
                    "reset scratch arena makes no system allocation once warmed up");
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    dfq_set_num_threads (2);
    gint64 xs[4] = { 8, 3, 16, 16 }, w1s[4] = { 16, 3, 3, 3 }, w2s[4] = { 16, 1, 3, 3 }, w3s[4] = { 8, 16, 3, 3 };
    gint64 cs[1] = { 16 }, c3s[1] = { 8 }, ls[2] = { 10, 8 }, lbs[1] = { 10 };
    DfqTensor *x = random_tensor (params, 4, xs, 1, 1.0f);
    DfqTensor *w1 = random_tensor (params, 4, w1s, 2, 0.2f);
    DfqTensor *w2 = random_tensor (params, 4, w2s, 3, 0.3f);
    DfqTensor *w3 = random_tensor (params, 4, w3s, 4, 0.1f);
    DfqTensor *b3 = random_tensor (params, 1, c3s, 5, 0.1f);
    DfqTensor *gamma = random_tensor (params, 1, cs, 6, 1.0f);
    DfqTensor *beta = random_tensor (params, 1, cs, 7, 1.0f);
    DfqTensor *rm = dfq_tensor_new_1d (params, DFQ_DTYPE_F32, 16);
    DfqTensor *rv = dfq_tensor_new_1d (params, DFQ_DTYPE_F32, 16);
    DfqTensor *lw = random_tensor (params, 2, ls, 8, 0.3f);
    DfqTensor *lb = random_tensor (params, 1, lbs, 9, 0.1f);
    dfq_tensor_fill (rv, 1.0f);
    DfqTensor *trainable[] = { x, w1, w2, w3, b3, gamma, beta, lw, lb };
    for (guint i = 0; i < G_N_ELEMENTS (trainable); i++)
        dfq_tensor_set_param (trainable[i]);
    gint64 gs[2] = { 8, 10 };
    DfqTensor *gout = random_tensor (params, 2, gs, 10, 1.0f);

    guint allocs_scratch = 0, allocs_params = 0;
    for (int it = 0; it < 6; it++) {
        if (it == 2) {
            allocs_scratch = dfq_arena_n_system_allocs (scratch);
            allocs_params = dfq_arena_n_system_allocs (params);
        }
        dfq_arena_reset (scratch);
        DfqTensor *h = dfq_conv2d (scratch, x, w1, NULL, 1, 1, 1);
        h = dfq_batchnorm (scratch, h, gamma, beta, rm, rv, TRUE, 0.1f, 1e-5f);
        h = dfq_conv2d (scratch, h, w2, NULL, 2, 1, 16);
        h = dfq_conv2d (scratch, h, w3, b3, 1, 1, 1);
        h = dfq_avg_pool (scratch, h, 2, 2);
        h = dfq_global_avg_pool (scratch, h);
        h = dfq_linear (scratch, h, lw, lb);
        dfq_backward_with_grad (h, gout, scratch);
        g_assert_true (dfq_tensor_all_finite (w1->grad));
    }
    g_assert_cmpuint (dfq_arena_n_system_allocs (scratch), ==, allocs_scratch);
    g_assert_cmpuint (dfq_arena_n_system_allocs (params), ==, allocs_params);
}

/* ------------------------------------------------------------------ timing */

static void
test_conv2d_timing (void)
{
    g_test_summary ("ResNet-20-like conv (N=128, 16->16, 28x28, 3x3, s1 p1) forward and backward "
                    "time; runs with -m perf");
    if (!g_test_perf ()) {
        g_test_skip ("timing runs with -m perf");
        return;
    }
    static const ConvCfg cfgs[] = {
        { 128, 16, 28, 28, 16, 3, 1, 1, 1, FALSE },
        { 128, 16, 32, 32, 16, 3, 1, 1, 1, FALSE },
        { 128, 32, 16, 16, 32, 3, 1, 1, 1, FALSE },
        { 128, 64, 8, 8, 64, 3, 1, 1, 1, FALSE },
        { 128, 16, 32, 32, 32, 3, 2, 1, 1, FALSE },
        { 128, 3, 32, 32, 16, 3, 1, 1, 1, FALSE },
        { 128, 32, 16, 16, 32, 3, 1, 1, 32, FALSE },
    };
    const int reps = 5;
    for (guint k = 0; k < G_N_ELEMENTS (cfgs); k++) {
        const ConvCfg *c = &cfgs[k];
        g_autoptr (DfqArena) params = dfq_arena_new (0);
        g_autoptr (DfqArena) scratch = dfq_arena_new (0);
        gint64 xs[4] = { c->n, c->ci, c->h, c->w };
        gint64 ws[4] = { c->co, c->ci / c->g, c->k, c->k };
        DfqTensor *x = random_tensor (params, 4, xs, 1, 1.0f);
        DfqTensor *w = random_tensor (params, 4, ws, 2, 0.1f);
        dfq_tensor_set_param (x);
        dfq_tensor_set_param (w);
        double t_fwd = G_MAXDOUBLE, t_bwd = G_MAXDOUBLE;
        gint64 y_numel = 0;
        for (int r = 0; r < reps + 1; r++) {
            dfq_arena_reset (scratch);
            gint64 t0 = g_get_monotonic_time ();
            DfqTensor *y = dfq_conv2d (scratch, x, w, NULL, c->s, c->p, c->g);
            gint64 t1 = g_get_monotonic_time ();
            /* backward from a scalar, as in training (includes sum's fill of dY) */
            DfqTensor *loss = dfq_sum (scratch, y);
            y_numel = dfq_tensor_numel (y);
            gint64 t1b = g_get_monotonic_time ();
            dfq_backward (loss, scratch);
            gint64 t2 = g_get_monotonic_time ();
            if (r > 0) { /* the first run grows the arena */
                t_fwd = MIN (t_fwd, (t1 - t0) / 1e3);
                t_bwd = MIN (t_bwd, (t2 - t1b) / 1e3);
            }
        }
        /* 2 flops per multiply-add: output elements times the reduction length */
        double gflop = 2.0 * (double) y_numel * (c->ci / c->g) * c->k * c->k / 1e9;
        char name[128];
        conv_cfg_string (c, name, sizeof name);
        g_test_message ("%s, %d threads: forward %.2f ms (%.1f GFLOP/s), backward (dX + dW) %.2f ms (%.1f GFLOP/s)",
                        name, dfq_get_num_threads (), t_fwd, gflop / t_fwd * 1e3, t_bwd, 2 * gflop / t_bwd * 1e3);
    }
}

/* --------------------------------------------------- channel statistics */

static gboolean
same_bits (float a, float b)
{
    return memcmp (&a, &b, sizeof a) == 0;
}

static void
test_channel_stats_sequential (void)
{
    g_test_summary ("channel_mean and channel_var (channels summed in interleaved groups) give the bits of "
                    "one sequential double sum per channel in the order n, k; the var backward, too");
    /* 19 channels: two groups of 8 and three left over; 4-D and 3-D shapes. */
    static const gint64 shapes[][4] = { { 3, 19, 37, 1 }, { 2, 16, 5, 5 }, { 5, 3, 7, 1 } };
    static const int n_dims[] = { 3, 4, 3 };
    for (guint t = 0; t < G_N_ELEMENTS (shapes); t++) {
        g_autoptr (DfqArena) arena = dfq_arena_new (0);
        DfqTensor *x0 = random_tensor (arena, n_dims[t], shapes[t], 40 + t, 1.5f);
        dfq_tensor_set_param (x0);
        for (int unbiased = 0; unbiased <= 1; unbiased++) {
            /* An intermediate result, so that the var backward writes a new buffer. */
            DfqTensor *x = dfq_affine (arena, x0, 1.0f, 0.0f);
            const gint64 n = x->shape[0], c = x->shape[1], inner = dfq_tensor_numel (x) / (n * c);
            const float *xd = dfq_tensor_f32 (x);
            dfq_tensor_zero_grad (x0);
            DfqTensor *mean = dfq_channel_mean (arena, x);
            DfqTensor *var = dfq_channel_var (arena, x, unbiased);
            DfqTensor *gv = random_tensor (arena, 1, &c, 50 + t, 1.0f);
            dfq_backward_with_grad (var, gv, arena);
            const double denom = (double) (unbiased ? n * inner - 1 : n * inner);
            for (gint64 j = 0; j < c; j++) {
                double s = 0.0;
                for (gint64 i = 0; i < n; i++)
                    for (gint64 k = 0; k < inner; k++)
                        s += xd[(i * c + j) * inner + k];
                const double mu = s / (double) (n * inner);
                double ss = 0.0;
                for (gint64 i = 0; i < n; i++)
                    for (gint64 k = 0; k < inner; k++) {
                        double d = xd[(i * c + j) * inner + k] - mu;
                        volatile double dd = d * d; /* rounded on its own, as in the op */
                        ss += dd;
                    }
                g_assert_true (same_bits (dfq_tensor_f32 (mean)[j], (float) mu));
                g_assert_true (same_bits (dfq_tensor_f32 (var)[j], (float) (ss / denom)));
                const double g = 2.0 * dfq_tensor_f32 (gv)[j] / denom;
                for (gint64 i = 0; i < n; i++)
                    for (gint64 k = 0; k < inner; k++) {
                        gint64 e = (i * c + j) * inner + k;
                        /* x's gradient (0 + v in a new buffer), through the affine
                         * (times 1) into x0's zeroed one. */
                        float want = 0.0f + (float) (g * (xd[e] - mu));
                        g_assert_true (same_bits (dfq_tensor_f32 (x0->grad)[e], want));
                    }
            }
        }
    }
}

static void
test_report (void)
{
    g_test_message ("worst relative errors: conv2d %.3g, linear %.3g, batchnorm %.3g (limit %.0e)",
                    worst_conv, worst_linear, worst_bn, REF_TOL);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/ops-reference/conv2d/reference", test_conv2d_reference);
    g_test_add_func ("/ops-reference/linear/reference", test_linear_reference);
    g_test_add_func ("/ops-reference/batchnorm/reference", test_batchnorm_reference);
    g_test_add_func ("/ops-reference/conv2d/deterministic", test_conv2d_deterministic);
    g_test_add_func ("/ops-reference/linear/deterministic", test_linear_deterministic);
    g_test_add_func ("/ops-reference/channel-stats/sequential", test_channel_stats_sequential);
    g_test_add_func ("/ops-reference/steady-state/no-alloc", test_steady_state_no_alloc);
    g_test_add_func ("/ops-reference/conv2d/timing", test_conv2d_timing);
    g_test_add_func ("/ops-reference/summary/worst-errors", test_report);
    return g_test_run ();
}
