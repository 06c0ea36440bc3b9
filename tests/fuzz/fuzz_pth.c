// fuzz_pth.c: libFuzzer target for the .pth checkpoint reader (zip + allowlist unpickler + state
// dict) from bytes, as `predict` and the chapters read a user's weights file.
#include <stdint.h>
#include <string.h>

#include "checkpoint/pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StateDict sd;
    char err[512];
    if (pth_load_mem(data, size, "fuzz.pth", &sd, err, sizeof err) == 0) {
        // every tensor's data must be readable for its full size
        volatile uint8_t sink = 0;
        for (int i = 0; i < sd.n; i++) {
            const PthTensor *t = &sd.t[i];
            size_t bytes = t->numel * pth_dtype_size(t->dtype);
            for (size_t b = 0; b < bytes; b += 97) sink ^= ((const uint8_t *)t->data)[b];
            if (bytes) sink ^= ((const uint8_t *)t->data)[bytes - 1];
            (void)sd_find(&sd, t->name);
        }
        (void)sink;
        sd_free(&sd);
    } else if (!err[0]) {
        __builtin_trap(); // a refusal must say why
    }
    return 0;
}
