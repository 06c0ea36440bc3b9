# code/nn.cmake: the ResNet34 core as the static library `nn`: backend selection (backend.c), the
# CPU backend's reference kernels (backend_cpu.c) and fast kernels (backend_cpu_fast.c with
# oneDNN convolutions in cpu_conv_dnnl.c), the model (resnet34.c) and the training pieces
# (train.c). code/cuda.cmake adds the cuDNN backend to this library when CUDA is found.
find_package(OpenMP REQUIRED COMPONENTS C)
find_path(DNNL_INCLUDE_DIR dnnl.h)
find_library(DNNL_LIBRARY dnnl)
if(NOT DNNL_INCLUDE_DIR OR NOT DNNL_LIBRARY)
  message(FATAL_ERROR "oneDNN (dnnl.h, libdnnl) not found: install Debian's libdnnl-dev "
                      "(make deps does it)")
endif()

set(_nn_sources code/backend.c code/backend_cpu.c code/resnet34.c)
foreach(_f train backend_cpu_fast cpu_conv_dnnl)
  if(EXISTS ${CMAKE_SOURCE_DIR}/code/${_f}.c)
    list(APPEND _nn_sources code/${_f}.c)
  endif()
endforeach()
add_library(nn STATIC ${_nn_sources})
target_include_directories(nn PUBLIC code)
target_include_directories(nn SYSTEM PRIVATE ${DNNL_INCLUDE_DIR})
target_link_libraries(nn PUBLIC pth common m OpenMP::OpenMP_C ${DNNL_LIBRARY})
if(EXISTS ${CMAKE_SOURCE_DIR}/code/backend_cpu_fast.c)
  # backend_cpu_create installs the fast kernels (unless PETS_CPU_REFERENCE=1)
  target_compile_definitions(nn PRIVATE PETS_HAVE_CPU_FAST=1)
endif()
