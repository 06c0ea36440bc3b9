// stb_write.c: stb_image_write's implementation (Debian's libstb-dev), which image.c uses to encode
// PNGs and the tests to make JPEGs. On its own so that `make sanitize` can leave one thing of
// stb's unchecked: its JPEG writer shifts set bits into the sign of an int (stbiw__jpg_writeBits),
// undefined in C but what every compiler does; data.cmake exempts this file from UBSan's
// shift-base check only. Our own code is checked in full.
#define STBIW_ASSERT(x) ((void)0)
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
// stb is included as a system header (SYSTEM in the CMake fragment), so its own warnings are
// not ours and need no pragmas; our code keeps every warning.
#include <stb_image_write.h>
