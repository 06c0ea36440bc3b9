# code/checkpoint/checkpoint.cmake: PyTorch checkpoints without PyTorch (library `pth`): the zip
# reader/writer, the state dict in memory (tensor.h), the allowlist unpickler and pickler, and
# the load/save API of pth.h.
add_library(pth STATIC code/checkpoint/zip.c code/checkpoint/tensor.c code/checkpoint/pickle.c
                       code/checkpoint/pth.c)
target_link_libraries(pth PUBLIC common)
