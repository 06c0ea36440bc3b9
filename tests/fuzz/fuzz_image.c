// fuzz_image.c: libFuzzer target for image decoding (JPEG, PNG, GIF through image.c's checks and
// stb_image), from bytes as image_load reads a file. Built twice: with ASan+UBSan (fuzz_image)
// and with MSan (fuzz_image_msan), since several stb faults read memory never written.
#include <stdint.h>
#include <string.h>

#include "data/image.h"

#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#include <sanitizer/msan_interface.h>
#define CHECK_INIT(p, n) __msan_check_mem_is_initialized(p, n)
#endif
#endif
#ifndef CHECK_INIT
#define CHECK_INIT(p, n) ((void)0)
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ImageInfo info;
    (void)image_probe(data, size, &info);
    Image img;
    char err[512];
    if (image_decode(data, size, "fuzz.img", &img, err, sizeof err) == 0) {
        if (img.w <= 0 || img.h <= 0 || !img.rgb) __builtin_trap();
        size_t n = (size_t)img.w * img.h * 3;
        CHECK_INIT(img.rgb, n); // every pixel of a decoded image must have been written
        volatile uint8_t sink = img.rgb[0] ^ img.rgb[n - 1];
        (void)sink;
        image_free(&img);
    } else if (!err[0]) {
        __builtin_trap();
    }
    return 0;
}
