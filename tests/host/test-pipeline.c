/* Pipelines: the corpus of bad files in tests/host/bad-pipelines/ (each with
 * its expected code and file:line:col in bad-pipelines/EXPECTED), good files,
 * includes and deep merge, --set overrides, --print-config round trips and
 * the config-tree API. Features are the static test classes. */
#include <string.h>

#include <dfq/dfq.h>
#include "host-test-features.h"

typedef struct {
    DfqRegistry *registry;
} PipelineFixture;

static void
pipeline_setup (PipelineFixture *f, gconstpointer data)
{
    f->registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (host_test_register_features (f->registry, &error));
}

static void
pipeline_teardown (PipelineFixture *f, gconstpointer data)
{
    dfq_registry_free (f->registry);
    g_assert_cmpint (toy_gen_alive, ==, 0);
}

static char *
good_path (const char *name)
{
    return g_test_build_filename (G_TEST_DIST, "host", "pipelines", name, NULL);
}

/* The bad corpus ----------------------------------------------------------------- */

typedef struct {
    char *file;      /* in bad-pipelines/ */
    char *code_name; /* SYNTAX, ... */
    gint code;
    char *mark_file; /* where the error points, relative to bad-pipelines/ */
    guint line, column;
    char *message;   /* a substring of the message */
} BadCase;

static const char *const code_names[] = {
    [DFQ_PIPELINE_ERROR_SYNTAX] = "SYNTAX",
    [DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE] = "UNKNOWN_FEATURE",
    [DFQ_PIPELINE_ERROR_UNKNOWN_PARAM] = "UNKNOWN_PARAM",
    [DFQ_PIPELINE_ERROR_BAD_VALUE] = "BAD_VALUE",
    [DFQ_PIPELINE_ERROR_MISSING_PARAM] = "MISSING_PARAM",
    [DFQ_PIPELINE_ERROR_INCLUDE] = "INCLUDE",
    [DFQ_PIPELINE_ERROR_IO] = "IO",
    [DFQ_PIPELINE_ERROR_LIMIT] = "LIMIT",
    [DFQ_PIPELINE_ERROR_INIT_FAILED] = "INIT_FAILED",
};

static void
bad_case_free (BadCase *c)
{
    g_free (c->file);
    g_free (c->code_name);
    g_free (c->mark_file);
    g_free (c->message);
    g_free (c);
}

/* EXPECTED: "<file> <CODE> <mark-file>:<line>:<col> <message substring>",
 * '#' comments. */
static GPtrArray *
load_expected (void)
{
    g_autofree char *path = g_test_build_filename (G_TEST_DIST, "host", "bad-pipelines", "EXPECTED", NULL);
    g_autofree char *text = NULL;
    g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
    GPtrArray *cases = g_ptr_array_new_with_free_func ((GDestroyNotify) bad_case_free);
    g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        if (lines[i][0] == '#' || lines[i][0] == '\0')
            continue;
        g_auto (GStrv) parts = g_strsplit (lines[i], " ", 4);
        g_assert_cmpuint (g_strv_length (parts), ==, 4);
        BadCase *c = g_new0 (BadCase, 1);
        c->file = g_strdup (parts[0]);
        c->code_name = g_strdup (parts[1]);
        c->code = -1;
        for (guint k = 0; k < G_N_ELEMENTS (code_names); k++)
            if (g_strcmp0 (code_names[k], parts[1]) == 0)
                c->code = (gint) k;
        g_assert_cmpint (c->code, >=, 0);
        g_auto (GStrv) mark = g_strsplit (parts[2], ":", 3);
        g_assert_cmpuint (g_strv_length (mark), ==, 3);
        c->mark_file = g_strdup (mark[0]);
        c->line = (guint) g_ascii_strtoull (mark[1], NULL, 10);
        c->column = (guint) g_ascii_strtoull (mark[2], NULL, 10);
        c->message = g_strdup (parts[3]);
        g_ptr_array_add (cases, c);
    }
    return cases;
}

static void
test_bad_file (PipelineFixture *f, gconstpointer data)
{
    const BadCase *c = data;
    g_test_summary ("A bad pipeline fails with its own code at the right file:line:col, never a crash");
    g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "host", "bad-pipelines", NULL);
    g_autofree char *path = g_build_filename (dir, c->file, NULL);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqPipeline) pipeline = dfq_pipeline_new_from_file (f->registry, path, NULL, &error);
    g_assert_null (pipeline);
    g_assert_nonnull (error);
    g_test_message ("%s", error->message);
    if (g_getenv ("DFQ_TEST_PRINT_CORPUS") != NULL) {
        /* Helper for writing EXPECTED by hand: print what happened. */
        g_printerr ("CORPUS %s %s %s\n", c->file,
                    error->domain == DFQ_PIPELINE_ERROR && (guint) error->code < G_N_ELEMENTS (code_names)
                        ? code_names[error->code] : "?",
                    error->message + (g_str_has_prefix (error->message, dir) ? strlen (dir) + 1 : 0));
    }
    g_assert_error (error, DFQ_PIPELINE_ERROR, c->code);
    g_autofree char *mark_path = g_build_filename (dir, c->mark_file, NULL);
    g_autofree char *prefix = g_strdup_printf ("%s:%u:%u: ", mark_path, c->line, c->column);
    if (!g_str_has_prefix (error->message, prefix))
        g_error ("expected the message to start with '%s': %s", prefix, error->message);
    if (strstr (error->message, c->message) == NULL)
        g_error ("expected '%s' in the message: %s", c->message, error->message);
}

static void
test_bad_corpus_complete (void)
{
    g_test_summary ("Every file of bad-pipelines/ has an expectation, and there are at least 30");
    g_autoptr (GPtrArray) cases = load_expected ();
    g_assert_cmpuint (cases->len, >=, 30);
    g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "host", "bad-pipelines", NULL);
    g_autoptr (GDir) handle = g_dir_open (dir, 0, NULL);
    g_assert_nonnull (handle);
    const char *name;
    guint n_files = 0;
    while ((name = g_dir_read_name (handle)) != NULL) {
        if (!g_str_has_suffix (name, ".yaml"))
            continue;
        n_files++;
        gboolean found = FALSE;
        for (guint i = 0; i < cases->len; i++)
            found = found || strcmp (((BadCase *) cases->pdata[i])->file, name) == 0;
        if (!found)
            g_error ("bad-pipelines/%s has no line in EXPECTED", name);
    }
    g_assert_cmpuint (n_files, ==, cases->len);
}

/* Good pipelines -------------------------------------------------------------------- */

static DfqPipeline *
load_good (PipelineFixture *f, const char *name, const char *const *overrides)
{
    g_autofree char *path = good_path (name);
    g_autoptr (GError) error = NULL;
    DfqPipeline *pipeline = dfq_pipeline_new_from_file (f->registry, path, overrides, &error);
    g_assert_no_error (error);
    g_assert_nonnull (pipeline);
    return pipeline;
}

static void
test_good_minimal (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("A minimal pipeline gets every default of the schema");
    g_autoptr (DfqPipeline) pipeline = load_good (f, "minimal.yaml", NULL);
    const DfqPipelineConfig *c = dfq_pipeline_get_config (pipeline);
    g_assert_cmpint (c->version, ==, 1);
    g_assert_null (c->name);
    g_assert_cmpint (c->seed, ==, 1);
    g_assert_cmpint (c->threads, ==, 2);
    g_assert_cmpstr (c->output_dir, ==, "runs");
    g_assert_cmpstr (c->teacher.model->klass->name, ==, "toy-model");
    g_assert_cmpint (((ToyModel *) c->teacher.model)->depth, ==, 20);
    g_assert_null (c->teacher.weights);
    g_assert_null (c->teacher.rename);
    g_assert_cmpint (c->data.dataset, ==, DFQ_PIPELINE_DATASET_FASHION_MNIST);
    g_assert_null (c->data.dir);
    g_assert_cmpint (c->eval.split, ==, DFQ_DATASET_SPLIT_TEST);
    g_assert_cmpint (c->eval.batch, ==, 200);
    g_assert_null (c->student.quantizer);
    g_assert_null (c->synthesizer);
    g_assert_cmpint (c->train.epochs, ==, 40);
    g_assert_cmpint (c->train.iters, ==, 60);
    g_assert_cmpint (c->train.batch, ==, 64);
    g_assert_cmpint (c->train.warmup_epochs, ==, 2);
    g_assert_cmpint (c->train.range_epochs, ==, 4);
    g_assert_cmpint (c->train.optimizer.use, ==, DFQ_OPTIM_SGD);
    g_assert_cmpfloat (c->train.optimizer.lr, ==, 1e-4);
    g_assert_cmpfloat (c->train.optimizer.momentum, ==, 0.9);
    g_assert_true (c->train.optimizer.nesterov);
    g_assert_cmpuint (c->train.optimizer.milestones.n, ==, 3);
    g_assert_nonnull (c->train.losses);
    g_assert_cmpuint (c->train.losses->len, ==, 0);
    g_assert_true (g_str_has_suffix (dfq_pipeline_get_filename (pipeline), "minimal.yaml"));
}

static void
test_good_full (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("A pipeline setting every key binds each into DfqPipelineConfig");
    g_autoptr (DfqPipeline) pipeline = load_good (f, "full.yaml", NULL);
    const DfqPipelineConfig *c = dfq_pipeline_get_config (pipeline);
    g_assert_cmpstr (c->name, ==, "full-w4a4");
    g_assert_cmpint (c->seed, ==, 7);
    g_assert_cmpint (c->threads, ==, 1);
    g_assert_cmpstr (c->output_dir, ==, "out/runs");
    g_assert_cmpint (((ToyModel *) c->teacher.model)->in_channels, ==, 3);
    g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "host", "pipelines", NULL);
    g_autofree char *weights = g_build_filename (dir, "weights", "teacher.safetensors", NULL);
    g_autofree char *weights_abs = g_canonicalize_filename (weights, NULL);
    g_assert_cmpstr (c->teacher.weights, ==, weights_abs);
    g_assert_cmpuint (g_strv_length (c->teacher.rename), ==, 2);
    g_assert_cmpstr (c->teacher.rename[0], ==, "^module\\.=>");
    g_assert_cmpint (c->data.dataset, ==, DFQ_PIPELINE_DATASET_CIFAR10);
    g_assert_cmpstr (dfq_pipeline_dataset_names[c->data.dataset], ==, "cifar10");
    g_assert_cmpstr (c->data.dir, ==, "/data/cifar");
    g_assert_cmpint (c->eval.split, ==, DFQ_DATASET_SPLIT_TRAIN);
    ToyQuant *q = (ToyQuant *) c->student.quantizer;
    g_assert_false (q->per_channel);
    g_assert_cmpstr (q->overrides[1], ==, "last=8");
    ToyGen *gen = (ToyGen *) c->synthesizer;
    g_assert_cmpint (gen->latent, ==, 64);
    g_assert_cmpuint (gen->losses->len, ==, 2);
    g_assert_cmpuint (c->train.losses->len, ==, 3);
    DfqFeature *third = c->train.losses->pdata[2];
    g_assert_cmpfloat (third->weight, ==, 1000);
    g_assert_cmpstr (third->label, ==, "train.losses[2] (toy-kd)");
    g_assert_cmpfloat (((ToyKd *) c->train.losses->pdata[0])->temperature, ==, 20);
}

static void
test_include_merge (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("include: deep-merges the base under the including file; lists are replaced; a "
                    "different use: replaces the whole feature mapping; paths stay relative to their file");
    g_autoptr (DfqPipeline) variant = load_good (f, "variant.yaml", NULL);
    const DfqPipelineConfig *c = dfq_pipeline_get_config (variant);
    g_assert_cmpstr (c->name, ==, "variant");
    g_assert_cmpint (((ToyModel *) c->teacher.model)->depth, ==, 56); /* merged into {use: toy-model} */
    g_assert_true (g_str_has_suffix (c->teacher.weights, "pipelines/weights/base.safetensors"));
    ToyGen *gen = (ToyGen *) c->synthesizer;
    g_assert_cmpint (gen->latent, ==, 64);
    g_assert_cmpint (gen->optimizer.use, ==, DFQ_OPTIM_ADAM); /* from base */
    g_assert_cmpfloat (gen->optimizer.lr, ==, 5e-4);           /* from variant */
    g_assert_cmpint (c->train.epochs, ==, 2);
    g_assert_cmpfloat (c->train.optimizer.lr, ==, 0.01);
    g_assert_cmpuint (c->train.losses->len, ==, 1); /* lists are replaced */
    g_assert_null (dfq_config_mapping_get (dfq_pipeline_get_tree (variant), "include"));

    g_autoptr (DfqPipeline) swap = load_good (f, "swap-feature.yaml", NULL);
    c = dfq_pipeline_get_config (swap);
    g_assert_cmpstr (c->synthesizer->klass->name, ==, "zeroq"); /* latent: did not carry over */
    g_assert_cmpint (((ToyZeroq *) c->synthesizer)->iters, ==, 10);

    g_autoptr (DfqPipeline) nested = load_good (f, "nested-include.yaml", NULL);
    c = dfq_pipeline_get_config (nested);
    g_assert_cmpstr (c->name, ==, "nested");
    g_assert_cmpint (c->data.dataset, ==, DFQ_PIPELINE_DATASET_MNIST);
    g_assert_cmpint (c->eval.batch, ==, 100);
    g_assert_cmpint (((ToyModel *) c->teacher.model)->depth, ==, 20);
    g_assert_true (g_str_has_suffix (c->teacher.weights, "pipelines/sub/inner-weights.safetensors"));
}

typedef struct {
    const char *assignment;
    DfqPipelineError code;
    const char *message; /* the whole message */
} SetErrorCase;

static const SetErrorCase set_error_cases[] = {
    { "train.epochs", DFQ_PIPELINE_ERROR_SYNTAX, "--set 'train.epochs': expected KEY=VALUE (e.g. --set train.epochs=2)" },
    { "=3", DFQ_PIPELINE_ERROR_SYNTAX, "--set '=3': expected KEY=VALUE (e.g. --set train.epochs=2)" },
    { "train..epochs=3", DFQ_PIPELINE_ERROR_SYNTAX, "--set train..epochs: empty key in path 'train..epochs'" },
    { "train.=3", DFQ_PIPELINE_ERROR_SYNTAX, "--set train.: path 'train.' ends with '.'" },
    { "train.losses[x]=3", DFQ_PIPELINE_ERROR_SYNTAX, "--set train.losses[x]: bad index in path 'train.losses[x]' (expected [N])" },
    { "data[0].x=2", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set data[0].x: index [0] into null, not a list" },
    { "teacher.model.0=x", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set teacher.model.0: index [0] into a mapping, not a list" },
    { "seed.x=1", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set seed.x: seed: expected an integer, got a mapping" },
    { "train.losses=[[1]]", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set train.losses: train.losses[0]: expected a loss (a name, or a mapping with 'use:'), got a list" },
    { "train.losses.5.weight=1", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set train.losses.5.weight: index [5] out of range (the list has 2 items)" },
    { "train.epochs.x.y=1", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set train.epochs.x.y: train.epochs: expected an integer, got a mapping" },
    { "train.epochs=[1, 2", DFQ_PIPELINE_ERROR_SYNTAX, "--set train.epochs: YAML syntax error: did not find expected ',' or ']'" },
    /* The key once, not "--set train.epochs: train.epochs: ..." */
    { "train.epochs=two", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set train.epochs: expected an integer, got 'two'" },
    { "train.losses.0.weight=heavy", DFQ_PIPELINE_ERROR_BAD_VALUE, "--set train.losses.0.weight: expected a number, got 'heavy'" },
    { "train.itres=3", DFQ_PIPELINE_ERROR_UNKNOWN_PARAM, "--set train.itres: unknown parameter 'itres' in 'train' (known: epochs, iters, batch," },
    { "synthesizer.use=zeroqq", DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE, "--set synthesizer.use: unknown synthesizer 'zeroqq' (known: toy-gen, zeroq); did you mean 'zeroq'?" },
    { "name=a\tb: c: d", DFQ_PIPELINE_ERROR_SYNTAX, "--set name: YAML syntax error" },
};

static void
test_set (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("--set a.b.c=value overrides after includes; values are YAML; errors say '--set a.b.c'");
    const char *const overrides[] = { "train.epochs=3", "synthesizer.optimizer.lr=1e-2", "name=set by --set",
                                      "student.quantizer={use: toy-quant, w_bits: 2}", "student.quantizer.a_bits=3",
                                      "train.losses[0].weight=0.5", "train.losses.0.use=toy-kd",
                                      "teacher.weights=w.bin", "data.dir=", "synthesizer.losses=[toy-ce]", NULL };
    g_autoptr (DfqPipeline) pipeline = load_good (f, "base.yaml", overrides);
    const DfqPipelineConfig *c = dfq_pipeline_get_config (pipeline);
    g_assert_cmpint (c->train.epochs, ==, 3);
    g_assert_cmpfloat (((ToyGen *) c->synthesizer)->optimizer.lr, ==, 1e-2);
    g_assert_cmpint (((ToyGen *) c->synthesizer)->optimizer.use, ==, DFQ_OPTIM_ADAM);
    g_assert_cmpuint (((ToyGen *) c->synthesizer)->losses->len, ==, 1);
    g_assert_cmpstr (c->name, ==, "set by --set");
    g_assert_cmpint (((ToyQuant *) c->student.quantizer)->w_bits, ==, 2);
    g_assert_cmpint (((ToyQuant *) c->student.quantizer)->a_bits, ==, 3);
    DfqFeature *first = c->train.losses->pdata[0];
    g_assert_cmpstr (first->klass->name, ==, "toy-kd");
    g_assert_cmpfloat (first->weight, ==, 0.5);
    /* A path from the command line is relative to the working directory. */
    g_autofree char *cwd_weights = g_canonicalize_filename ("w.bin", NULL);
    g_assert_cmpstr (c->teacher.weights, ==, cwd_weights);
    g_assert_null (c->data.dir);

    for (guint i = 0; i < G_N_ELEMENTS (set_error_cases); i++) {
        const SetErrorCase *e = &set_error_cases[i];
        const char *const one[] = { e->assignment, NULL };
        const char *const *list = one;
        g_autofree char *path = good_path ("base.yaml");
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (f->registry, path, list, &error);
        g_test_message ("--set %s -> %s", e->assignment, error != NULL ? error->message : "(ok)");
        g_assert_null (p);
        g_assert_error (error, DFQ_PIPELINE_ERROR, (gint) e->code);
        if (!g_str_has_prefix (error->message, e->message))
            g_error ("expected '%s', got '%s'", e->message, error->message);
    }

    /* A NULL-kind root (empty text) becomes a mapping. */
    g_autoptr (GError) error = NULL;
    const char *const minimal[] = { "version=1", "teacher.model=toy-model", NULL };
    g_autoptr (DfqPipeline) from_nothing = dfq_pipeline_new_from_data (f->registry, "", 0, "empty.yaml", minimal, &error);
    g_assert_no_error (error);
    g_assert_cmpint (dfq_pipeline_get_config (from_nothing)->train.epochs, ==, 40);
}

static void
test_print_config (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("--print-config: the resolved YAML parses back to the same config (same YAML again)");
    const char *names[] = { "minimal.yaml", "full.yaml", "variant.yaml", "swap-feature.yaml", "nested-include.yaml" };
    for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
        g_autoptr (DfqPipeline) pipeline = load_good (f, names[i], NULL);
        g_autofree char *yaml = dfq_pipeline_to_yaml (pipeline);
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqPipeline) again =
            dfq_pipeline_new_from_data (f->registry, yaml, -1, "printed.yaml", NULL, &error);
        g_assert_no_error (error);
        g_autofree char *yaml2 = dfq_pipeline_to_yaml (again);
        g_assert_cmpstr (yaml, ==, yaml2);
        const DfqPipelineConfig *a = dfq_pipeline_get_config (pipeline);
        const DfqPipelineConfig *b = dfq_pipeline_get_config (again);
        g_assert_cmpstr (a->teacher.weights, ==, b->teacher.weights);
        g_assert_cmpint (a->train.epochs, ==, b->train.epochs);
        g_assert_cmpfloat (a->train.optimizer.lr, ==, b->train.optimizer.lr);
        g_assert_cmpuint (a->train.losses->len, ==, b->train.losses->len);
        if (i == 1)
            g_test_message ("%s", yaml);
    }
}

static void
test_config_api (void)
{
    g_test_summary ("The config tree: mapping helpers, merge rules, marks, emission quoting");
    g_autoptr (GError) error = NULL;
    DfqConfigNode *a = dfq_config_parse ("x: 1\nm: {use: p, k: 1, j: 2}\nl: [1, 2]\n", -1, "a.yaml", &error);
    DfqConfigNode *b = dfq_config_parse ("y: 2\nm: {k: 3}\nl: [3]\n", -1, "b.yaml", &error);
    g_autoptr (DfqConfigNode) merged = dfq_config_merge (a, b);
    g_autofree char *yaml = dfq_config_to_yaml (merged);
    g_assert_cmpstr (yaml, ==, "x: 1\nm:\n  use: p\n  k: 3\n  j: 2\nl: [3]\ny: 2\n");
    const DfqConfigNode *k = dfq_config_mapping_get (dfq_config_mapping_get (merged, "m"), "k");
    g_assert_cmpstr (k->mark.file, ==, "b.yaml");
    g_assert_cmpuint (k->mark.line, ==, 2);
    g_assert_cmpuint (k->mark.column, ==, 8);

    DfqConfigNode *c = dfq_config_parse ("m: {use: p, k: 1}", -1, "c.yaml", &error);
    DfqConfigNode *d = dfq_config_parse ("m: {use: q}", -1, "d.yaml", &error);
    g_autoptr (DfqConfigNode) swapped = dfq_config_merge (c, d);
    g_assert_null (dfq_config_mapping_get (dfq_config_mapping_get (swapped, "m"), "k"));

    DfqConfigMark mark = { "t", 1, 1 };
    g_autoptr (DfqConfigNode) m = dfq_config_node_new (DFQ_CONFIG_MAPPING, &mark);
    dfq_config_mapping_set (m, "s", dfq_config_node_new_scalar ("true", TRUE, &mark));
    dfq_config_mapping_set (m, "n", dfq_config_node_new_scalar ("12", FALSE, &mark));
    dfq_config_mapping_set (m, "e", dfq_config_node_new_scalar ("", TRUE, &mark));
    dfq_config_mapping_set (m, "z", dfq_config_node_new (DFQ_CONFIG_NULL, &mark));
    dfq_config_mapping_set (m, "q", dfq_config_node_new_scalar ("a: b", TRUE, &mark));
    dfq_config_mapping_set (m, "n", dfq_config_node_new_scalar ("13", FALSE, &mark));
    g_assert_cmpuint (dfq_config_node_n_children (m), ==, 5);
    g_assert_true (dfq_config_mapping_remove (m, "z"));
    g_assert_false (dfq_config_mapping_remove (m, "z"));
    g_autofree char *text = dfq_config_to_yaml (m);
    g_assert_cmpstr (text, ==, "s: \"true\"\nn: 13\ne: \"\"\nq: 'a: b'\n");
    g_autoptr (DfqConfigNode) copy = dfq_config_node_copy (m);
    g_autofree char *copy_text = dfq_config_to_yaml (copy);
    g_assert_cmpstr (copy_text, ==, text);

    g_autofree char *where = dfq_config_mark_to_string (&mark);
    g_assert_cmpstr (where, ==, "t:1:1");
    DfqConfigMark cli = { "--set a.b", 0, 0 };
    g_autofree char *cli_where = dfq_config_mark_to_string (&cli);
    g_assert_cmpstr (cli_where, ==, "--set a.b");

    /* Marks are 1-based and count characters, not bytes. */
    g_autoptr (DfqConfigNode) utf8 = dfq_config_parse ("\xc3\xa9t\xc3\xa9: [1, x]", -1, "u.yaml", &error);
    const DfqConfigNode *list = dfq_config_mapping_get (utf8, "\xc3\xa9t\xc3\xa9");
    g_assert_cmpuint (((DfqConfigNode *) list->values->pdata[1])->mark.column, ==, 10);
}

static void
test_suggest_schema_keys (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("Near misses of core keys get 'did you mean', at every level");
    const struct {
        const char *file;
        const char *hint;
    } cases[] = {
        { "unknown-top-key.yaml", "did you mean 'seed'?" },
        { "unknown-teacher-key.yaml", "did you mean 'weights'?" },
        { "unknown-train-key.yaml", "did you mean 'iters'?" },
        { "include-bad-key.yaml", "did you mean 'epochs'?" },
        { "bad-enum.yaml", "did you mean 'cifar10'?" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
        g_autofree char *path = g_test_build_filename (G_TEST_DIST, "host", "bad-pipelines", cases[i].file, NULL);
        g_autoptr (GError) error = NULL;
        g_autoptr (DfqPipeline) p = dfq_pipeline_new_from_file (f->registry, path, NULL, &error);
        g_assert_null (p);
        g_assert_true (g_str_has_suffix (error->message, cases[i].hint));
    }
}

static void
test_io_errors (PipelineFixture *f, gconstpointer data)
{
    g_test_summary ("A pipeline that cannot be read: IO (missing file, a directory)");
    g_autoptr (GError) error = NULL;
    g_assert_null (dfq_pipeline_new_from_file (f->registry, "/nonexistent/p.yaml", NULL, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_IO);
    g_assert_nonnull (strstr (error->message, "/nonexistent/p.yaml"));
    g_clear_error (&error);
    g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "host", "pipelines", NULL);
    g_assert_null (dfq_pipeline_new_from_file (f->registry, dir, NULL, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_IO);
    g_assert_nonnull (strstr (error->message, "not a regular file"));
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, PipelineFixture, NULL, pipeline_setup, fn, pipeline_teardown)
    g_autoptr (GPtrArray) cases = load_expected ();
    for (guint i = 0; i < cases->len; i++) {
        const BadCase *c = cases->pdata[i];
        g_autofree char *name = g_strdup_printf ("/pipeline/bad/%s", c->file);
        g_test_add (name, PipelineFixture, c, pipeline_setup, test_bad_file, pipeline_teardown);
    }
    g_test_add_func ("/pipeline/bad-corpus/complete", test_bad_corpus_complete);
    ADD ("/pipeline/good/minimal", test_good_minimal);
    ADD ("/pipeline/good/full", test_good_full);
    ADD ("/pipeline/include/merge", test_include_merge);
    ADD ("/pipeline/set", test_set);
    ADD ("/pipeline/print-config/round-trip", test_print_config);
    ADD ("/pipeline/io", test_io_errors);
    ADD ("/pipeline/suggest/schema-keys", test_suggest_schema_keys);
    g_test_add_func ("/pipeline/config/api", test_config_api);
#undef ADD
    return g_test_run ();
}
