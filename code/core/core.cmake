# code/core/core.cmake: the bottom layer every library and program uses (library `common`): error
# and file helpers, the run-time SIMD choice (cpu.h), SHA-256, and the project's one random number
# generator (rng.h).
add_library(common STATIC code/core/common.c code/core/cpu.c code/core/rng.c code/core/sha256.c)
target_include_directories(common PUBLIC code)
target_link_libraries(common PUBLIC m Threads::Threads)
