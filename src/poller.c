// SPDX-License-Identifier: MIT
/*
 * Background threads, POLLER_THREADS per remote: they poll unfinished parts when due, download
 * the results of ended ones, reconcile submissions a crash interrupted, and list the provider
 * every list_interval so batches made elsewhere appear (up to the first page of known batches;
 * every page once per list_full_interval). A part is visited by one thread at a
 * time, so one slow download (a provider trickling its bytes) leaves the others' polls,
 * downloads and listings going, and the parts of a big batch download side by side. FUSE
 * threads never wait for them: they only kick. Never holds a lock across a provider call.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "bfs.h"
#include "conf.h"
#include "err.h"
#include "log.h"
#include "poller.h"
#include "provider.h"
#include "store.h"
#include "timefmt.h"

#define POLLER_BATCH_MAX      256 /* parts looked at per round; the rest wait for the next */
#define POLLER_BACKOFF_MAX_MS (60 * 60 * 1000)
#define POLLER_THREADS	      2	     /* per remote */
#define POLLER_FULL_LIST_S    3600.0 /* list_full_interval's default */

/* What the threads of one remote share (under poller.lock). */
struct poller_remote {
	struct remote *r;
	int64_t next_list;	      /* when the provider is listed next */
	int64_t last_full;	      /* when every page was last listed, 0 never */
	bool listing;		      /* a thread is listing it now */
	int64_t busy[POLLER_THREADS]; /* the part each thread is visiting, or 0 */
};

struct poller_thread {
	struct poller *p;
	struct poller_remote *pr;
	struct remote *r;
	int slot; /* in pr->busy */
	pthread_t tid;
	bool started;
};

struct poller {
	struct bfs *b;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;	/* protected by lock */
	unsigned kicks; /* protected by lock: bumped by poller_kick() */
	struct poller_remote *remotes;
	struct poller_thread *threads;
	size_t nthreads;
};

struct due_list {
	int64_t ids[POLLER_BATCH_MAX];
	size_t n;
};

static int collect_due(void *ctx, const struct store_part *p)
{
	struct due_list *d = ctx;

	if (d->n == POLLER_BATCH_MAX)
		return 1; /* enough for one round */
	d->ids[d->n++] = p->id;
	return 0;
}

static bool poller_stopping(struct poller *p)
{
	bool stop;

	pthread_mutex_lock(&p->lock);
	stop = p->stop;
	pthread_mutex_unlock(&p->lock);
	return stop;
}

/* Claims a part for this thread: false when another thread of the remote is visiting it. */
static bool poller_claim(struct poller_thread *t, int64_t part_id)
{
	bool ok = true;

	pthread_mutex_lock(&t->p->lock);
	for (int i = 0; i < POLLER_THREADS; i++)
		if (i != t->slot && t->pr->busy[i] == part_id)
			ok = false;
	if (ok)
		t->pr->busy[t->slot] = part_id;
	pthread_mutex_unlock(&t->p->lock);
	return ok;
}

static void poller_release(struct poller_thread *t)
{
	pthread_mutex_lock(&t->p->lock);
	t->pr->busy[t->slot] = 0;
	pthread_mutex_unlock(&t->p->lock);
}

/* One due part: batch.c decides what it needs from the store alone. 0, 1 when another
 * thread is visiting it, or -errno. */
static int poller_visit(struct poller_thread *t, int64_t part_id)
{
	struct bfs_err err = BFS_ERR_INIT;
	int rc;

	if (!poller_claim(t, part_id))
		return 1; /* the other thread has it */
	rc = batch_visit(t->p->b, t->r, part_id, &err);
	poller_release(t);
	if (rc && err.msg[0])
		log_warn("%s", err.msg);
	return rc;
}

/* The listing, when due and no other thread of the remote is at it; returns when it is due
 * next (for the wait). */
static int64_t poller_list(struct poller_thread *t)
{
	struct bfs_err err = BFS_ERR_INIT;
	bool mine = false, full;
	int64_t next, started = timefmt_now_ms(), last_full;
	int64_t full_ms =
		(int64_t)(conf_get_double(t->r->conf, "list_full_interval", POLLER_FULL_LIST_S) *
			  1000);

	pthread_mutex_lock(&t->p->lock);
	if (!t->pr->listing && started >= t->pr->next_list)
		mine = t->pr->listing = true;
	next = t->pr->next_list;
	last_full = t->pr->last_full;
	pthread_mutex_unlock(&t->p->lock);
	if (!mine)
		return next;
	/* The first listing of a mount walks every page; later ones stop at known batches. */
	full = !last_full || started - last_full >= full_ms;
	next = started + (int64_t)(t->r->conf->list_interval * 1000);
	/* discover = none: batches made elsewhere are not looked for (no list call); the
	 * schedule stays, so the wait has its bound. */
	if (t->r->conf->discover && batch_discover(t->p->b, t->r, full, &err)) {
		log_warn("cannot list the batches of '%s': %s", t->r->conf->name, err.msg);
		/* Rate limited: the remote's listing waits as long as the provider asked. */
		if (err.retry_at > next)
			next = err.retry_at;
	} else if (full) {
		last_full = started;
	}
	if (next < timefmt_now_ms())
		next = timefmt_now_ms();
	pthread_mutex_lock(&t->p->lock);
	t->pr->next_list = next;
	t->pr->last_full = last_full;
	t->pr->listing = false;
	pthread_mutex_unlock(&t->p->lock);
	return next;
}

static void *poller_main(void *arg)
{
	struct poller_thread *t = arg;
	struct poller *p = t->p;
	struct bfs *b = p->b;
	int stuck = 0; /* rounds in a row that failed and left work due at once */

	while (!poller_stopping(p)) {
		struct due_list due = {.n = 0};
		struct timespec ts;
		int64_t now, wake, next_list;
		unsigned kicks;

		pthread_mutex_lock(&p->lock);
		kicks = p->kicks;
		pthread_mutex_unlock(&p->lock);
		next_list = poller_list(t);
		if (store_part_due(b->store, t->r->conf->name, timefmt_now_ms(), collect_due,
				   &due) < 0)
			log_warn("cannot read the cache");
		bool failed = false;
		size_t skipped = 0;

		for (size_t i = 0; i < due.n && !poller_stopping(p); i++) {
			int rc = poller_visit(t, due.ids[i]);

			skipped += rc == 1;
			failed |= rc < 0;
		}
		if (due.n == POLLER_BATCH_MAX && !failed && skipped < due.n)
			continue;

		wake = next_list;
		{
			int64_t d = store_part_next_due(b->store, t->r->conf->name);

			if (d && d < wake)
				wake = d;
		}
		now = timefmt_now_ms();
		/*
		 * A failure that could not even be recorded (a full disk under the cache) leaves
		 * the part due: without a floor the poller would spin on it. Back off, doubling
		 * per round in a row, up to an hour.
		 */
		if (skipped && skipped == due.n && wake <= now) {
			/* All that is due is being visited by the other thread: wait for a kick
			 * or a poll interval, not a spin. */
			wake = now + provider_poll_ms(t->r->ops, t->r->conf);
			if (wake < now + 100)
				wake = now + 100;
		} else if (failed && wake <= now) {
			int64_t floor_ms = provider_poll_ms(t->r->ops, t->r->conf);

			for (int k = 0; k < stuck && floor_ms < POLLER_BACKOFF_MAX_MS; k++)
				floor_ms *= 2;
			if (floor_ms < 100)
				floor_ms = 100;
			wake = now + (floor_ms < POLLER_BACKOFF_MAX_MS ? floor_ms
								       : POLLER_BACKOFF_MAX_MS);
			stuck++;
		} else {
			stuck = 0;
		}
		if (wake <= now)
			continue;
		clock_gettime(CLOCK_REALTIME, &ts);
		{
			int64_t ms = wake - now;

			ts.tv_sec += ms / 1000;
			ts.tv_nsec += (ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
		}
		pthread_mutex_lock(&p->lock);
		while (!p->stop && p->kicks == kicks) {
			if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
				break;
		}
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

int poller_start(struct poller **out, struct bfs *b, struct bfs_err *err)
{
	struct poller *p = calloc(1, sizeof(*p));
	int rc;

	if (!p)
		return -ENOMEM;
	p->b = b;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->remotes = calloc(b->nremotes, sizeof(*p->remotes));
	p->threads = calloc(b->nremotes * POLLER_THREADS, sizeof(*p->threads));
	if (!p->remotes || !p->threads) {
		poller_stop(p);
		return -ENOMEM;
	}
	for (size_t i = 0; i < b->nremotes * POLLER_THREADS; i++) {
		struct poller_thread *t = &p->threads[i];

		t->p = p;
		t->pr = &p->remotes[i / POLLER_THREADS];
		t->pr->r = &b->remotes[i / POLLER_THREADS];
		t->r = t->pr->r;
		t->slot = (int)(i % POLLER_THREADS);
		rc = pthread_create(&t->tid, NULL, poller_main, t);
		if (rc) {
			err_set(err, "cannot start the poller: %s", strerror(rc));
			poller_stop(p);
			return -rc;
		}
		(void)pthread_setname_np(t->tid, "bfs-poll"); /* top -H, perf, the bench */
		t->started = true;
		p->nthreads++;
	}
	*out = p;
	return 0;
}

void poller_kick(struct poller *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->kicks++;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void poller_stop(struct poller *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < p->nthreads; i++)
		if (p->threads[i].started)
			pthread_join(p->threads[i].tid, NULL);
	free(p->threads);
	free(p->remotes);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
