/* Block reconstruction: the soft-rounding quantizers `adaround` and `genie-m`
 * (plugins/quantizers/soft-rounding) on the ResNet-20 (width 8) test student,
 * and the core pieces the reconstruct phase uses (dfq_qdrop_mix, the active
 * block). Soft bits start at h(V) = frac(W/s), so the soft weight equals the
 * float weight inside the clipping range; after HARD every weight lies on its
 * k-bit grid (8 bits for the first and last layers); GENIE-M's scale gradient
 * is (clamped integer - zp) (against central differences); the rounding
 * regulariser and its beta schedule match hand values; parameter groups and
 * the regulariser follow the active block; QDrop with p = 0 / 1 gives the
 * quantized / full-precision input bit for bit. The unit-by-unit resume of
 * the phase is /pipelines/recon-resume (tests/pipelines). */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

static DfqRegistry *registry;

typedef struct {
    DfqModel *student;
    DfqQuantizer *q;
    DfqArena *arena;
} Recon;

static void
recon_setup (Recon *f, const char *yaml)
{
    g_autoptr (GError) error = NULL;
    f->student = dfq_test_resnet20_w8 (registry, TRUE);
    f->q = (DfqQuantizer *) dfq_test_make_feature (registry, DFQ_FEATURE_QUANTIZER, yaml);
    g_assert_true (dfq_quantizer_attach (f->q, f->student, &error));
    g_assert_no_error (error);
    f->arena = dfq_arena_new (0);
}

static void
recon_clear (Recon *f)
{
    dfq_feature_free ((DfqFeature *) f->q);
    dfq_feature_free ((DfqFeature *) f->student);
    dfq_arena_free (f->arena);
}

/* The quantizer state tensor "<site>.<what>". */
static DfqTensor *
state_of (DfqQuantizer *q, const char *site, const char *what)
{
    g_autoptr (GPtrArray) st = g_ptr_array_new ();
    DFQ_QUANTIZER_CLASS (q)->get_state (q, st);
    g_autofree char *name = g_strdup_printf ("%s.%s", site, what);
    for (guint i = 0; i < st->len; i++)
        if (g_str_equal (((DfqTensor *) st->pdata[i])->name, name))
            return st->pdata[i];
    g_assert_not_reached ();
    return NULL;
}

static DfqTensor *
quantized_weight (Recon *f, const char *site)
{
    DfqForward fwd;
    dfq_forward_init (&fwd, f->arena, FALSE);
    g_autofree char *wname = g_strdup_printf ("%s.weight", site);
    return DFQ_QUANTIZER_CLASS (f->q)->quantize_weight (f->q, &fwd, site, dfq_model_get (f->student, wname));
}

/* Weight sites of the student, in order. */
static GPtrArray *
weight_sites (DfqModel *m)
{
    g_autoptr (GError) error = NULL;
    GPtrArray *pts = dfq_model_list_sites (m, 2, &error);
    g_assert_no_error (error);
    GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
    for (guint i = 0; i < pts->len; i++) {
        const DfqModelPoint *p = pts->pdata[i];
        if (p->kind == DFQ_SITE_WEIGHT)
            g_ptr_array_add (names, g_strdup (p->name));
    }
    g_ptr_array_unref (pts);
    return names;
}

static const char *const quantizers[] = {
    "use: adaround\nw_bits: 3\na_bits: 3\n",
    "use: genie-m\nw_bits: 3\na_bits: 3\n",
};

/* ------------------------------------------------------------ soft bits */

static void
test_soft_init (void)
{
    g_test_summary ("Soft bits start at h(V) = frac(W/s): in LEARN mode the soft weight equals the float weight "
                    "wherever W/s + zp lies inside [0, 2^k - 1]; outside it is clamped");
    for (guint k = 0; k < G_N_ELEMENTS (quantizers); k++) {
        Recon f;
        recon_setup (&f, quantizers[k]);
        dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_LEARN);
        g_autoptr (GPtrArray) sites = weight_sites (f.student);
        gint64 inside = 0, outside = 0;
        for (guint i = 0; i < sites->len; i++) {
            const char *site = sites->pdata[i];
            int bits = (i == 0 || i + 1 == sites->len) ? 8 : 3;
            g_autofree char *wname = g_strdup_printf ("%s.weight", site);
            const DfqTensor *w = dfq_model_get (f.student, wname);
            DfqTensor *wq = quantized_weight (&f, site);
            const float *sc = dfq_tensor_f32 (state_of (f.q, site, "w_scale"));
            const float *zp = dfq_tensor_f32 (state_of (f.q, site, "w_zero_point"));
            const float *v = dfq_tensor_f32 (state_of (f.q, site, "soft_bits"));
            gint64 inner = dfq_tensor_numel (w) / w->shape[0];
            for (gint64 e = 0; e < dfq_tensor_numel (w); e++) {
                gint64 c = e / inner;
                float t = dfq_tensor_f32 (w)[e] / sc[c];
                g_assert_cmpfloat_with_epsilon (dfq_softbit_h (v[e]), t - floorf (t), 2e-6);
                float level = t + zp[c];
                if (level >= 0.0f && level <= (float) ((1 << bits) - 1)) {
                    g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (wq)[e], dfq_tensor_f32 (w)[e], 4e-6 * sc[c] * (1 + fabsf (t)));
                    inside++;
                } else {
                    outside++;
                }
            }
        }
        g_test_message ("%s: %" G_GINT64_FORMAT " weights inside the range, %" G_GINT64_FORMAT " clipped",
                        ((DfqFeature *) f.q)->klass->name, inside, outside);
        g_assert_cmpint (inside, >, 4 * outside);
        recon_clear (&f);
    }
}

/* Every element of @wq is s_c (q - zp_c) with q an integer in [0, 2^bits - 1]. */
static void
assert_on_grid (Recon *f, const char *site, const DfqTensor *wq, int bits)
{
    const float *sc = dfq_tensor_f32 (state_of (f->q, site, "w_scale"));
    const float *zp = dfq_tensor_f32 (state_of (f->q, site, "w_zero_point"));
    gint64 inner = dfq_tensor_numel (wq) / wq->shape[0];
    for (gint64 e = 0; e < dfq_tensor_numel (wq); e++) {
        gint64 c = e / inner;
        float level = dfq_tensor_f32 (wq)[e] / sc[c] + zp[c];
        g_assert_cmpfloat (fabsf (level - nearbyintf (level)), <, 1e-3f);
        g_assert_cmpfloat (nearbyintf (level), >=, 0.0f);
        g_assert_cmpfloat (nearbyintf (level), <=, (float) ((1 << bits) - 1));
    }
}

/* One Adam step on the active block's groups against sum(r * block output). */
static void
learn_step (Recon *f, guint block, DfqTensor *x)
{
    GArray *groups = dfq_quantizer_get_param_groups (f->q);
    DfqOptimConfig oc;
    dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
    oc.lr = 0.5; /* large: many soft bits cross 0 */
    g_autoptr (DfqOptim) o = dfq_optim_new (&oc);
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        for (guint i = 0; i < grp->params->len; i++)
            dfq_optim_add_param (o, grp->params->pdata[i]);
    }
    dfq_quant_param_groups_free (groups);
    dfq_optim_zero_grad (o);
    DfqForward fwd;
    dfq_forward_init (&fwd, f->arena, FALSE);
    dfq_quantizer_hook (f->q, &fwd);
    DfqTensor *y = dfq_model_forward_block (f->student, &fwd, block, x);
    DfqTensor *r = dfq_tensor_new_like (f->arena, y);
    dfq_rand_normal_fill (r, 7, block, 0.0f, 1.0f);
    dfq_backward (dfq_sum (f->arena, dfq_mul (f->arena, y, r)), f->arena);
    dfq_optim_step (o);
}

static void
test_hard_on_grid (void)
{
    g_test_summary ("Block by block (active block, LEARN, one large Adam step, HARD): afterwards every quantized "
                    "weight is s (q - zp) with q an integer in [0, 2^k - 1] (k = 8 for the first and last layers), "
                    "and soft and hard rounding agree");
    for (guint k = 0; k < G_N_ELEMENTS (quantizers); k++) {
        Recon f;
        recon_setup (&f, quantizers[k]);
        DfqTensor *x = dfq_tensor_new_4d (f.arena, DFQ_DTYPE_F32, 2, 1, 28, 28);
        dfq_rand_normal_fill (x, 3, 0, 0.0f, 1.0f);
        gboolean prev = dfq_set_grad_enabled (TRUE);
        for (guint b = 0; b < f.student->blocks->len; b++) {
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_EVAL);
            DfqForward fwd;
            dfq_forward_init (&fwd, f.arena, FALSE);
            dfq_quantizer_hook (f.q, &fwd);
            DfqTensor *xb = dfq_detach (f.arena, x);
            dfq_quantizer_set_active_block (f.q, f.student->blocks->pdata[b]);
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_LEARN);
            learn_step (&f, b, xb);
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_HARD);
            dfq_quantizer_set_active_block (f.q, NULL);
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_EVAL);
            x = dfq_detach (f.arena, dfq_model_forward_block (f.student, &fwd, b, xb));
        }
        dfq_set_grad_enabled (prev);
        g_autoptr (GPtrArray) sites = weight_sites (f.student);
        for (guint i = 0; i < sites->len; i++) {
            int bits = (i == 0 || i + 1 == sites->len) ? 8 : 3;
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_EVAL);
            DfqTensor *hard = quantized_weight (&f, sites->pdata[i]);
            assert_on_grid (&f, sites->pdata[i], hard, bits);
            dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_LEARN);
            DfqTensor *soft = quantized_weight (&f, sites->pdata[i]);
            g_assert_cmpfloat (dfq_tensor_max_abs_diff (soft, hard), ==, 0.0f);
        }
        recon_clear (&f);
    }
}

/* ------------------------------------------------------------ GENIE-M scale */

typedef struct {
    Recon *f;
    const char *site;
} ScaleCase;

static DfqTensor *
scale_fn (DfqArena *arena, DfqTensor *const *inputs, gpointer data)
{
    ScaleCase *c = data;
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    g_autofree char *wname = g_strdup_printf ("%s.weight", c->site);
    return DFQ_QUANTIZER_CLASS (c->f->q)->quantize_weight (c->f->q, &fwd, c->site, dfq_model_get (c->f->student, wname));
}

static void
test_genie_scale_grad (void)
{
    g_test_summary ("GENIE-M: the gradient of W^ w.r.t. its learnable per-channel scale (B and zp frozen) matches "
                    "central differences, and equals sum (clamped integer - zp) by hand for L = sum(W^)");
    Recon f;
    recon_setup (&f, "use: genie-m\nw_bits: 3\na_bits: 3\n");
    dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_LEARN);
    const char *site = "layers.3.conv1";
    DfqTensor *s = state_of (f.q, site, "w_scale");
    g_assert_true (dfq_tensor_requires_grad (s));
    /* move V off its initial values so that some levels clamp */
    DfqTensor *v = state_of (f.q, site, "soft_bits");
    for (gint64 e = 0; e < dfq_tensor_numel (v); e += 3)
        dfq_tensor_f32 (v)[e] += 1.5f;
    ScaleCase c = { &f, site };
    DfqTensor *inputs[] = { s };
    DfqGradcheckOptions o = { .eps = 1e-4, .seed = 5, .max_elements = 1000 };
    g_autoptr (GError) error = NULL;
    double worst;
    gboolean prev = dfq_set_grad_enabled (TRUE);
    g_assert_true (dfq_gradcheck (scale_fn, &c, inputs, 1, &o, &worst, &error));
    g_assert_no_error (error);
    g_test_message ("worst ratio %.3g", worst);
    /* by hand: d sum(W^) / d s_c = sum_i (clamp(B + h(V) + zp, 0, 7) - zp) */
    dfq_tensor_zero_grad (s);
    dfq_backward (dfq_sum (f.arena, scale_fn (f.arena, inputs, &c)), f.arena);
    dfq_set_grad_enabled (prev);
    const float *b = dfq_tensor_f32 (state_of (f.q, site, "w_base"));
    const float *zp = dfq_tensor_f32 (state_of (f.q, site, "w_zero_point"));
    gint64 n_ch = s->shape[0], inner = dfq_tensor_numel (v) / n_ch;
    for (gint64 ch = 0; ch < n_ch; ch++) {
        double want = 0.0;
        for (gint64 i = 0; i < inner; i++) {
            float t = b[ch * inner + i] + dfq_softbit_h (dfq_tensor_f32 (v)[ch * inner + i]) + zp[ch];
            want += fminf (fmaxf (t, 0.0f), 7.0f) - zp[ch];
        }
        g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (s->grad)[ch], want, 1e-3 * (1.0 + fabs (want)));
    }
    recon_clear (&f);
}

/* ------------------------------------------------------------ regulariser */

static double
hand_round_reg (Recon *f, const char *only_block, double beta)
{
    g_autoptr (GPtrArray) sites = weight_sites (f->student);
    double acc = 0.0;
    for (guint i = 0; i < sites->len; i++) {
        const char *block = dfq_quantizer_get_site_block (f->q, sites->pdata[i]);
        if (only_block != NULL && !g_str_equal (block, only_block))
            continue;
        DfqTensor *v = state_of (f->q, sites->pdata[i], "soft_bits");
        for (gint64 e = 0; e < dfq_tensor_numel (v); e++)
            acc += 1.0 - pow (fabs (2.0 * dfq_softbit_h (dfq_tensor_f32 (v)[e]) - 1.0), beta);
    }
    return acc;
}

static void
test_round_reg_schedule (void)
{
    g_test_summary ("The rounding regulariser is round_weight * sum(1 - |2h(V) - 1|^beta) over the active block's "
                    "soft bits, beta = beta_end + (beta_start - beta_end)(1 - progress): 20, 11, 2 at progress 0, 0.5, 1");
    Recon f;
    recon_setup (&f, "use: adaround\nw_bits: 3\na_bits: 3\nround_weight: 0.25\nbeta_start: 20\nbeta_end: 2\n");
    const double progress[] = { 0.0, 0.5, 1.0 }, beta[] = { 20.0, 11.0, 2.0 };
    const char *blocks[] = { NULL, "layers.4" };
    for (guint b = 0; b < G_N_ELEMENTS (blocks); b++) {
        dfq_quantizer_set_active_block (f.q, blocks[b]);
        for (guint k = 0; k < G_N_ELEMENTS (progress); k++) {
            DfqTensor *r = dfq_quantizer_regularizer (f.q, f.arena, progress[k]);
            double want = 0.25 * hand_round_reg (&f, blocks[b], beta[k]);
            g_assert_cmpfloat_with_epsilon (dfq_tensor_f32 (r)[0], want, 1e-4 * want);
        }
    }
    /* round_weight 0: no term */
    Recon g;
    recon_setup (&g, "use: adaround\nround_weight: 0\n");
    g_assert_null (dfq_quantizer_regularizer (g.q, g.arena, 0.5));
    recon_clear (&g);
    recon_clear (&f);
}

static void
test_active_groups (void)
{
    g_test_summary ("Parameter groups follow the active block: adaround has soft_bits and a_scales, genie-m also "
                    "w_scales (with their learning rates); with block layers.4 active every tensor belongs to it");
    for (guint k = 0; k < G_N_ELEMENTS (quantizers); k++) {
        Recon f;
        recon_setup (&f, quantizers[k]);
        /* activation steps are set on the first batch */
        DfqTensor *x = dfq_tensor_new_4d (f.arena, DFQ_DTYPE_F32, 2, 1, 28, 28);
        dfq_rand_normal_fill (x, 3, 0, 0.0f, 1.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, f.arena, FALSE);
        dfq_quantizer_hook (f.q, &fwd);
        dfq_quantizer_set_mode (f.q, DFQ_QUANT_MODE_CALIBRATE);
        dfq_model_forward (f.student, &fwd, x);
        for (int active = 0; active < 2; active++) {
            dfq_quantizer_set_active_block (f.q, active ? "layers.4" : NULL);
            GArray *groups = dfq_quantizer_get_param_groups (f.q);
            g_assert_cmpuint (groups->len, ==, k == 0 ? 2 : 3);
            guint n = 0;
            for (guint g = 0; g < groups->len; g++) {
                const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
                g_assert_cmpfloat (grp->lr, >, 0);
                for (guint i = 0; i < grp->params->len; i++, n++) {
                    const char *name = ((DfqTensor *) grp->params->pdata[i])->name;
                    if (active)
                        g_assert_true (g_str_has_prefix (name, "layers.4."));
                }
            }
            /* layers.4: conv1, conv2 and relu1, relu2 */
            if (active)
                g_assert_cmpuint (n, ==, k == 0 ? 4 : 6);
            else
                g_assert_cmpuint (n, >, 30);
            dfq_quant_param_groups_free (groups);
        }
        recon_clear (&f);
    }
}

static void
test_act_init (void)
{
    g_test_summary ("GENIE-M activations: signed (qn = -2^(k-1)) iff the first batch has negatives, else unsigned; "
                    "the step is the Lp-best of the clip grid (finite, positive)");
    Recon f;
    recon_setup (&f, "use: genie-m\nw_bits: 3\na_bits: 3\nfirst_last_bits: 0\n");
    const float lo[] = { -1.0f, 0.0f };
    const float qn[] = { -4.0f, 0.0f }, qp[] = { 3.0f, 7.0f };
    const char *sites[] = { "layers.2.relu1", "layers.2.relu2" };
    for (guint k = 0; k < 2; k++) {
        DfqTensor *x = dfq_tensor_new_4d (f.arena, DFQ_DTYPE_F32, 2, 8, 28, 28);
        dfq_rand_uniform_fill (x, 1, k, lo[k], 1.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, f.arena, FALSE);
        DFQ_QUANTIZER_CLASS (f.q)->quantize_act (f.q, &fwd, sites[k], x);
        const float *info = dfq_tensor_f32 (state_of (f.q, sites[k], "a_info"));
        float step = dfq_tensor_f32 (state_of (f.q, sites[k], "a_scale"))[0];
        g_assert_cmpfloat (info[0], ==, 1.0f);
        g_assert_cmpfloat (info[1], ==, qn[k]);
        g_assert_cmpfloat (info[2], ==, qp[k]);
        g_assert_true (isfinite (step) && step > 0.0f && step <= 2.0f / 7.0f + 1e-6f);
    }
    recon_clear (&f);
}

/* ------------------------------------------------------------ QDrop */

static void
test_qdrop (void)
{
    g_test_summary ("dfq_qdrop_mix: p = 0 gives x_q and p = 1 gives x, bit for bit; p = 0.5 takes each element from "
                    "one of them, about half from each, the same for the same seed and stream; the gradient of each "
                    "element goes to its source");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *xq = dfq_tensor_new_2d (a, DFQ_DTYPE_F32, 100, 100);
    DfqTensor *x = dfq_tensor_new_2d (a, DFQ_DTYPE_F32, 100, 100);
    dfq_rand_normal_fill (xq, 1, 1, 0.0f, 1.0f);
    dfq_rand_normal_fill (x, 1, 2, 5.0f, 1.0f);
    DfqTensor *m0 = dfq_qdrop_mix (a, xq, x, 0.0, 9, 4);
    DfqTensor *m1 = dfq_qdrop_mix (a, xq, x, 1.0, 9, 4);
    g_assert_cmpint (memcmp (dfq_tensor_f32 (m0), dfq_tensor_f32 (xq), 10000 * sizeof (float)), ==, 0);
    g_assert_cmpint (memcmp (dfq_tensor_f32 (m1), dfq_tensor_f32 (x), 10000 * sizeof (float)), ==, 0);
    dfq_tensor_set_param (xq);
    dfq_tensor_set_param (x);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqTensor *mh = dfq_qdrop_mix (a, xq, x, 0.5, 9, 4);
    DfqTensor *again = dfq_qdrop_mix (a, xq, x, 0.5, 9, 4);
    DfqTensor *r = dfq_tensor_new_like (a, mh);
    dfq_rand_normal_fill (r, 2, 2, 0.0f, 1.0f);
    dfq_backward (dfq_sum (a, dfq_mul (a, mh, r)), a);
    dfq_set_grad_enabled (prev);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (mh, again), ==, 0.0f);
    gint64 from_x = 0;
    for (gint64 i = 0; i < 10000; i++) {
        float v = dfq_tensor_f32 (mh)[i];
        gboolean is_x = v == dfq_tensor_f32 (x)[i];
        g_assert_true (is_x || v == dfq_tensor_f32 (xq)[i]);
        from_x += is_x;
        g_assert_cmpfloat (dfq_tensor_f32 (x->grad)[i], ==, is_x ? dfq_tensor_f32 (r)[i] : 0.0f);
        g_assert_cmpfloat (dfq_tensor_f32 (xq->grad)[i], ==, is_x ? 0.0f : dfq_tensor_f32 (r)[i]);
    }
    g_test_message ("%" G_GINT64_FORMAT " of 10000 from x", from_x);
    g_assert_cmpint (from_x, >, 4700);
    g_assert_cmpint (from_x, <, 5300);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    registry = dfq_test_registry_new ();
    g_test_add_func ("/reconstruct/soft-bits-init", test_soft_init);
    g_test_add_func ("/reconstruct/hard-on-grid", test_hard_on_grid);
    g_test_add_func ("/reconstruct/genie-scale-grad", test_genie_scale_grad);
    g_test_add_func ("/reconstruct/round-reg-schedule", test_round_reg_schedule);
    g_test_add_func ("/reconstruct/active-groups", test_active_groups);
    g_test_add_func ("/reconstruct/act-init", test_act_init);
    g_test_add_func ("/reconstruct/qdrop", test_qdrop);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
