/* Arena allocator (core/tensor): chunked bump allocation, 64-byte aligned.
 * dfq_arena_reset() merges the chunks of a cycle into one, so a loop whose every
 * step has the same shape reaches a steady state with no system allocation.
 *
 * Under AddressSanitizer every allocation is followed by a poisoned red zone
 * and what is not handed out (the rest of a chunk, everything after a reset)
 * is poisoned, so that an overrun from one arena tensor into the next, which
 * the chunk's single malloc would hide, is reported like a heap overflow. */
#include <string.h>

#include <dfq/dfq-arena.h>

#if defined(__SANITIZE_ADDRESS__)
#define DFQ_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DFQ_ARENA_ASAN 1
#endif
#endif

#ifdef DFQ_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define DFQ_ARENA_REDZONE ((gsize) DFQ_ARENA_ALIGN)
#define dfq_arena_poison(p, n) ASAN_POISON_MEMORY_REGION ((p), (n))
#define dfq_arena_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION ((p), (n))
#else
#define DFQ_ARENA_REDZONE ((gsize) 0)
#define dfq_arena_poison(p, n) ((void) (p), (void) (n))
#define dfq_arena_unpoison(p, n) ((void) (p), (void) (n))
#endif

#define DFQ_ARENA_MIN_CHUNK (1u << 20)

typedef struct {
    guint8 *base;
    gsize size;
    gsize used;
} DfqArenaChunk;

struct _DfqArena {
    GArray *chunks; /* DfqArenaChunk; the last one is the one being filled */
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
    dfq_arena_poison (chunk.base, size);
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
    for (guint i = 0; i < self->chunks->len; i++) {
        DfqArenaChunk *c = &g_array_index (self->chunks, DfqArenaChunk, i);
        dfq_arena_unpoison (c->base, c->size);
        g_aligned_free (c->base);
    }
    g_array_unref (self->chunks);
    g_free (self);
}

gpointer
dfq_arena_alloc_uninit (DfqArena *self, gsize size)
{
    g_return_val_if_fail (self != NULL, NULL);
    gsize need = ((MAX (size, 1) + DFQ_ARENA_ALIGN - 1) & ~((gsize) DFQ_ARENA_ALIGN - 1)) + DFQ_ARENA_REDZONE;
    DfqArenaChunk *last = &g_array_index (self->chunks, DfqArenaChunk, self->chunks->len - 1);
    if (last->size - last->used < need) {
        /* Grow geometrically so a growing cycle needs few chunks. */
        gsize total = 0;
        for (guint i = 0; i < self->chunks->len; i++)
            total += g_array_index (self->chunks, DfqArenaChunk, i).size;
        dfq_arena_add_chunk (self, MAX (need, total));
        last = &g_array_index (self->chunks, DfqArenaChunk, self->chunks->len - 1);
    }
    gpointer p = last->base + last->used;
    dfq_arena_unpoison (p, size);
    last->used += need;
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
    if (self->chunks->len > 1) {
        gsize total = 0;
        for (guint i = 0; i < self->chunks->len; i++) {
            DfqArenaChunk *c = &g_array_index (self->chunks, DfqArenaChunk, i);
            total += c->size;
            dfq_arena_unpoison (c->base, c->size);
            g_aligned_free (c->base);
        }
        g_array_set_size (self->chunks, 0);
        dfq_arena_add_chunk (self, total);
    }
    DfqArenaChunk *first = &g_array_index (self->chunks, DfqArenaChunk, 0);
    dfq_arena_poison (first->base, first->used);
    first->used = 0;
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
