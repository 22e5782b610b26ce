/*
 * msg_corpus.h — a text corpus cut into chat-sized messages, shared by
 * parley-history-ratio (bench/history_ratio.c) and the segment unit test
 * (tests/unit/engine/test_segment.c), which read the fortunes files.
 *
 * The caller reads its files into text[0..len); corpus_cut then folds
 * white space in place and records each message as (off, mlen) into
 * text: a fortune (between lines of a lone '%') split at sentence ends
 * into pieces of 20..200 bytes. Ownership: the struct's arrays and text
 * are the caller's to free. Out of memory aborts (a benchmark / test
 * helper). Threads: any, one corpus per thread.
 */
#ifndef PARLEY_MSG_CORPUS_H
#define PARLEY_MSG_CORPUS_H

#include <stdbool.h>
#include <stdlib.h>

struct corpus {
	char *text;
	size_t len;
	size_t *off, *mlen, n, cap;
};

/* Records message [off, off + len) of c->text. */
static inline void corpus_add(struct corpus *c, size_t off, size_t len)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 1024;
		c->off = realloc(c->off, c->cap * sizeof *c->off);
		c->mlen = realloc(c->mlen, c->cap * sizeof *c->mlen);
		if (!c->off || !c->mlen)
			abort();
	}
	c->off[c->n] = off;
	c->mlen[c->n] = len;
	c->n++;
}

/* Folds runs of white space in c->text to one space (in place, c->len
 * shrinks) and cuts the text into messages of 20..200 bytes: at each
 * fortune's end, at a sentence end past 20 bytes, or at 200 bytes. */
static inline void corpus_cut(struct corpus *c)
{
	size_t start = 0, w = 0;
	for (size_t i = 0; i < c->len; i++) {
		char ch = c->text[i];
		bool sep = ch == '%' && (i == 0 || c->text[i - 1] == '\n');
		if (ch == '\n' || ch == '\t')
			ch = ' ';
		if (!sep && !(ch == ' ' && w > start && c->text[w - 1] == ' '))
			c->text[w++] = ch;
		size_t l = w - start;
		if (sep || ((ch == '.' || ch == '?' || ch == '!') && l >= 20) || l >= 200) {
			while (start < w && c->text[start] == ' ')
				start++;
			if (w - start >= 20)
				corpus_add(c, start, w - start);
			start = w;
		}
	}
	c->len = w;
}

#endif
