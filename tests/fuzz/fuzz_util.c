// fuzz_util.c: the scratch folder and input splitting of fuzz_util.h.
#define _GNU_SOURCE
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"

static char scratch[512];

static void remove_scratch(void) {
    if (!scratch[0]) return;
    char *cmd = xasprintf("rm -rf '%s'", scratch);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", scratch);
    free(cmd);
}

const char *fuzz_scratch_dir(void) {
    if (scratch[0]) return scratch;
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/pets-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch)) die("fuzz: cannot create a scratch folder under %s", scratch);
    atexit(remove_scratch);
    return scratch;
}

char *fuzz_write(const char *rel, const uint8_t *data, size_t n) {
    char *path = xasprintf("%s/%s", fuzz_scratch_dir(), rel);
    if (mkdir_parent(path)) die("fuzz: cannot create the folder of %s", path);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f)) die("fuzz: cannot write %s", path);
    return path;
}

int fuzz_split(const uint8_t *data, size_t n, const char *sep, const uint8_t **part,
               size_t *len, int max) {
    size_t m = strlen(sep);
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; k < max - 1 && i + m <= n; i++) {
        if (memcmp(data + i, sep, m) == 0) {
            part[k] = data + start;
            len[k++] = i - start;
            start = i + m;
            i += m - 1;
        }
    }
    part[k] = data + start;
    len[k++] = n - start;
    return k;
}
