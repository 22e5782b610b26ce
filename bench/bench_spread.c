/*
 * bench_spread.c — min / median / max ignoring NANs (see bench_spread.h).
 */
#include "bench_spread.h"

#include <math.h>
#include <stdlib.h>

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

unsigned bench_spread(double *v, unsigned n, struct bench_spread *out)
{
	unsigned m = 0;
	for (unsigned i = 0; i < n; i++)
		if (!isnan(v[i]))
			v[m++] = v[i];
	out->n = m;
	if (m == 0) {
		out->min = out->median = out->max = NAN;
		return 0;
	}
	qsort(v, m, sizeof *v, cmp_dbl);
	out->min = v[0];
	out->max = v[m - 1];
	out->median = (v[(m - 1) / 2] + v[m / 2]) / 2;
	return m;
}
