/* Loss plugin `pixel-priors`: the two image priors of DSG's PTQ code
 * (post_training_quantization/distill_data.py L59-70, L191-206; METHODS.md
 * 8.3), computed on a randomly rolled copy of the images, as the code does:
 * - `tv-l2`: ||D1||_2 + ||D2||_2 + ||D3||_2 + ||D4||_2, the Frobenius norms
 *   (not squared) over the whole batch of the horizontal, vertical and two
 *   diagonal neighbour differences (get_image_prior_losses' loss_var_l2);
 * - `l2-norm`: mean over the batch of each image's L2 norm (loss_l2).
 * The roll: torch.roll(x, shifts=(o, o), dims=(2, 3)) with o drawn uniformly
 * from [-roll, roll) per step (torch.randint(-lim_0, lim_0)), keyed here by
 * (seed, step), so every iteration draws anew and a rerun draws the same. The
 * roll changes the TV only at the wrap-around seam and the L2 norm not at all;
 * both are kept to follow the code. DSG weights both 0.01.
 * - `sci`: the sample-correlation inhibition term of both DSG codes
 *   (compute_sci; METHODS.md 8.3) AS THE CODE COMPUTES IT: the eigen-
 *   decomposition of the Gram matrix of the L2-normalised images and of N(0,1)
 *   images of the same shape (drawn per step), 1e-4 MSE(eig, eig_gauss) +
 *   |sum_k minmax(eig_gauss)_k (-<v_k, v_k_gauss>)|. The code wraps the
 *   eigen outputs in the legacy Variable(), which detaches them, so the term
 *   passes NO gradient: here it is a constant of the step too (its only
 *   effect: the loss value a plateau schedule sees). Eigenpairs by cyclic
 *   Jacobi in double, sorted by descending eigenvalue, each vector's largest
 *   component made positive [INTERP: torch.eig's order and signs are LAPACK's]. */
#include <math.h>

#include <dfq/dfq.h>

#define PIXEL_ROLL_STREAM G_GUINT64_CONSTANT (0x726f6c6c00000000)
#define PIXEL_SCI_STREAM G_GUINT64_CONSTANT (0x7363690000000000)

typedef struct {
    DfqLoss parent;
    gint roll;
} PixelPrior;

static const DfqParamSpec tv_l2_params[] = {
    DFQ_PARAM_INT (PixelPrior, roll, "Roll the images by o pixels in both axes first, o uniform in [-roll, roll) per "
                   "step (DSG: 30; 0: no roll)", 0, 100000, 30),
};

/* ---- the roll, a custom op: dst[.., i, j] = x[.., (i - sh) mod H, (j - sw) mod W] */

static inline gint64
pixel_wrap (gint64 i, gint64 shift, gint64 n)
{
    return ((i - shift) % n + n) % n;
}

static void
pixel_roll_forward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED)
{
    const DfqTensor *x = dst->src[0];
    gint64 P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    gint64 sh = (gint64) dst->op_fparams[0], sw = (gint64) dst->op_fparams[1];
    const float *s = dfq_tensor_f32 (x);
    float *d = dfq_tensor_f32 (dst);
    for (gint64 p = 0; p < P; p++)
        for (gint64 i = 0; i < H; i++)
            for (gint64 j = 0; j < W; j++)
                d[(p * H + i) * W + j] = s[(p * H + pixel_wrap (i, sh, H)) * W + pixel_wrap (j, sw, W)];
}

static void
pixel_roll_backward (DfqTensor *dst, DfqCustomOpCall *call G_GNUC_UNUSED, float *const *src_grads,
                     DfqArena *scratch G_GNUC_UNUSED)
{
    if (src_grads[0] == NULL)
        return;
    const DfqTensor *x = dst->src[0];
    gint64 P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    gint64 sh = (gint64) dst->op_fparams[0], sw = (gint64) dst->op_fparams[1];
    const float *g = dfq_tensor_f32 (dst->grad);
    for (gint64 p = 0; p < P; p++)
        for (gint64 i = 0; i < H; i++)
            for (gint64 j = 0; j < W; j++)
                src_grads[0][(p * H + pixel_wrap (i, sh, H)) * W + pixel_wrap (j, sw, W)] += g[(p * H + i) * W + j];
}

static const DfqCustomOp pixel_roll_op = {
    .name = "pixel-priors.roll",
    .forward = pixel_roll_forward,
    .backward = pixel_roll_backward,
};

static DfqTensor *
pixel_roll (DfqArena *a, DfqTensor *x, int shift_h, int shift_w)
{
    const float params[2] = { (float) shift_h, (float) shift_w };
    return dfq_custom_op (a, &pixel_roll_op, 4, x->shape, 1, &x, 2, params, NULL);
}

/* ||a - b||_2 over all elements */
static DfqTensor *
pixel_norm_diff (DfqArena *a, DfqTensor *x, DfqTensor *y)
{
    DfqTensor *d = dfq_sub (a, x, y);
    return dfq_sqrt (a, dfq_sum (a, dfq_mul (a, d, d)));
}

static DfqTensor *
tv_l2_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    PixelPrior *self = (PixelPrior *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *x = in->images;
    int H = (int) x->shape[2], W = (int) x->shape[3];
    if (H < 2 || W < 2) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "tv-l2 needs images of at least 2x2 pixels");
        return NULL;
    }
    if (self->roll > 0) {
        guint32 r[4];
        dfq_rand_philox (ctx->seed, PIXEL_ROLL_STREAM, (guint64) ctx->step, r);
        int o = (int) (r[0] % (guint32) (2 * self->roll)) - self->roll;
        x = pixel_roll (a, x, o, o);
    }
    DfqTensor *d1 = pixel_norm_diff (a, dfq_crop (a, x, 0, 0, H, W - 1), dfq_crop (a, x, 0, 1, H, W - 1));
    DfqTensor *d2 = pixel_norm_diff (a, dfq_crop (a, x, 0, 0, H - 1, W), dfq_crop (a, x, 1, 0, H - 1, W));
    DfqTensor *d3 = pixel_norm_diff (a, dfq_crop (a, x, 1, 0, H - 1, W - 1), dfq_crop (a, x, 0, 1, H - 1, W - 1));
    DfqTensor *d4 = pixel_norm_diff (a, dfq_crop (a, x, 0, 0, H - 1, W - 1), dfq_crop (a, x, 1, 1, H - 1, W - 1));
    return dfq_add (a, dfq_add (a, d1, d2), dfq_add (a, d3, d4));
}

static DfqTensor *
l2_norm_compute (DfqLoss *loss G_GNUC_UNUSED, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    DfqArena *a = ctx->arena;
    DfqTensor *x = in->images;
    const gint64 shape[2] = { x->shape[0], dfq_tensor_numel (x) / x->shape[0] };
    DfqTensor *rows = dfq_reshape (a, x, 2, shape);
    return dfq_mean (a, dfq_sqrt (a, dfq_row_sum (a, dfq_mul (a, rows, rows))));
}


/* ---- sci: eigenpairs of a symmetric n x n matrix a (destroyed) by cyclic
 * Jacobi: values in w (descending), vectors in the COLUMNS of v */
static void
pixel_jacobi (double *a, int n, double *w, double *v)
{
    for (int i = 0; i < n * n; i++)
        v[i] = i % (n + 1) == 0 ? 1.0 : 0.0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += a[p * n + q] * a[p * n + q];
        if (off < 1e-22)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                if (fabs (a[p * n + q]) < 1e-300)
                    continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * a[p * n + q]);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs (theta) + sqrt (theta * theta + 1.0));
                double c = 1.0 / sqrt (t * t + 1.0), sn = t * c;
                for (int k = 0; k < n; k++) { /* A <- J^T A J, V <- V J */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - sn * akq;
                    a[k * n + q] = sn * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - sn * aqk;
                    a[q * n + k] = sn * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - sn * vkq;
                    v[k * n + q] = sn * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
    for (int i = 0; i < n; i++) { /* selection sort, descending; largest component positive */
        int best = i;
        for (int j = i + 1; j < n; j++)
            if (w[j] > w[best])
                best = j;
        double tw = w[i];
        w[i] = w[best], w[best] = tw;
        for (int k = 0; k < n; k++) {
            double tv = v[k * n + i];
            v[k * n + i] = v[k * n + best], v[k * n + best] = tv;
        }
        int big = 0;
        for (int k = 1; k < n; k++)
            if (fabs (v[k * n + i]) > fabs (v[big * n + i]))
                big = k;
        if (v[big * n + i] < 0)
            for (int k = 0; k < n; k++)
                v[k * n + i] = -v[k * n + i];
    }
}

/* Gram matrix of the L2-normalised rows of x [n, d] (F.normalize, eps 1e-12), eigenpairs. */
static void
pixel_gram_eig (const float *x, int n, gint64 d, double *w, double *v)
{
    double *a = g_new0 (double, (gsize) n * n), *norm = g_new (double, n);
    for (int i = 0; i < n; i++) {
        double acc = 0.0;
        for (gint64 k = 0; k < d; k++)
            acc += (double) x[i * d + k] * x[i * d + k];
        norm[i] = MAX (sqrt (acc), 1e-12);
    }
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            double acc = 0.0;
            for (gint64 k = 0; k < d; k++)
                acc += (double) x[i * d + k] * x[j * d + k];
            a[i * n + j] = a[j * n + i] = acc / (norm[i] * norm[j]);
        }
    pixel_jacobi (a, n, w, v);
    g_free (a);
    g_free (norm);
}

static DfqTensor *
sci_compute (DfqLoss *loss G_GNUC_UNUSED, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    DfqTensor *x = in->images;
    int n = (int) x->shape[0];
    gint64 d = dfq_tensor_numel (x) / n;
    if (n < 2 || n > 4096) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "sci needs a batch of 2 to 4096 images, not %d", n);
        return NULL;
    }
    DfqTensor *gauss = dfq_tensor_new_like (ctx->arena, x);
    dfq_rand_normal_fill (gauss, ctx->seed, PIXEL_SCI_STREAM + (guint64) ctx->step, 0.0f, 1.0f);
    double *wf = g_new (double, n), *wg = g_new (double, n);
    double *vf = g_new (double, (gsize) n * n), *vg = g_new (double, (gsize) n * n);
    pixel_gram_eig (dfq_tensor_f32 (x), n, d, wf, vf);
    pixel_gram_eig (dfq_tensor_f32 (gauss), n, d, wg, vg);
    double mse = 0.0, lo = wg[n - 1], hi = wg[0], structure = 0.0;
    for (int k = 0; k < n; k++)
        mse += (wf[k] - wg[k]) * (wf[k] - wg[k]) / n;
    for (int k = 0; k < n; k++) {
        double dot = 0.0;
        for (int i = 0; i < n; i++)
            dot += vf[i * n + k] * vg[i * n + k];
        structure += (hi > lo ? (wg[k] - lo) / (hi - lo) : 0.0) * -dot;
    }
    g_free (wf);
    g_free (wg);
    g_free (vf);
    g_free (vg);
    /* a constant: no graph, as the official code's detached eigenpairs */
    return dfq_tensor_new_scalar (ctx->arena, (float) (1e-4 * mse + fabs (structure)));
}

static const DfqLossClass tv_l2_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "tv-l2",
                                           "DSG: sum of the L2 norms of the 4 neighbour differences of a rolled copy "
                                           "of the images",
                                           PixelPrior, tv_l2_params, NULL, dfq_loss_teardown),
    .compute = tv_l2_compute,
};

static const DfqLossClass l2_norm_class = {
    .parent = { .kind = DFQ_FEATURE_LOSS, .name = "l2-norm",
                .description = "DSG: mean over the batch of each image's L2 norm (no parameters)",
                .instance_size = sizeof (DfqLoss), .finalize = dfq_loss_teardown },
    .compute = l2_norm_compute,
};

static const DfqLossClass sci_class = {
    .parent = { .kind = DFQ_FEATURE_LOSS, .name = "sci",
                .description = "DSG: sample-correlation inhibition as the official code computes it (a constant: no "
                               "gradient; no parameters)",
                .instance_size = sizeof (DfqLoss), .finalize = dfq_loss_teardown },
    .compute = sci_compute,
};

static gboolean
pixel_priors_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &tv_l2_class.parent, error)
           && dfq_registry_add_feature (registry, &l2_norm_class.parent, error)
           && dfq_registry_add_feature (registry, &sci_class.parent, error);
}

DFQ_PLUGIN_DEFINE (pixel-priors, "DSG's image priors: TV (L2 norms) on a rolled copy, per-image L2 norm",
                   pixel_priors_register)
