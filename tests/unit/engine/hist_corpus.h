/*
 * hist_corpus.h — shared helpers for the history-tier unit tests
 * (test_dict.c, test_segment.c, test_compact.c): a seeded synthetic
 * chat-message generator and the seed convention.
 *
 * Seeds: a test uses hist_seed(), which takes PARLEY_TEST_SEED from the
 * environment when set (to replay a failure) or the monotonic clock, and
 * prints it.
 */
#ifndef HIST_CORPUS_H
#define HIST_CORPUS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

static inline uint64_t hist_seed(const char *test)
{
	const char *e = getenv("PARLEY_TEST_SEED");
	uint64_t s = e ? strtoull(e, NULL, 0) : parley_mono_ns();
	printf("%s seed=%llu (replay: PARLEY_TEST_SEED=%llu)\n", test,
	       (unsigned long long)s, (unsigned long long)s);
	fflush(stdout);
	return s;
}

static const char *const hist_words[] = {
	"hey", "are", "you", "coming", "tonight", "the", "meeting", "was",
	"moved", "to", "tomorrow", "at", "noon", "lol", "ok", "sounds",
	"good", "thanks", "see", "you", "later", "can", "we", "talk",
	"about", "project", "deadline", "I", "just", "sent", "file",
	"please", "review", "when", "have", "time", "great", "job",
	"everyone", "lunch", "coffee", "where", "is", "deploy", "broken",
	"again", "fixed", "it", "yes", "no", "maybe", "weekend", "plans",
};

/* A chat-like message of about 20..200 bytes into buf (cap >= 256). */
static inline size_t hist_message(struct parley_rng *rng, char *buf)
{
	size_t target = 20 + (size_t)parley_rng_below(rng, 180), n = 0;
	while (n < target) {
		const char *w = hist_words[parley_rng_below(
			rng, sizeof hist_words / sizeof hist_words[0])];
		size_t l = strlen(w);
		if (n + l + 1 > 250)
			break;
		if (n)
			buf[n++] = ' ';
		memcpy(buf + n, w, l);
		n += l;
	}
	return n;
}

#endif /* HIST_CORPUS_H */
