/* Transforms (core/model): the TRANSFORM feature kind's helpers. A chain
 * applies a list of transforms, in list order, to every conv input of a
 * forward through DfqForward.conv_input (dfq-model.c calls it before each
 * conv). The hook has no error path, so a failure is kept in the chain and
 * reported after the forward (dfq_transform_chain_check). */
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-transform.h>

DfqTensor *
dfq_transform_conv_input (DfqTransform *self, DfqForward *fwd, const char *conv, int stride, DfqTensor *x,
                          GError **error)
{
    g_return_val_if_fail (self != NULL && fwd != NULL && x != NULL, NULL);
    const DfqTransformClass *klass = DFQ_TRANSFORM_CLASS (self);
    g_return_val_if_fail (klass->parent.kind == DFQ_FEATURE_TRANSFORM && klass->conv_input != NULL, NULL);
    if (klass->applies != NULL && !klass->applies (self, conv, stride))
        return x;
    DfqTensor *y = klass->conv_input (self, fwd, conv, stride, x, error);
    if (y == NULL) {
        if (error != NULL && *error == NULL)
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE, "transform '%s' failed on conv '%s'",
                         klass->parent.name, conv);
        return NULL;
    }
    if (y->n_dims != x->n_dims || memcmp (y->shape, x->shape, sizeof x->shape) != 0) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                     "transform '%s' changed the shape of the input of conv '%s' (a transform must keep it)",
                     klass->parent.name, conv);
        return NULL;
    }
    return y;
}

gboolean
dfq_transform_list_check (GPtrArray *transforms, GError **error)
{
    for (guint i = 0; transforms != NULL && i < transforms->len; i++) {
        const DfqFeature *f = transforms->pdata[i];
        const DfqFeatureClass *k = f->klass;
        if (k->kind != DFQ_FEATURE_TRANSFORM || k->instance_size < sizeof (DfqTransform) ||
            ((const DfqTransformClass *) k)->conv_input == NULL) {
            g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                         "transforms[%u] ('%s') is not a usable transform: a TRANSFORM class with a conv_input and "
                         "a DfqTransform first in its instance",
                         i, k->name);
            return FALSE;
        }
    }
    return TRUE;
}

void
dfq_transform_chain_init (DfqTransformChain *chain, GPtrArray *transforms)
{
    g_return_if_fail (chain != NULL);
    chain->transforms = transforms;
    for (guint i = 0; transforms != NULL && i < transforms->len; i++)
        ((DfqTransform *) transforms->pdata[i])->stream = DFQ_TRANSFORM_STREAM_BASE + i;
}

void
dfq_transform_chain_clear (DfqTransformChain *chain)
{
    g_return_if_fail (chain != NULL);
    g_clear_error (&chain->error);
}

gboolean
dfq_transform_chain_active (const DfqTransformChain *chain)
{
    return chain != NULL && chain->transforms != NULL && chain->transforms->len > 0;
}

/* The DfqConvInputFn of a chain. */
static DfqTensor *
dfq_transform_chain_hook (gpointer data, DfqForward *fwd, const char *conv, int stride, DfqTensor *x)
{
    DfqTransformChain *chain = data;
    for (guint i = 0; i < chain->transforms->len && chain->error == NULL; i++) {
        DfqTensor *y = dfq_transform_conv_input (chain->transforms->pdata[i], fwd, conv, stride, x, &chain->error);
        if (y == NULL)
            return x;
        x = y;
    }
    return x;
}

void
dfq_transform_chain_install (DfqTransformChain *chain, DfqForward *fwd)
{
    g_return_if_fail (fwd != NULL);
    if (!dfq_transform_chain_active (chain))
        return;
    fwd->conv_input = dfq_transform_chain_hook;
    fwd->conv_input_data = chain;
}

gboolean
dfq_transform_chain_check (DfqTransformChain *chain, GError **error)
{
    if (chain == NULL || chain->error == NULL)
        return TRUE;
    g_propagate_prefixed_error (error, g_steal_pointer (&chain->error), "transforms: ");
    return FALSE;
}
