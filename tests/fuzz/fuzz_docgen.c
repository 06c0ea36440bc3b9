// fuzz_docgen.c: libFuzzer target for the report preprocessor (docgen.c): a chapter text with its
// placeholders, expanded against a results JSON, a results CSV and a source file that come from
// the input too. Parts are separated by the line "@@@@" (see docgen.dict):
//   chapter markdown @@@@ results/99-fuzz.json @@@@ results/99-fuzz.csv @@@@ src/s.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "fuzz_util.h"
#include "report/docgen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *devnull;
    static char *results, *figures, *src;
    if (!devnull) {
        devnull = fopen("/dev/null", "w");
        results = xasprintf("%s/results", fuzz_scratch_dir());
        figures = xasprintf("%s/figures", fuzz_scratch_dir());
        src = xasprintf("%s/src", fuzz_scratch_dir());
        free(fuzz_write("figures/pets.png", (const uint8_t *)"png", 3));
    }
    const uint8_t *part[4] = {0};
    size_t len[4] = {0};
    int np = fuzz_split(data, size, "\n@@@@\n", part, len, 4);
    free(fuzz_write("results/99-fuzz.json", part[1], np > 1 ? len[1] : 0));
    free(fuzz_write("results/99-fuzz.csv", part[2], np > 2 ? len[2] : 0));
    free(fuzz_write("src/s.c", part[3], np > 3 ? len[3] : 0));
    DocGen g;
    docgen_init(&g);
    g.results_dir = results;
    g.figures_dir = figures;
    g.src_dir = src;
    g.errors = devnull;
    char *out = docgen_expand(&g, "chapters/99-fuzz.md", (const char *)part[0], len[0]);
    if (!out) __builtin_trap();
    free(out);
    docgen_free(&g);
    return 0;
}
