# The evaluation report (trainer/eval_report): units on synthetic metrics.json files (table values,
# best values, escaping, grids, scatter coordinates, schema errors), and the page rendered by
# headless Chromium (DOM and a screenshot in which every image must be painted). Chromium is a
# setup dependency: its absence fails the test.
lookahead_add_test(trainer_report_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/report_test.cpp
                   DEPS lookahead_trainer LABELS report TIMEOUT 120)

add_executable(trainer_report_tool ${CMAKE_CURRENT_LIST_DIR}/report_tool.cpp)
target_link_libraries(trainer_report_tool PRIVATE lookahead_pch lookahead_trainer)
target_precompile_headers(trainer_report_tool REUSE_FROM lookahead_pch)
add_test(NAME trainer_report_chromium
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/report_chromium.sh $<TARGET_FILE:trainer_report_tool>
                 ${CMAKE_CURRENT_BINARY_DIR}/report_chromium)
set_tests_properties(trainer_report_chromium PROPERTIES LABELS "report" TIMEOUT 180 ENVIRONMENT "${LA_TEST_ENV}")
