# tests/pth.cmake: checkpoint tests. test-pth reads the torch.save fixtures of tests/fixtures/pth
# (written by tests/ref_pth.py) and checks the writer byte for byte; test-pth-bad feeds hostile and
# broken files (truncations, byte flips, forbidden globals, absurd sizes, legacy, not-a-zip).
set(PTH_FIXTURES ${CMAKE_SOURCE_DIR}/tests/fixtures/pth)

add_executable(test-pth tests/test_pth.c)
target_link_libraries(test-pth PRIVATE pth)
add_test(NAME pth COMMAND test-pth ${PTH_FIXTURES} ${CMAKE_BINARY_DIR})

add_executable(test-pth-bad tests/test_pth_bad.c)
target_link_libraries(test-pth-bad PRIVATE pth)
add_test(NAME pth-bad COMMAND test-pth-bad ${PTH_FIXTURES} ${CMAKE_BINARY_DIR})
