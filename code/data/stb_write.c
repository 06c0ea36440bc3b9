// stb_write.c: stb_image_write's implementation (Debian's libstb-dev), which image.c uses to encode
// PNGs and the tests to make JPEGs. On its own so that `make sanitize` can leave one thing of
// stb's unchecked: its JPEG writer shifts set bits into the sign of an int (stbiw__jpg_writeBits),
// undefined in C but what every compiler does; data.cmake exempts this file from UBSan's
// shift-base check only. Our own code is checked in full.
#define STBIW_ASSERT(x) ((void)0)
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop
