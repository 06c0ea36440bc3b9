# tests/experiments.cmake: chapters 04 (feature extraction) and 05 (fine-tuning).
# - experiments-unit: SHA-256 against known digests, the cache file format (round trip, stale
#   keys, truncation).
# - experiments-resume, experiments-bad-input: on a synthetic dataset (make-fake-pets, with an
#   undecodable and a missing image): an interrupted run (kill -9) resumed ends with the same
#   bytes as an uninterrupted one; missing weights, a checkpoint with another number of classes,
#   a resume with other settings, a damaged checkpoint, a full disk while writing results, a
#   diverging run (--lr 1e38: exit 3, results marked diverged, no .pth).
# - experiments-cache: a damaged cache is rebuilt with a warning (identical results); the
#   reference kernels get their own feature cache; --resume on another kernel table is refused.
# - experiments-parity-*: each variant end to end on the real 3-class subset against the
#   tutorial's PyTorch loop (tests/ref_transfer.py -> tests/fixtures/transfer); skipped (77)
#   without ../shared.
add_executable(test-experiments-start tests/test_experiments_start.c)
target_link_libraries(test-experiments-start PRIVATE nn pth common)
add_executable(test-experiments-compare tests/test_experiments_compare.c)
target_link_libraries(test-experiments-compare PRIVATE m)
add_executable(test-experiments-unit tests/test_experiments_unit.c)
target_link_libraries(test-experiments-unit PRIVATE experiment)
target_include_directories(test-experiments-unit PRIVATE tests)

add_test(NAME experiments-unit COMMAND test-experiments-unit ${CMAKE_CURRENT_BINARY_DIR}/experiments-unit.tmp)
foreach(t resume bad-input cache)
  string(REPLACE "-" "_" script ${t})
  add_test(NAME experiments-${t}
           COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_experiments_${script}.sh ${CMAKE_BINARY_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/experiments-${t}.tmp)
endforeach()
foreach(variant cached-eval-bn bn-train fine-tune)
  add_test(NAME experiments-parity-${variant}
           COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_experiments_parity.sh ${CMAKE_BINARY_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/experiments-parity-${variant}.tmp
                   ${PETS_SHARED_DIR} ${variant})
  set_tests_properties(experiments-parity-${variant} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()

# Chapter 07 (data efficiency): its helpers (subsets, baselines against a direct computation, the
# run table) and the program end to end on the 3-class subset with random weights and tiny
# settings (CSV schema and rows, subsets, rerun determinism, resume of a killed sweep).
add_executable(test-few-shot tests/test_few_shot.c)
target_link_libraries(test-few-shot PRIVATE experiment)
target_include_directories(test-few-shot PRIVATE tests)
add_test(NAME few-shot-unit COMMAND test-few-shot ${CMAKE_CURRENT_BINARY_DIR}/few-shot-unit.tmp)
add_test(NAME data-efficiency
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_data_efficiency.sh ${CMAKE_BINARY_DIR}
                 ${CMAKE_CURRENT_BINARY_DIR}/data-efficiency.tmp ${PETS_SHARED_DIR})
set_tests_properties(data-efficiency PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
