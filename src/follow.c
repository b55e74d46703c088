// SPDX-License-Identifier: MIT
/*
 * Followers (follow.h): one thread per draft being written, feeding what the writer wrote to
 * the file's check (intake.h) as it lands. The writer never waits for it: a write only moves
 * the follower's end mark. A follower that gives up (a write out of sequence, a cut) just
 * stops; the commit then checks the file itself. At most one check of a batch runs at a time:
 * a new follower joins the one it replaces before it starts, and a commit joins the
 * batch's follower before it checks the file itself, so their custom_id records in the store
 * never mix.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bfs.h"
#include "conf.h"
#include "err.h"
#include "follow.h"
#include "intake.h"
#include "log.h"
#include "provider.h"
#include "spool.h"
#include "store.h"

/* Drafts followed at once; a writer beyond them is checked at its close (as before). */
#define FOLLOW_MAX   16
#define FOLLOW_CHUNK (256 * 1024)
/*
 * A create streamed as the file is written (provider.h stream_*) starts once this much of
 * it is checked: below, the upload at the close is short anyway. At most FOLLOW_STREAMS of
 * them at once per mount (each holds a connection and a thread).
 */
#define FOLLOW_STREAM_MIN (8 << 20)
#define FOLLOW_STREAMS	  2

struct follower {
	struct bfs *b;
	int64_t batch_id, file_id;
	int64_t end;  /* bytes written in one sequence from 0 */
	int64_t done; /* bytes fed to the check */
	bool broken;  /* the writes were not one sequence: the check is worth nothing */
	bool stop;    /* asked to end */
	bool handoff; /* the commit takes the check: the thread must not free it */
	bool exited;  /* its thread is done: a join returns at once */
	int rc;	      /* the check's failure (-EINVAL: the file is invalid) */
	struct bfs_err err;
	struct intake *in;
	const struct remote *r;
	/* The streamed create of the file's first part, or NULL; only the follower's thread
	 * touches it while it runs, the commit after the join (handoff). */
	struct provider_stream *stream;
	bool no_stream; /* tried, or cannot be: not again for this follower */
	pthread_t th;
	struct follower *prev; /* the follower this one replaced: joined before it starts */
	struct follower *next;
};

struct follow {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any change of any follower (few, so one is enough) */
	struct follower *list;
	size_t n;     /* followers alive, prev chains included */
	int nstreams; /* streamed creates alive, those handed to a commit included */
};

int follow_init(struct bfs *b)
{
	struct follow *fw = calloc(1, sizeof(*fw));

	if (!fw)
		return -ENOMEM;
	pthread_mutex_init(&fw->lock, NULL);
	pthread_cond_init(&fw->cond, NULL);
	b->follow = fw;
	return 0;
}

/* Joins f (and what it replaced) and frees it; f is no longer listed. */
static void follower_reap(struct follow *fw, struct follower *f)
{
	pthread_join(f->th, NULL); /* it freed its check (nobody took it) */
	if (f->prev)
		follower_reap(fw, f->prev);
	pthread_mutex_lock(&fw->lock);
	fw->n--;
	pthread_mutex_unlock(&fw->lock);
	free(f);
}

/* Abandons a stream (nothing is created) and gives its slot back. */
static void stream_drop(struct follow *fw, const struct remote *r, struct provider_stream *st)
{
	if (!st)
		return;
	r->ops->stream_abort(st);
	pthread_mutex_lock(&fw->lock);
	fw->nstreams--;
	pthread_mutex_unlock(&fw->lock);
}

/*
 * After a feed, on the follower's thread: starts the streamed create of the first part once
 * FOLLOW_STREAM_MIN of it is checked, or lets it send what is checked now. A remote that may
 * queue the part (max_concurrent_jobs) does not stream: the part may not be sent at the close.
 */
static void stream_step(struct follower *f, const char *path)
{
	struct follow *fw = f->b->follow;
	const struct remote *r = f->r;
	int64_t avail = intake_sendable(f->in);
	struct bfs_err err = BFS_ERR_INIT;
	bool slot;
	int rc;

	if (f->no_stream && !f->stream)
		return;
	if (avail < 0 || (f->stream && !r->ops->stream_more(f->stream, avail))) {
		/* A prompt line (the part is sent translated), a wrong line, a failed stream. */
		stream_drop(fw, r, f->stream);
		f->stream = NULL;
		f->no_stream = true;
		return;
	}
	if (f->stream || avail < FOLLOW_STREAM_MIN)
		return;
	f->no_stream = true;
	if (!r->ops->stream_begin ||
	    conf_get_double(r->conf, "max_concurrent_jobs", r->ops->max_active) > 0)
		return;
	pthread_mutex_lock(&fw->lock);
	slot = fw->nstreams < FOLLOW_STREAMS;
	if (slot)
		fw->nstreams++;
	pthread_mutex_unlock(&fw->lock);
	if (!slot)
		return;
	rc = r->ops->stream_begin(r->prov, path, &f->stream, &err);
	if (rc) {
		f->stream = NULL;
		if (rc != -ENOTSUP)
			log_debug("batch %" PRId64 ": no streamed create: %s", f->batch_id,
				  err.msg);
		pthread_mutex_lock(&fw->lock);
		fw->nstreams--;
		pthread_mutex_unlock(&fw->lock);
		return;
	}
	log_debug("batch %" PRId64 ": create streamed as requests.jsonl is written", f->batch_id);
	f->no_stream = false;
	if (!r->ops->stream_more(f->stream, avail)) {
		stream_drop(fw, r, f->stream);
		f->stream = NULL;
		f->no_stream = true;
	}
}

static void *follower_main(void *arg)
{
	struct follower *f = arg;
	struct bfs *b = f->b;
	struct follow *fw = b->follow;
	struct bfs_err err = BFS_ERR_INIT;
	struct intake *in = NULL;
	struct store_batch row;
	const struct remote *r = NULL;
	char *chunk = malloc(FOLLOW_CHUNK);
	char path[PATH_MAX];
	bool handoff, fed = false; /* fed: custom_ids may wait in an open store transaction */
	int fd = -1, rc;

	/* What it replaced is gone before this one records anything. */
	if (f->prev) {
		follower_reap(fw, f->prev);
		f->prev = NULL;
	}
	rc = chunk ? store_batch_get(b->store, f->batch_id, &row) : -ENOMEM;
	if (!rc && !(r = bfs_remote(b, row.remote)))
		rc = -ENOENT;
	f->r = r;
	spool_path(&b->spool, f->file_id, path, sizeof(path));
	if (!rc && (fd = spool_open(&b->spool, f->file_id, O_RDONLY)) < 0)
		rc = fd;
	if (!rc)
		rc = intake_begin(b, r, f->batch_id, f->file_id, fd, &in, &err);
	if (rc) {
		if (fd >= 0)
			close(fd);
	} else {
		intake_adopt_fd(in, fd);
	}
	pthread_mutex_lock(&fw->lock);
	f->in = in;
	if (rc)
		f->broken = true;
	pthread_cond_broadcast(&fw->cond);
	while (!f->stop) {
		int64_t off = f->done;
		size_t want;
		ssize_t n;

		if ((f->broken || f->rc) && f->stream) {
			/* What was streamed may not be the file: the body's end is never sent. */
			struct provider_stream *st = f->stream;

			f->stream = NULL;
			f->no_stream = true;
			pthread_mutex_unlock(&fw->lock);
			stream_drop(fw, r, st);
			pthread_mutex_lock(&fw->lock);
			continue;
		}
		if (f->broken || f->rc || f->done >= f->end) {
			/*
			 * Idle, or done for good (a write out of sequence, a wrong line): hold no
			 * store transaction while the writer goes on. Every other write to the
			 * cache (the close's own) would wait for it, and fail after the busy
			 * timeout.
			 */
			if (fed) {
				fed = false;
				pthread_mutex_unlock(&fw->lock);
				rc = intake_pause(in);
				pthread_mutex_lock(&fw->lock);
				if (rc)
					f->broken = true;
				if (f->stop || (!f->broken && !f->rc && f->done < f->end))
					continue;
			}
			pthread_cond_wait(&fw->cond, &fw->lock);
			continue;
		}
		want = (size_t)(f->end - off) < FOLLOW_CHUNK ? (size_t)(f->end - off)
							     : FOLLOW_CHUNK;
		pthread_mutex_unlock(&fw->lock);
		n = pread(fd, chunk, want, off);
		rc = n > 0 ? intake_feed(in, chunk, (size_t)n, &err) : n < 0 ? -errno : -EIO;
		if (!rc)
			stream_step(f, path);
		pthread_mutex_lock(&fw->lock);
		if (n > 0)
			f->done += n;
		fed = true;
		if (rc == -EINVAL) {
			f->rc = rc; /* final: whatever follows, this line is wrong */
			f->err = err;
		} else if (rc) {
			f->broken = true; /* the cache's trouble: the commit tries itself */
		}
		pthread_cond_broadcast(&fw->cond);
	}
	/* The store's connections are per thread: no transaction stays open on this one, and
	 * a check nobody takes is freed here. */
	handoff = f->handoff;
	pthread_mutex_unlock(&fw->lock);
	/* Stopped: nothing else touches f->in before the join. */
	if (!handoff) {
		stream_drop(fw, r, f->stream);
		f->stream = NULL;
		intake_free(f->in);
		f->in = NULL;
	} else if (intake_pause(in)) {
		f->broken = true; /* read after the join */
	}
	free(chunk);
	pthread_mutex_lock(&fw->lock);
	f->exited = true;
	pthread_mutex_unlock(&fw->lock);
	return NULL;
}

/* The listed follower of batch_id, or NULL. Under fw->lock. */
static struct follower **find(struct follow *fw, int64_t batch_id)
{
	struct follower **pp;

	for (pp = &fw->list; *pp; pp = &(*pp)->next)
		if ((*pp)->batch_id == batch_id)
			return pp;
	return NULL;
}

/*
 * Frees the listed followers other than keep that were stopped and whose threads are done
 * (batches removed while written): a slot each. Their joins return at once. Under fw->lock.
 */
static void reap_exited(struct follow *fw, const struct follower *keep)
{
	struct follower **pp = &fw->list;

	while (*pp) {
		struct follower *f = *pp;

		if (f == keep || !f->stop || !f->exited || f->prev) {
			pp = &f->next;
			continue;
		}
		*pp = f->next;
		pthread_join(f->th, NULL);
		fw->n--;
		free(f);
	}
}

void follow_wrote(struct bfs *b, int64_t batch_id, int64_t file_id, off_t off, size_t n)
{
	struct follow *fw = b->follow;
	struct follower **pp, *f, *nf;

	if (!fw || !n)
		return;
	pthread_mutex_lock(&fw->lock);
	pp = find(fw, batch_id);
	f = pp ? *pp : NULL;
	if (f && f->file_id == file_id && !f->broken && !f->stop && off == f->end) {
		f->end += (int64_t)n;
		pthread_cond_broadcast(&fw->cond);
		goto out;
	}
	if (off != 0 || fw->n >= FOLLOW_MAX) {
		if (f)
			f->broken = true; /* not one sequence: the commit checks the file */
		goto out;
	}
	/* A write at 0: the file is being written anew. */
	reap_exited(fw, f);
	nf = calloc(1, sizeof(*nf));
	if (!nf)
		goto out;
	nf->b = b;
	nf->batch_id = batch_id;
	nf->file_id = file_id;
	nf->end = (int64_t)n;
	nf->err = (struct bfs_err)BFS_ERR_INIT;
	nf->prev = f;
	if (f) {
		*pp = f->next; /* unlisted: nf's thread joins it */
		f->stop = true;
		pthread_cond_broadcast(&fw->cond);
	}
	if (pthread_create(&nf->th, NULL, follower_main, nf)) {
		log_warn("cannot start a thread to check requests.jsonl as it is written; it is "
			 "checked at close");
		if (f) {
			f->next = fw->list; /* listed again, stopped: the commit reaps it */
			fw->list = f;
		}
		free(nf);
		goto out;
	}
	(void)pthread_setname_np(nf->th, "bfs-follow"); /* top -H, perf, the bench */
	fw->n++;
	nf->next = fw->list;
	fw->list = nf;
out:
	pthread_mutex_unlock(&fw->lock);
}

void follow_cut(struct bfs *b, int64_t batch_id)
{
	struct follow *fw = b->follow;
	struct follower **pp;

	if (!fw)
		return;
	pthread_mutex_lock(&fw->lock);
	pp = find(fw, batch_id);
	if (pp) {
		(*pp)->stop = true;
		(*pp)->broken = true;
		pthread_cond_broadcast(&fw->cond);
	}
	pthread_mutex_unlock(&fw->lock);
}

/* Unlists the follower of batch_id; NULL if there is none. */
static struct follower *unlist(struct follow *fw, int64_t batch_id)
{
	struct follower **pp, *f = NULL;

	pthread_mutex_lock(&fw->lock);
	pp = find(fw, batch_id);
	if (pp) {
		f = *pp;
		*pp = f->next;
	}
	pthread_mutex_unlock(&fw->lock);
	return f;
}

int follow_take(struct bfs *b, int64_t batch_id, int64_t file_id, int64_t size, struct intake **out,
		int64_t *left, struct provider_stream **stream, struct bfs_err *err)
{
	struct follow *fw = b->follow;
	struct follower *f;
	bool ok;
	int rc = -ENOENT;

	*out = NULL;
	*stream = NULL;
	if (!fw || !(f = unlist(fw, batch_id)))
		return -ENOENT;
	pthread_mutex_lock(&fw->lock);
	ok = f->file_id == file_id && !f->stop && f->end == size;
	*left = f->end - f->done;
	/* It is at most a chunk or two behind: let it catch up (no write can come now). */
	while (ok && !f->broken && !f->rc && (!f->in || f->done < f->end))
		pthread_cond_wait(&fw->cond, &fw->lock);
	ok = ok && !f->broken && f->in;
	f->handoff = ok;
	f->stop = true;
	pthread_cond_broadcast(&fw->cond);
	pthread_mutex_unlock(&fw->lock);
	pthread_join(f->th, NULL);
	ok = ok && !f->broken; /* its last commit of custom_ids may have failed */
	if (ok) {
		*out = f->in;
		rc = f->rc;
		if (rc)
			*err = f->err;
	} else {
		intake_free(f->in); /* no transaction is open on it: see follower_main() */
	}
	if (ok && !rc)
		*stream = f->stream; /* it followed every write: what it sent is the file */
	else
		stream_drop(fw, f->r, f->stream);
	pthread_mutex_lock(&fw->lock);
	fw->n--;
	pthread_mutex_unlock(&fw->lock);
	free(f);
	return rc;
}

void follow_drop(struct bfs *b, int64_t batch_id)
{
	struct follow *fw = b->follow;
	struct follower *f;

	if (!fw || !(f = unlist(fw, batch_id)))
		return;
	pthread_mutex_lock(&fw->lock);
	f->stop = true;
	pthread_cond_broadcast(&fw->cond);
	pthread_mutex_unlock(&fw->lock);
	follower_reap(fw, f);
}

void follow_stop(struct bfs *b)
{
	struct follow *fw = b ? b->follow : NULL;
	struct follower *f;

	if (!fw)
		return;
	for (;;) {
		pthread_mutex_lock(&fw->lock);
		f = fw->list;
		if (f) {
			fw->list = f->next;
			f->stop = true;
			pthread_cond_broadcast(&fw->cond);
		}
		pthread_mutex_unlock(&fw->lock);
		if (!f)
			break;
		follower_reap(fw, f);
	}
	pthread_cond_destroy(&fw->cond);
	pthread_mutex_destroy(&fw->lock);
	free(fw);
	b->follow = NULL;
}

int follow_stream_end(struct bfs *b, const struct remote *r, struct provider_stream *st,
		      const struct provider_submit *s, struct provider_batch *out,
		      struct bfs_err *err)
{
	int rc = r->ops->stream_end(st, s, out, err);

	pthread_mutex_lock(&b->follow->lock);
	b->follow->nstreams--;
	pthread_mutex_unlock(&b->follow->lock);
	return rc;
}

void follow_stream_abort(struct bfs *b, const struct remote *r, struct provider_stream *st)
{
	stream_drop(b->follow, r, st);
}
