// fuzz_flatjson.c: libFuzzer target for the flat JSON reader of results files (docgen.c's
// flatjson_parse, used by docgen and 06-comparison) and the value formatter applied to what it read.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "report/docgen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // The first line (up to 64 bytes) is a chain of format modifiers, the rest the JSON text.
    const uint8_t *nl = memchr(data, '\n', size < 64 ? size : 64);
    char mods[65] = "";
    if (nl) {
        memcpy(mods, data, (size_t)(nl - data));
        mods[nl - data] = 0;
        size -= (size_t)(nl - data) + 1;
        data = nl + 1;
    }
    FlatJson j;
    char err[512];
    if (flatjson_parse((const char *)data, size, "fuzz.json", &j, err, sizeof err) == 0) {
        for (int i = 0; i < j.n; i++) {
            if (flatjson_get(&j, j.e[i].key) != &j.e[i]) __builtin_trap(); // keys are unique
            char ferr[256];
            char *v = docgen_format_value(&j.e[i], mods, ferr, sizeof ferr);
            free(v);
        }
        flatjson_free(&j);
    } else if (!err[0]) {
        __builtin_trap();
    }
    return 0;
}
