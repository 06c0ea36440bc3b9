# code/pth.cmake: PyTorch checkpoints without PyTorch: the zip reader/writer, the allowlist
# unpickler and pickler, and the state-dict API of pth.h.
add_library(pth STATIC code/zip.c code/pickle.c code/pth.c)
target_include_directories(pth PUBLIC code)
target_link_libraries(pth PUBLIC common)
