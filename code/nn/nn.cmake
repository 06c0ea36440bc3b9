# code/nn/nn.cmake: the ResNet34 core as the static library `nn`: backend selection (backend.c),
# the CPU backend's reference kernels (backend_cpu.c) and fast kernels (backend_cpu_fast.c with
# oneDNN convolutions in cpu_conv_dnnl.c), Adam's scalar arithmetic that every backend shares
# (adam.c), the model (resnet34.c) and the training pieces (train.c). code/nn/cuda.cmake adds the
# cuDNN backend to this library when CUDA is found. oneDNN comes from Debian's libdnnl-dev (listed
# in the root Makefile's deps): 2.x on Debian 12, 3.x on Debian 13; dnnl_compat.c holds the calls
# that differ.
find_package(OpenMP REQUIRED COMPONENTS C)
find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
find_library(DNNL_LIBRARY dnnl)
if(NOT DNNL_INCLUDE_DIR OR NOT DNNL_LIBRARY)
  message(FATAL_ERROR "oneDNN (dnnl.h, libdnnl) not found: install Debian's libdnnl-dev "
                      "(make deps does it)")
endif()

add_library(nn STATIC code/nn/backend.c code/nn/backend_cpu.c code/nn/backend_cpu_fast.c
                      code/nn/backend_standin.c code/nn/selfcheck.c code/nn/cpu_conv_dnnl.c
                      code/nn/dnnl_compat.c code/nn/adam.c code/nn/resnet34.c code/nn/train.c)
target_include_directories(nn SYSTEM PRIVATE ${DNNL_INCLUDE_DIR})
target_link_libraries(nn PUBLIC pth common m OpenMP::OpenMP_C ${DNNL_LIBRARY})
# backend_cpu_create installs the fast kernels over the reference ones (unless
# PETS_CPU_REFERENCE=1 at run time).
target_compile_definitions(nn PRIVATE PETS_HAVE_CPU_FAST=1)
# sqrtf need not set errno (its results are unchanged): lets GCC vectorise Adam's loop.
set_source_files_properties(code/nn/backend_cpu_fast.c PROPERTIES COMPILE_OPTIONS -fno-math-errno)
# The build runs on any x86-64; the same fast kernels compiled for AVX2 + FMA are chosen at run time
# where the CPU has them (backend_cpu_fast_avx2.c; core/cpu.h).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  target_sources(nn PRIVATE code/nn/backend_cpu_fast_avx2.c)
  target_compile_definitions(nn PRIVATE PETS_CPU_FAST_AVX2=1)
  set_source_files_properties(code/nn/backend_cpu_fast_avx2.c PROPERTIES COMPILE_OPTIONS
                              "-fno-math-errno;-mavx2;-mfma;-ffp-contract=off")
endif()

include(code/nn/cuda.cmake)
