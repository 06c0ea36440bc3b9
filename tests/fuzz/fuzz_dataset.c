// fuzz_dataset.c: libFuzzer target for the annotation/split parser (dataset.c's pets_open), which
// reads <root>/annotations/<split>.txt: the input becomes that file in a scratch dataset root.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "fuzz_util.h"
#include "core/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *root;
    if (!root) {
        root = xasprintf("%s/pets", fuzz_scratch_dir());
        free(fuzz_write("pets/images/.keep", NULL, 0));
    }
    free(fuzz_write("pets/annotations/trainval.txt", data, size));
    PetSplit ds;
    char err[512];
    if (pets_open(root, "trainval", &ds, err, sizeof err) == 0) {
        if (ds.n <= 0) __builtin_trap();
        for (int i = 0; i < ds.n; i++) {
            const PetItem *it = &ds.items[i];
            if (it->label < 0 || it->label >= PETS_NUM_CLASSES || !it->name[0]) __builtin_trap();
            if (!strstr(it->path, it->name)) __builtin_trap();
            (void)pets_class_name(&ds, it->label);
        }
        pets_free(&ds);
    } else if (!err[0]) {
        __builtin_trap();
    }
    return 0;
}
