# code/checkpoint/checkpoint.cmake: PyTorch checkpoints without PyTorch (library `pth`): the zip
# reader/writer, the allowlist unpickler and pickler, and the state-dict API of pth.h.
add_library(pth STATIC code/checkpoint/zip.c code/checkpoint/pickle.c code/checkpoint/pth.c)
target_link_libraries(pth PUBLIC common)
