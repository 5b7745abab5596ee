/* Tests of the optimisers and schedules (core/autograd/dfq-optim.c): steps
 * against PyTorch's update rules written out by hand in double, every schedule
 * against hand-computed values, exact save/restore of the state, and Adam
 * minimising a quadratic end to end through autograd. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"

#define N_STEPS 3
#define N_ELEM 3

static const double init_p[N_ELEM] = { 0.5, -1.0, 2.0 };
/* Fixed gradients, one row per step. */
static const double grads[N_STEPS][N_ELEM] = {
    { 0.3, -0.2, 0.5 },
    { -0.1, 0.4, 0.25 },
    { 0.6, -0.35, -0.05 },
};

/* torch.optim.SGD, by hand. */
static void
ref_sgd (double *p, double lr, double wd, double mom, double damp, gboolean nesterov)
{
    double buf[N_ELEM] = { 0 };
    for (int t = 0; t < N_STEPS; t++)
        for (int i = 0; i < N_ELEM; i++) {
            double d = grads[t][i] + wd * p[i];
            if (mom != 0.0) {
                buf[i] = t == 0 ? d : mom * buf[i] + (1.0 - damp) * d;
                d = nesterov ? d + mom * buf[i] : buf[i];
            }
            p[i] -= lr * d;
        }
}

/* torch.optim.Adam (amsgrad off), by hand. */
static void
ref_adam (double *p, double lr, double wd, double b1, double b2, double eps)
{
    double m[N_ELEM] = { 0 }, v[N_ELEM] = { 0 };
    for (int t = 1; t <= N_STEPS; t++)
        for (int i = 0; i < N_ELEM; i++) {
            double g = grads[t - 1][i] + wd * p[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double mhat = m[i] / (1.0 - pow (b1, t));
            double vhat = v[i] / (1.0 - pow (b2, t));
            p[i] -= lr * mhat / (sqrt (vhat) + eps);
        }
}

static DfqTensor *
optim_new_param (DfqArena *arena, const char *name, const double *values, int n)
{
    DfqTensor *p = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, n);
    for (int i = 0; i < n; i++)
        dfq_tensor_f32 (p)[i] = (float) values[i];
    dfq_tensor_set_name (p, "%s", name);
    dfq_tensor_set_param (p);
    return p;
}

/* Runs N_STEPS steps on one param (or two: the second through
 * dfq_optim_add_param_full) with the fixed gradients. */
static void
optim_run_fixed (const DfqOptimConfig *cfg, DfqTensor *a, DfqTensor *b, double b_wd, double b_lr_scale)
{
    g_autoptr (DfqOptim) opt = dfq_optim_new (cfg);
    g_assert_nonnull (opt);
    dfq_optim_add_param (opt, a);
    if (b != NULL)
        dfq_optim_add_param_full (opt, b, b_wd, b_lr_scale);
    for (int t = 0; t < N_STEPS; t++) {
        dfq_optim_zero_grad (opt);
        for (int i = 0; i < N_ELEM; i++) {
            dfq_tensor_f32 (a->grad)[i] = (float) grads[t][i];
            if (b != NULL)
                dfq_tensor_f32 (b->grad)[i] = (float) grads[t][i];
        }
        dfq_optim_step (opt);
    }
    g_assert_cmpint (dfq_optim_get_step (opt), ==, N_STEPS);
}

static void
assert_param_close (const DfqTensor *p, const double *want, double tol)
{
    for (int i = 0; i < N_ELEM; i++)
        if (!(fabs (dfq_tensor_f32 (p)[i] - want[i]) <= tol))
            g_test_fail_printf ("%s[%d] = %.9g, expected %.9g", p->name, i, dfq_tensor_f32 (p)[i], want[i]);
}

typedef struct {
    const char *name;
    DfqOptimKind kind;
    double lr, wd, momentum, dampening;
    gboolean nesterov;
} SgdCase;

static void
test_sgd_case (gconstpointer data)
{
    const SgdCase *c = data;
    g_test_summary ("3 SGD steps on fixed gradients match torch.optim.SGD's rule written out in double");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_SGD);
    cfg.lr = c->lr;
    cfg.weight_decay = c->wd;
    cfg.momentum = c->momentum;
    cfg.dampening = c->dampening;
    cfg.nesterov = c->nesterov;
    DfqTensor *a = optim_new_param (arena, "a", init_p, N_ELEM);
    optim_run_fixed (&cfg, a, NULL, 0, 0);
    double want[N_ELEM];
    memcpy (want, init_p, sizeof want);
    ref_sgd (want, c->lr, c->wd, c->momentum, c->dampening, c->nesterov);
    assert_param_close (a, want, 1e-6);
}

static const SgdCase sgd_cases[] = {
    { "/optim/sgd/plain", DFQ_OPTIM_SGD, 0.1, 0.0, 0.0, 0.0, FALSE },
    { "/optim/sgd/momentum", DFQ_OPTIM_SGD, 0.1, 0.0, 0.9, 0.0, FALSE },
    { "/optim/sgd/momentum-dampening", DFQ_OPTIM_SGD, 0.1, 0.0, 0.9, 0.3, FALSE },
    { "/optim/sgd/nesterov", DFQ_OPTIM_SGD, 0.1, 0.0, 0.9, 0.0, TRUE },
    { "/optim/sgd/weight-decay", DFQ_OPTIM_SGD, 0.1, 0.05, 0.0, 0.0, FALSE },
    /* GDFQ's student optimiser: SGD nesterov 0.9, weight decay 1e-4 */
    { "/optim/sgd/nesterov-weight-decay", DFQ_OPTIM_SGD, 0.1, 1e-2, 0.9, 0.0, TRUE },
};

static void
test_sgd_per_param (void)
{
    g_test_summary ("add_param_full overrides weight decay and scales the lr for one parameter only");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_SGD);
    cfg.lr = 0.1;
    cfg.weight_decay = 0.05;
    cfg.momentum = 0.9;
    DfqTensor *a = optim_new_param (arena, "a", init_p, N_ELEM);
    DfqTensor *b = optim_new_param (arena, "b", init_p, N_ELEM);
    optim_run_fixed (&cfg, a, b, 0.0, 2.0);
    double want_a[N_ELEM], want_b[N_ELEM];
    memcpy (want_a, init_p, sizeof want_a);
    memcpy (want_b, init_p, sizeof want_b);
    ref_sgd (want_a, 0.1, 0.05, 0.9, 0.0, FALSE);
    ref_sgd (want_b, 0.2, 0.0, 0.9, 0.0, FALSE);
    assert_param_close (a, want_a, 1e-6);
    assert_param_close (b, want_b, 1e-6);
}

static void
test_adam (gconstpointer data)
{
    double wd = *(const double *) data;
    g_test_summary ("3 Adam steps on fixed gradients match torch.optim.Adam's rule (bias correction) written out in double");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_ADAM);
    g_assert_cmpfloat (cfg.lr, ==, 1e-3);
    g_assert_cmpfloat (cfg.beta1, ==, 0.9);
    g_assert_cmpfloat (cfg.beta2, ==, 0.999);
    g_assert_cmpfloat (cfg.eps, ==, 1e-8);
    cfg.lr = 0.01;
    cfg.weight_decay = wd;
    DfqTensor *a = optim_new_param (arena, "a", init_p, N_ELEM);
    optim_run_fixed (&cfg, a, NULL, 0, 0);
    double want[N_ELEM];
    memcpy (want, init_p, sizeof want);
    ref_adam (want, 0.01, wd, 0.9, 0.999, 1e-8);
    assert_param_close (a, want, 1e-6);
    /* Sanity of the reference itself: Adam's first step moves each element by
     * about lr against the sign of its gradient. */
    g_assert_cmpfloat (fabs (want[0] - init_p[0]), >, 0.02);
}

static const double adam_wd_none = 0.0, adam_wd_some = 0.1;

static void
test_adam_per_param (void)
{
    g_test_summary ("Adam: per-parameter weight decay (L2 on the gradient, not AdamW) and lr scale");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_ADAM);
    cfg.lr = 0.01;
    cfg.weight_decay = 0.1;
    DfqTensor *a = optim_new_param (arena, "a", init_p, N_ELEM);
    DfqTensor *b = optim_new_param (arena, "b", init_p, N_ELEM);
    optim_run_fixed (&cfg, a, b, 0.0, 0.5);
    double want_a[N_ELEM], want_b[N_ELEM];
    memcpy (want_a, init_p, sizeof want_a);
    memcpy (want_b, init_p, sizeof want_b);
    ref_adam (want_a, 0.01, 0.1, 0.9, 0.999, 1e-8);
    ref_adam (want_b, 0.005, 0.0, 0.9, 0.999, 1e-8);
    assert_param_close (a, want_a, 1e-6);
    assert_param_close (b, want_b, 1e-6);
}

static void
test_schedule_constant (void)
{
    g_test_summary ("constant schedule: base_lr at every t");
    DfqSchedule s = { .kind = DFQ_SCHEDULE_CONSTANT, .base_lr = 0.1 };
    g_assert_cmpfloat (dfq_schedule_lr (&s, 0), ==, 0.1);
    g_assert_cmpfloat (dfq_schedule_lr (&s, 12345), ==, 0.1);
}

static void
test_schedule_multistep (void)
{
    g_test_summary ("multistep: base * gamma^(number of milestones m with t >= m)");
    DfqSchedule s = { .kind = DFQ_SCHEDULE_MULTISTEP, .base_lr = 0.1, .gamma = 0.1,
                      .milestones = { 3, 6 }, .n_milestones = 2 };
    const gint64 mt[] = { 0, 2, 3, 5, 6, 100 };
    const double mw[] = { 0.1, 0.1, 0.01, 0.01, 0.001, 0.001 };
    for (guint i = 0; i < G_N_ELEMENTS (mt); i++)
        g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, mt[i]), mw[i], 1e-15);
}

static void
test_schedule_cosine (void)
{
    g_test_summary ("cosine: min + (base - min)(1 + cos(pi t / total))/2, t clamped to total");
    DfqSchedule s = { .kind = DFQ_SCHEDULE_COSINE, .base_lr = 0.1, .min_lr = 0.001, .total = 10 };
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 0), 0.1, 1e-15);
    /* t = 2 of 10: cos(pi/5) = 0.8090169943749474 */
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 2), 0.0905463412215599, 1e-14);
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 5), 0.0505, 1e-15);
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 10), 0.001, 1e-15);
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 25), 0.001, 1e-15);
}

static void
test_schedule_exponential (void)
{
    g_test_summary ("exponential: base * gamma^t");
    DfqSchedule s = { .kind = DFQ_SCHEDULE_EXPONENTIAL, .base_lr = 0.01, .gamma = 0.95 };
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 0), 0.01, 1e-17);
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 1), 0.0095, 1e-17);
    g_assert_cmpfloat_with_epsilon (dfq_schedule_lr (&s, 3), 0.00857375, 1e-17);
}

static void
test_plateau (void)
{
    g_test_summary ("reduce-on-plateau (lr 1, patience 2, factor 0.5, min_lr 0.3): the 3rd step in a row "
                    "without a relative improvement of 1e-4 reduces; 9.9995 after 10 is no improvement, "
                    "9.998 is; min_lr floors the rate; NaN counts as no improvement");
    const struct {
        double loss;
        double lr;
        gboolean reduced;
        gint bad;
    } steps[] = {
        { 10.0, 1.0, FALSE, 0 },   { 10.0, 1.0, FALSE, 1 },   { 10.0, 1.0, FALSE, 2 },
        { 10.0, 0.5, TRUE, 0 },    /* patience 2 exceeded */
        { 9.9995, 0.5, FALSE, 1 }, /* not below 10 (1 - 1e-4) = 9.999 */
        { 9.998, 0.5, FALSE, 0 },  /* new best */
        { 9.998, 0.5, FALSE, 1 },  { 9.998, 0.5, FALSE, 2 },
        { 9.998, 0.3, TRUE, 0 },   /* max (0.25, 0.3) */
        { 9.998, 0.3, FALSE, 1 },  { 9.998, 0.3, FALSE, 2 },
        { 9.998, 0.3, FALSE, 0 },  /* max (0.15, 0.3) = 0.3: no change, count restarts */
        { NAN, 0.3, FALSE, 1 },    { 1.0, 0.3, FALSE, 0 },
    };
    DfqPlateauSchedule p;
    dfq_plateau_schedule_init (&p, 1.0, 2, 0.5, 0.3);
    g_assert_cmpfloat (p.lr, ==, 1.0);
    for (guint i = 0; i < G_N_ELEMENTS (steps); i++) {
        gboolean reduced = dfq_plateau_schedule_step (&p, steps[i].loss);
        g_assert_cmpint (reduced, ==, steps[i].reduced);
        g_assert_cmpfloat (p.lr, ==, steps[i].lr);
        g_assert_cmpint (p.bad, ==, steps[i].bad);
    }
    g_assert_cmpfloat (p.best, ==, 1.0);
}

static void
test_plateau_patience0_eps (void)
{
    g_test_summary ("patience 0 reduces on every step without improvement (1 -> 0.1 -> 0.01); a change "
                    "of 1e-8 or less is not made (1e-8 stays, 1.5e-8 -> 1.5e-9)");
    DfqPlateauSchedule p;
    dfq_plateau_schedule_init (&p, 1.0, 0, 0.1, 0.0);
    g_assert_false (dfq_plateau_schedule_step (&p, 5.0));
    g_assert_true (dfq_plateau_schedule_step (&p, 5.0));
    g_assert_cmpfloat (p.lr, ==, 1.0 * 0.1);
    g_assert_true (dfq_plateau_schedule_step (&p, 5.0));
    g_assert_cmpfloat (p.lr, ==, 1.0 * 0.1 * 0.1);
    dfq_plateau_schedule_init (&p, 1e-8, 0, 0.1, 0.0);
    dfq_plateau_schedule_step (&p, 5.0);
    g_assert_false (dfq_plateau_schedule_step (&p, 5.0));
    g_assert_cmpfloat (p.lr, ==, 1e-8);
    dfq_plateau_schedule_init (&p, 1.5e-8, 0, 0.1, 0.0);
    dfq_plateau_schedule_step (&p, 5.0);
    g_assert_true (dfq_plateau_schedule_step (&p, 5.0));
    g_assert_cmpfloat (p.lr, ==, 1.5e-8 * 0.1);
}

/* A deterministic gradient that depends on the parameter values:
 * g_i = (p_i - 0.1 i) (1 + 0.5 i). */
static void
optim_fill_grad (DfqTensor *p)
{
    for (gint64 i = 0; i < dfq_tensor_numel (p); i++)
        dfq_tensor_f32 (p->grad)[i] = (dfq_tensor_f32 (p)[i] - 0.1f * (float) i) * (1.0f + 0.5f * (float) i);
}

static void
optim_run_steps (DfqOptim *opt, DfqTensor **ps, int n_params, int n_steps)
{
    for (int s = 0; s < n_steps; s++) {
        dfq_optim_zero_grad (opt);
        for (int k = 0; k < n_params; k++)
            optim_fill_grad (ps[k]);
        dfq_optim_step (opt);
    }
}

static DfqOptim *
optim_new_two (const DfqOptimConfig *cfg, DfqTensor **ps)
{
    DfqOptim *opt = dfq_optim_new (cfg);
    dfq_optim_add_param (opt, ps[0]);
    dfq_optim_add_param_full (opt, ps[1], 0.0, 0.5);
    return opt;
}

static void
test_save_restore (gconstpointer data)
{
    DfqOptimKind kind = GPOINTER_TO_INT (data);
    g_test_summary ("5 steps, save state + step, 5 more (A) == restore into a fresh optimiser, 5 steps (B), bit for bit");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, kind);
    if (kind == DFQ_OPTIM_SGD) {
        cfg.lr = 0.05;
        cfg.momentum = 0.9;
        cfg.nesterov = TRUE;
        cfg.weight_decay = 1e-2;
    } else {
        cfg.lr = 0.02;
        cfg.weight_decay = 1e-2;
    }
    const double v0[7] = { 0.3, -0.7, 1.1, 0.05, -1.4, 0.9, 2.0 };
    DfqTensor *ps[2] = { optim_new_param (arena, "w", v0, 7), optim_new_param (arena, "layer.b", v0, 5) };
    g_autoptr (DfqOptim) opt = optim_new_two (&cfg, ps);
    optim_run_steps (opt, ps, 2, 5);

    /* Save: step, state buffers, parameter values. */
    gint64 saved_step = dfq_optim_get_step (opt);
    g_assert_cmpint (saved_step, ==, 5);
    g_autoptr (GPtrArray) state = dfq_optim_get_state (opt);
    g_assert_cmpuint (state->len, ==, kind == DFQ_OPTIM_SGD ? 2 : 4);
    if (kind == DFQ_OPTIM_SGD) {
        g_assert_cmpstr (((DfqTensor *) state->pdata[0])->name, ==, "w.momentum_buffer");
        g_assert_cmpstr (((DfqTensor *) state->pdata[1])->name, ==, "layer.b.momentum_buffer");
    } else {
        g_assert_cmpstr (((DfqTensor *) state->pdata[0])->name, ==, "w.exp_avg");
        g_assert_cmpstr (((DfqTensor *) state->pdata[1])->name, ==, "w.exp_avg_sq");
        g_assert_cmpstr (((DfqTensor *) state->pdata[2])->name, ==, "layer.b.exp_avg");
        g_assert_cmpstr (((DfqTensor *) state->pdata[3])->name, ==, "layer.b.exp_avg_sq");
    }
    DfqTensor *saved_state[4] = { NULL };
    for (guint i = 0; i < state->len; i++)
        saved_state[i] = dfq_tensor_dup (arena, state->pdata[i]);
    DfqTensor *saved_p[2] = { dfq_tensor_dup (arena, ps[0]), dfq_tensor_dup (arena, ps[1]) };

    optim_run_steps (opt, ps, 2, 5); /* -> A */

    /* Restore into a fresh optimiser over the same parameter values. */
    DfqTensor *qs[2] = { dfq_tensor_dup (arena, saved_p[0]), dfq_tensor_dup (arena, saved_p[1]) };
    dfq_tensor_set_param (qs[0]);
    dfq_tensor_set_param (qs[1]);
    g_autoptr (DfqOptim) fresh = optim_new_two (&cfg, qs);
    g_autoptr (GPtrArray) fresh_state = dfq_optim_get_state (fresh);
    g_assert_cmpuint (fresh_state->len, ==, state->len);
    for (guint i = 0; i < fresh_state->len; i++) {
        DfqTensor *t = fresh_state->pdata[i];
        g_assert_cmpstr (t->name, ==, saved_state[i]->name);
        dfq_tensor_copy_data (t, saved_state[i]);
    }
    dfq_optim_set_step (fresh, saved_step);
    optim_run_steps (fresh, qs, 2, 5); /* -> B */

    g_assert_cmpint (dfq_optim_get_step (fresh), ==, dfq_optim_get_step (opt));
    for (int k = 0; k < 2; k++)
        g_assert_cmpmem (ps[k]->data, dfq_tensor_numel (ps[k]) * sizeof (float),
                         qs[k]->data, dfq_tensor_numel (qs[k]) * sizeof (float));
    for (guint i = 0; i < state->len; i++) {
        DfqTensor *a = state->pdata[i], *b = fresh_state->pdata[i];
        g_assert_cmpmem (a->data, dfq_tensor_numel (a) * sizeof (float), b->data, dfq_tensor_numel (b) * sizeof (float));
    }
}

static void
test_sgd_no_momentum_no_state (void)
{
    g_test_summary ("SGD without momentum keeps no state (as PyTorch); lr and step accessors");
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_SGD);
    g_assert_cmpfloat (cfg.lr, ==, 0.01);
    g_autoptr (DfqOptim) opt = dfq_optim_new (&cfg);
    dfq_optim_add_param (opt, optim_new_param (arena, "a", init_p, N_ELEM));
    g_assert_cmpuint (dfq_optim_n_params (opt), ==, 1);
    g_autoptr (GPtrArray) state = dfq_optim_get_state (opt);
    g_assert_cmpuint (state->len, ==, 0);
    dfq_optim_set_lr (opt, 0.25);
    g_assert_cmpfloat (dfq_optim_get_lr (opt), ==, 0.25);
    dfq_optim_step (opt);
    g_assert_cmpint (dfq_optim_get_step (opt), ==, 1);
}

static void
test_adam_quadratic (void)
{
    g_test_summary ("Adam minimises sum((p - t)^2), gradients from autograd through sub and mul");
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *p = dfq_tensor_new_1d (params, DFQ_DTYPE_F32, 8);
    DfqTensor *t = dfq_tensor_new_1d (params, DFQ_DTYPE_F32, 8);
    dfq_rand_normal_fill (p, 40, 0, 0.0f, 1.0f);
    dfq_rand_normal_fill (t, 41, 0, 0.0f, 1.0f);
    dfq_tensor_set_name (p, "p");
    dfq_tensor_set_param (p);
    DfqTensor *ones = dfq_tensor_new_like (params, p);
    dfq_tensor_fill (ones, 1.0f);
    float start = dfq_tensor_max_abs_diff (p, t);
    g_assert_cmpfloat (start, >, 0.5f);

    DfqOptimConfig cfg;
    dfq_optim_config_init (&cfg, DFQ_OPTIM_ADAM);
    cfg.lr = 0.05;
    g_autoptr (DfqOptim) opt = dfq_optim_new (&cfg);
    dfq_optim_add_param (opt, p);
    for (int it = 0; it < 400; it++) {
        dfq_arena_reset (scratch);
        dfq_optim_zero_grad (opt);
        DfqTensor *d = dfq_sub (scratch, p, t);
        DfqTensor *sq = dfq_mul (scratch, d, d);
        dfq_backward_with_grad (sq, ones, scratch);
        dfq_optim_step (opt);
    }
    float end = dfq_tensor_max_abs_diff (p, t);
    g_test_message ("max |p - t|: %g -> %g", start, end);
    g_assert_cmpfloat (end, <, 1e-2f);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    for (guint i = 0; i < G_N_ELEMENTS (sgd_cases); i++)
        g_test_add_data_func (sgd_cases[i].name, &sgd_cases[i], test_sgd_case);
    g_test_add_func ("/optim/sgd/per-param", test_sgd_per_param);
    g_test_add_func ("/optim/sgd/no-momentum-no-state", test_sgd_no_momentum_no_state);
    g_test_add_data_func ("/optim/adam/plain", &adam_wd_none, test_adam);
    g_test_add_data_func ("/optim/adam/weight-decay", &adam_wd_some, test_adam);
    g_test_add_func ("/optim/adam/per-param", test_adam_per_param);
    g_test_add_func ("/optim/adam/quadratic", test_adam_quadratic);
    g_test_add_func ("/optim/schedule/constant", test_schedule_constant);
    g_test_add_func ("/optim/schedule/multistep", test_schedule_multistep);
    g_test_add_func ("/optim/schedule/cosine", test_schedule_cosine);
    g_test_add_func ("/optim/schedule/exponential", test_schedule_exponential);
    g_test_add_func ("/optim/schedule/plateau", test_plateau);
    g_test_add_func ("/optim/schedule/plateau-patience0-eps", test_plateau_patience0_eps);
    g_test_add_data_func ("/optim/state/save-restore-sgd", GINT_TO_POINTER (DFQ_OPTIM_SGD), test_save_restore);
    g_test_add_data_func ("/optim/state/save-restore-adam", GINT_TO_POINTER (DFQ_OPTIM_ADAM), test_save_restore);
    return g_test_run ();
}
