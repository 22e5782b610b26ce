# The deterministic cluster simulator (sim.c) and its tests: random seeds
# (test_sim_random: a bounded number; test_sim_long: many, label "long") and
# named scenarios (test_scn_*). Plain executables: a failure prints its seed
# and exits 1; PARLEY_SIM_SEED=<n> replays one seed.
add_library(parley_sim STATIC ${CMAKE_CURRENT_LIST_DIR}/sim.c)
target_link_libraries(parley_sim PUBLIC parley_engine_internals)
target_include_directories(parley_sim PUBLIC ${CMAKE_CURRENT_LIST_DIR})
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} LIBS parley_sim
                 LABELS sim TIMEOUT 900)
set_tests_properties(sim_test_sim_long PROPERTIES LABELS "sim;long"
                     TIMEOUT 7200)
# The engine simulator (engine_sim.c): the real engine on the in-memory
# backend under a seeded workload with crashes and disk faults.
# test_engine_sim: a bounded number of seeds (make test);
# test_engine_sim_regress: seeds that once found a bug, run just past the
# failing step (make test);
# test_engine_sim_long: many more (label "long", make test-long).
# PARLEY_ESIM_SEED=<n> replays one seed.
target_sources(parley_sim PRIVATE ${CMAKE_CURRENT_LIST_DIR}/engine_sim.c)
set_tests_properties(sim_test_engine_sim_long PROPERTIES LABELS "sim;long"
                     TIMEOUT 7200)
# A deliberately broken Raft core (raft.c built with
# RAFT_TEST_BROKEN_EARLY_ALL: every message of a ready may leave before it
# is durable, votes and responses included) under the early-send scenario:
# the simulator must catch it (S3, leader completeness: a follower answered
# before its write, lost the entry, and a new leader lacks an entry that
# was applied and acknowledged). Passes only when that failure is printed.
add_library(raft_broken_early OBJECT ${CMAKE_SOURCE_DIR}/engine/raft/raft.c)
target_compile_definitions(raft_broken_early PRIVATE RAFT_TEST_BROKEN_EARLY_ALL)
target_link_libraries(raft_broken_early PRIVATE parley_engine_internals)
add_executable(sim_scn_early_broken ${CMAKE_CURRENT_LIST_DIR}/test_scn_early_send.c
               ${CMAKE_CURRENT_LIST_DIR}/sim.c $<TARGET_OBJECTS:raft_broken_early>)
target_link_libraries(sim_scn_early_broken PRIVATE parley_engine_internals)
target_include_directories(sim_scn_early_broken PRIVATE ${CMAKE_CURRENT_LIST_DIR})
add_test(NAME sim_scn_early_broken COMMAND sim_scn_early_broken)
set_tests_properties(sim_scn_early_broken PROPERTIES LABELS "sim" TIMEOUT 600
                     ENVIRONMENT "PARLEY_SIM_SEED=3001"
                     PASS_REGULAR_EXPRESSION "SIM FAILURE.*S3 leader completeness")
# (Seed 3001: which seeds reach the broken answer depends on the message
# schedule; with the commit notices of raft_ready, flush_commit_bcast,
# seeds 3000 and 3001 both do.)
