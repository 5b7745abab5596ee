/* The registry and plugin loader: real broken .so fixtures
 * (tests/fixtures/bad-plugins/), each failing with its own DFQ_PLUGIN_ERROR
 * code and a message naming the file, the registry unchanged after every
 * failure and the good plugin still loading; the search path; class and
 * param-table validation; instantiation with defaults. */
#include <string.h>
#include <glib/gstdio.h>

#include <dfq/dfq.h>
#include "host-test-features.h"

#ifndef HOST_FIXTURE_DIR
#error "HOST_FIXTURE_DIR must name the build directory of the fixture plugins"
#endif

static char *
fixture_path (const char *name)
{
    g_autofree char *file = g_strdup_printf ("libdfq-%s." G_MODULE_SUFFIX, name);
    return g_build_filename (HOST_FIXTURE_DIR, file, NULL);
}

/* "loss:fixture-good,model:fixture-good-model,..." of every registered feature. */
static char *
registry_snapshot (DfqRegistry *registry)
{
    GString *out = g_string_new (NULL);
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        for (guint i = 0; i < list->len; i++)
            g_string_append_printf (out, "%s:%s,", dfq_feature_kind_name ((DfqFeatureKind) k),
                                    ((const DfqFeatureClass *) list->pdata[i])->name);
    }
    g_autoptr (GPtrArray) plugins = dfq_registry_list_plugins (registry);
    for (guint i = 0; i < plugins->len; i++)
        g_string_append_printf (out, "plugin:%s,", ((const DfqPluginInfo *) plugins->pdata[i])->plugin_name);
    return g_string_free (out, FALSE);
}

static void
test_load_good (void)
{
    g_test_summary ("The good fixture loads, registers its two features and reports its provenance");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autofree char *path = fixture_path ("good");
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_load_plugin (registry, path, &error));
    g_assert_no_error (error);

    const DfqFeatureClass *loss = dfq_registry_find (registry, DFQ_FEATURE_LOSS, "fixture-good");
    g_assert_nonnull (loss);
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_MODEL, "fixture-good-model"));
    g_assert_null (dfq_registry_find (registry, DFQ_FEATURE_MODEL, "fixture-good"));
    g_assert_true (dfq_registry_find_any (registry, "fixture-good") == loss);

    DfqPluginInfo info = { 0 };
    g_assert_true (dfq_registry_get_plugin_info (registry, loss, &info));
    g_assert_cmpstr (info.plugin_name, ==, "good");
    /* The plugin's own version (DFQ_PLUGIN_DEFINE_VERSIONED), not dfq's. */
    g_assert_cmpstr (info.plugin_version, ==, "2.3.1-fixture");
    g_assert_cmpstr (info.plugin_description, ==, "Well-formed fixture plugin");
    g_autofree char *contents = NULL;
    gsize length = 0;
    g_assert_true (g_file_get_contents (path, &contents, &length, NULL));
    g_autofree char *sha = g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) contents, length);
    g_assert_cmpstr (info.sha256, ==, sha);
    g_autofree char *canonical = g_canonicalize_filename (path, NULL);
    g_assert_cmpstr (info.path, ==, canonical);

    g_autoptr (GPtrArray) plugins = dfq_registry_list_plugins (registry);
    g_assert_cmpuint (plugins->len, ==, 1);

    /* The feature instantiates with its defaults. */
    g_autoptr (DfqFeature) feature = dfq_feature_new_default (registry, loss, &error);
    g_assert_no_error (error);
    g_assert_true (feature->klass == loss);
    g_assert_cmpfloat (feature->weight, ==, 1.0);
}

typedef struct {
    const char *fixture;
    DfqPluginError code;
    const char *message; /* a substring of the error message */
} BrokenCase;

static const BrokenCase broken_cases[] = {
    { "abi-mismatch", DFQ_PLUGIN_ERROR_ABI_MISMATCH, "built for plugin ABI 42, core speaks 1" },
    { "missing-symbol", DFQ_PLUGIN_ERROR_OPEN, "dfq_fixture_symbol_nobody_defines" },
    { "not-a-plugin", DFQ_PLUGIN_ERROR_NOT_A_PLUGIN, "no dfq_plugin_get_desc symbol" },
    { "init-fails", DFQ_PLUGIN_ERROR_INIT_FAILED, "the fixture's model file is missing" },
    { "name-mismatch", DFQ_PLUGIN_ERROR_NAME_MISMATCH, "names plugin 'other-name'" },
    { "duplicate-feature", DFQ_PLUGIN_ERROR_DUPLICATE_FEATURE, "loss 'fixture-good' is already registered" },
    { "bad-params", DFQ_PLUGIN_ERROR_BAD_FEATURE, "out of range" },
    { "desc-size", DFQ_PLUGIN_ERROR_DESC_SIZE, "descriptor is 56 bytes, core expects 72" },
};

static void
test_load_broken (gconstpointer data)
{
    const BrokenCase *c = data;
    g_test_summary ("A broken plugin fails with its own code and a message naming the file; the registry "
                    "(and the good plugin loaded before it) is unchanged");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autofree char *good = fixture_path ("good");
    g_assert_true (dfq_registry_load_plugin (registry, good, NULL));
    g_autofree char *before = registry_snapshot (registry);

    g_autofree char *path = fixture_path (c->fixture);
    g_autoptr (GError) error = NULL;
    g_assert_false (dfq_registry_load_plugin (registry, path, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, (gint) c->code);
    g_test_message ("%s", error->message);
    g_assert_true (g_str_has_prefix (error->message, path));
    g_assert_nonnull (strstr (error->message, c->message));

    g_autofree char *after = registry_snapshot (registry);
    g_assert_cmpstr (after, ==, before);
    /* Features a failed plugin registered before failing are gone. */
    g_assert_null (dfq_registry_find_any (registry, "fixture-init-fails"));
    g_assert_null (dfq_registry_find_any (registry, "fixture-dup-new"));
    /* And the good plugin still works. */
    const DfqFeatureClass *loss = dfq_registry_find (registry, DFQ_FEATURE_LOSS, "fixture-good");
    g_assert_nonnull (loss);
    g_clear_error (&error);
    g_autoptr (DfqFeature) feature = dfq_feature_new_default (registry, loss, &error);
    g_assert_no_error (error);
    g_assert_nonnull (feature);
}

static void
test_load_garbage (void)
{
    g_test_summary ("A file named like a plugin that is not a shared object: OPEN; a missing file: OPEN");
    g_autofree char *dir = g_dir_make_tmp ("dfq-registry-XXXXXX", NULL);
    g_autofree char *path = g_build_filename (dir, "libdfq-garbage.so", NULL);
    g_assert_true (g_file_set_contents (path, "\x7f" "ELF but not really\n", -1, NULL));
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_false (dfq_registry_load_plugin (registry, path, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_OPEN);
    g_assert_true (g_str_has_prefix (error->message, path));
    g_clear_error (&error);

    g_autofree char *missing = g_build_filename (dir, "libdfq-missing.so", NULL);
    g_assert_false (dfq_registry_load_plugin (registry, missing, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_OPEN);
    g_autofree char *snapshot = registry_snapshot (registry);
    g_assert_cmpstr (snapshot, ==, "");
    g_remove (path);
    g_rmdir (dir);
}

static void
test_load_twice (void)
{
    g_test_summary ("Loading the same plugin twice: DUPLICATE_PLUGIN, the first stays");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autofree char *path = fixture_path ("good");
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_load_plugin (registry, path, &error));
    g_assert_false (dfq_registry_load_plugin (registry, path, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_DUPLICATE_PLUGIN);
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "fixture-good"));
}

static gboolean
failures_have_code (GPtrArray *failures, DfqPluginError code, const char *fixture)
{
    for (guint i = 0; i < failures->len; i++) {
        const GError *e = failures->pdata[i];
        if (e->domain == DFQ_PLUGIN_ERROR && e->code == (gint) code && strstr (e->message, fixture) != NULL)
            return TRUE;
    }
    return FALSE;
}

static void
test_scan_fixtures (void)
{
    g_test_summary ("Scanning the fixture directory: the good plugin loads, each broken one lands in the "
                    "failure list with its own code, and the scan goes on");
    /* A file on the path loads first: the good plugin before the directory
     * (where duplicate-feature sorts before it). */
    g_autofree char *good = fixture_path ("good");
    g_autofree char *path = g_strjoin (G_SEARCHPATH_SEPARATOR_S, good, HOST_FIXTURE_DIR, NULL);
    g_setenv ("DFQ_PLUGIN_PATH", path, TRUE);
    g_setenv ("DFQ_PLUGIN_SYSTEM_PATH", "", TRUE);

    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    guint loaded = dfq_registry_scan (registry, NULL, failures);
    for (guint i = 0; i < failures->len; i++)
        g_test_message ("failure: %s", ((GError *) failures->pdata[i])->message);
    g_assert_cmpuint (loaded, ==, 1);
    g_assert_cmpuint (failures->len, ==, G_N_ELEMENTS (broken_cases));
    for (guint i = 0; i < G_N_ELEMENTS (broken_cases); i++)
        g_assert_true (failures_have_code (failures, broken_cases[i].code, broken_cases[i].fixture));
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "fixture-good"));
    g_autofree char *snapshot = registry_snapshot (registry);
    g_assert_cmpstr (snapshot, ==, "model:fixture-good-model,loss:fixture-good,plugin:good,");
}

static void
test_scan_search_path (void)
{
    g_test_summary ("--plugin-path, then $DFQ_PLUGIN_PATH, then the install dir unless "
                    "$DFQ_PLUGIN_SYSTEM_PATH replaces it");
    g_setenv ("DFQ_PLUGIN_PATH", "/b1:/b2", TRUE);
    g_unsetenv ("DFQ_PLUGIN_SYSTEM_PATH");
    g_auto (GStrv) dirs = dfq_registry_get_search_path ("/a1::/a2");
    g_assert_cmpuint (g_strv_length (dirs), ==, 5);
    g_assert_cmpstr (dirs[0], ==, "/a1");
    g_assert_cmpstr (dirs[1], ==, "/a2");
    g_assert_cmpstr (dirs[2], ==, "/b1");
    g_assert_cmpstr (dirs[3], ==, "/b2");
    g_assert_true (g_str_has_suffix (dirs[4], "dfq-1"));

    g_setenv ("DFQ_PLUGIN_SYSTEM_PATH", "", TRUE);
    g_auto (GStrv) no_system = dfq_registry_get_search_path (NULL);
    g_assert_cmpuint (g_strv_length (no_system), ==, 2);

    g_setenv ("DFQ_PLUGIN_SYSTEM_PATH", "/sys1", TRUE);
    g_unsetenv ("DFQ_PLUGIN_PATH");
    g_auto (GStrv) system = dfq_registry_get_search_path (NULL);
    g_assert_cmpuint (g_strv_length (system), ==, 1);
    g_assert_cmpstr (system[0], ==, "/sys1");

    /* Directories that do not exist are skipped quietly. */
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    g_assert_cmpuint (dfq_registry_scan (registry, "/nonexistent/dfq", failures), ==, 0);
    g_assert_cmpuint (failures->len, ==, 0);
    g_setenv ("DFQ_PLUGIN_SYSTEM_PATH", "", TRUE);
}

/* Class validation ------------------------------------------------------------------ */

typedef struct {
    DfqFeature parent;
    gint a;
    gint b;
    gdouble d;
    gint e;
    ToyInner inner;
} BadInst;

static const char *const bad_values[] = { "x", "y", NULL };
static const char *const no_values[] = { NULL };
static const DfqParamSpec bad_inner_ok[] = {
    DFQ_PARAM_INT (ToyInner, level, "Level", 0, 9, 1),
};

static const DfqParamSpec p_dup[] = {
    DFQ_PARAM_INT (BadInst, a, "A", 0, 10, 1),
    { .name = "a", .type = DFQ_PARAM_TYPE_INT, .offset = G_STRUCT_OFFSET (BadInst, b), .description = "B",
      .min = 0, .max = 10, .default_value = "2" },
};
static const DfqParamSpec p_nodesc[] = { DFQ_PARAM_INT (BadInst, a, NULL, 0, 10, 1) };
static const DfqParamSpec p_emptydesc[] = { DFQ_PARAM_INT (BadInst, a, "", 0, 10, 1) };
static const DfqParamSpec p_unparsable[] = {
    { .name = "d", .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (BadInst, d), .description = "D",
      .min = 0, .max = 1, .default_value = "[0.5" },
};
static const DfqParamSpec p_notnumber[] = {
    { .name = "d", .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (BadInst, d), .description = "D",
      .min = 0, .max = 1, .default_value = "half" },
};
static const DfqParamSpec p_range[] = { DFQ_PARAM_INT (BadInst, a, "A", 0, 10, 11) };
static const DfqParamSpec p_enum[] = { DFQ_PARAM_ENUM (BadInst, e, "E", bad_values, "z") };
static const DfqParamSpec p_enum_empty[] = { DFQ_PARAM_ENUM (BadInst, e, "E", no_values, "z") };
static const DfqParamSpec p_reserved[] = {
    { .name = "weight", .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (BadInst, d), .description = "W",
      .default_value = "1" },
};
static const DfqParamSpec p_badname[] = {
    { .name = "Lr", .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (BadInst, d), .description = "L",
      .default_value = "1" },
};
static const DfqParamSpec p_header[] = {
    { .name = "a", .type = DFQ_PARAM_TYPE_INT, .offset = 8, .description = "Overlaps the header",
      .default_value = "1" },
};
static const DfqParamSpec p_outside[] = {
    { .name = "a", .type = DFQ_PARAM_TYPE_INT, .offset = sizeof (BadInst), .description = "Past the end",
      .default_value = "1" },
};
static const DfqParamSpec p_misaligned[] = {
    { .name = "d", .type = DFQ_PARAM_TYPE_DOUBLE, .offset = G_STRUCT_OFFSET (BadInst, a) + 1, .description = "D",
      .default_value = "1" },
};
static const DfqParamSpec p_required_default[] = {
    DFQ_PARAM_INT (BadInst, a, "A", 0, 10, 1, .flags = DFQ_PARAM_FLAG_REQUIRED),
};
static const DfqParamSpec p_nodefault[] = {
    { .name = "a", .type = DFQ_PARAM_TYPE_INT, .offset = G_STRUCT_OFFSET (BadInst, a), .description = "A" },
};
static const DfqParamSpec p_minmax[] = { DFQ_PARAM_INT (BadInst, a, "A", 10, 0, 5) };
static const DfqParamSpec p_intrange[] = { DFQ_PARAM_INT (BadInst, a, "A", 0, 1e12, 5) };
static const DfqParamSpec p_struct_default[] = {
    DFQ_PARAM_STRUCT (BadInst, inner, "Inner", bad_inner_ok, .default_value = "{levl: 2}"),
};
static const DfqParamSpec p_struct_empty[] = {
    { .name = "inner", .type = DFQ_PARAM_TYPE_STRUCT, .offset = G_STRUCT_OFFSET (BadInst, inner),
      .description = "Inner" },
};
static const DfqParamSpec p_feature_default[] = {
    { .name = "inner", .type = DFQ_PARAM_TYPE_FEATURE, .offset = G_STRUCT_OFFSET (BadInst, inner),
      .description = "F", .feature_kind = DFQ_FEATURE_LOSS, .default_value = "[kd]" },
};
static const DfqParamSpec p_feature_kind[] = {
    { .name = "inner", .type = DFQ_PARAM_TYPE_FEATURE, .offset = G_STRUCT_OFFSET (BadInst, inner),
      .description = "F", .feature_kind = (DfqFeatureKind) 42 },
};
static const DfqParamSpec p_type[] = {
    { .name = "a", .type = (DfqParamType) 99, .offset = G_STRUCT_OFFSET (BadInst, a), .description = "A" },
};
static const DfqParamSpec p_ok[] = { DFQ_PARAM_INT (BadInst, a, "A", 0, 10, 1) };

typedef struct {
    const char *case_name;
    DfqFeatureClass klass;
    const char *message;
} BadClassCase;

#define PARAMS(p) .params = (p), .n_params = G_N_ELEMENTS (p)
#define BASE .kind = DFQ_FEATURE_LOSS, .name = "bad-feature", .description = "Bad", .instance_size = sizeof (BadInst)

static const BadClassCase bad_class_cases[] = {
    { "duplicate-param", { BASE, PARAMS (p_dup) }, "duplicate param name" },
    { "null-description", { BASE, PARAMS (p_nodesc) }, "missing description" },
    { "empty-description", { BASE, PARAMS (p_emptydesc) }, "missing description" },
    { "default-not-yaml", { BASE, PARAMS (p_unparsable) }, "not valid YAML" },
    { "default-not-number", { BASE, PARAMS (p_notnumber) }, "expected a number" },
    { "default-out-of-range", { BASE, PARAMS (p_range) }, "out of range (0 .. 10)" },
    { "enum-default", { BASE, PARAMS (p_enum) }, "invalid value 'z' (valid: x, y)" },
    { "enum-no-values", { BASE, PARAMS (p_enum_empty) }, "ENUM without values" },
    { "reserved-name", { BASE, PARAMS (p_reserved) }, "reserved" },
    { "param-name", { BASE, PARAMS (p_badname) }, "invalid name" },
    { "header-overlap", { BASE, PARAMS (p_header) }, "outside the instance" },
    { "past-the-end", { BASE, PARAMS (p_outside) }, "outside the instance" },
    { "misaligned", { BASE, PARAMS (p_misaligned) }, "misaligned" },
    { "required-with-default", { BASE, PARAMS (p_required_default) }, "REQUIRED but has a default" },
    { "no-default", { BASE, PARAMS (p_nodefault) }, "no default" },
    { "min-above-max", { BASE, PARAMS (p_minmax) }, "bad range" },
    { "int-range", { BASE, PARAMS (p_intrange) }, "bad range" },
    { "struct-default", { BASE, PARAMS (p_struct_default) }, "unknown parameter 'levl'" },
    { "struct-empty", { BASE, PARAMS (p_struct_empty) }, "STRUCT without sub_params" },
    { "feature-default", { BASE, PARAMS (p_feature_default) }, "not a feature name" },
    { "feature-kind", { BASE, PARAMS (p_feature_kind) }, "invalid feature kind" },
    { "param-type", { BASE, PARAMS (p_type) }, "invalid type" },
    { "feature-name", { .kind = DFQ_FEATURE_LOSS, .name = "Bad_Name", .description = "Bad",
                        .instance_size = sizeof (BadInst), PARAMS (p_ok) }, "is invalid" },
    { "no-feature-name", { .kind = DFQ_FEATURE_LOSS, .description = "Bad", .instance_size = sizeof (BadInst),
                           PARAMS (p_ok) }, "NULL" },
    { "kind", { .kind = (DfqFeatureKind) 99, .name = "bad-feature", .description = "Bad",
                .instance_size = sizeof (BadInst), PARAMS (p_ok) }, "invalid kind" },
    { "class-description", { .kind = DFQ_FEATURE_LOSS, .name = "bad-feature", .instance_size = sizeof (BadInst),
                             PARAMS (p_ok) }, "missing description" },
    { "instance-size", { .kind = DFQ_FEATURE_LOSS, .name = "bad-feature", .description = "Bad",
                         .instance_size = 8, PARAMS (p_ok) }, "instance_size" },
    { "params-null", { BASE, .params = NULL, .n_params = 2 }, "params is NULL" },
};

static void
test_add_bad_class (gconstpointer data)
{
    const BadClassCase *c = data;
    g_test_summary ("An invalid feature class or param table is refused with BAD_FEATURE at registration");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_false (dfq_registry_add_feature (registry, &c->klass, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE);
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, c->message));
    g_autofree char *snapshot = registry_snapshot (registry);
    g_assert_cmpstr (snapshot, ==, "");
}

static void
test_add_good_tables (void)
{
    g_test_summary ("The test features, the pipeline schema and the optimizer table all validate");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (host_test_register_features (registry, &error));
    g_assert_no_error (error);

    /* The core schema passes the same checks a plugin's table does: wrap it in
     * a class whose instance is a DfqFeature followed by the config. */
    typedef struct {
        DfqFeature parent;
        DfqPipelineConfig config;
    } SchemaInst;
    static DfqParamSpec shifted[64];
    g_assert_cmpuint (dfq_pipeline_n_param_specs, <=, G_N_ELEMENTS (shifted));
    for (guint i = 0; i < dfq_pipeline_n_param_specs; i++) {
        shifted[i] = dfq_pipeline_param_specs[i];
        shifted[i].offset += G_STRUCT_OFFSET (SchemaInst, config);
        if (shifted[i].flags & DFQ_PARAM_FLAG_REQUIRED) {
            shifted[i].flags = 0;
            shifted[i].default_value = "1";
        }
    }
    DfqFeatureClass schema = { .kind = DFQ_FEATURE_TRANSFORM, .name = "schema", .description = "The schema",
                               .params = shifted, .n_params = dfq_pipeline_n_param_specs,
                               .instance_size = sizeof (SchemaInst) };
    g_assert_true (dfq_registry_add_feature (registry, &schema, &error));
    g_assert_no_error (error);
}

static void
test_add_duplicate (void)
{
    g_test_summary ("A built-in class registered twice: DUPLICATE_FEATURE; same name, other kind: fine");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_add_feature (registry, &toy_kd_class, &error));
    g_assert_false (dfq_registry_add_feature (registry, &toy_kd_class, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_DUPLICATE_FEATURE);
    g_assert_nonnull (strstr (error->message, "built-in"));
    g_clear_error (&error);
    DfqFeatureClass other_kind = toy_kd_class;
    other_kind.kind = DFQ_FEATURE_TRANSFORM;
    g_assert_true (dfq_registry_add_feature (registry, &other_kind, &error));
    g_assert_true (dfq_registry_find_any (registry, "toy-kd") == &toy_kd_class);

    DfqPluginInfo info = { 0 };
    g_assert_true (dfq_registry_get_plugin_info (registry, &toy_kd_class, &info));
    g_assert_null (info.plugin_name);
    g_assert_null (info.sha256);
    g_assert_false (dfq_registry_get_plugin_info (registry, &toy_ce_class, &info));
}

static void
test_list_sorted (void)
{
    g_test_summary ("dfq_registry_list returns a kind's classes sorted by name");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_assert_true (host_test_register_features (registry, NULL));
    g_autoptr (GPtrArray) synths = dfq_registry_list (registry, DFQ_FEATURE_SYNTHESIZER);
    g_assert_cmpuint (synths->len, ==, 2);
    g_assert_cmpstr (((const DfqFeatureClass *) synths->pdata[0])->name, ==, "toy-gen");
    g_assert_cmpstr (((const DfqFeatureClass *) synths->pdata[1])->name, ==, "zeroq");
    g_assert_null (dfq_registry_find (registry, DFQ_FEATURE_LOSS, "zeroq"));
    g_assert_null (dfq_registry_find_any (registry, "nope"));
}

static void
test_feature_defaults (void)
{
    g_test_summary ("dfq_feature_new_default: every param at its default (struct defaults, feature-list "
                    "defaults with weights), init called, finalize called by free");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_assert_true (host_test_register_features (registry, NULL));
    g_autoptr (GError) error = NULL;
    DfqFeature *feature = dfq_feature_new_default (registry, &toy_gen_class, &error);
    g_assert_no_error (error);
    ToyGen *gen = (ToyGen *) feature;
    g_assert_cmpint (toy_gen_alive, ==, 1);
    g_assert_cmpint (gen->latent, ==, 100);
    g_assert_nonnull (gen->buffer);
    g_assert_cmpint (gen->optimizer.use, ==, DFQ_OPTIM_ADAM);
    g_assert_cmpfloat (gen->optimizer.lr, ==, 1e-3);
    g_assert_cmpuint (gen->optimizer.betas.n, ==, 2);
    g_assert_cmpfloat (gen->optimizer.betas.v[0], ==, 0.5);
    g_assert_cmpfloat (gen->optimizer.gamma, ==, 0.1);
    g_assert_cmpuint (gen->losses->len, ==, 2);
    DfqFeature *kd = gen->losses->pdata[1];
    g_assert_cmpstr (kd->klass->name, ==, "toy-kd");
    g_assert_cmpfloat (kd->weight, ==, 0.1);
    g_assert_cmpfloat (((ToyKd *) kd)->temperature, ==, 2.0);
    g_assert_cmpstr (kd->label, ==, "toy-gen.losses[1] (toy-kd)");
    dfq_feature_free (feature);
    g_assert_cmpint (toy_gen_alive, ==, 0);

    /* Every registered feature instantiates with its defaults (what the
     * conformance test does for plugins). */
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        for (guint i = 0; i < list->len; i++) {
            g_autoptr (DfqFeature) f = dfq_feature_new_default (registry, list->pdata[i], &error);
            g_assert_no_error (error);
            g_assert_nonnull (f);
        }
    }
    g_assert_cmpint (toy_gen_alive, ==, 0);
}

static void
test_feature_default_unregistered (void)
{
    g_test_summary ("A default naming a feature nobody registered fails at instantiation, not at registration");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_add_feature (registry, &toy_gen_class, &error));
    g_assert_null (dfq_feature_new_default (registry, &toy_gen_class, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_UNKNOWN_FEATURE);
    g_assert_nonnull (strstr (error->message, "unknown loss 'toy-ce'"));
    g_assert_nonnull (strstr (error->message, "the default value of 'losses'"));
    g_assert_cmpint (toy_gen_alive, ==, 0);
}

typedef struct {
    DfqFeature parent;
    DfqFeature *self_ref;
} LoopInst;

static const DfqParamSpec loop_params[] = {
    DFQ_PARAM_FEATURE (LoopInst, self_ref, "Names its own feature", DFQ_FEATURE_TRANSFORM, "loop"),
};
static const DfqFeatureClass loop_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_TRANSFORM, "loop", "Default loop", LoopInst, loop_params);

static void
test_feature_default_loop (void)
{
    g_test_summary ("A default that names its own feature ends with LIMIT, not a stack overflow");
    g_autoptr (DfqRegistry) registry = dfq_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_add_feature (registry, &loop_class, &error));
    g_assert_null (dfq_feature_new_default (registry, &loop_class, &error));
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_LIMIT);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_setenv ("DFQ_PLUGIN_SYSTEM_PATH", "", TRUE);

    g_test_add_func ("/registry/load/good", test_load_good);
    for (guint i = 0; i < G_N_ELEMENTS (broken_cases); i++) {
        g_autofree char *name = g_strdup_printf ("/registry/load/%s", broken_cases[i].fixture);
        g_test_add_data_func (name, &broken_cases[i], test_load_broken);
    }
    g_test_add_func ("/registry/load/garbage", test_load_garbage);
    g_test_add_func ("/registry/load/twice", test_load_twice);
    g_test_add_func ("/registry/scan/fixtures", test_scan_fixtures);
    g_test_add_func ("/registry/scan/search-path", test_scan_search_path);
    for (guint i = 0; i < G_N_ELEMENTS (bad_class_cases); i++) {
        g_autofree char *name = g_strdup_printf ("/registry/add/bad/%s", bad_class_cases[i].case_name);
        g_test_add_data_func (name, &bad_class_cases[i], test_add_bad_class);
    }
    g_test_add_func ("/registry/add/good-tables", test_add_good_tables);
    g_test_add_func ("/registry/add/duplicate", test_add_duplicate);
    g_test_add_func ("/registry/list/sorted", test_list_sorted);
    g_test_add_func ("/registry/feature/defaults", test_feature_defaults);
    g_test_add_func ("/registry/feature/default-unregistered", test_feature_default_unregistered);
    g_test_add_func ("/registry/feature/default-loop", test_feature_default_loop);
    return g_test_run ();
}
