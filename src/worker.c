// SPDX-License-Identifier: MIT
/*
 * The worker: one thread and one FIFO per remote, running the commits and ctl actions the
 * FUSE ops queue (they block on the network for seconds; a FUSE thread must not). A remote's
 * jobs run one at a time, so its creates are serialised; remotes do not wait for each other.
 * Each job ends with its done callback (which answers the FUSE request) and a poller kick
 * ("the caller kicks": the poller takes over the batch from there).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "bfs.h"
#include "conf.h"
#include "err.h"
#include "log.h"
#include "poller.h"
#include "store.h"
#include "worker.h"

struct worker_node {
	struct worker_job job;
	struct worker_node *next;
};

/* One remote's queue and thread. */
struct worker_queue {
	struct worker *w;
	struct remote *r;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu; /* guards head, tail, stopping */
	pthread_cond_t cond;
	struct worker_node *head, *tail;
	bool stopping;
};

struct worker {
	struct bfs *b;
	size_t n;
	struct worker_queue *q;
};

static const char *const kind_names[] = {
	[WORKER_NONE] = "none",	      [WORKER_COMMIT] = "commit",     [WORKER_CANCEL] = "cancel",
	[WORKER_REFRESH] = "refresh", [WORKER_RESUBMIT] = "resubmit",
};

static int run_commit(struct bfs *b, const struct worker_job *job, const char *name)
{
	struct bfs_err err = BFS_ERR_INIT;
	const struct caller_info *c = &job->closer;
	int rc;

	if (job->closer_known && c->signal) {
		/* A writer killed mid-file (cp interrupted): half a file never becomes a batch. */
		err_set(&err,
			"requests.jsonl was not submitted: its writer (pid %d) was killed by "
			"signal %d (%s) before closing it; write it again",
			(int)c->tgid, c->signal, strsignal(c->signal));
		log_info("batch '%s': %s", name, err.msg);
		return batch_note_unsubmitted(b, job->batch_id, err.msg);
	}
	rc = batch_commit_claimed(b, job->r, job->batch_id, job->file_id, &err);
	if (rc)
		log_info("commit of '%s' failed: %s", name, err.msg);
	return rc;
}

static int run_job(struct bfs *b, const struct worker_job *job)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct store_batch row;
	int rc;

	rc = store_batch_get(b->store, job->batch_id, &row);
	if (rc)
		return rc; /* removed while queued */
	switch (job->kind) {
	case WORKER_COMMIT:
		return run_commit(b, job, row.name);
	case WORKER_CANCEL:
		rc = job->confirmed ? batch_cancel_confirmed(b, job->r, job->batch_id, &err)
				    : batch_cancel(b, job->r, job->batch_id, &err);
		break;
	case WORKER_REFRESH:
		rc = batch_refresh(b, job->r, job->batch_id, &err);
		break;
	case WORKER_RESUBMIT:
		rc = batch_resubmit(b, job->r, job->batch_id, &err);
		break;
	default:
		return -EINVAL;
	}
	if (rc)
		log_warn("ctl '%s' of batch '%s': %s", kind_names[job->kind], row.name, err.msg);
	return rc;
}

/* A job that will never run (unmounting): its caller is told, the batch stays as it is. */
static void fail_job(struct bfs *b, const struct worker_job *job)
{
	struct store_batch row;

	if (!store_batch_get(b->store, job->batch_id, &row))
		log_warn("%s of batch '%s' not started: unmounting", kind_names[job->kind],
			 row.name);
	if (job->kind == WORKER_COMMIT && job->claimed)
		batch_unclaim(b, job->batch_id,
			      "requests.jsonl was not submitted: batchfs was unmounted before its "
			      "turn; write it again");
	job->done(job->ctx, -EIO);
}

static void *worker_main(void *arg)
{
	struct worker_queue *q = arg;
	struct bfs *b = q->w->b;
	struct worker_node *node;
	bool stopping;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (!q->head && !q->stopping)
			pthread_cond_wait(&q->cond, &q->mu);
		node = q->head;
		if (!node)
			break; /* stopping, nothing left */
		q->head = node->next;
		if (!q->head)
			q->tail = NULL;
		stopping = q->stopping;
		pthread_mutex_unlock(&q->mu);

		if (stopping) {
			fail_job(b, &node->job);
		} else {
			node->job.done(node->job.ctx, run_job(b, &node->job));
			if (b->poller)
				poller_kick(b->poller);
		}
		free(node);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int worker_queue(struct worker *w, const struct worker_job *job)
{
	struct worker_queue *q;
	struct worker_node *node;

	if (!w || !job->r || job->r->idx >= w->n || !job->done)
		return -EIO;
	q = &w->q[job->r->idx];
	node = malloc(sizeof(*node));
	if (!node)
		return -ENOMEM;
	node->job = *job;
	if (job->kind == WORKER_COMMIT && !(job->closer_known && job->closer.signal)) {
		struct bfs_err err = BFS_ERR_INIT;
		/*
		 * Claim at the close() itself, on the FUSE thread (local and quick, under the
		 * draft lock): from here on nothing changes the file, while the network part
		 * waits for its turn on the worker.
		 */
		int rc = batch_claim(w->b, job->batch_id, job->file_id, &err);

		if (rc) {
			free(node);
			if (rc < 0)
				log_info("commit of batch %" PRId64 " refused: %s", job->batch_id,
					 err.msg);
			if (rc > 0)
				job->done(job->ctx,
					  0); /* an empty file: a draft, nothing to send */
			return rc > 0 ? 0 : rc;
		}
		node->job.claimed = true;
	}
	node->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->stopping) {
		pthread_mutex_unlock(&q->mu);
		if (node->job.claimed)
			batch_unclaim(w->b, job->batch_id,
				      "requests.jsonl was not submitted: "
				      "batchfs was unmounting; write it again");
		free(node);
		return -EIO;
	}
	if (q->tail)
		q->tail->next = node;
	else
		q->head = node;
	q->tail = node;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

void worker_stop(struct worker *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++) {
		struct worker_queue *q = &w->q[i];

		pthread_mutex_lock(&q->mu);
		q->stopping = true;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->mu);
	}
	for (size_t i = 0; i < w->n; i++) {
		struct worker_queue *q = &w->q[i];

		if (q->started)
			pthread_join(q->thread, NULL);
		pthread_cond_destroy(&q->cond);
		pthread_mutex_destroy(&q->mu);
	}
	free(w->q);
	free(w);
}

int worker_start(struct worker **out, struct bfs *b, struct bfs_err *err)
{
	struct worker *w;
	int rc = 0;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->b = b;
	w->q = calloc(b->nremotes ? b->nremotes : 1, sizeof(*w->q));
	if (!w->q) {
		free(w);
		return -ENOMEM;
	}
	for (size_t i = 0; i < b->nremotes; i++) {
		struct worker_queue *q = &w->q[i];

		q->w = w;
		q->r = &b->remotes[i];
		pthread_mutex_init(&q->mu, NULL);
		pthread_cond_init(&q->cond, NULL);
		w->n = i + 1;
		rc = -pthread_create(&q->thread, NULL, worker_main, q);
		if (!rc)
			(void)pthread_setname_np(q->thread, "bfs-work"); /* top -H, perf */
		if (rc) {
			err_set(err, "cannot start the worker of remote '%s': %s", q->r->conf->name,
				strerror(-rc));
			goto out;
		}
		q->started = true;
	}
out:
	if (rc) {
		worker_stop(w);
		return rc;
	}
	*out = w;
	return 0;
}
