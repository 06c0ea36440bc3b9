# code/cpufast.cmake: the fast CPU kernels (backend_cpu_fast.c: oneDNN convolutions in
# cpu_conv_dnnl.c, OpenMP element-wise layers) join the nn library. PETS_HAVE_CPU_FAST tells
# backend_cpu.c to install them over its reference kernels. oneDNN comes from Debian's
# libdnnl-dev (listed in the root Makefile's deps).
if(TARGET nn)
  find_package(OpenMP REQUIRED COMPONENTS C)
  find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
  find_library(DNNL_LIBRARY dnnl)
  if(NOT DNNL_INCLUDE_DIR OR NOT DNNL_LIBRARY)
    message(FATAL_ERROR "oneDNN not found: install Debian's libdnnl-dev (make deps does it)")
  endif()
  target_sources(nn PRIVATE code/backend_cpu_fast.c code/cpu_conv_dnnl.c)
  target_compile_definitions(nn PRIVATE PETS_HAVE_CPU_FAST)
  target_include_directories(nn PRIVATE ${DNNL_INCLUDE_DIR})
  target_link_libraries(nn PUBLIC ${DNNL_LIBRARY} OpenMP::OpenMP_C)
endif()
