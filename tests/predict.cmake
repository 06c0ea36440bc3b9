# tests/predict.cmake: build/predict end to end (tests/test_predict.sh with its helper).
if(TARGET predict)
  add_executable(test-predict-helper tests/test_predict_helper.c)
  target_link_libraries(test-predict-helper PRIVATE nn pth petimage common m)
  add_test(NAME predict COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_predict.sh ${CMAKE_BINARY_DIR}
           ${CMAKE_SOURCE_DIR})
endif()
