# Evaluation metrics (trainer/eval_stats, id_similarity, clip_score). Two oracle fixtures: the
# public-domain photos and facenet-pytorch's MTCNN weights (eval_photos_oracle.py), and a small
# random transformers CLIPModel with the real CLIP BPE and its cosines (clip_score_oracle.py).
set(_la_eval_photos_dir ${CMAKE_CURRENT_BINARY_DIR}/eval_photos)
set(_la_clip_score_dir ${CMAKE_CURRENT_BINARY_DIR}/clip_score)
add_test(NAME trainer_eval_photos_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/eval_photos_oracle.py ${_la_eval_photos_dir})
set_tests_properties(trainer_eval_photos_oracle PROPERTIES FIXTURES_SETUP trainer_eval_photos LABELS "parity"
                     TIMEOUT 120 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME trainer_clip_score_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/clip_score_oracle.py ${_la_clip_score_dir})
set_tests_properties(trainer_clip_score_oracle PROPERTIES FIXTURES_SETUP trainer_clip_score LABELS "parity"
                     TIMEOUT 120 ENVIRONMENT "${LA_TEST_ENV}")

lookahead_add_test(trainer_metrics_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/metrics_test.cpp DEPS lookahead_trainer
                   LABELS parity TIMEOUT 120)
set_tests_properties(trainer_metrics_test PROPERTIES
                     FIXTURES_REQUIRED "trainer_eval_photos;trainer_clip_score"
                     ENVIRONMENT "${LA_TEST_ENV};LA_EVAL_PHOTOS_DIR=${_la_eval_photos_dir};LA_CLIP_SCORE_DIR=${_la_clip_score_dir}")
