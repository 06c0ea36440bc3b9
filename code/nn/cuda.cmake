# code/nn/cuda.cmake: the cuDNN + CUDA runtime backend. Compiled in when nvcc, cuDNN and cuBLAS are
# found (under /usr/local/cuda, or NVIDIA's packages elsewhere); otherwise the build says so and
# goes on CPU-only. PETS_CUDA=OFF forces a CPU-only build.
option(PETS_CUDA "Build the cuDNN backend when CUDA and cuDNN are found" ON)
set(PETS_HAVE_CUDA OFF)
if(PETS_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include
            PATH_SUFFIXES include)
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64
               PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY
     AND TARGET CUDA::cublas AND TARGET nn)
    set(PETS_HAVE_CUDA ON)
  endif()
endif()

if(PETS_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Turing, Ampere, Hopper (sm_80 code also runs on sm_86/sm_89), plus PTX for newer chips.
    set(CMAKE_CUDA_ARCHITECTURES 75-real 80-real 90)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  message(STATUS "cuDNN backend: ON (${CMAKE_CUDA_COMPILER}, ${CUDNN_LIBRARY})")
  target_sources(nn PRIVATE code/nn/backend_cuda.cu)
  # nn was created (code/nn/nn.cmake) before CUDA was enabled, so it did not pick the default up.
  set_property(TARGET nn PROPERTY CUDA_ARCHITECTURES ${CMAKE_CUDA_ARCHITECTURES})
  # Warnings shown, never errors: a newer CUDA or cuDNN deprecates APIs (the legacy convolution
  # API is marked deprecated in cuDNN 9) and a user's build must not fail on that.
  set_source_files_properties(code/nn/backend_cuda.cu PROPERTIES COMPILE_OPTIONS
    "-Xcompiler=-Wall,-Wextra")
  target_include_directories(nn PRIVATE ${CUDNN_INCLUDE_DIR})
  target_compile_definitions(nn PUBLIC PETS_HAVE_CUDA=1)
  target_link_libraries(nn PUBLIC CUDA::cudart CUDA::cublas ${CUDNN_LIBRARY})
else()
  message(STATUS "cuDNN backend: OFF (CUDA toolkit with nvcc, cuBLAS and cuDNN not found, or "
                 "PETS_CUDA=OFF): building CPU-only; --device cuda will say so")
endif()
