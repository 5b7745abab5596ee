/* The PNG writer of the CLI (core/cli/dfq-png.c) and `dfq images`, read back
 * by a decoder written here independently (bitwise CRC-32, Adler-32, stored
 * deflate blocks, filter 0): the signature, IHDR's size and colour type, every
 * chunk's CRC, the zlib header and checksum, and the pixels themselves; CRC-32
 * and Adler-32 against their published check values; `dfq images` on a
 * two-image file: the grid's size and tile contents (each tile's own min..max
 * to 0..255), and a clear error for a file without images. */
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

#include "../../core/cli/dfq-png.h"

typedef struct {
    guint width, height, channels;
    guint8 *pixels; /* height rows of width * channels */
} Decoded;

static guint32
get32 (const guint8 *p)
{
    return (guint32) p[0] << 24 | (guint32) p[1] << 16 | (guint32) p[2] << 8 | p[3];
}

/* CRC-32 bit by bit (not the encoder's table) */
static guint32
crc_bitwise (const guint8 *d, gsize n)
{
    guint32 c = 0xffffffffu;
    for (gsize i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* Decodes what dfq_png_encode makes; asserts every check on the way. */
static void
decode (const guint8 *png, gsize len, Decoded *out)
{
    static const guint8 sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    g_assert_cmpuint (len, >, 8 + 25 + 12 + 12);
    g_assert_cmpmem (png, 8, sig, 8);
    g_autoptr (GByteArray) idat = g_byte_array_new ();
    gsize pos = 8;
    gboolean seen_end = FALSE;
    guint n_chunks = 0;
    while (pos < len) {
        g_assert_cmpuint (pos + 12, <=, len);
        guint32 n = get32 (png + pos);
        g_assert_cmpuint (pos + 12 + n, <=, len);
        const guint8 *type = png + pos + 4, *data = png + pos + 8;
        g_assert_cmpuint (get32 (data + n), ==, crc_bitwise (type, n + 4));
        if (n_chunks == 0) {
            g_assert_cmpmem (type, 4, "IHDR", 4);
            g_assert_cmpuint (n, ==, 13);
            out->width = get32 (data);
            out->height = get32 (data + 4);
            g_assert_cmpuint (data[8], ==, 8);
            g_assert_true (data[9] == 0 || data[9] == 2);
            out->channels = data[9] == 0 ? 1 : 3;
            g_assert_cmpuint (data[10] | data[11] | data[12], ==, 0);
        } else if (memcmp (type, "IDAT", 4) == 0) {
            g_byte_array_append (idat, data, n);
        } else if (memcmp (type, "IEND", 4) == 0) {
            g_assert_cmpuint (n, ==, 0);
            seen_end = TRUE;
        }
        n_chunks++;
        pos += 12 + n;
    }
    g_assert_true (seen_end);
    g_assert_cmpuint (pos, ==, len);
    /* zlib: CMF 0x78 (deflate, 32K), FCHECK, no dictionary */
    const guint8 *z = idat->data;
    g_assert_cmpuint (idat->len, >=, 2 + 5 + 4);
    g_assert_cmpuint (z[0] & 0x0f, ==, 8);
    g_assert_cmpuint (((guint) z[0] << 8 | z[1]) % 31, ==, 0);
    g_assert_cmpuint (z[1] & 0x20, ==, 0);
    g_autoptr (GByteArray) raw = g_byte_array_new ();
    gsize p = 2;
    gboolean final = FALSE;
    while (!final) {
        g_assert_cmpuint (p + 5, <=, idat->len);
        final = z[p] & 1;
        g_assert_cmpuint ((z[p] >> 1) & 3, ==, 0); /* stored */
        guint n = z[p + 1] | z[p + 2] << 8, nn = z[p + 3] | z[p + 4] << 8;
        g_assert_cmpuint (n ^ nn, ==, 0xffff);
        g_assert_cmpuint (p + 5 + n, <=, idat->len);
        g_byte_array_append (raw, z + p + 5, n);
        p += 5 + n;
    }
    g_assert_cmpuint (p + 4, ==, idat->len);
    guint32 a = 1, b = 0;
    for (guint i = 0; i < raw->len; i++) {
        a = (a + raw->data[i]) % 65521;
        b = (b + a) % 65521;
    }
    g_assert_cmpuint (get32 (z + p), ==, (b << 16) | a);
    gsize row = (gsize) out->width * out->channels;
    g_assert_cmpuint (raw->len, ==, (row + 1) * out->height);
    out->pixels = g_malloc (row * out->height);
    for (guint y = 0; y < out->height; y++) {
        g_assert_cmpuint (raw->data[y * (row + 1)], ==, 0);
        memcpy (out->pixels + y * row, raw->data + y * (row + 1) + 1, row);
    }
}

static void
test_checksums (void)
{
    g_test_summary ("CRC-32 and Adler-32 give their published check values; continuing a sum equals one pass");
    const guint8 *s = (const guint8 *) "123456789";
    g_assert_cmpuint (dfq_png_crc32 (0, s, 9), ==, 0xcbf43926u);
    g_assert_cmpuint (dfq_png_crc32 (dfq_png_crc32 (0, s, 4), s + 4, 5), ==, 0xcbf43926u);
    const guint8 *w = (const guint8 *) "Wikipedia";
    g_assert_cmpuint (dfq_png_adler32 (1, w, 9), ==, 0x11e60398u);
}

static void
test_roundtrip (void)
{
    g_test_summary ("Gray and RGB images, one to several stored blocks, decode to their pixels with every check "
                    "passing");
    const guint sizes[][3] = { { 1, 1, 1 }, { 7, 3, 3 }, { 300, 250, 1 }, { 200, 150, 3 } };
    for (guint k = 0; k < G_N_ELEMENTS (sizes); k++) {
        guint w = sizes[k][0], h = sizes[k][1], c = sizes[k][2];
        g_autofree guint8 *px = g_malloc ((gsize) w * h * c);
        for (gsize i = 0; i < (gsize) w * h * c; i++)
            px[i] = (guint8) ((i * 7919u) >> 3);
        g_autoptr (GBytes) png = dfq_png_encode (px, w, h, c);
        gsize len;
        const guint8 *d = g_bytes_get_data (png, &len);
        Decoded dec = { 0 };
        decode (d, len, &dec);
        g_test_message ("%ux%ux%u: %" G_GSIZE_FORMAT " bytes", w, h, c, len);
        g_assert_cmpuint (dec.width, ==, w);
        g_assert_cmpuint (dec.height, ==, h);
        g_assert_cmpuint (dec.channels, ==, c);
        g_assert_cmpmem (dec.pixels, (gsize) w * h * c, px, (gsize) w * h * c);
        g_free (dec.pixels);
    }
}

static void
test_cli_images (void)
{
    g_test_summary ("dfq images: a 2-image file in a 2-column grid at scale 1 has the grid's size, white gaps and "
                    "each tile stretched to 0..255; a file without images fails with a message");
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp ("dfq-png-XXXXXX", &error);
    g_assert_no_error (error);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 2, 1, 4, 3);
    for (int i = 0; i < 24; i++)
        dfq_tensor_f32 (x)[i] = i < 12 ? (float) i : -2.0f * (float) (i - 12); /* 0..11; 0..-22 */
    g_autofree char *file = g_build_filename (dir, "set.safetensors", NULL);
    const char *names[] = { "images", NULL };
    g_assert_true (dfq_safetensors_save_list (file, names, &x, 1, NULL, &error));
    g_assert_no_error (error);
    g_autofree char *out = g_build_filename (dir, "grid.png", NULL);
    const char *argv[] = { DFQ_CLI_PATH, "images", file, "-o", out, "--cols", "2", "--scale", "1", NULL };
    int status;
    g_autofree char *so = NULL, *se = NULL;
    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &so, &se, &status, &error));
    g_assert_no_error (error);
    g_test_message ("%s%s", so, se);
    g_assert_true (g_spawn_check_wait_status (status, NULL));
    g_autofree char *png = NULL;
    gsize len;
    g_assert_true (g_file_get_contents (out, &png, &len, &error));
    Decoded dec = { 0 };
    decode ((const guint8 *) png, len, &dec);
    /* 2 tiles of 3x4 with 2-pixel gaps: 3 * 2 + 2 * 3 by 4 + 2 * 2 */
    g_assert_cmpuint (dec.width, ==, 12);
    g_assert_cmpuint (dec.height, ==, 8);
    g_assert_cmpuint (dec.channels, ==, 1);
    const guint8 *p = dec.pixels;
    g_assert_cmpuint (p[0], ==, 255);               /* gap */
    g_assert_cmpuint (p[2 * 12 + 2], ==, 0);        /* tile 0 (0, 0): its min */
    g_assert_cmpuint (p[5 * 12 + 4], ==, 255);      /* tile 0 (3, 2): 11, its max */
    g_assert_cmpuint (p[2 * 12 + 7], ==, 255);      /* tile 1 (0, 0): 0, its max */
    g_assert_cmpuint (p[5 * 12 + 9], ==, 0);        /* tile 1 (3, 2): -22, its min */
    g_assert_cmpuint (p[3 * 12 + 3], ==, 93);       /* tile 0 (1, 1): 4 of 0..11 -> 92.7 */
    g_free (dec.pixels);

    /* no "images" tensor */
    DfqTensor *y = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, 3);
    const char *other[] = { "weights", NULL };
    g_assert_true (dfq_safetensors_save_list (file, other, &y, 1, NULL, &error));
    g_clear_pointer (&so, g_free);
    g_clear_pointer (&se, g_free);
    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &so, &se, &status, &error));
    g_assert_false (g_spawn_check_wait_status (status, NULL));
    g_test_message ("%s", se);
    g_assert_nonnull (strstr (se, "images"));
    dfq_test_rm_rf (dir);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/png/checksums", test_checksums);
    g_test_add_func ("/png/roundtrip", test_roundtrip);
    g_test_add_func ("/png/cli-images", test_cli_images);
    return g_test_run ();
}
