// SPDX-License-Identifier: MIT
/*
 * Parked reads (include/waiter.h). One thread looks at the parked reads whenever the store
 * has changed (a poll, a download or a cancel committed on another thread: SQLite's
 * data_version, read every WAITER_TICK_MS, a query of microseconds), when a read is parked
 * or kicked, and at least every WAITER_IDLE_MS; it answers those whose check is now 1, and
 * those the kernel interrupted with EINTR at once.
 *
 * Lifetimes: an entry is unlinked only by the waiter thread (or waiter_stop), and answered
 * after it is unlinked, outside the lock. libfuse calls the interrupt callback with the
 * request alive (its reference count held), so the callback only flags an entry it still
 * finds in the list; an entry is not looked at before its callback is registered, so a
 * request is never answered while fuse_req_interrupt_func() is still using it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "bfs.h"
#include "log.h"
#include "store.h"
#include "waiter.h"

#define WAITER_TICK_MS 50
#define WAITER_IDLE_MS 2000

struct parked {
	struct parked *next;
	fuse_req_t req;
	waiter_check_fn check;
	int64_t batch_id;
	size_t size;
	off_t off;
	struct buf *text;
	bool registered;  /* its interrupt callback is in place */
	bool interrupted; /* the kernel interrupted it */
	int rc;		  /* what to answer: 0 the text, else -errno */
};

struct waiter {
	struct bfs *b;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	struct parked *list;
	bool stop, kicked;
};

static void on_interrupt(fuse_req_t req, void *data)
{
	struct waiter *w = data;

	pthread_mutex_lock(&w->lock);
	for (struct parked *p = w->list; p; p = p->next)
		if (p->req == req)
			p->interrupted = true;
	w->kicked = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/*
 * Copied out of the handle's text, not replied from it: once the kernel has the data the
 * reader may close, and the release that frees the handle can run before the reply returns.
 */
static void answer(struct parked *p)
{
	const struct buf *t = p->text;
	size_t k = 0;
	char *copy = NULL;

	if (!p->rc) {
		if ((size_t)p->off < t->len)
			k = t->len - (size_t)p->off;
		k = k < p->size ? k : p->size;
		copy = malloc(k ? k : 1);
		if (copy && k)
			memcpy(copy, t->data + p->off, k);
		else if (!copy)
			p->rc = -ENOMEM;
	}
	if (p->rc)
		fuse_reply_err(p->req, -p->rc);
	else
		fuse_reply_buf(p->req, copy, k);
	free(copy);
	free(p);
}

static void answer_all(struct parked *done)
{
	while (done) {
		struct parked *next = done->next;

		answer(done);
		done = next;
	}
}

/* One look at every parked read; unlinks those to answer into *done. Called locked. */
static void waiter_pass(struct waiter *w, struct parked **done)
{
	struct parked **pp = &w->list;

	while (*pp) {
		struct parked *p = *pp;
		int rc = 0;

		if (!p->registered) {
			pp = &p->next;
			continue;
		}
		if (!p->interrupted) {
			/* Only this thread unlinks: p and its successors stay while unlocked. */
			pthread_mutex_unlock(&w->lock);
			rc = p->check(w->b, p->batch_id, p->text);
			pthread_mutex_lock(&w->lock);
			/* A read parked meanwhile went in at the head: find p's link again. */
			for (pp = &w->list; *pp != p; pp = &(*pp)->next)
				;
		}
		if (p->interrupted || rc) {
			p->rc = p->interrupted ? -EINTR : rc < 0 ? rc : 0;
			*pp = p->next;
			p->next = *done;
			*done = p;
		} else {
			pp = &p->next;
		}
	}
}

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	int64_t seen = -2, idle = 0;
	bool look = true;

	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		struct parked *done = NULL;
		struct timespec until;
		bool any = w->list != NULL;
		int64_t v = seen;

		if (any) {
			pthread_mutex_unlock(&w->lock);
			v = store_data_version(w->b->store);
			pthread_mutex_lock(&w->lock);
		}
		if (v != seen || v < 0 || idle >= WAITER_IDLE_MS)
			look = true;
		seen = v;
		if (look) {
			waiter_pass(w, &done);
			look = false;
			idle = 0;
		} else {
			idle += WAITER_TICK_MS;
		}
		if (done) {
			pthread_mutex_unlock(&w->lock);
			answer_all(done);
			pthread_mutex_lock(&w->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += WAITER_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!w->stop && !w->kicked) {
			if (!w->list)
				pthread_cond_wait(&w->cond, &w->lock);
			else if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT)
				break;
		}
		if (w->kicked)
			look = true;
		w->kicked = false;
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int waiter_start(struct waiter **out, struct bfs *b)
{
	struct waiter *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	int rc;

	if (!w)
		return -ENOMEM;
	w->b = b;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = -pthread_create(&w->thread, NULL, waiter_main, w);
	if (!rc)
		(void)pthread_setname_np(w->thread, "bfs-wait"); /* top -H, perf, the bench */
	if (rc) {
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->lock);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int waiter_park(struct waiter *w, fuse_req_t req, waiter_check_fn check, int64_t batch_id,
		size_t size, off_t off, struct buf *text)
{
	struct parked *p;

	if (!w)
		return -EIO;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->req = req;
	p->check = check;
	p->batch_id = batch_id;
	p->size = size;
	p->off = off;
	p->text = text;
	pthread_mutex_lock(&w->lock);
	if (w->stop) {
		pthread_mutex_unlock(&w->lock);
		free(p);
		return -EIO;
	}
	p->next = w->list;
	w->list = p;
	pthread_mutex_unlock(&w->lock);
	/* Unlocked: libfuse calls on_interrupt from here when the request is interrupted
	 * already. The waiter skips p until it is registered. */
	fuse_req_interrupt_func(req, on_interrupt, w);
	pthread_mutex_lock(&w->lock);
	p->registered = true;
	w->kicked = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void waiter_kick(struct waiter *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->kicked = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void waiter_stop(struct waiter *w)
{
	struct parked *all;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	all = w->list;
	w->list = NULL;
	for (struct parked *p = all; p; p = p->next)
		p->rc = -EIO;
	if (all)
		log_info("unmount: %s", "parked reads of wait answered EIO");
	answer_all(all);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
