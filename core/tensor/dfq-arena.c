/* Arena allocator (core/tensor): chunked bump allocation, 64-byte aligned.
 * dfq_arena_reset() keeps every chunk and starts again from the first, so a
 * loop whose every step has the same allocations places them the same way and
 * reaches a steady state with no system allocation after its first step. (It
 * used to merge the chunks into one new allocation instead: on a VM where a
 * page fault is expensive, the second step then faulted in all of that memory
 * again; issue 15.) A request that does not fit the rest of a chunk goes on to
 * the next one, or to a new chunk as large as all the others together. */
#include <string.h>

#include <dfq/dfq-arena.h>

#define DFQ_ARENA_MIN_CHUNK (1u << 20)

typedef struct {
    guint8 *base;
    gsize size;
    gsize used;
} DfqArenaChunk;

struct _DfqArena {
    GArray *chunks; /* DfqArenaChunk */
    guint cur;      /* the chunk being filled; those after it are empty */
    gsize used;     /* bytes handed out since reset */
    guint n_system_allocs;
};

static void
dfq_arena_add_chunk (DfqArena *self, gsize size)
{
    DfqArenaChunk chunk = { 0 };
    size = MAX (size, (gsize) DFQ_ARENA_MIN_CHUNK);
    size = (size + DFQ_ARENA_ALIGN - 1) & ~((gsize) DFQ_ARENA_ALIGN - 1);
    chunk.base = g_aligned_alloc (size, 1, DFQ_ARENA_ALIGN);
    chunk.size = size;
    g_array_append_val (self->chunks, chunk);
    self->n_system_allocs++;
}

DfqArena *
dfq_arena_new (gsize initial_size)
{
    DfqArena *self = g_new0 (DfqArena, 1);
    self->chunks = g_array_new (FALSE, TRUE, sizeof (DfqArenaChunk));
    dfq_arena_add_chunk (self, initial_size);
    return self;
}

void
dfq_arena_free (DfqArena *self)
{
    if (self == NULL)
        return;
    for (guint i = 0; i < self->chunks->len; i++)
        g_aligned_free (g_array_index (self->chunks, DfqArenaChunk, i).base);
    g_array_unref (self->chunks);
    g_free (self);
}

gpointer
dfq_arena_alloc_uninit (DfqArena *self, gsize size)
{
    g_return_val_if_fail (self != NULL, NULL);
    gsize need = (MAX (size, 1) + DFQ_ARENA_ALIGN - 1) & ~((gsize) DFQ_ARENA_ALIGN - 1);
    DfqArenaChunk *c = &g_array_index (self->chunks, DfqArenaChunk, self->cur);
    while (c->size - c->used < need) {
        if (self->cur + 1 < self->chunks->len) {
            self->cur++;
        } else {
            /* Grow geometrically so a growing cycle needs few chunks. */
            gsize total = 0;
            for (guint i = 0; i < self->chunks->len; i++)
                total += g_array_index (self->chunks, DfqArenaChunk, i).size;
            dfq_arena_add_chunk (self, MAX (need, total));
            self->cur = self->chunks->len - 1;
        }
        c = &g_array_index (self->chunks, DfqArenaChunk, self->cur);
    }
    gpointer p = c->base + c->used;
    c->used += need;
    self->used += need;
    return p;
}

gpointer
dfq_arena_alloc (DfqArena *self, gsize size)
{
    gpointer p = dfq_arena_alloc_uninit (self, size);
    memset (p, 0, size);
    return p;
}

void
dfq_arena_reset (DfqArena *self)
{
    g_return_if_fail (self != NULL);
    for (guint i = 0; i < self->chunks->len; i++)
        g_array_index (self->chunks, DfqArenaChunk, i).used = 0;
    self->cur = 0;
    self->used = 0;
}

gsize
dfq_arena_used (const DfqArena *self)
{
    return self->used;
}

gsize
dfq_arena_capacity (const DfqArena *self)
{
    gsize total = 0;
    for (guint i = 0; i < self->chunks->len; i++)
        total += g_array_index (self->chunks, DfqArenaChunk, i).size;
    return total;
}

guint
dfq_arena_n_system_allocs (const DfqArena *self)
{
    return self->n_system_allocs;
}
