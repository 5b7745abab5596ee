/* Gradcheck cases: fake-quantization ops (core/ops/dfq-op-quant.c). Every input
 * that gets a gradient is checked: x, the LSQ step, the ACD clip values, the soft
 * bits V and their scale.
 *
 * The STE quantizers are piecewise constant in x, so finite differences of the
 * op itself are zero almost everywhere. Their rows carry a `surrogate`: the
 * smooth function whose derivative the gradient rule defines, i.e. the same
 * computation with each round(u) replaced by round(u0) + (u - u0), u0 taken at
 * the unperturbed point (`base`), keeping every clamp and mask. Inputs that meet
 * a clamp are integers (GRAD_INIT_INTEGER) and the ranges are drawn between
 * integers, so no element sits within the finite-difference step of a border. */
#include <math.h>

#include "dfq-test-util.h"

/* ---- input specs ---- */
/* IN4 forwards its arguments so that a shape macro (W_SHAPE) expands first. */
#define IN4(...) IN4_ (__VA_ARGS__)
#define IN4_(a, b, c, d, init_, grad_, lo_, hi_) \
    { .n_dims = 4, .shape = { a, b, c, d }, .init = init_, .grad = grad_, .aux_f = { lo_, hi_ } }
#define IN2(a, b, init_, grad_, lo_, hi_) \
    { .n_dims = 2, .shape = { a, b }, .init = init_, .grad = grad_, .aux_f = { lo_, hi_ } }
#define IN1(a, init_, grad_, lo_, hi_) \
    { .n_dims = 1, .shape = { a }, .init = init_, .grad = grad_, .aux_f = { lo_, hi_ } }

/* Index into a 1-or-C parameter @p for element @i of @x along @axis. */
static gint64
sur_param_index (const DfqTensor *x, int axis, const DfqTensor *p, gint64 i)
{
    if (axis < 0 || dfq_tensor_numel (p) == 1)
        return 0;
    gint64 inner = 1;
    for (int d = axis + 1; d < x->n_dims; d++)
        inner *= x->shape[d];
    return (i / inner) % x->shape[axis];
}

static inline double
sur_clamp (double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* ---- GDFQ fake quant: in = { x, lo, hi }; only x gets a gradient ---- */

/* The forward of METHODS.md 1.3 at the base point, written out again. */
static float
sur_gdfq (float x, float lo, float hi, int bits)
{
    float levels = (float) ((1 << bits) - 1), half = (float) (1 << (bits - 1));
    float s = levels / fmaxf (hi - lo, 1e-8f);
    float zp = nearbyintf (s * lo) + half;
    float q = fminf (fmaxf (nearbyintf (s * x - zp), -half), half - 1.0f);
    return (q + zp) / s;
}

/* Plain STE: x^0 + (x - x0) (the STE passes through the round AND the clamp of
 * q). Clipped STE: x^0 + clamp(x, lo, hi) - clamp(x0, lo, hi). */
static DfqTensor *
fq_surrogate (DfqArena *arena, DfqTensor **in, DfqTensor **base, int axis, int bits, DfqSteMode ste)
{
    DfqTensor *y = dfq_tensor_new_like (arena, in[0]);
    const float *x = dfq_tensor_f32 (in[0]), *x0 = dfq_tensor_f32 (base[0]);
    const float *lo = dfq_tensor_f32 (in[1]), *hi = dfq_tensor_f32 (in[2]);
    float *out = dfq_tensor_f32 (y);
    for (gint64 i = 0; i < dfq_tensor_numel (y); i++) {
        float l = lo[sur_param_index (in[0], axis, in[1], i)];
        float u = hi[sur_param_index (in[0], axis, in[2], i)];
        double y0 = sur_gdfq (x0[i], l, u, bits);
        if (ste == DFQ_STE_PLAIN)
            out[i] = (float) (y0 + ((double) x[i] - x0[i]));
        else
            out[i] = (float) (y0 + sur_clamp (x[i], l, u) - sur_clamp (x0[i], l, u));
    }
    return y;
}

#define FQ_FUNCS(tag, axis, bits, ste)                                                   \
    static DfqTensor *fq_build_##tag (DfqArena *arena, DfqTensor **in)                 \
    {                                                                                    \
        return dfq_fake_quant (arena, in[0], in[1], in[2], axis, bits, ste);             \
    }                                                                                    \
    static DfqTensor *fq_sur_##tag (DfqArena *arena, DfqTensor **in, DfqTensor **base) \
    {                                                                                    \
        return fq_surrogate (arena, in, base, axis, bits, ste);                          \
    }

FQ_FUNCS (w0_k2_plain, 0, 2, DFQ_STE_PLAIN)
FQ_FUNCS (w0_k3_clip, 0, 3, DFQ_STE_CLIPPED)
FQ_FUNCS (a1_k4_clip, 1, 4, DFQ_STE_CLIPPED)
FQ_FUNCS (a1_k8_plain, 1, 8, DFQ_STE_PLAIN)
FQ_FUNCS (t_k8_plain, -1, 8, DFQ_STE_PLAIN)
FQ_FUNCS (t_k2_clip, -1, 2, DFQ_STE_CLIPPED)

/* ---- LSQ: in = { x, s } ----
 * With grad_scale g the rule is the derivative of the function of
 * s' = s0 + g (s - s0): u = clamp(x/s', qn, qp), y = s' (round(u0) + u - u0). */
static DfqTensor *
lsq_surrogate (DfqArena *arena, DfqTensor **in, DfqTensor **base, int axis, int qn, int qp, float gscale)
{
    DfqTensor *y = dfq_tensor_new_like (arena, in[0]);
    const float *x = dfq_tensor_f32 (in[0]), *x0 = dfq_tensor_f32 (base[0]);
    const float *s = dfq_tensor_f32 (in[1]), *s0 = dfq_tensor_f32 (base[1]);
    float *out = dfq_tensor_f32 (y);
    for (gint64 i = 0; i < dfq_tensor_numel (y); i++) {
        gint64 c = sur_param_index (in[0], axis, in[1], i);
        double sp = s0[c] + (double) gscale * ((double) s[c] - s0[c]);
        double u0 = sur_clamp ((double) x0[i] / s0[c], qn, qp);
        double r0 = nearbyintf (fminf (fmaxf (x0[i] / s0[c], (float) qn), (float) qp));
        double u = sur_clamp (x[i] / sp, qn, qp);
        out[i] = (float) (sp * (r0 + u - u0));
    }
    return y;
}

#define LSQ_FUNCS(tag, axis, qn, qp, gscale)                                              \
    static DfqTensor *lsq_build_##tag (DfqArena *arena, DfqTensor **in)                 \
    {                                                                                     \
        return dfq_fake_quant_lsq (arena, in[0], in[1], axis, qn, qp, gscale);            \
    }                                                                                     \
    static DfqTensor *lsq_sur_##tag (DfqArena *arena, DfqTensor **in, DfqTensor **base) \
    {                                                                                     \
        return lsq_surrogate (arena, in, base, axis, qn, qp, gscale);                     \
    }

LSQ_FUNCS (w0_k4_signed, 0, -8, 7, 1.0f)
LSQ_FUNCS (a1_k2_signed, 1, -2, 1, 0.5f)
LSQ_FUNCS (t_k3_unsigned, -1, 0, 7, 0.25f)
LSQ_FUNCS (t_k8_signed, -1, -128, 127, 1.0f)

/* ---- ACD clip: in = { x, lo, hi }, all three get gradients ----
 * With the in-range terms the rule is exact for round() STE'd:
 *   w = N (clamp(x, l, u) - l)/(u - l), y = (round(w0) + w - w0) (u - l)/N + l.
 * Without them: y = y0 + clamp(x, l, u) - clamp(x0, l0, u0). */
static DfqTensor *
clip_surrogate (DfqArena *arena, DfqTensor **in, DfqTensor **base, int axis, int bits, gboolean in_range)
{
    DfqTensor *y = dfq_tensor_new_like (arena, in[0]);
    const float *x = dfq_tensor_f32 (in[0]), *x0 = dfq_tensor_f32 (base[0]);
    const float *lo = dfq_tensor_f32 (in[1]), *lo0 = dfq_tensor_f32 (base[1]);
    const float *hi = dfq_tensor_f32 (in[2]), *hi0 = dfq_tensor_f32 (base[2]);
    const double levels = (double) ((1 << bits) - 1);
    float *out = dfq_tensor_f32 (y);
    for (gint64 i = 0; i < dfq_tensor_numel (y); i++) {
        gint64 cl = sur_param_index (in[0], axis, in[1], i), cu = sur_param_index (in[0], axis, in[2], i);
        double l = lo[cl], u = hi[cu], l0 = lo0[cl], u0 = hi0[cu];
        /* round(w0) exactly as the op computes it, in float */
        float s0f = ((float) u0 - (float) l0) / (float) levels;
        float xc0f = fminf (fmaxf (x0[i], (float) l0), (float) u0);
        double r0 = nearbyintf ((xc0f - (float) l0) / s0f);
        double xc = sur_clamp (x[i], l, u), xc0 = sur_clamp (x0[i], l0, u0);
        if (in_range) {
            double w = levels * (xc - l) / (u - l), w0 = levels * (xc0 - l0) / (u0 - l0);
            out[i] = (float) ((r0 + w - w0) * (u - l) / levels + l);
        } else {
            double y0 = r0 * (u0 - l0) / levels + l0;
            out[i] = (float) (y0 + xc - xc0);
        }
    }
    return y;
}

#define CLIP_FUNCS(tag, axis, bits, in_range)                                              \
    static DfqTensor *clip_build_##tag (DfqArena *arena, DfqTensor **in)                 \
    {                                                                                      \
        return dfq_fake_quant_clip (arena, in[0], in[1], in[2], axis, bits, in_range);     \
    }                                                                                      \
    static DfqTensor *clip_sur_##tag (DfqArena *arena, DfqTensor **in, DfqTensor **base) \
    {                                                                                      \
        return clip_surrogate (arena, in, base, axis, bits, in_range);                     \
    }

CLIP_FUNCS (a1_k4_exact, 1, 4, TRUE)
CLIP_FUNCS (a1_k2_outside, 1, 2, FALSE)
CLIP_FUNCS (t_k8_exact, -1, 8, TRUE)
CLIP_FUNCS (w0_k3_exact, 0, 3, TRUE)
CLIP_FUNCS (w0_k8_outside, 0, 8, FALSE)

/* ---- soft bits: in = { B, V, s, zp }; smooth in V (soft mode) and linear in s,
 * so no surrogate. Hard mode: V's gradient is 0, as are its finite differences
 * (V drawn away from 0). ---- */
#define SB_BUILD(tag, axis, bits, hard)                                                    \
    static DfqTensor *sb_build_##tag (DfqArena *arena, DfqTensor **in)                   \
    {                                                                                      \
        return dfq_softbit_quant (arena, in[0], in[1], in[2], in[3], axis, bits, hard);    \
    }

SB_BUILD (w0_k4, 0, 4, FALSE)
SB_BUILD (t_k2, -1, 2, FALSE)
SB_BUILD (w0_k3_hard, 0, 3, TRUE)
SB_BUILD (w0_k8, 0, 8, FALSE)

/* ---- rounding regulariser: in = { V } ---- */
#define RR_BUILD(tag, beta)                                                                \
    static DfqTensor *rr_build_##tag (DfqArena *arena, DfqTensor **in)                   \
    {                                                                                      \
        return dfq_round_reg (arena, in[0], beta);                                         \
    }

RR_BUILD (beta2, 2.0f)
RR_BUILD (beta3p5, 3.5f)
RR_BUILD (beta20, 20.0f)

#define W_SHAPE 4, 3, 3, 3 /* [Co, Ci, 3, 3] weights, axis 0 */
#define A_SHAPE 2, 3, 4, 4 /* [N, C, H, W] activations, axis 1 */

const GradCase dfq_gradcases_quant[] = {
    /* GDFQ quantizer: x only (lo/hi are statistics, no gradient). Plain STE rows
     * use normal x, with some values outside [lo, hi]. */
    { .name = "fake-quant/w-axis0-k2-plain", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_RANGE, FALSE, -2.5f, -2.0f),
                  IN1 (4, GRAD_INIT_RANGE, FALSE, 0.5f, 1.0f) },
      .build = fq_build_w0_k2_plain, .surrogate = fq_sur_w0_k2_plain },
    { .name = "fake-quant/w-axis0-k3-clipped", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, TRUE, -3, 3),
                  IN1 (4, GRAD_INIT_RANGE, FALSE, -2.4f, -1.6f),
                  IN1 (4, GRAD_INIT_RANGE, FALSE, 1.6f, 2.4f) },
      .build = fq_build_w0_k3_clip, .surrogate = fq_sur_w0_k3_clip },
    { .name = "fake-quant/act-axis1-k4-clipped", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -2, 6),
                  IN1 (3, GRAD_INIT_RANGE, FALSE, -1.4f, -0.6f),
                  IN1 (3, GRAD_INIT_RANGE, FALSE, 3.6f, 4.4f) },
      .build = fq_build_a1_k4_clip, .surrogate = fq_sur_a1_k4_clip },
    { .name = "fake-quant/act-axis1-k8-plain", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (3, GRAD_INIT_RANGE, FALSE, -0.5f, -0.3f),
                  IN1 (3, GRAD_INIT_RANGE, FALSE, 0.3f, 0.5f) },
      .build = fq_build_a1_k8_plain, .surrogate = fq_sur_a1_k8_plain },
    { .name = "fake-quant/act-tensor-k8-plain", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (1, GRAD_INIT_CONST, FALSE, -1.0f, 0),
                  IN1 (1, GRAD_INIT_CONST, FALSE, 1.5f, 0) },
      .build = fq_build_t_k8_plain, .surrogate = fq_sur_t_k8_plain },
    { .name = "fake-quant/act-tensor-k2-clipped", .op = DFQ_OP_FAKE_QUANT, .n_inputs = 3,
      .inputs = { IN4 (2, 3, 5, 5, GRAD_INIT_INTEGER, TRUE, -4, 4),
                  IN1 (1, GRAD_INIT_CONST, FALSE, -2.5f, 0),
                  IN1 (1, GRAD_INIT_CONST, FALSE, 2.3f, 0) },
      .build = fq_build_t_k2_clip, .surrogate = fq_sur_t_k2_clip },

    /* LSQ: x and the step s. Borders qn*s, qp*s stay > qp*eps away from integers. */
    { .name = "fake-quant-lsq/w-axis0-k4-signed", .op = DFQ_OP_FAKE_QUANT_LSQ, .n_inputs = 2,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, TRUE, -4, 4),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, 0.30f, 0.36f) },
      .build = lsq_build_w0_k4_signed, .surrogate = lsq_sur_w0_k4_signed },
    { .name = "fake-quant-lsq/act-axis1-k2-signed-gscale", .op = DFQ_OP_FAKE_QUANT_LSQ, .n_inputs = 2,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -3, 3),
                  IN1 (3, GRAD_INIT_RANGE, TRUE, 0.55f, 0.65f) },
      .build = lsq_build_a1_k2_signed, .surrogate = lsq_sur_a1_k2_signed },
    { .name = "fake-quant-lsq/act-tensor-k3-unsigned", .op = DFQ_OP_FAKE_QUANT_LSQ, .n_inputs = 2,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, 1, 6),
                  IN1 (1, GRAD_INIT_CONST, TRUE, 0.7f, 0) },
      .build = lsq_build_t_k3_unsigned, .surrogate = lsq_sur_t_k3_unsigned },
    { .name = "fake-quant-lsq/act-tensor-k8-signed", .op = DFQ_OP_FAKE_QUANT_LSQ, .n_inputs = 2,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -4, 4),
                  IN1 (1, GRAD_INIT_CONST, TRUE, 0.0205f, 0) },
      .build = lsq_build_t_k8_signed, .surrogate = lsq_sur_t_k8_signed },

    /* ACD clipping: x, lo and hi. */
    { .name = "fake-quant-clip/act-axis1-k4-exact", .op = DFQ_OP_FAKE_QUANT_CLIP, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -4, 5),
                  IN1 (3, GRAD_INIT_RANGE, TRUE, -2.8f, -2.2f),
                  IN1 (3, GRAD_INIT_RANGE, TRUE, 3.2f, 3.8f) },
      .build = clip_build_a1_k4_exact, .surrogate = clip_sur_a1_k4_exact },
    { .name = "fake-quant-clip/act-axis1-k2-outside", .op = DFQ_OP_FAKE_QUANT_CLIP, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -4, 5),
                  IN1 (3, GRAD_INIT_RANGE, TRUE, -2.8f, -2.2f),
                  IN1 (3, GRAD_INIT_RANGE, TRUE, 3.2f, 3.8f) },
      .build = clip_build_a1_k2_outside, .surrogate = clip_sur_a1_k2_outside },
    { .name = "fake-quant-clip/act-tensor-k8-exact", .op = DFQ_OP_FAKE_QUANT_CLIP, .n_inputs = 3,
      .inputs = { IN4 (A_SHAPE, GRAD_INIT_INTEGER, TRUE, -4, 4),
                  IN1 (1, GRAD_INIT_RANGE, TRUE, -2.7f, -2.3f),
                  IN1 (1, GRAD_INIT_RANGE, TRUE, 2.3f, 2.7f) },
      .build = clip_build_t_k8_exact, .surrogate = clip_sur_t_k8_exact },
    { .name = "fake-quant-clip/w-axis0-k3-exact", .op = DFQ_OP_FAKE_QUANT_CLIP, .n_inputs = 3,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, TRUE, -3, 3),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, -2.4f, -1.6f),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, 1.6f, 2.4f) },
      .build = clip_build_w0_k3_exact, .surrogate = clip_sur_w0_k3_exact },
    { .name = "fake-quant-clip/w-axis0-k8-outside", .op = DFQ_OP_FAKE_QUANT_CLIP, .n_inputs = 3,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, TRUE, -3, 3),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, -2.4f, -1.6f),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, 1.6f, 2.4f) },
      .build = clip_build_w0_k8_outside, .surrogate = clip_sur_w0_k8_outside },

    /* Soft bits: V and s (B, zp fixed integers). B + zp spans past [0, 2^k-1]. */
    { .name = "softbit-quant/w-axis0-k4", .op = DFQ_OP_SOFTBIT_QUANT, .n_inputs = 4,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, FALSE, -6, 6),
                  IN4 (W_SHAPE, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_POSITIVE, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_INTEGER, FALSE, 2, 10) },
      .build = sb_build_w0_k4 },
    { .name = "softbit-quant/w-tensor-k2", .op = DFQ_OP_SOFTBIT_QUANT, .n_inputs = 4,
      .inputs = { IN2 (6, 5, GRAD_INIT_INTEGER, FALSE, -2, 2),
                  IN2 (6, 5, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (1, GRAD_INIT_POSITIVE, TRUE, 0, 0),
                  IN1 (1, GRAD_INIT_CONST, FALSE, 1.0f, 0) },
      .build = sb_build_t_k2 },
    { .name = "softbit-quant/w-axis0-k3-hard", .op = DFQ_OP_SOFTBIT_QUANT, .n_inputs = 4,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, FALSE, -4, 4),
                  IN4 (W_SHAPE, GRAD_INIT_AWAY, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_POSITIVE, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_INTEGER, FALSE, 1, 6) },
      .build = sb_build_w0_k3_hard },
    { .name = "softbit-quant/w-axis0-k8", .op = DFQ_OP_SOFTBIT_QUANT, .n_inputs = 4,
      .inputs = { IN4 (W_SHAPE, GRAD_INIT_INTEGER, FALSE, -130, 130),
                  IN4 (W_SHAPE, GRAD_INIT_NORMAL, TRUE, 0, 0),
                  IN1 (4, GRAD_INIT_RANGE, TRUE, 0.01f, 0.02f),
                  IN1 (4, GRAD_INIT_INTEGER, FALSE, 100, 140) },
      .build = sb_build_w0_k8 },

    /* Rounding regulariser. The [1] output is a float sum, so its rounding error
     * (about an ulp of the sum) is divided by 2 eps: small tensors and a larger
     * step keep that well under atol. */
    { .name = "round-reg/beta2", .op = DFQ_OP_ROUND_REG, .n_inputs = 1,
      .inputs = { IN2 (3, 4, GRAD_INIT_RANGE, TRUE, -2.2f, 2.2f) },
      .build = rr_build_beta2, .eps = 4e-3 },
    { .name = "round-reg/beta3.5", .op = DFQ_OP_ROUND_REG, .n_inputs = 1,
      .inputs = { IN4 (2, 3, 2, 2, GRAD_INIT_NORMAL, TRUE, 0, 0) },
      .build = rr_build_beta3p5, .eps = 4e-3 },
    { .name = "round-reg/beta20", .op = DFQ_OP_ROUND_REG, .n_inputs = 1,
      .inputs = { IN2 (3, 4, GRAD_INIT_NORMAL, TRUE, 0, 0) },
      .build = rr_build_beta20, .eps = 4e-3 },
};
const guint dfq_n_gradcases_quant = G_N_ELEMENTS (dfq_gradcases_quant);
