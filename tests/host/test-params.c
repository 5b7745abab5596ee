/* Parameters as data: scalar resolution, binding of every param type from YAML
 * into a struct (values, defaults, features by `use:`, weights, nested
 * structs, paths), every error with its code and file:line:col, checks and
 * init hooks, the optimizer block, and struct -> YAML -> struct round trips. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include "params/dfq-params-private.h"
#include "host-test-features.h"

typedef struct {
    DfqRegistry *registry;
} ParamsFixture;

static void
params_setup (ParamsFixture *f, gconstpointer data)
{
    f->registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (host_test_register_features (f->registry, &error));
    g_assert_no_error (error);
}

static void
params_teardown (ParamsFixture *f, gconstpointer data)
{
    dfq_registry_free (f->registry);
    g_assert_cmpint (toy_gen_alive, ==, 0);
}

/* Scalars ------------------------------------------------------------------------ */

static void
test_scalar_int (void)
{
    g_test_summary ("Integers: decimal, exact floats like 1e3; overflow and fractions are told apart");
    static const struct {
        const char *text;
        DfqPrivNumStatus status;
        gint value;
    } cases[] = {
        { "32", DFQ_PRIV_NUM_OK, 32 },
        { "-5", DFQ_PRIV_NUM_OK, -5 },
        { "+7", DFQ_PRIV_NUM_OK, 7 },
        { "1e3", DFQ_PRIV_NUM_OK, 1000 },
        { "100.0", DFQ_PRIV_NUM_OK, 100 },
        { "2147483647", DFQ_PRIV_NUM_OK, G_MAXINT },
        { "-2147483648", DFQ_PRIV_NUM_OK, G_MININT },
        { "2147483648", DFQ_PRIV_NUM_RANGE, 0 },
        { "99999999999999999999999", DFQ_PRIV_NUM_RANGE, 0 },
        { "1e10", DFQ_PRIV_NUM_RANGE, 0 },
        { "1.5", DFQ_PRIV_NUM_FRACTION, 0 },
        { ".5", DFQ_PRIV_NUM_FRACTION, 0 },
        { "abc", DFQ_PRIV_NUM_INVALID, 0 },
        { "0x10", DFQ_PRIV_NUM_INVALID, 0 },
        { " 1", DFQ_PRIV_NUM_INVALID, 0 },
        { "", DFQ_PRIV_NUM_INVALID, 0 },
        { "1e", DFQ_PRIV_NUM_INVALID, 0 },
        { "--1", DFQ_PRIV_NUM_INVALID, 0 },
        { "1_000", DFQ_PRIV_NUM_INVALID, 0 },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        gint v = 0;
        DfqPrivNumStatus s = dfq_priv_parse_int (cases[i].text, &v);
        g_test_message ("'%s' -> %d", cases[i].text, s);
        g_assert_cmpint (s, ==, cases[i].status);
        if (s == DFQ_PRIV_NUM_OK)
            g_assert_cmpint (v, ==, cases[i].value);
    }
}

static void
test_scalar_double (void)
{
    g_test_summary ("Doubles: YAML core-schema decimals only; inf/nan/hex refused; overflow is RANGE");
    static const struct {
        const char *text;
        DfqPrivNumStatus status;
        gdouble value;
    } cases[] = {
        { "1e-3", DFQ_PRIV_NUM_OK, 1e-3 },  { ".5", DFQ_PRIV_NUM_OK, 0.5 },   { "-0.25", DFQ_PRIV_NUM_OK, -0.25 },
        { "3", DFQ_PRIV_NUM_OK, 3.0 },      { "5.", DFQ_PRIV_NUM_OK, 5.0 },   { "1E+2", DFQ_PRIV_NUM_OK, 100.0 },
        { "1e999", DFQ_PRIV_NUM_RANGE, 0 }, { "nan", DFQ_PRIV_NUM_INVALID, 0 }, { ".inf", DFQ_PRIV_NUM_INVALID, 0 },
        { "inf", DFQ_PRIV_NUM_INVALID, 0 }, { "0x1p3", DFQ_PRIV_NUM_INVALID, 0 }, { ".", DFQ_PRIV_NUM_INVALID, 0 },
        { "1.2.3", DFQ_PRIV_NUM_INVALID, 0 },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        gdouble v = 0;
        DfqPrivNumStatus s = dfq_priv_parse_double (cases[i].text, &v);
        g_assert_cmpint (s, ==, cases[i].status);
        if (s == DFQ_PRIV_NUM_OK)
            g_assert_cmpfloat (v, ==, cases[i].value);
    }
}

static void
test_scalar_misc (void)
{
    g_test_summary ("Booleans, nulls, strings that would read as other types, shortest exact doubles");
    gboolean b = FALSE;
    g_assert_true (dfq_priv_parse_bool ("true", &b) && b);
    g_assert_true (dfq_priv_parse_bool ("FALSE", &b) && !b);
    g_assert_false (dfq_priv_parse_bool ("yes", &b));
    g_assert_false (dfq_priv_parse_bool ("1", &b));
    g_assert_true (dfq_priv_scalar_is_null ("~"));
    g_assert_true (dfq_priv_scalar_is_null (""));
    g_assert_true (dfq_priv_scalar_is_null ("Null"));
    g_assert_false (dfq_priv_scalar_is_null ("none"));
    const char *typed[] = { "true", "1", "1e3", "null", "yes", "off", ".inf", "0x1F" };
    for (guint i = 0; i < G_N_ELEMENTS (typed); i++)
        g_assert_true (dfq_priv_scalar_looks_typed (typed[i]));
    g_assert_false (dfq_priv_scalar_looks_typed ("adam"));
    g_assert_false (dfq_priv_scalar_looks_typed ("1.2.3"));

    const gdouble values[] = { 0.1, 1e-3, 1e-8, 1.0, 0.0, -2.5, 1.0 / 3.0, 123456789.123, 5e-324, 1.7976931348623157e308 };
    for (guint i = 0; i < G_N_ELEMENTS (values); i++) {
        g_autofree char *text = dfq_priv_format_double (values[i]);
        gdouble back = 0;
        g_assert_cmpint (dfq_priv_parse_double (text, &back), ==, DFQ_PRIV_NUM_OK);
        g_assert_cmpfloat (back, ==, values[i]);
        g_assert_nonnull (strpbrk (text, ".e"));
    }
    g_autofree char *tenth = dfq_priv_format_double (0.1);
    g_assert_cmpstr (tenth, ==, "0.1");
    g_autofree char *one = dfq_priv_format_double (1.0);
    g_assert_cmpstr (one, ==, "1.0");
}

static void
test_messages (void)
{
    g_test_summary ("Quoting user text escapes control characters and truncates; near misses are suggested");
    g_autofree char *q = dfq_priv_quote ("a\tb\x01");
    g_assert_cmpstr (q, ==, "'a\\x09b\\x01'");
    g_autofree char *utf8 = dfq_priv_quote ("caf\xc3\xa9");
    g_assert_cmpstr (utf8, ==, "'caf\xc3\xa9'");
    g_autofree char *bad = dfq_priv_quote ("\xff");
    g_assert_cmpstr (bad, ==, "'\\xff'");
    g_autofree char *long_text = g_strnfill (200, 'x');
    g_autofree char *cut = dfq_priv_quote (long_text);
    g_assert_true (g_str_has_suffix (cut, "...'"));
    g_assert_cmpuint (strlen (cut), ==, 60 + 5);

    const char *known[] = { "batch", "iters", "lr" };
    g_assert_cmpstr (dfq_priv_suggest ("itres", known, 3), ==, "iters");
    g_assert_cmpstr (dfq_priv_suggest ("bacth", known, 3), ==, "batch");
    g_assert_cmpstr (dfq_priv_suggest ("lrr", known, 3), ==, "lr");
    g_assert_null (dfq_priv_suggest ("momentum", known, 3));
    g_assert_null (dfq_priv_suggest ("lr", known, 3)); /* exact: nothing to suggest */
    g_assert_null (dfq_priv_suggest ("", known, 3));

    g_assert_cmpstr (dfq_param_type_name (DFQ_PARAM_TYPE_FEATURE_LIST), ==, "feature-list");
    g_assert_cmpstr (dfq_feature_kind_name (DFQ_FEATURE_QUANTIZER), ==, "quantizer");
    DfqFeatureKind kind = DFQ_FEATURE_MODEL;
    g_assert_true (dfq_feature_kind_from_name ("loss", &kind));
    g_assert_cmpint (kind, ==, DFQ_FEATURE_LOSS);
    g_assert_false (dfq_feature_kind_from_name ("losses", &kind));
}

/* Binding ---------------------------------------------------------------------------- */

static DfqFeature *
bind_everything (DfqRegistry *registry, const char *text, GError **error)
{
    g_autoptr (DfqConfigNode) node = dfq_config_parse (text, -1, "dir/t.yaml", error);
    if (node == NULL)
        return NULL;
    return dfq_feature_new_from_config (registry, &toy_everything_class, node, FALSE, "toy-everything", error);
}

static void
test_bind_every_type (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("Every param type binds from YAML into the instance struct at its offset");
    const char *text = "i: -3\n"
                       "d: 0.25\n"
                       "b: true\n"
                       "s: 'quoted: yes'\n"
                       "e: exact\n"
                       "il: [1, 2, 1e1]\n"
                       "dl: [0.5, -1e-3]\n"
                       "f: {use: toy-kd, temperature: 3}\n"
                       "fl: [toy-ce, {use: toy-kd, weight: 2, temperature: 8}]\n"
                       "inner: {level: 3}\n"
                       "sl: [p, 'q r']\n"
                       "path: sub/file.bin\n";
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) feature = bind_everything (f->registry, text, &error);
    g_assert_no_error (error);
    ToyEverything *t = (ToyEverything *) feature;
    g_assert_cmpint (t->i, ==, -3);
    g_assert_cmpfloat (t->d, ==, 0.25);
    g_assert_true (t->b);
    g_assert_cmpstr (t->s, ==, "quoted: yes");
    g_assert_cmpint (t->e, ==, 2);
    g_assert_cmpuint (t->il.n, ==, 3);
    g_assert_cmpfloat (t->il.v[2], ==, 10);
    g_assert_cmpuint (t->dl.n, ==, 2);
    g_assert_cmpfloat (t->dl.v[1], ==, -1e-3);
    g_assert_cmpstr (t->f->klass->name, ==, "toy-kd");
    g_assert_cmpfloat (((ToyKd *) t->f)->temperature, ==, 3);
    g_assert_cmpstr (t->f->label, ==, "toy-everything.f (toy-kd)");
    g_assert_cmpuint (t->fl->len, ==, 2);
    g_assert_cmpfloat (((DfqFeature *) t->fl->pdata[0])->weight, ==, 1);
    g_assert_cmpfloat (((DfqFeature *) t->fl->pdata[1])->weight, ==, 2);
    g_assert_cmpfloat (((ToyKd *) t->fl->pdata[1])->temperature, ==, 8);
    g_assert_cmpint (((ToyCe *) t->fl->pdata[0])->target, ==, 1);
    g_assert_cmpint (t->inner.level, ==, 3);
    g_assert_cmpuint (t->inner.sizes.n, ==, 2); /* its default */
    g_assert_cmpstr (t->sl[1], ==, "q r");
    g_assert_null (t->sl[2]);
    /* A PATH param is relative to the file that sets it. */
    g_autofree char *expected = g_canonicalize_filename ("dir/sub/file.bin", NULL);
    g_assert_cmpstr (t->path, ==, expected);
}

static void
test_bind_defaults (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("Absent params take their default, parsed from its YAML text by the same binder");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) feature = bind_everything (f->registry, "{}", &error);
    g_assert_no_error (error);
    ToyEverything *t = (ToyEverything *) feature;
    g_assert_cmpint (t->i, ==, 0);
    g_assert_cmpfloat (t->d, ==, 0.5);
    g_assert_false (t->b);
    g_assert_cmpstr (t->s, ==, "hello");
    g_assert_cmpint (t->e, ==, 1);
    g_assert_cmpuint (t->il.n, ==, 3);
    g_assert_cmpfloat (t->il.v[1], ==, 30);
    g_assert_cmpuint (t->dl.n, ==, 0);
    g_assert_cmpstr (t->f->klass->name, ==, "toy-kd");
    g_assert_cmpfloat (((ToyKd *) t->f)->temperature, ==, 4);
    g_assert_nonnull (t->fl);
    g_assert_cmpuint (t->fl->len, ==, 0);
    g_assert_cmpint (t->inner.level, ==, 1);
    g_assert_cmpstr (t->sl[0], ==, "a");
    g_assert_null (t->path);

    /* A NULL node is the same as an empty mapping; null values of nullable
     * params clear them. */
    g_autoptr (DfqFeature) same = dfq_feature_new_from_config (f->registry, &toy_everything_class, NULL, FALSE,
                                                               NULL, &error);
    g_assert_no_error (error);
    g_autoptr (DfqFeature) cleared = bind_everything (f->registry, "s: null\nf: ~\nsl: []\nfl:\n", &error);
    g_assert_no_error (error);
    t = (ToyEverything *) cleared;
    g_assert_null (t->s);
    g_assert_null (t->f);
    g_assert_null (t->sl);
    g_assert_cmpuint (t->fl->len, ==, 0);
}

typedef struct {
    const char *text;
    DfqPipelineError code;
    guint line, column;
    const char *message;
} BindErrorCase;

static const BindErrorCase bind_error_cases[] = {
    { "i: 6", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "toy-everything.i: '6' is out of range (-5 .. 5)" },
    { "i: x", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected an integer, got 'x'" },
    { "i: '3'", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected an integer, got the string '3'" },
    { "i: 1.5", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected an integer, got '1.5'" },
    { "i: 99999999999", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "too large for an integer" },
    { "i:", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 3, "expected an integer, got null" },
    { "d: 1e400", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "too large for a double" },
    { "d: [1]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected a number, got a list" },
    { "d: .nan", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected a number" },
    { "b: yes", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected true or false, got 'yes'" },
    { "s: {a: 1}", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected a string, got a mapping" },
    { "e: fsat", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "invalid value 'fsat' (valid: fast, slow, exact); did you mean 'fast'?" },
    { "e: [fast]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected one of fast, slow, exact, got a list" },
    { "il: 5", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 5, "expected a list like [15, 30], got '5'" },
    { "il: [1, 200]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 9, "toy-everything.il[1]: '200' is out of range (0 .. 100)" },
    { "il: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 5,
      "17 values, at most 16" },
    { "dl: [a]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 6, "dl[0]: expected a number, got 'a'" },
    { "sl: [[a]]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 6, "sl[0]: expected a string, got a list" },
    { "sl: x", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 5, "expected a list of strings" },
    { "f: {temperature: 3}", DFQ_PIPELINE_ERROR_MISSING_PARAM, 1, 4, "missing 'use:' naming the loss (known: toy-ce, toy-kd)" },
    { "f: {use: toy-kdd}", DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE, 1, 10, "unknown loss 'toy-kdd' (known: toy-ce, toy-kd); did you mean 'toy-kd'?" },
    { "f: {use: [a]}", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 10, "f.use: expected a loss name, got a list" },
    { "f: zeroq", DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE, 1, 4, "'zeroq' is a synthesizer, not a loss" },
    { "f: {use: toy-kd, weight: 2}", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, 1, 18, "only items of a feature list" },
    { "f: {use: toy-kd, temprature: 2}", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, 1, 18,
      "unknown parameter 'temprature' for loss 'toy-kd' (known: temperature); did you mean 'temperature'?" },
    { "f: {use: toy-kd, temperature: 0}", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 31, "toy-everything.f.temperature: '0' is out of range (0.1 .. 100)" },
    { "f: [toy-kd]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 4, "expected a loss (a name, or a mapping with 'use:'), got a list" },
    { "fl: toy-kd", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 5, "expected a list of loss features" },
    { "fl: [~]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 6, "fl[0]: expected a loss, got null" },
    { "fl: [{use: toy-kd, weight: heavy}]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 28, "fl[0].weight: expected a number, got 'heavy'" },
    { "fl:\n  - toy-ce\n  - use: nope", DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE, 3, 10, "toy-everything.fl[1]: unknown loss 'nope'" },
    { "inner: 3", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 8, "toy-everything.inner: expected a mapping (keys: level, sizes), got '3'" },
    { "inner:\n  levle: 2", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, 2, 3,
      "unknown parameter 'levle' in 'toy-everything.inner' (known: level, sizes); did you mean 'level'?" },
    { "itres: 3", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, 1, 1, "unknown parameter 'itres' for transform 'toy-everything' (known: i, d, b" },
    { "[1, 2]", DFQ_PIPELINE_ERROR_BAD_VALUE, 1, 1, "expected a mapping, got a list" },
};

static void
test_bind_errors (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("Each binding error has its code, file:line:col of the offending node, the key and "
                    "what would have been valid");
    for (guint i = 0; i < G_N_ELEMENTS (bind_error_cases); i++) {
        const BindErrorCase *c = &bind_error_cases[i];
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqFeature) feature = bind_everything (f->registry, c->text, &error);
        g_test_message ("%s -> %s", c->text, error != NULL ? error->message : "(no error)");
        g_assert_null (feature);
        g_assert_error (error, DFQ_PIPELINE_ERROR, (gint) c->code);
        g_autofree char *where = g_strdup_printf ("dir/t.yaml:%u:%u: ", c->line, c->column);
        g_assert_true (g_str_has_prefix (error->message, where));
        g_assert_nonnull (strstr (error->message, c->message));
    }
}

static void
test_bind_init (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("A feature's init() runs after binding; its failure is INIT_FAILED (or its own "
                    "pipeline code) at the feature's mark, and nothing leaks");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqConfigNode) node = dfq_config_parse ("\n  latent: 13\n", -1, "g.yaml", &error);
    g_assert_null (dfq_feature_new_from_config (f->registry, &toy_gen_class, node, FALSE, "synthesizer", &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_INIT_FAILED);
    g_assert_cmpstr (error->message, ==, "g.yaml:2:3: synthesizer toy-gen: latent 13 brings bad luck");
    g_assert_cmpint (toy_gen_alive, ==, 0);
    g_clear_error (&error);

    g_autoptr (DfqConfigNode) quant = dfq_config_parse ("{w_bits: 8, a_bits: 2}", -1, "q.yaml", &error);
    g_assert_null (dfq_feature_new_from_config (f->registry, &toy_quant_class, quant, FALSE, "q", &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
    g_assert_nonnull (strstr (error->message, "may exceed a_bits (2) by at most 4"));
}

static void
test_bind_struct_default (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("A STRUCT default (the plugin's optimizer defaults) sits under what the YAML writes");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqConfigNode) node = dfq_config_parse ("optimizer: {lr: 0.5, milestones: [3, 5]}", -1, "g.yaml", &error);
    g_autoptr (DfqFeature) feature = dfq_feature_new_from_config (f->registry, &toy_gen_class, node, FALSE, "gen", &error);
    g_assert_no_error (error);
    ToyGen *gen = (ToyGen *) feature;
    g_assert_cmpint (gen->optimizer.use, ==, DFQ_OPTIM_ADAM);
    g_assert_cmpfloat (gen->optimizer.lr, ==, 0.5);
    g_assert_cmpfloat (gen->optimizer.betas.v[0], ==, 0.5);
    g_assert_cmpuint (gen->optimizer.milestones.n, ==, 2);
    g_assert_cmpfloat (gen->optimizer.eps, ==, 1e-8);
}

typedef struct {
    gint n;
    gint even;
    char *name;
} Plain;

static gboolean
check_even (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    if (*(const gint *) value % 2 == 0)
        return TRUE;
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "must be even, not %d", *(const gint *) value);
    return FALSE;
}

static const DfqParamSpec plain_specs[] = {
    DFQ_PARAM_INT_REQUIRED (Plain, n, "A required number", 0, 10),
    DFQ_PARAM_INT (Plain, even, "An even number", 0, 100, 2, .check = check_even),
    DFQ_PARAM_STRING (Plain, name, "A name", NULL),
};

static void
test_bind_required_and_check (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("dfq_params_bind on a plain struct: REQUIRED params, check hooks, dfq_params_clear");
    struct {
        const char *text;
        DfqPipelineError code;
        const char *message;
    } cases[] = {
        { "even: 4", DFQ_PIPELINE_ERROR_MISSING_PARAM, "p.yaml:1:1: missing required parameter 'n' in 'block' (int: A required number)" },
        { "n: ~", DFQ_PIPELINE_ERROR_MISSING_PARAM, "p.yaml:1:4: block.n: required, cannot be null" },
        { "n: 1\neven: 3", DFQ_PIPELINE_ERROR_BAD_VALUE, "p.yaml:2:7: block.even: must be even, not 3" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        Plain plain = { 0 };
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqConfigNode) node = dfq_config_parse (cases[i].text, -1, "p.yaml", &error);
        g_assert_false (dfq_params_bind (f->registry, plain_specs, G_N_ELEMENTS (plain_specs), &plain, node,
                                         "in 'block'", "block", &error));
        g_assert_error (error, DFQ_PIPELINE_ERROR, (gint) cases[i].code);
        g_assert_cmpstr (error->message, ==, cases[i].message);
        dfq_params_clear (plain_specs, G_N_ELEMENTS (plain_specs), &plain);
    }
    Plain plain = { 0 };
    g_autoptr (DfqConfigNode) node = dfq_config_parse ("n: 3\nname: x", -1, "p.yaml", NULL);
    g_assert_true (dfq_params_bind (f->registry, plain_specs, G_N_ELEMENTS (plain_specs), &plain, node, "", NULL, NULL));
    g_assert_cmpint (plain.n, ==, 3);
    g_assert_cmpint (plain.even, ==, 2);
    g_assert_cmpstr (plain.name, ==, "x");
    dfq_params_clear (plain_specs, G_N_ELEMENTS (plain_specs), &plain);
    g_assert_null (plain.name);
    dfq_params_clear (plain_specs, G_N_ELEMENTS (plain_specs), &plain);
    g_assert_true (dfq_param_spec_find (plain_specs, G_N_ELEMENTS (plain_specs), "even") == &plain_specs[1]);
    g_assert_null (dfq_param_spec_find (plain_specs, G_N_ELEMENTS (plain_specs), "odd"));
}

/* The optimizer block --------------------------------------------------------------- */

static void
test_optim (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("optimizer: cross-field checks, and conversion to DfqOptimConfig + DfqSchedule");
    struct {
        const char *text;
        const char *message;
    } bad[] = {
        { "{nesterov: true}", "nesterov: true needs momentum > 0" },
        { "{betas: [0.9]}", "betas: expected two values" },
        { "{betas: [0.9, 1]}", "betas: expected two values in [0, 1)" },
        { "{milestones: [30, 15]}", "milestones: must be strictly ascending" },
        { "{use: adamw}", "did you mean 'adam'?" },
        { "{lr: -1}", "out of range (0 .. 10)" },
    };
    typedef struct {
        DfqOptimParams optimizer;
    } Holder;
    static const DfqParamSpec holder_specs[] = { DFQ_PARAM_OPTIMIZER (Holder, optimizer, "Optimiser") };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        Holder h = { { 0 } };
        g_autoptr (GError) error = NULL;
        g_autofree char *text = g_strdup_printf ("optimizer: %s", bad[i].text);
        g_autoptr (DfqConfigNode) node = dfq_config_parse (text, -1, "o.yaml", NULL);
        g_assert_false (dfq_params_bind (f->registry, holder_specs, 1, &h, node, "", NULL, &error));
        g_test_message ("%s", error->message);
        g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
        g_assert_nonnull (strstr (error->message, bad[i].message));
    }

    Holder h = { { 0 } };
    g_autoptr (DfqConfigNode) node = dfq_config_parse (
        "optimizer: {use: adam, lr: 0.01, betas: [0.5, 0.99], eps: 1e-6, weight_decay: 1e-4, "
        "schedule: cosine, min_lr: 1e-5, milestones: [2, 4]}",
        -1, "o.yaml", NULL);
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_params_bind (f->registry, holder_specs, 1, &h, node, "", NULL, &error));
    DfqOptimConfig config;
    DfqSchedule schedule;
    dfq_optim_params_to_config (&h.optimizer, 40, &config, &schedule);
    g_assert_cmpint (config.kind, ==, DFQ_OPTIM_ADAM);
    g_assert_cmpfloat (config.lr, ==, 0.01);
    g_assert_cmpfloat (config.beta1, ==, 0.5);
    g_assert_cmpfloat (config.beta2, ==, 0.99);
    g_assert_cmpfloat (config.eps, ==, 1e-6);
    g_assert_cmpfloat (config.weight_decay, ==, 1e-4);
    g_assert_cmpint (schedule.kind, ==, DFQ_SCHEDULE_COSINE);
    g_assert_cmpfloat (schedule.base_lr, ==, 0.01);
    g_assert_cmpfloat (schedule.min_lr, ==, 1e-5);
    g_assert_cmpint (schedule.total, ==, 40);
    g_assert_cmpint (schedule.n_milestones, ==, 2);
    g_assert_cmpint (schedule.milestones[1], ==, 4);
    g_assert_cmpfloat (dfq_schedule_lr (&schedule, 0), ==, 0.01);
}

/* Round trip ------------------------------------------------------------------------- */

static void
test_round_trip (ParamsFixture *f, gconstpointer data)
{
    g_test_summary ("struct -> tree -> YAML -> tree -> struct gives the same YAML again");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) feature =
        bind_everything (f->registry,
                         "{i: 2, d: 0.1, s: 'true', sl: ['1', 'null', '', 'a: b', \"new\\nline\"], "
                         "fl: [{use: toy-kd, weight: 0.3}], inner: {sizes: [64]}, dl: [1e-300, 3]}",
                         &error);
    g_assert_no_error (error);
    g_autoptr (DfqConfigNode) tree = dfq_params_to_config (toy_everything_class.params,
                                                           toy_everything_class.n_params, feature);
    g_autofree char *yaml = dfq_config_to_yaml (tree);
    g_test_message ("%s", yaml);
    g_autoptr (DfqConfigNode) back = dfq_config_parse (yaml, -1, "rt.yaml", &error);
    g_assert_no_error (error);
    g_autoptr (DfqFeature) again = dfq_feature_new_from_config (f->registry, &toy_everything_class, back, FALSE,
                                                                "toy-everything", &error);
    g_assert_no_error (error);
    g_autoptr (DfqConfigNode) tree2 = dfq_params_to_config (toy_everything_class.params,
                                                            toy_everything_class.n_params, again);
    g_autofree char *yaml2 = dfq_config_to_yaml (tree2);
    g_assert_cmpstr (yaml, ==, yaml2);
    ToyEverything *t = (ToyEverything *) again;
    g_assert_cmpstr (t->s, ==, "true");
    g_assert_cmpstr (t->sl[1], ==, "null");
    g_assert_cmpstr (t->sl[2], ==, "");
    g_assert_cmpstr (t->sl[4], ==, "new\nline");
    g_assert_cmpfloat (t->d, ==, 0.1);
    g_assert_cmpfloat (t->dl.v[0], ==, 1e-300);
    g_assert_cmpfloat (((DfqFeature *) t->fl->pdata[0])->weight, ==, 0.3);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/params/scalar/int", test_scalar_int);
    g_test_add_func ("/params/scalar/double", test_scalar_double);
    g_test_add_func ("/params/scalar/misc", test_scalar_misc);
    g_test_add_func ("/params/messages", test_messages);
#define ADD(path, fn) g_test_add (path, ParamsFixture, NULL, params_setup, fn, params_teardown)
    ADD ("/params/bind/every-type", test_bind_every_type);
    ADD ("/params/bind/defaults", test_bind_defaults);
    ADD ("/params/bind/errors", test_bind_errors);
    ADD ("/params/bind/init", test_bind_init);
    ADD ("/params/bind/struct-default", test_bind_struct_default);
    ADD ("/params/bind/required-and-check", test_bind_required_and_check);
    ADD ("/params/optim", test_optim);
    ADD ("/params/round-trip", test_round_trip);
#undef ADD
    return g_test_run ();
}
