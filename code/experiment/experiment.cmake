# code/experiment/experiment.cmake: the machinery the training chapters share, above the model.
#   petresults: the one JSON results writer (results.c) and the readers of run files (runfiles.c:
#               epoch logs, predictions) that 06 uses; chapters 01-03 write their results with it;
#   experiment: command line, keyed caches, batch sources, epoch log and checkpoints of 04 and 05;
#               few_shot.c: subsets, epoch rule, training-free baselines and run table of 07.
add_library(petresults STATIC code/experiment/results.c code/experiment/runfiles.c)
target_link_libraries(petresults PUBLIC petdata common m)

add_library(experiment STATIC code/experiment/experiment.c code/experiment/exp_data.c
                              code/experiment/exp_checkpoint.c code/experiment/few_shot.c)
target_link_libraries(experiment PUBLIC nn petresults petdata petimage pth common m)

# The build's identity (build_id.c, see build_id.cmake): a hash of every source that computes what
# the caches hold, of the compiler and its flags, and of stb_image.h. Regenerated at build time
# when any of them changes.
file(GLOB_RECURSE PETS_ID_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/code/core/*.[ch] ${CMAKE_SOURCE_DIR}/code/data/*.[ch]
     ${CMAKE_SOURCE_DIR}/code/checkpoint/*.[ch] ${CMAKE_SOURCE_DIR}/code/nn/*.[ch]
     ${CMAKE_SOURCE_DIR}/code/nn/*.cu ${CMAKE_SOURCE_DIR}/code/experiment/*.[ch]
     ${CMAKE_SOURCE_DIR}/code/04-*.c ${CMAKE_SOURCE_DIR}/code/05-*.c ${CMAKE_SOURCE_DIR}/code/*.cmake
     ${CMAKE_SOURCE_DIR}/code/*/*.cmake)
list(APPEND PETS_ID_SOURCES ${CMAKE_SOURCE_DIR}/CMakeLists.txt)
list(SORT PETS_ID_SOURCES)
string(REPLACE ";" "\n" _ids "${PETS_ID_SOURCES}")
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/build_id_sources.txt CONTENT "${_ids}\n" @ONLY)
execute_process(COMMAND dpkg-query -W -f=\${Version} libstb-dev OUTPUT_VARIABLE PETS_STB_PACKAGE
                ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT PETS_STB_PACKAGE)
  set(PETS_STB_PACKAGE unknown)
endif()
string(TOUPPER "${CMAKE_BUILD_TYPE}" _bt)
# (the options CMakeLists.txt adds are covered by hashing it; these come from the cache)
set(_config "${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER_VERSION} flags=${CMAKE_C_FLAGS} ${CMAKE_C_FLAGS_${_bt}} native=${PETS_NATIVE}")
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/build_id.c
  COMMAND ${CMAKE_COMMAND} -DLIST=${CMAKE_BINARY_DIR}/build_id_sources.txt
          -DOUT=${CMAKE_BINARY_DIR}/build_id.c "-DCONFIG=${_config}"
          -DSTB=${STB_INCLUDE_DIR}/stb_image.h -DSTB_PACKAGE=${PETS_STB_PACKAGE}
          -P ${CMAKE_SOURCE_DIR}/code/experiment/build_id.cmake
  DEPENDS ${PETS_ID_SOURCES} ${STB_INCLUDE_DIR}/stb_image.h
          ${CMAKE_SOURCE_DIR}/code/experiment/build_id.cmake ${CMAKE_BINARY_DIR}/build_id_sources.txt
  COMMENT "build identity (sources, flags, stb_image)" VERBATIM)
target_sources(experiment PRIVATE ${CMAKE_BINARY_DIR}/build_id.c)
