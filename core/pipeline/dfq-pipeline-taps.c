/* Tap patterns against the models (core/pipeline): every loss of a pipeline,
 * wherever it sits (train.losses, a synthesizer's loss list, a loss inside a
 * loss), names the feature maps it reads by glob patterns over tap names. A
 * pattern that matches no tap of the teacher or the student would fail only
 * inside `dfq run`; here it is an error of `dfq validate`, at the pattern's
 * file:line:col, with the names that exist. The student is a fresh instance of
 * the teacher's model, so both have the teacher's taps. */
#include <string.h>

#include <dfq/dfq.h>

#include "../params/dfq-params-private.h"

typedef struct {
    const DfqModel *teacher;
    GPtrArray *taps;          /* DfqModelPoint of the teacher */
    GPtrArray *names;         /* const char * into @taps, for suggestions */
    GPtrArray *student_names; /* char *: @names and the quantization taps of the sites (owned) */
} DfqTapCheck;

/* The scalar of @node's subtree (a feature's mapping) whose text is @text, or
 * NULL: where a pattern given as a parameter was written. */
static const DfqConfigNode *
dfq_pipeline_find_scalar (const DfqConfigNode *node, const char *text, guint depth)
{
    if (node == NULL || depth > DFQ_CONFIG_MAX_DEPTH)
        return NULL;
    if (node->kind == DFQ_CONFIG_SCALAR)
        return g_strcmp0 (node->scalar, text) == 0 ? node : NULL;
    if (node->kind != DFQ_CONFIG_MAPPING && node->kind != DFQ_CONFIG_SEQUENCE)
        return NULL;
    for (guint i = 0; i < node->values->len; i++) {
        const DfqConfigNode *found = dfq_pipeline_find_scalar (node->values->pdata[i], text, depth + 1);
        if (found != NULL)
            return found;
    }
    return NULL;
}

static gboolean
dfq_pipeline_pattern_matches (const GPtrArray *names, const char *pattern)
{
    g_autoptr (GPatternSpec) spec = g_pattern_spec_new (pattern);
    for (guint i = 0; i < names->len; i++)
        if (g_pattern_spec_match_string (spec, names->pdata[i]))
            return TRUE;
    return FALSE;
}

static gboolean
dfq_pipeline_check_patterns (const DfqTapCheck *check, const DfqFeature *loss, const char *const *patterns,
                             const char *side, const DfqConfigNode *node, GError **error)
{
    const GPtrArray *names = g_str_equal (side, "student") ? check->student_names : check->names;
    for (guint i = 0; patterns != NULL && patterns[i] != NULL; i++) {
        if (dfq_pipeline_pattern_matches (names, patterns[i]))
            continue;
        const DfqConfigNode *at = dfq_pipeline_find_scalar (node, patterns[i], 0);
        GString *known = g_string_new (NULL);
        for (guint t = 0; t < names->len; t++)
            g_string_append_printf (known, "%s%s", t > 0 ? ", " : "", (const char *) names->pdata[t]);
        const char *suggestion = dfq_priv_suggest (patterns[i], (const char *const *) names->pdata, names->len);
        dfq_config_set_error (error, at != NULL ? at : node, DFQ_PIPELINE_ERROR_BAD_VALUE,
                              "%s: tap pattern '%s' (%s) matches no tap of model '%s' (taps: %s)%s%s%s; "
                              "dfq inspect %s --taps lists them with their shapes",
                              loss->label, patterns[i], side, ((const DfqFeature *) check->teacher)->klass->name,
                              known->str, suggestion != NULL ? "; did you mean '" : "",
                              suggestion != NULL ? suggestion : "", suggestion != NULL ? "'?" : "",
                              ((const DfqFeature *) check->teacher)->klass->name);
        g_string_free (known, TRUE);
        return FALSE;
    }
    return TRUE;
}

static gboolean dfq_pipeline_check_params (const DfqTapCheck *check, const DfqParamSpec *specs, guint n_specs,
                                           gconstpointer base, const DfqConfigNode *node, guint depth,
                                           GError **error);

/* One feature: its own patterns if it is a loss, then the features among its
 * parameters. @node: where it was written (or the nearest enclosing node). */
static gboolean
dfq_pipeline_check_feature (const DfqTapCheck *check, const DfqFeature *feature, const DfqConfigNode *node,
                            guint depth, GError **error)
{
    const DfqFeatureClass *klass = feature->klass;
    if (klass->kind == DFQ_FEATURE_LOSS) {
        const DfqLossClass *loss_class = (const DfqLossClass *) klass;
        DfqLoss *loss = (DfqLoss *) feature;
        if (loss_class->teacher_tap_patterns != NULL &&
            !dfq_pipeline_check_patterns (check, feature, loss_class->teacher_tap_patterns (loss), "teacher", node,
                                          error))
            return FALSE;
        if (loss_class->student_tap_patterns != NULL &&
            !dfq_pipeline_check_patterns (check, feature, loss_class->student_tap_patterns (loss), "student", node,
                                          error))
            return FALSE;
    }
    return dfq_pipeline_check_params (check, klass->params, klass->n_params, feature, node, depth + 1, error);
}

static gboolean
dfq_pipeline_check_params (const DfqTapCheck *check, const DfqParamSpec *specs, guint n_specs, gconstpointer base,
                           const DfqConfigNode *node, guint depth, GError **error)
{
    if (depth > DFQ_CONFIG_MAX_DEPTH)
        return TRUE;
    for (guint i = 0; i < n_specs; i++) {
        const DfqParamSpec *spec = &specs[i];
        gconstpointer field = (const guint8 *) base + spec->offset;
        const DfqConfigNode *child = node != NULL && node->kind == DFQ_CONFIG_MAPPING
                                         ? dfq_config_mapping_get (node, spec->name)
                                         : NULL;
        const DfqConfigNode *at = child != NULL ? child : node;
        if (spec->type == DFQ_PARAM_TYPE_STRUCT) {
            if (!dfq_pipeline_check_params (check, spec->sub_params, spec->n_sub_params, field, at, depth + 1, error))
                return FALSE;
        } else if (spec->type == DFQ_PARAM_TYPE_FEATURE) {
            const DfqFeature *feature = *(DfqFeature *const *) field;
            if (feature != NULL && feature->klass->kind != DFQ_FEATURE_MODEL &&
                !dfq_pipeline_check_feature (check, feature, at, depth, error))
                return FALSE;
        } else if (spec->type == DFQ_PARAM_TYPE_FEATURE_LIST) {
            const GPtrArray *list = *(GPtrArray *const *) field;
            for (guint k = 0; list != NULL && k < list->len; k++) {
                const DfqConfigNode *item = child != NULL && child->kind == DFQ_CONFIG_SEQUENCE &&
                                                    k < child->values->len
                                                ? child->values->pdata[k]
                                                : at;
                if (!dfq_pipeline_check_feature (check, list->pdata[k], item, depth, error))
                    return FALSE;
            }
        }
    }
    return TRUE;
}

gboolean
dfq_pipeline_check_taps (const DfqPipeline *pipeline, GError **error)
{
    g_return_val_if_fail (pipeline != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
    const DfqPipelineConfig *config = dfq_pipeline_get_config (pipeline);
    const DfqFeature *teacher = config->teacher.model;
    /* A pipeline without a real model (host fixtures) has no taps to check. */
    if (teacher == NULL || !dfq_model_is_built (teacher))
        return TRUE;
    DfqTapCheck check = { (const DfqModel *) teacher, NULL, g_ptr_array_new (), g_ptr_array_new_with_free_func (g_free) };
    check.taps = dfq_model_list_taps ((DfqModel *) teacher, 1, error);
    g_autoptr (GPtrArray) sites = check.taps != NULL ? dfq_model_list_sites ((DfqModel *) teacher, 1, error) : NULL;
    if (sites == NULL) {
        g_ptr_array_unref (check.names);
        g_ptr_array_unref (check.student_names);
        g_clear_pointer (&check.taps, g_ptr_array_unref);
        g_prefix_error (error, "teacher.model: ");
        return FALSE;
    }
    for (guint i = 0; i < check.taps->len; i++) {
        g_ptr_array_add (check.names, ((DfqModelPoint *) check.taps->pdata[i])->name);
        g_ptr_array_add (check.student_names, g_strdup (((DfqModelPoint *) check.taps->pdata[i])->name));
    }
    for (guint i = 0; i < sites->len; i++) {
        const DfqModelPoint *site = sites->pdata[i];
        g_ptr_array_add (check.student_names,
                         g_strdup_printf ("%s:%s", site->name, site->kind == DFQ_SITE_WEIGHT ? "wquant" : "quant"));
    }
    gboolean ok = dfq_pipeline_check_params (&check, dfq_pipeline_param_specs, dfq_pipeline_n_param_specs, config,
                                             dfq_pipeline_get_tree (pipeline), 0, error);
    g_ptr_array_unref (check.names);
    g_ptr_array_unref (check.student_names);
    g_ptr_array_unref (check.taps);
    return ok;
}
