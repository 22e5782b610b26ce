/*
 * test_sim_long.c — the long random tier (make test-long, label "long"):
 * many more seeds, longer runs, starting where the bounded tier stops.
 */
#include "sim_seeds.h"

int main(void)
{
	return sim_seeds_main("sim_long", 100000, 20000, 60000);
}
