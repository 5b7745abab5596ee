/* The dfq command line (core/cli): the only place that turns a GError into an
 * exit status. */
#include <stdio.h>

#include <dfq/dfq.h>

int
main (int argc, char **argv)
{
    if (argc > 1 && g_str_equal (argv[1], "--version")) {
        printf ("dfq %s\n", DFQ_VERSION_STRING);
        return 0;
    }
    fprintf (stderr, "usage: dfq --version\n");
    return 2;
}
