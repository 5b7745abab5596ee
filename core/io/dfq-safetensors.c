/* Safetensors weights files (core/io): a validating reader over a mapped file
 * or memory, float32 conversion, the model-table loader with rename rules, and
 * an atomic writer whose output the reference (Rust/PyTorch) reader accepts.
 * The file is untrusted input: every size is checked before it is used, with
 * overflow-checked arithmetic, and every defect becomes a GError. */
#include <string.h>

#include <json-glib/json-glib.h>

#include <dfq/dfq-safetensors.h>

typedef struct {
    DfqSafetensorsInfo info;
    char *name;
    gint64 *shape;
} DfqSafetensorsEntry;

struct _DfqSafetensors {
    char *name;          /* path or display name, for messages */
    GBytes *bytes;       /* the whole file */
    const guint8 *data;  /* start of the data buffer inside @bytes */
    gsize data_size;
    GPtrArray *entries;  /* DfqSafetensorsEntry, sorted by data_begin */
    GHashTable *by_name; /* name -> entry (borrowed) */
    GHashTable *metadata;
};

typedef struct {
    GRegex *regex;       /* NULL for a prefix rule */
    char *from;          /* prefix rule: leading text to replace */
    char *to;            /* replacement (both kinds) */
} DfqSafetensorsRule;

struct _DfqSafetensorsRenames {
    GArray *rules; /* DfqSafetensorsRule */
};

static const struct {
    const char *name;
    gsize size;
} dfq_safetensors_dtypes[DFQ_SAFETENSORS_N_DTYPES] = {
    [DFQ_SAFETENSORS_F64] = { "F64", 8 },
    [DFQ_SAFETENSORS_F32] = { "F32", 4 },
    [DFQ_SAFETENSORS_F16] = { "F16", 2 },
    [DFQ_SAFETENSORS_BF16] = { "BF16", 2 },
    [DFQ_SAFETENSORS_I64] = { "I64", 8 },
    [DFQ_SAFETENSORS_I32] = { "I32", 4 },
    [DFQ_SAFETENSORS_I16] = { "I16", 2 },
    [DFQ_SAFETENSORS_I8] = { "I8", 1 },
    [DFQ_SAFETENSORS_U8] = { "U8", 1 },
    [DFQ_SAFETENSORS_BOOL] = { "BOOL", 1 },
};

/* Deepest JSON nesting accepted in a header (see dfq_safetensors_json_depth). */
#define DFQ_SAFETENSORS_MAX_DEPTH 16
/* How many names an error message lists before "and N more". */
#define DFQ_SAFETENSORS_LIST_MAX 5

const char *
dfq_safetensors_dtype_name (DfqSafetensorsDType dtype)
{
    g_return_val_if_fail (dtype < DFQ_SAFETENSORS_N_DTYPES, "?");
    return dfq_safetensors_dtypes[dtype].name;
}

gsize
dfq_safetensors_dtype_size (DfqSafetensorsDType dtype)
{
    g_return_val_if_fail (dtype < DFQ_SAFETENSORS_N_DTYPES, 0);
    return dfq_safetensors_dtypes[dtype].size;
}

static void
dfq_safetensors_entry_free (gpointer p)
{
    DfqSafetensorsEntry *e = p;
    g_free (e->name);
    g_free (e->shape);
    g_free (e);
}

void
dfq_safetensors_free (DfqSafetensors *self)
{
    if (self == NULL)
        return;
    g_clear_pointer (&self->by_name, g_hash_table_unref);
    g_clear_pointer (&self->entries, g_ptr_array_unref);
    g_clear_pointer (&self->metadata, g_hash_table_unref);
    g_clear_pointer (&self->bytes, g_bytes_unref);
    g_free (self->name);
    g_free (self);
}

/* ------------------------------------------------------------------------ */
/* Header parsing */

static gboolean
dfq_safetensors_parse_dtype (const char *s, DfqSafetensorsDType *out)
{
    for (int i = 0; i < DFQ_SAFETENSORS_N_DTYPES; i++)
        if (strcmp (s, dfq_safetensors_dtypes[i].name) == 0) {
            *out = (DfqSafetensorsDType) i;
            return TRUE;
        }
    return FALSE;
}

/* A JSON integer >= 0. json-glib keeps integers as G_TYPE_INT64 and anything
 * with a fraction or exponent as G_TYPE_DOUBLE, which the format forbids. */
static gboolean
dfq_safetensors_json_uint (JsonNode *node, guint64 *out, const char **why)
{
    if (node == NULL || JSON_NODE_TYPE (node) != JSON_NODE_VALUE || json_node_get_value_type (node) != G_TYPE_INT64) {
        *why = "not an integer";
        return FALSE;
    }
    gint64 v = json_node_get_int (node);
    if (v < 0) {
        *why = "negative";
        return FALSE;
    }
    *out = (guint64) v;
    return TRUE;
}

#define DFQ_ST_FAIL(...)                                                       \
    G_STMT_START                                                               \
    {                                                                          \
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT, __VA_ARGS__); \
        return FALSE;                                                          \
    }                                                                          \
    G_STMT_END

static gboolean
dfq_safetensors_parse_metadata (DfqSafetensors *self, JsonNode *node, GError **error)
{
    if (JSON_NODE_TYPE (node) != JSON_NODE_OBJECT)
        DFQ_ST_FAIL ("%s: \"__metadata__\" is not a JSON object", self->name);
    JsonObject *obj = json_node_get_object (node);
    g_autoptr (GList) keys = json_object_get_members (obj);
    for (GList *l = keys; l != NULL; l = l->next) {
        const char *key = l->data;
        JsonNode *v = json_object_get_member (obj, key);
        if (JSON_NODE_TYPE (v) != JSON_NODE_VALUE || json_node_get_value_type (v) != G_TYPE_STRING)
            DFQ_ST_FAIL ("%s: \"__metadata__\" value of '%s' is not a string", self->name, key);
        g_hash_table_replace (self->metadata, g_strdup (key), g_strdup (json_node_get_string (v)));
    }
    return TRUE;
}

static gboolean
dfq_safetensors_parse_entry (DfqSafetensors *self, const char *name, JsonNode *node, GError **error)
{
    const char *why = NULL;

    if (JSON_NODE_TYPE (node) != JSON_NODE_OBJECT)
        DFQ_ST_FAIL ("%s: tensor '%s': entry is not a JSON object", self->name, name);
    JsonObject *obj = json_node_get_object (node);

    JsonNode *dtype_node = json_object_get_member (obj, "dtype");
    JsonNode *shape_node = json_object_get_member (obj, "shape");
    JsonNode *offsets_node = json_object_get_member (obj, "data_offsets");
    if (dtype_node == NULL)
        DFQ_ST_FAIL ("%s: tensor '%s': missing \"dtype\"", self->name, name);
    if (shape_node == NULL)
        DFQ_ST_FAIL ("%s: tensor '%s': missing \"shape\"", self->name, name);
    if (offsets_node == NULL)
        DFQ_ST_FAIL ("%s: tensor '%s': missing \"data_offsets\"", self->name, name);

    DfqSafetensorsDType dtype;
    if (JSON_NODE_TYPE (dtype_node) != JSON_NODE_VALUE || json_node_get_value_type (dtype_node) != G_TYPE_STRING)
        DFQ_ST_FAIL ("%s: tensor '%s': \"dtype\" is not a string", self->name, name);
    if (!dfq_safetensors_parse_dtype (json_node_get_string (dtype_node), &dtype))
        DFQ_ST_FAIL ("%s: tensor '%s': unknown dtype '%s' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)",
                     self->name, name, json_node_get_string (dtype_node));

    if (JSON_NODE_TYPE (shape_node) != JSON_NODE_ARRAY)
        DFQ_ST_FAIL ("%s: tensor '%s': \"shape\" is not an array", self->name, name);
    JsonArray *shape_arr = json_node_get_array (shape_node);
    guint rank = json_array_get_length (shape_arr);
    if (rank > DFQ_SAFETENSORS_MAX_RANK)
        DFQ_ST_FAIL ("%s: tensor '%s': rank %u exceeds %d", self->name, name, rank, DFQ_SAFETENSORS_MAX_RANK);
    gint64 shape[DFQ_SAFETENSORS_MAX_RANK];
    guint64 numel = 1;
    gboolean numel_overflow = FALSE;
    for (guint d = 0; d < rank; d++) {
        guint64 v;
        if (!dfq_safetensors_json_uint (json_array_get_element (shape_arr, d), &v, &why))
            DFQ_ST_FAIL ("%s: tensor '%s': shape dimension %u is %s", self->name, name, d, why);
        if (v > G_MAXINT64)
            DFQ_ST_FAIL ("%s: tensor '%s': shape dimension %u is too large", self->name, name, d);
        shape[d] = (gint64) v;
        if (!g_uint64_checked_mul (&numel, numel, v))
            numel_overflow = TRUE;
    }

    if (JSON_NODE_TYPE (offsets_node) != JSON_NODE_ARRAY || json_array_get_length (json_node_get_array (offsets_node)) != 2)
        DFQ_ST_FAIL ("%s: tensor '%s': \"data_offsets\" is not an array of two integers", self->name, name);
    JsonArray *off_arr = json_node_get_array (offsets_node);
    guint64 begin, end;
    if (!dfq_safetensors_json_uint (json_array_get_element (off_arr, 0), &begin, &why))
        DFQ_ST_FAIL ("%s: tensor '%s': data_offsets begin is %s", self->name, name, why);
    if (!dfq_safetensors_json_uint (json_array_get_element (off_arr, 1), &end, &why))
        DFQ_ST_FAIL ("%s: tensor '%s': data_offsets end is %s", self->name, name, why);
    if (begin > end)
        DFQ_ST_FAIL ("%s: tensor '%s': data_offsets begin %" G_GUINT64_FORMAT " > end %" G_GUINT64_FORMAT,
                     self->name, name, begin, end);
    if (end > self->data_size)
        DFQ_ST_FAIL ("%s: tensor '%s': data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] "
                     "out of the %" G_GSIZE_FORMAT "-byte data buffer",
                     self->name, name, begin, end, self->data_size);
    guint64 nbytes;
    if (numel_overflow || !g_uint64_checked_mul (&nbytes, numel, dfq_safetensors_dtypes[dtype].size))
        DFQ_ST_FAIL ("%s: tensor '%s': shape is too large (byte size overflows 64 bits)", self->name, name);
    if (nbytes != end - begin)
        DFQ_ST_FAIL ("%s: tensor '%s': %s x %" G_GUINT64_FORMAT " elements = %" G_GUINT64_FORMAT
                     " bytes but data_offsets span %" G_GUINT64_FORMAT " bytes",
                     self->name, name, dfq_safetensors_dtypes[dtype].name, numel, nbytes, end - begin);

    DfqSafetensorsEntry *e = g_new0 (DfqSafetensorsEntry, 1);
    e->name = g_strdup (name);
    e->shape = g_new0 (gint64, MAX (rank, 1));
    memcpy (e->shape, shape, rank * sizeof (gint64));
    e->info.name = e->name;
    e->info.dtype = dtype;
    e->info.n_dims = (int) rank;
    e->info.shape = e->shape;
    e->info.numel = (gint64) numel;
    e->info.data_begin = begin;
    e->info.data_end = end;
    g_ptr_array_add (self->entries, e);
    g_hash_table_insert (self->by_name, e->name, e);
    return TRUE;
}

/* Deepest nesting of [ and { outside strings (stops counting past the limit). */
static int
dfq_safetensors_json_depth (const char *text, gsize len)
{
    int depth = 0, max_depth = 0;
    gboolean in_string = FALSE, escaped = FALSE;
    for (gsize i = 0; i < len && max_depth <= DFQ_SAFETENSORS_MAX_DEPTH; i++) {
        char ch = text[i];
        if (in_string) {
            if (escaped)
                escaped = FALSE;
            else if (ch == '\\')
                escaped = TRUE;
            else if (ch == '"')
                in_string = FALSE;
        } else if (ch == '"') {
            in_string = TRUE;
        } else if (ch == '[' || ch == '{') {
            depth++;
            max_depth = MAX (max_depth, depth);
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return max_depth;
}

static gint
dfq_safetensors_entry_cmp (gconstpointer a, gconstpointer b)
{
    const DfqSafetensorsEntry *x = *(DfqSafetensorsEntry *const *) a;
    const DfqSafetensorsEntry *y = *(DfqSafetensorsEntry *const *) b;
    if (x->info.data_begin != y->info.data_begin)
        return x->info.data_begin < y->info.data_begin ? -1 : 1;
    if (x->info.data_end != y->info.data_end)
        return x->info.data_end < y->info.data_end ? -1 : 1;
    return strcmp (x->name, y->name);
}

static gboolean
dfq_safetensors_parse (DfqSafetensors *self, GError **error)
{
    gsize size = 0;
    const guint8 *bytes = g_bytes_get_data (self->bytes, &size);

    if (size < 8)
        DFQ_ST_FAIL ("%s: file is %" G_GSIZE_FORMAT " bytes, too short for the 8-byte header length", self->name, size);
    guint64 header_len;
    memcpy (&header_len, bytes, 8);
    header_len = GUINT64_FROM_LE (header_len);
    if (header_len > DFQ_SAFETENSORS_MAX_HEADER_SIZE)
        DFQ_ST_FAIL ("%s: header length %" G_GUINT64_FORMAT " exceeds the %d-byte limit",
                     self->name, header_len, DFQ_SAFETENSORS_MAX_HEADER_SIZE);
    if (header_len > size - 8)
        DFQ_ST_FAIL ("%s: header length %" G_GUINT64_FORMAT " is larger than the file (%" G_GSIZE_FORMAT " bytes)",
                     self->name, header_len, size);
    const char *header = (const char *) bytes + 8;
    self->data = bytes + 8 + header_len;
    self->data_size = size - 8 - (gsize) header_len;

    /* g_utf8_validate_len() also refuses NUL bytes, which json-glib would
     * treat as the end of the text. */
    const char *bad = NULL;
    if (!g_utf8_validate_len (header, (gsize) header_len, &bad))
        DFQ_ST_FAIL ("%s: header is not valid UTF-8 (byte %" G_GSIZE_FORMAT " of the header)",
                     self->name, (gsize) (bad - header));

    /* json-glib parses recursively: a header of a million '[' would overflow
     * the stack. A real header nests 3 deep (object, entry, shape). */
    int depth = dfq_safetensors_json_depth (header, (gsize) header_len);
    if (depth > DFQ_SAFETENSORS_MAX_DEPTH)
        DFQ_ST_FAIL ("%s: header nests JSON more than %d levels deep (a safetensors header needs 3)",
                     self->name, DFQ_SAFETENSORS_MAX_DEPTH);

    g_autoptr (JsonParser) parser = json_parser_new_immutable ();
    g_autoptr (GError) json_error = NULL;
    if (!json_parser_load_from_data (parser, header, (gssize) header_len, &json_error))
        DFQ_ST_FAIL ("%s: header is not valid JSON: %s", self->name, json_error->message);
    JsonNode *root = json_parser_get_root (parser);
    if (root == NULL || JSON_NODE_TYPE (root) != JSON_NODE_OBJECT)
        DFQ_ST_FAIL ("%s: header is not a JSON object", self->name);

    JsonObject *obj = json_node_get_object (root);
    g_autoptr (GList) names = json_object_get_members (obj);
    for (GList *l = names; l != NULL; l = l->next) {
        const char *name = l->data;
        JsonNode *node = json_object_get_member (obj, name);
        if (strcmp (name, "__metadata__") == 0) {
            if (!dfq_safetensors_parse_metadata (self, node, error))
                return FALSE;
        } else if (!dfq_safetensors_parse_entry (self, name, node, error)) {
            return FALSE;
        }
    }

    /* Overlap check on tensors sorted by offset; empty tensors occupy nothing. */
    g_ptr_array_sort (self->entries, dfq_safetensors_entry_cmp);
    const DfqSafetensorsEntry *prev = NULL;
    for (guint i = 0; i < self->entries->len; i++) {
        const DfqSafetensorsEntry *e = g_ptr_array_index (self->entries, i);
        if (e->info.data_begin == e->info.data_end)
            continue;
        if (prev != NULL && e->info.data_begin < prev->info.data_end)
            DFQ_ST_FAIL ("%s: tensors '%s' [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ") and '%s' [%" G_GUINT64_FORMAT
                         ", %" G_GUINT64_FORMAT ") overlap",
                         self->name, prev->name, prev->info.data_begin, prev->info.data_end,
                         e->name, e->info.data_begin, e->info.data_end);
        prev = e;
    }
    return TRUE;
}

static DfqSafetensors *
dfq_safetensors_alloc (GBytes *bytes, const char *name)
{
    DfqSafetensors *self = g_new0 (DfqSafetensors, 1);
    self->name = g_strdup (name);
    self->bytes = bytes;
    self->entries = g_ptr_array_new_with_free_func (dfq_safetensors_entry_free);
    self->by_name = g_hash_table_new (g_str_hash, g_str_equal);
    self->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    return self;
}

DfqSafetensors *
dfq_safetensors_new_from_bytes (GBytes *bytes, const char *display_name, GError **error)
{
    g_return_val_if_fail (bytes != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    g_autoptr (DfqSafetensors) self = dfq_safetensors_alloc (g_bytes_ref (bytes), display_name ? display_name : "<memory>");
    if (!dfq_safetensors_parse (self, error))
        return NULL;
    return g_steal_pointer (&self);
}

DfqSafetensors *
dfq_safetensors_new_from_file (const char *path, GError **error)
{
    g_return_val_if_fail (path != NULL, NULL);
    g_return_val_if_fail (error == NULL || *error == NULL, NULL);

    g_autoptr (GError) local = NULL;
    /* Mapped, not read: a large checkpoint costs no copy and pages in lazily. */
    GMappedFile *mf = g_mapped_file_new (path, FALSE, &local);
    if (mf == NULL) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_IO, "%s", local->message);
        return NULL;
    }
    GBytes *bytes = g_mapped_file_get_bytes (mf);
    g_mapped_file_unref (mf);

    g_autoptr (DfqSafetensors) self = dfq_safetensors_alloc (bytes, path);
    if (!dfq_safetensors_parse (self, error))
        return NULL;
    return g_steal_pointer (&self);
}

/* ------------------------------------------------------------------------ */
/* Queries and conversion */

const char *
dfq_safetensors_get_name (const DfqSafetensors *self)
{
    g_return_val_if_fail (self != NULL, NULL);
    return self->name;
}

guint
dfq_safetensors_get_n_tensors (const DfqSafetensors *self)
{
    g_return_val_if_fail (self != NULL, 0);
    return self->entries->len;
}

const DfqSafetensorsInfo *
dfq_safetensors_get_info (const DfqSafetensors *self, guint index)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (index < self->entries->len, NULL);
    const DfqSafetensorsEntry *e = g_ptr_array_index (self->entries, index);
    return &e->info;
}

const DfqSafetensorsInfo *
dfq_safetensors_lookup (const DfqSafetensors *self, const char *name)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (name != NULL, NULL);
    const DfqSafetensorsEntry *e = g_hash_table_lookup (self->by_name, name);
    return e ? &e->info : NULL;
}

const char *
dfq_safetensors_get_metadata (const DfqSafetensors *self, const char *key)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (key != NULL, NULL);
    return g_hash_table_lookup (self->metadata, key);
}

GHashTable *
dfq_safetensors_get_metadata_table (const DfqSafetensors *self)
{
    g_return_val_if_fail (self != NULL, NULL);
    return self->metadata;
}

gconstpointer
dfq_safetensors_get_data (const DfqSafetensors *self, const char *name, gsize *size)
{
    const DfqSafetensorsInfo *info = dfq_safetensors_lookup (self, name);
    if (info == NULL) {
        if (size)
            *size = 0;
        return NULL;
    }
    if (size)
        *size = (gsize) (info->data_end - info->data_begin);
    return self->data + info->data_begin;
}

/* IEEE half -> float, exact for every value (subnormals, Inf, NaN). */
static inline float
dfq_safetensors_half_to_float (guint16 h)
{
    guint32 sign = (guint32) (h & 0x8000u) << 16;
    guint32 exp = (h >> 10) & 0x1fu;
    guint32 mant = h & 0x3ffu;
    guint32 bits;
    if (exp == 0) {
        if (mant == 0)
            bits = sign;
        else {
            /* subnormal: mant * 2^-24, exact in float */
            float f = (float) mant * (1.0f / 16777216.0f);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy (&f, &bits, 4);
    return f;
}

/* Converts @n elements of @dtype at @src (little-endian) to float32. */
static void
dfq_safetensors_convert_f32 (DfqSafetensorsDType dtype, const guint8 *src, gint64 n, float *restrict out)
{
    /* The buffer offsets need not be aligned, so every element is read with
     * memcpy; compilers turn it into a plain load. Type switch outside the loops. */
    switch (dtype) {
    case DFQ_SAFETENSORS_F32:
        for (gint64 i = 0; i < n; i++) {
            guint32 b;
            memcpy (&b, src + 4 * i, 4);
            b = GUINT32_FROM_LE (b);
            memcpy (&out[i], &b, 4);
        }
        break;
    case DFQ_SAFETENSORS_F64:
        for (gint64 i = 0; i < n; i++) {
            guint64 b;
            double v;
            memcpy (&b, src + 8 * i, 8);
            b = GUINT64_FROM_LE (b);
            memcpy (&v, &b, 8);
            out[i] = (float) v;
        }
        break;
    case DFQ_SAFETENSORS_F16:
        for (gint64 i = 0; i < n; i++) {
            guint16 b;
            memcpy (&b, src + 2 * i, 2);
            out[i] = dfq_safetensors_half_to_float (GUINT16_FROM_LE (b));
        }
        break;
    case DFQ_SAFETENSORS_BF16:
        for (gint64 i = 0; i < n; i++) {
            guint16 b;
            memcpy (&b, src + 2 * i, 2);
            guint32 bits = (guint32) GUINT16_FROM_LE (b) << 16;
            memcpy (&out[i], &bits, 4);
        }
        break;
    case DFQ_SAFETENSORS_I64:
        for (gint64 i = 0; i < n; i++) {
            guint64 b;
            memcpy (&b, src + 8 * i, 8);
            out[i] = (float) (gint64) GUINT64_FROM_LE (b);
        }
        break;
    case DFQ_SAFETENSORS_I32:
        for (gint64 i = 0; i < n; i++) {
            guint32 b;
            memcpy (&b, src + 4 * i, 4);
            out[i] = (float) (gint32) GUINT32_FROM_LE (b);
        }
        break;
    case DFQ_SAFETENSORS_I16:
        for (gint64 i = 0; i < n; i++) {
            guint16 b;
            memcpy (&b, src + 2 * i, 2);
            out[i] = (float) (gint16) GUINT16_FROM_LE (b);
        }
        break;
    case DFQ_SAFETENSORS_I8:
        for (gint64 i = 0; i < n; i++)
            out[i] = (float) (gint8) src[i];
        break;
    case DFQ_SAFETENSORS_U8:
        for (gint64 i = 0; i < n; i++)
            out[i] = (float) src[i];
        break;
    case DFQ_SAFETENSORS_BOOL:
        for (gint64 i = 0; i < n; i++)
            out[i] = src[i] ? 1.0f : 0.0f;
        break;
    default:
        g_assert_not_reached ();
    }
}

static gboolean
dfq_safetensors_is_integer (DfqSafetensorsDType dtype)
{
    return dtype == DFQ_SAFETENSORS_I64 || dtype == DFQ_SAFETENSORS_I32 || dtype == DFQ_SAFETENSORS_I16 ||
           dtype == DFQ_SAFETENSORS_I8 || dtype == DFQ_SAFETENSORS_U8 || dtype == DFQ_SAFETENSORS_BOOL;
}

/* Integer element i as gint64 (only for dfq_safetensors_is_integer dtypes). */
static gint64
dfq_safetensors_int_at (DfqSafetensorsDType dtype, const guint8 *src, gint64 i)
{
    switch (dtype) {
    case DFQ_SAFETENSORS_I64: {
        guint64 b;
        memcpy (&b, src + 8 * i, 8);
        return (gint64) GUINT64_FROM_LE (b);
    }
    case DFQ_SAFETENSORS_I32: {
        guint32 b;
        memcpy (&b, src + 4 * i, 4);
        return (gint32) GUINT32_FROM_LE (b);
    }
    case DFQ_SAFETENSORS_I16: {
        guint16 b;
        memcpy (&b, src + 2 * i, 2);
        return (gint16) GUINT16_FROM_LE (b);
    }
    case DFQ_SAFETENSORS_I8:
        return (gint8) src[i];
    case DFQ_SAFETENSORS_U8:
        return src[i];
    case DFQ_SAFETENSORS_BOOL:
        return src[i] != 0;
    default:
        g_assert_not_reached ();
    }
    return 0;
}

static const char *
dfq_safetensors_shape_string (int n_dims, const gint64 *shape, char *buf, gsize size)
{
    gsize off = (gsize) g_snprintf (buf, size, "[");
    for (int d = 0; d < n_dims && off < size; d++)
        off += (gsize) g_snprintf (buf + off, size - off, "%s%" G_GINT64_FORMAT, d ? ", " : "", shape[d]);
    if (off < size)
        g_snprintf (buf + off, size - off, "]");
    return buf;
}

/* A file shape fits a model tensor if equal, or if a 0-d scalar meets [1]. */
static gboolean
dfq_safetensors_shape_fits (const DfqSafetensorsInfo *info, const DfqTensor *dst)
{
    if (info->n_dims == 0)
        return dfq_tensor_numel (dst) == 1 && (dst->n_dims == 1 || info->numel == 1);
    if (info->n_dims != dst->n_dims)
        return FALSE;
    for (int d = 0; d < info->n_dims; d++)
        if (info->shape[d] != dst->shape[d])
            return FALSE;
    return TRUE;
}

/* Can @info's data go into @dst? (dtype rules of dfq_safetensors_copy_to) */
static gboolean
dfq_safetensors_check_convertible (const DfqSafetensors *self, const DfqSafetensorsInfo *info,
                                   const DfqTensor *dst, GError **error)
{
    if (dst->dtype == DFQ_DTYPE_F32)
        return TRUE;
    if (!dfq_safetensors_is_integer (info->dtype)) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT,
                     "%s: tensor '%s': %s data cannot go into an integer tensor",
                     self->name, info->name, dfq_safetensors_dtype_name (info->dtype));
        return FALSE;
    }
    const guint8 *src = self->data + info->data_begin;
    for (gint64 i = 0; i < info->numel; i++) {
        gint64 v = dfq_safetensors_int_at (info->dtype, src, i);
        if (v < G_MININT32 || v > G_MAXINT32) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT,
                         "%s: tensor '%s': element %" G_GINT64_FORMAT " = %" G_GINT64_FORMAT " does not fit in 32 bits",
                         self->name, info->name, i, v);
            return FALSE;
        }
    }
    return TRUE;
}

/* Copies once every check has passed. */
static void
dfq_safetensors_copy_checked (const DfqSafetensors *self, const DfqSafetensorsInfo *info, DfqTensor *dst)
{
    const guint8 *src = self->data + info->data_begin;
    if (dst->dtype == DFQ_DTYPE_F32) {
        dfq_safetensors_convert_f32 (info->dtype, src, info->numel, dfq_tensor_f32 (dst));
    } else {
        gint32 *out = dfq_tensor_i32 (dst);
        for (gint64 i = 0; i < info->numel; i++)
            out[i] = (gint32) dfq_safetensors_int_at (info->dtype, src, i);
    }
}

static const DfqSafetensorsInfo *
dfq_safetensors_lookup_or_error (const DfqSafetensors *self, const char *name, GError **error)
{
    const DfqSafetensorsInfo *info = dfq_safetensors_lookup (self, name);
    if (info == NULL)
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "%s: no tensor '%s' (the file has %u tensors)", self->name, name, self->entries->len);
    return info;
}

gboolean
dfq_safetensors_read_f32 (const DfqSafetensors *self, const char *name, float *out, gsize n_out, GError **error)
{
    g_return_val_if_fail (self != NULL, FALSE);
    g_return_val_if_fail (name != NULL, FALSE);
    g_return_val_if_fail (out != NULL || n_out == 0, FALSE);

    const DfqSafetensorsInfo *info = dfq_safetensors_lookup_or_error (self, name, error);
    if (info == NULL)
        return FALSE;
    if ((guint64) info->numel != (guint64) n_out) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s: tensor '%s' has %" G_GINT64_FORMAT " elements, caller expects %" G_GSIZE_FORMAT,
                     self->name, name, info->numel, n_out);
        return FALSE;
    }
    dfq_safetensors_convert_f32 (info->dtype, self->data + info->data_begin, info->numel, out);
    return TRUE;
}

gboolean
dfq_safetensors_copy_to (const DfqSafetensors *self, const char *name, DfqTensor *dst, GError **error)
{
    g_return_val_if_fail (self != NULL, FALSE);
    g_return_val_if_fail (name != NULL, FALSE);
    g_return_val_if_fail (dst != NULL && dfq_tensor_is_contiguous (dst), FALSE);
    g_return_val_if_fail (dst->dtype == DFQ_DTYPE_F32 || dst->dtype == DFQ_DTYPE_I32, FALSE);

    const DfqSafetensorsInfo *info = dfq_safetensors_lookup_or_error (self, name, error);
    if (info == NULL)
        return FALSE;
    if (!dfq_safetensors_shape_fits (info, dst)) {
        char a[128], b[128];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s: tensor '%s' is %s in the file, %s in the model", self->name, name,
                     dfq_safetensors_shape_string (info->n_dims, info->shape, a, sizeof a),
                     dfq_tensor_shape_string (dst, b, sizeof b));
        return FALSE;
    }
    if (!dfq_safetensors_check_convertible (self, info, dst, error))
        return FALSE;
    dfq_safetensors_copy_checked (self, info, dst);
    return TRUE;
}

DfqTensor *
dfq_safetensors_get_tensor (const DfqSafetensors *self, const char *name, DfqArena *arena, GError **error)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (arena != NULL, NULL);

    const DfqSafetensorsInfo *info = dfq_safetensors_lookup_or_error (self, name, error);
    if (info == NULL)
        return NULL;
    if (info->n_dims > DFQ_MAX_DIMS) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s: tensor '%s' has rank %d, tensors have at most %d dimensions",
                     self->name, name, info->n_dims, DFQ_MAX_DIMS);
        return NULL;
    }
    gint64 scalar_shape[1] = { 1 };
    DfqTensor *t = info->n_dims == 0 ? dfq_tensor_new (arena, DFQ_DTYPE_F32, 1, scalar_shape)
                                     : dfq_tensor_new (arena, DFQ_DTYPE_F32, info->n_dims, info->shape);
    dfq_safetensors_copy_checked (self, info, t);
    dfq_tensor_set_name (t, "%s", name);
    return t;
}

/* ------------------------------------------------------------------------ */
/* Rename rules */

DfqSafetensorsRenames *
dfq_safetensors_renames_new (void)
{
    DfqSafetensorsRenames *self = g_new0 (DfqSafetensorsRenames, 1);
    self->rules = g_array_new (FALSE, TRUE, sizeof (DfqSafetensorsRule));
    return self;
}

void
dfq_safetensors_renames_free (DfqSafetensorsRenames *self)
{
    if (self == NULL)
        return;
    for (guint i = 0; i < self->rules->len; i++) {
        DfqSafetensorsRule *r = &g_array_index (self->rules, DfqSafetensorsRule, i);
        g_clear_pointer (&r->regex, g_regex_unref);
        g_free (r->from);
        g_free (r->to);
    }
    g_array_unref (self->rules);
    g_free (self);
}

gboolean
dfq_safetensors_renames_add_regex (DfqSafetensorsRenames *self, const char *pattern,
                                   const char *replacement, GError **error)
{
    g_return_val_if_fail (self != NULL, FALSE);
    g_return_val_if_fail (pattern != NULL && replacement != NULL, FALSE);

    if (!g_regex_check_replacement (replacement, NULL, error)) {
        g_prefix_error (error, "rename rule '%s' -> '%s': ", pattern, replacement);
        return FALSE;
    }
    /* no G_REGEX_OPTIMIZE: a JIT buys nothing on a few hundred names and
     * its generated code confuses valgrind */
    GRegex *regex = g_regex_new (pattern, 0, 0, error);
    if (regex == NULL) {
        g_prefix_error (error, "rename rule '%s' -> '%s': ", pattern, replacement);
        return FALSE;
    }
    DfqSafetensorsRule rule = { .regex = regex, .to = g_strdup (replacement) };
    g_array_append_val (self->rules, rule);
    return TRUE;
}

void
dfq_safetensors_renames_add_prefix (DfqSafetensorsRenames *self, const char *from, const char *to)
{
    g_return_if_fail (self != NULL);
    g_return_if_fail (from != NULL && to != NULL);
    DfqSafetensorsRule rule = { .from = g_strdup (from), .to = g_strdup (to) };
    g_array_append_val (self->rules, rule);
}

char *
dfq_safetensors_renames_apply (const DfqSafetensorsRenames *self, const char *name)
{
    g_return_val_if_fail (name != NULL, NULL);
    char *cur = g_strdup (name);
    if (self == NULL)
        return cur;
    for (guint i = 0; i < self->rules->len && cur[0] != '\0'; i++) {
        const DfqSafetensorsRule *r = &g_array_index (self->rules, DfqSafetensorsRule, i);
        char *next = NULL;
        if (r->regex != NULL) {
            g_autoptr (GError) err = NULL;
            next = g_regex_replace (r->regex, cur, -1, 0, r->to, 0, &err);
            if (next == NULL)
                g_debug ("rename rule %u on '%s': %s", i, cur, err ? err->message : "failed");
        } else if (g_str_has_prefix (cur, r->from)) {
            next = g_strconcat (r->to, cur + strlen (r->from), NULL);
        }
        if (next != NULL) {
            g_free (cur);
            cur = next;
        }
    }
    return cur;
}

DfqSafetensorsRenames *
dfq_safetensors_renames_new_pytorchcv_resnet_cifar (guint units_per_stage)
{
    g_return_val_if_fail (units_per_stage >= 1 && units_per_stage <= 64, NULL);

    /* pytorchcv ResNet (CIFAR): features.init_block = ConvBlock(conv, bn);
     * features.stageS.unitU = ResUnit(body = ResBlock(conv1, conv2), identity_conv);
     * output = Linear. Some copies nest the stem once more (init_block.conv.conv). */
    static const char *const fixed[][2] = {
        /* bn first: "init_block.conv.bn." must not be taken for the conv */
        { "^features\\.init_block\\.(?:conv\\.)?bn\\.", "bn." },
        { "^features\\.init_block\\.(?:conv\\.)?conv\\.", "conv." },
        { "^(layers\\.\\d+\\.)body\\.conv(\\d)\\.conv\\.", "\\1conv\\2." },
        { "^(layers\\.\\d+\\.)body\\.conv(\\d)\\.bn\\.", "\\1bn\\2." },
        { "^(layers\\.\\d+\\.)identity_conv\\.conv\\.", "\\1down.0." },
        { "^(layers\\.\\d+\\.)identity_conv\\.bn\\.", "\\1down.1." },
        { "^output\\.", "fc." },
    };
    DfqSafetensorsRenames *self = dfq_safetensors_renames_new ();
    gboolean ok = TRUE;
    ok &= dfq_safetensors_renames_add_regex (self, fixed[0][0], fixed[0][1], NULL);
    ok &= dfq_safetensors_renames_add_regex (self, fixed[1][0], fixed[1][1], NULL);
    /* stage s (1-based), unit u (1-based) -> layers.((s-1)*units + u-1) */
    for (guint s = 1; s <= 3; s++)
        for (guint u = 1; u <= units_per_stage; u++) {
            g_autofree char *from = g_strdup_printf ("features.stage%u.unit%u.", s, u);
            g_autofree char *to = g_strdup_printf ("layers.%u.", (s - 1) * units_per_stage + (u - 1));
            dfq_safetensors_renames_add_prefix (self, from, to);
        }
    for (guint i = 2; i < G_N_ELEMENTS (fixed); i++)
        ok &= dfq_safetensors_renames_add_regex (self, fixed[i][0], fixed[i][1], NULL);
    g_assert (ok);
    (void) ok;
    return self;
}

/* ------------------------------------------------------------------------ */
/* Loading a model's table */

/* "'a', 'b', 'c', 'd', 'e' and 3 more" from a sorted list of strings. */
static char *
dfq_safetensors_format_names (GPtrArray *names)
{
    GString *s = g_string_new (NULL);
    for (guint i = 0; i < names->len && i < DFQ_SAFETENSORS_LIST_MAX; i++)
        g_string_append_printf (s, "%s%s", i ? ", " : "", (const char *) g_ptr_array_index (names, i));
    if (names->len > DFQ_SAFETENSORS_LIST_MAX)
        g_string_append_printf (s, " and %u more", names->len - DFQ_SAFETENSORS_LIST_MAX);
    return g_string_free (s, FALSE);
}

static gint
dfq_safetensors_str_cmp (gconstpointer a, gconstpointer b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static gboolean
dfq_safetensors_ignored (const DfqSafetensorsLoadOptions *opt, const char *name)
{
    if (opt->ignore == NULL)
        return FALSE;
    for (const char *const *p = opt->ignore; *p != NULL; p++)
        if (g_pattern_match_simple (*p, name))
            return TRUE;
    return FALSE;
}

gboolean
dfq_safetensors_load_into (const DfqSafetensors *self, GHashTable *expected,
                           const DfqSafetensorsLoadOptions *options, GError **error)
{
    g_return_val_if_fail (self != NULL, FALSE);
    g_return_val_if_fail (expected != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

    static const DfqSafetensorsLoadOptions defaults = { 0 };
    const DfqSafetensorsLoadOptions *opt = options ? options : &defaults;

    /* model name -> file entry; renamed names are owned by @renamed */
    g_autoptr (GHashTable) mapped = g_hash_table_new (g_str_hash, g_str_equal);
    g_autoptr (GPtrArray) renamed = g_ptr_array_new_with_free_func (g_free);
    for (guint i = 0; i < self->entries->len; i++) {
        const DfqSafetensorsEntry *e = g_ptr_array_index (self->entries, i);
        char *model_name = dfq_safetensors_renames_apply (opt->renames, e->name);
        g_ptr_array_add (renamed, model_name);
        if (model_name[0] == '\0')
            continue; /* dropped by a rule */
        const DfqSafetensorsEntry *other = g_hash_table_lookup (mapped, model_name);
        if (other != NULL) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT,
                         "%s: tensors '%s' and '%s' both map to '%s' after renaming",
                         self->name, other->name, e->name, model_name);
            return FALSE;
        }
        g_hash_table_insert (mapped, model_name, (gpointer) e);
    }

    /* Missing: what the model needs and the file lacks. */
    g_autoptr (GPtrArray) missing = g_ptr_array_new_with_free_func (g_free);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, expected);
    while (g_hash_table_iter_next (&it, &key, &value))
        if (!g_hash_table_contains (mapped, key))
            g_ptr_array_add (missing, g_strdup_printf ("'%s'", (const char *) key));
    if (missing->len > 0 && !opt->allow_missing) {
        g_ptr_array_sort (missing, dfq_safetensors_str_cmp);
        g_autofree char *list = dfq_safetensors_format_names (missing);
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "%s: %u of the model's %u tensors are missing: %s",
                     self->name, missing->len, g_hash_table_size (expected), list);
        return FALSE;
    }

    /* Unexpected: what the file holds and the model does not know. */
    g_autoptr (GPtrArray) unexpected = g_ptr_array_new_with_free_func (g_free);
    g_hash_table_iter_init (&it, mapped);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        const DfqSafetensorsEntry *e = value;
        if (g_hash_table_contains (expected, key) || dfq_safetensors_ignored (opt, key))
            continue;
        if (strcmp (key, e->name) == 0)
            g_ptr_array_add (unexpected, g_strdup_printf ("'%s'", (const char *) key));
        else
            g_ptr_array_add (unexpected, g_strdup_printf ("'%s' (from '%s')", (const char *) key, e->name));
    }
    if (unexpected->len > 0 && !opt->allow_unexpected) {
        g_ptr_array_sort (unexpected, dfq_safetensors_str_cmp);
        g_autofree char *list = dfq_safetensors_format_names (unexpected);
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_UNEXPECTED,
                     "%s: %u tensor%s the model does not know: %s",
                     self->name, unexpected->len, unexpected->len == 1 ? "" : "s", list);
        return FALSE;
    }

    /* Shapes, then convertibility, before anything is written. */
    g_autoptr (GPtrArray) bad_shapes = g_ptr_array_new_with_free_func (g_free);
    g_autoptr (GPtrArray) to_copy = g_ptr_array_new ();
    g_hash_table_iter_init (&it, expected);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        const DfqSafetensorsEntry *e = g_hash_table_lookup (mapped, key);
        DfqTensor *dst = value;
        if (e == NULL)
            continue;
        g_return_val_if_fail (dst != NULL && dfq_tensor_is_contiguous (dst), FALSE);
        g_return_val_if_fail (dst->dtype == DFQ_DTYPE_F32 || dst->dtype == DFQ_DTYPE_I32, FALSE);
        if (!dfq_safetensors_shape_fits (&e->info, dst)) {
            char a[128], b[128];
            g_ptr_array_add (bad_shapes, g_strdup_printf ("'%s' file %s vs model %s", (const char *) key,
                                                          dfq_safetensors_shape_string (e->info.n_dims, e->info.shape, a, sizeof a),
                                                          dfq_tensor_shape_string (dst, b, sizeof b)));
            continue;
        }
        g_ptr_array_add (to_copy, key);
    }
    if (bad_shapes->len > 0) {
        g_ptr_array_sort (bad_shapes, dfq_safetensors_str_cmp);
        g_autofree char *list = dfq_safetensors_format_names (bad_shapes);
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "%s: %u tensor%s of the wrong shape: %s",
                     self->name, bad_shapes->len, bad_shapes->len == 1 ? "" : "s", list);
        return FALSE;
    }
    for (guint i = 0; i < to_copy->len; i++) {
        const char *name = g_ptr_array_index (to_copy, i);
        const DfqSafetensorsEntry *e = g_hash_table_lookup (mapped, name);
        if (!dfq_safetensors_check_convertible (self, &e->info, g_hash_table_lookup (expected, name), error))
            return FALSE;
    }

    for (guint i = 0; i < to_copy->len; i++) {
        const char *name = g_ptr_array_index (to_copy, i);
        const DfqSafetensorsEntry *e = g_hash_table_lookup (mapped, name);
        dfq_safetensors_copy_checked (self, &e->info, g_hash_table_lookup (expected, name));
    }
    return TRUE;
}

gboolean
dfq_safetensors_load_file_into (const char *path, GHashTable *expected,
                                const DfqSafetensorsLoadOptions *options, GError **error)
{
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (path, error);
    if (st == NULL)
        return FALSE;
    return dfq_safetensors_load_into (st, expected, options, error);
}

/* ------------------------------------------------------------------------ */
/* Writing */

static void
dfq_safetensors_append_json_string (GString *s, const char *str)
{
    g_string_append_c (s, '"');
    for (const unsigned char *p = (const unsigned char *) str; *p; p++) {
        switch (*p) {
        case '"':
            g_string_append (s, "\\\"");
            break;
        case '\\':
            g_string_append (s, "\\\\");
            break;
        case '\n':
            g_string_append (s, "\\n");
            break;
        case '\t':
            g_string_append (s, "\\t");
            break;
        case '\r':
            g_string_append (s, "\\r");
            break;
        default:
            if (*p < 0x20)
                g_string_append_printf (s, "\\u%04x", *p);
            else
                g_string_append_c (s, (char) *p);
        }
    }
    g_string_append_c (s, '"');
}

GBytes *
dfq_safetensors_serialize (const char *const *names, DfqTensor *const *tensors, guint n, GHashTable *metadata)
{
    g_return_val_if_fail (n == 0 || (names != NULL && tensors != NULL), NULL);

    GString *h = g_string_new ("{");
    gboolean first = TRUE;
    if (metadata != NULL && g_hash_table_size (metadata) > 0) {
        g_autofree gpointer *keys = g_hash_table_get_keys_as_array (metadata, NULL);
        guint n_keys = g_hash_table_size (metadata);
        qsort (keys, n_keys, sizeof (gpointer), dfq_safetensors_str_cmp);
        g_string_append (h, "\"__metadata__\":{");
        for (guint i = 0; i < n_keys; i++) {
            if (i)
                g_string_append_c (h, ',');
            dfq_safetensors_append_json_string (h, keys[i]);
            g_string_append_c (h, ':');
            dfq_safetensors_append_json_string (h, g_hash_table_lookup (metadata, keys[i]));
        }
        g_string_append_c (h, '}');
        first = FALSE;
    }
    guint64 offset = 0;
    for (guint i = 0; i < n; i++) {
        const DfqTensor *t = tensors[i];
        g_return_val_if_fail (names[i] != NULL && g_utf8_validate (names[i], -1, NULL), NULL);
        g_return_val_if_fail (t != NULL && dfq_tensor_is_contiguous (t), NULL);
        g_return_val_if_fail (t->dtype == DFQ_DTYPE_F32 || t->dtype == DFQ_DTYPE_I32, NULL);
        guint64 nbytes = (guint64) dfq_tensor_numel (t) * 4;
        if (!first)
            g_string_append_c (h, ',');
        first = FALSE;
        dfq_safetensors_append_json_string (h, names[i]);
        g_string_append_printf (h, ":{\"dtype\":\"%s\",\"shape\":[", t->dtype == DFQ_DTYPE_F32 ? "F32" : "I32");
        for (int d = 0; d < t->n_dims; d++)
            g_string_append_printf (h, "%s%" G_GINT64_FORMAT, d ? "," : "", t->shape[d]);
        g_string_append_printf (h, "],\"data_offsets\":[%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "]}",
                                offset, offset + nbytes);
        offset += nbytes;
    }
    g_string_append_c (h, '}');
    /* The reference writer pads the header with spaces to a multiple of 8, so
     * the data buffer starts 8-byte aligned in the file. */
    while (h->len % 8 != 0)
        g_string_append_c (h, ' ');

    gsize total = 8 + h->len + (gsize) offset;
    guint8 *buf = g_malloc (total);
    guint64 len_le = GUINT64_TO_LE ((guint64) h->len);
    memcpy (buf, &len_le, 8);
    memcpy (buf + 8, h->str, h->len);
    guint8 *dst = buf + 8 + h->len;
    for (guint i = 0; i < n; i++) {
        const DfqTensor *t = tensors[i];
        gsize nbytes = (gsize) dfq_tensor_numel (t) * 4;
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
        memcpy (dst, t->data, nbytes);
#else
        const guint32 *src = t->data;
        for (gint64 k = 0; k < dfq_tensor_numel (t); k++) {
            guint32 v = GUINT32_TO_LE (src[k]);
            memcpy (dst + 4 * k, &v, 4);
        }
#endif
        dst += nbytes;
    }
    g_string_free (h, TRUE);
    return g_bytes_new_take (buf, total);
}

gboolean
dfq_safetensors_save_list (const char *path, const char *const *names, DfqTensor *const *tensors, guint n,
                           GHashTable *metadata, GError **error)
{
    g_return_val_if_fail (path != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

    g_autoptr (GBytes) bytes = dfq_safetensors_serialize (names, tensors, n, metadata);
    g_return_val_if_fail (bytes != NULL, FALSE);
    gsize size = 0;
    const char *data = g_bytes_get_data (bytes, &size);
    g_autoptr (GError) local = NULL;
    /* Temporary file in the same directory + rename: a reader never sees a
     * half-written checkpoint, even if we are killed mid-write. */
    if (!g_file_set_contents_full (path, data, (gssize) size,
                                   G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0644, &local)) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_IO, "%s", local->message);
        return FALSE;
    }
    return TRUE;
}

gboolean
dfq_safetensors_save (const char *path, GHashTable *tensors, GHashTable *metadata, GError **error)
{
    g_return_val_if_fail (tensors != NULL, FALSE);

    guint n = 0;
    g_autofree gpointer *names = g_hash_table_get_keys_as_array (tensors, &n);
    qsort (names, n, sizeof (gpointer), dfq_safetensors_str_cmp);
    g_autofree DfqTensor **list = g_new0 (DfqTensor *, MAX (n, 1));
    for (guint i = 0; i < n; i++)
        list[i] = g_hash_table_lookup (tensors, names[i]);
    return dfq_safetensors_save_list (path, (const char *const *) names, list, n, metadata, error);
}
