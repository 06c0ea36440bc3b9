# code/cpufast.cmake: the fast CPU kernels (backend_cpu_fast.c: oneDNN convolutions in
# cpu_conv_dnnl.c, OpenMP element-wise layers) in the nn library. code/nn.cmake already lists
# them when they exist; this fragment adds whatever it does not (sources, PETS_HAVE_CPU_FAST,
# which tells backend_cpu.c to install them, oneDNN and OpenMP), so either file alone suffices.
# oneDNN comes from Debian's libdnnl-dev (listed in the root Makefile's deps).
if(TARGET nn)
  find_package(OpenMP REQUIRED COMPONENTS C)
  find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
  find_library(DNNL_LIBRARY dnnl)
  if(NOT DNNL_INCLUDE_DIR OR NOT DNNL_LIBRARY)
    message(FATAL_ERROR "oneDNN not found: install Debian's libdnnl-dev (make deps does it)")
  endif()
  get_target_property(_cpufast_srcs nn SOURCES)
  foreach(_f code/backend_cpu_fast.c code/cpu_conv_dnnl.c)
    if(NOT _f IN_LIST _cpufast_srcs)
      target_sources(nn PRIVATE ${_f})
    endif()
  endforeach()
  get_target_property(_cpufast_defs nn COMPILE_DEFINITIONS)
  if(NOT _cpufast_defs MATCHES "PETS_HAVE_CPU_FAST")
    target_compile_definitions(nn PRIVATE PETS_HAVE_CPU_FAST=1)
  endif()
  target_link_libraries(nn PUBLIC ${DNNL_LIBRARY} OpenMP::OpenMP_C)
  # sqrtf need not set errno (its results are unchanged): lets GCC vectorise Adam's loop.
  set_source_files_properties(code/backend_cpu_fast.c PROPERTIES COMPILE_OPTIONS -fno-math-errno)
endif()
