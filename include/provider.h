/* SPDX-License-Identifier: MIT */
/*
 * The provider interface: the only thing fs, batch and poller see of a provider. A provider
 * turns batch operations into its API calls and its answers into struct provider_batch; it
 * knows nothing of FUSE, of the store or of file names. Every op may block on the network,
 * must be callable from several threads at once on the same struct provider, and reports
 * failure as -errno plus a human reason in err (the text goes to status).
 */
#ifndef BATCHFS_PROVIDER_H
#define BATCHFS_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonl.h"
#include "result.h"
#include "state.h"

struct bfs_err;
struct http_opts;
struct remote_conf;
struct provider;
struct provider_stream; /* a create sent while its part is written (provider_ops.stream_*) */

#define PROVIDER_ID_MAX	  128 /* a provider's batch id; must be a safe file name */
#define PROVIDER_WORD_MAX 64
#define PROVIDER_REF_MAX  2048 /* provider-private text kept with a batch (e.g. results_url) */

struct batch_counts {
	int64_t total, processing, succeeded, errored, canceled, expired;
};

/* One batch as the provider describes it. Times are ms since the epoch, 0 when unknown. */
struct provider_batch {
	char id[PROVIDER_ID_MAX];		/* [A-Za-z0-9._-], usable as a directory name */
	char provider_state[PROVIDER_WORD_MAX]; /* the provider's own word, verbatim */
	enum batch_state state;			/* mapped with state.h */
	struct batch_counts counts;
	int64_t created_at, ended_at, expires_at;
	bool results_available; /* results can be fetched now (ended, not archived) */
	bool results_gone;	/* ended but results will never be available (archived, none) */
	char error[1024];	/* batch-level failure message, "" when none */
	long error_line;	/* input line the failure is about, 0 when none */
	/* Failed for a quota (Azure/OpenAI token_limit_exceeded) before running a request:
	 * the same requests may succeed when submitted again later. */
	bool quota;
	/* The local identity given at submit, when the provider echoes it (metadata, labels). */
	char identity[64];
	/* Opaque to everyone but the provider: passed back to results(); kept in the store. */
	char ref[PROVIDER_REF_MAX];
	/* get(): the provider asks not to be polled again before this (ms; a retry-after on
	 * the answer), 0 when it said nothing. */
	int64_t poll_after;
};

/*
 * Tells find() whether a provider batch id already belongs to a batch directory of this
 * cache (another part, another directory, or a batch made elsewhere): such a batch is never
 * a candidate.
 */
typedef bool (*provider_owned_fn)(void *ctx, const char *id);

/*
 * What submit() gets: one part of a validated spool file and what validation learnt of it.
 * A part is the whole lines in bytes [offset, offset + length) of path; first_line is the
 * file's line number of its first byte, so errors about the part's line N name the user's
 * line (first_line - 1 + N, blank lines counted).
 */
struct provider_submit {
	const char *path;     /* the requests file, validated; read-only; streamed, never slurped */
	int64_t offset;	      /* the part's first byte in path */
	int64_t length;	      /* the part's bytes (blank lines included) */
	long first_line;      /* the line of path at offset (1 for the first part) */
	long last_line;	      /* the line of its last request (so blank lines among its requests
			       * are known: last_line - first_line + 1 - nrequests); 0: unknown */
	uint64_t nrequests;   /* non-blank lines of the part */
	uint64_t nbytes;      /* = length */
	int64_t payload;      /* the request lines' bytes without leading blanks and line ends (so a
			  * body joining them needs no first pass to know its length); 0: unknown */
	const char *endpoint; /* OpenAI/Azure: the url shared by every line, "/v1/..."; else "" */
	const char *model;    /* OpenAI/Azure: the model (Azure: deployment) of every line;
			       * Vertex: request.model when the lines give one, else "" */
	const char *identity; /* unique local identity of this submission ("bfs-..."): providers
				 * store it where the API allows (metadata, labels, display name) so
				 * find() can recognise the batch after a crash */
	const char *name;     /* the batch directory's name, for display names */
	int64_t intent_at;    /* ms, recorded before the first request that could create it */
	provider_owned_fn owned; /* find(): ids already taken here (may be NULL: none) */
	void *owned_ctx;
};

/*
 * Called once per result line, in the provider's order; lineno is its line in the provider's
 * results (1-based, counted on through its files in download order). A good line: bad is NULL, line is exactly the provider's line (no
 * terminator), custom_id its custom_id (non-empty, no NUL). A line that cannot be a result
 * (not strict JSON, no custom_id string, an empty one): bad says why and custom_id is NULL;
 * the download goes on. Return 0 or -errno to stop.
 */
typedef int (*provider_result_fn)(void *ctx, const char *custom_id, const char *line, size_t len,
				  long lineno, const char *bad);
/* Called by results() before it starts over (a retried download): drop what was delivered. */
typedef int (*provider_reset_fn)(void *ctx);
/*
 * Called by list() once per batch. Return 0, -errno to stop, or PROVIDER_LIST_KNOWN: the
 * batch is known here and unchanged; a page of only such batches ends the listing (providers
 * list newest first, so the pages after it hold nothing new: incremental discovery).
 */
typedef int (*provider_batch_fn)(void *ctx, const struct provider_batch *b);
#define PROVIDER_LIST_KNOWN 2
/* Called while an HTTP request is being retried, so status can show it. */
typedef void (*provider_retry_fn)(void *ctx, int attempt, const char *reason);

struct provider_ops {
	const char *name;		   /* "mock", "anthropic", "openai", "azure", "vertex" */
	const struct jsonl_format *format; /* the line format of requests.jsonl */
	/* Its rules for a request line (jsonl.h): custom_id alphabet, fields, shared values,
	 * in its own messages; jsonl.c does the rest (strict JSON, limits). Pure. */
	jsonl_check_fn validate_line;
	/* Its batch state word (provider_batch.provider_state) -> the contract's state, 0 or
	 * -EINVAL for a word it does not know (the caller keeps the previous state).
	 * cancel_initiated: a cancel was asked (Anthropic's "ended" is then canceled). Pure. */
	int (*state_from)(const char *word, bool cancel_initiated, enum batch_state *out);
	struct jsonl_limits limits; /* per batch, checked locally before submit */
	/*
	 * Batches the provider runs at once per account by default (Vertex: 4 jobs per
	 * project), 0 for no limit; a remote's max_concurrent_jobs overrides it. Parts beyond
	 * it wait here in state queued and are submitted as running ones end (batch.c).
	 */
	int max_active;
	/* Non-NULL when cancelling loses the requests already done (Vertex: cancelled jobs
	 * write no results): `cancel` is refused with this warning, `cancel!` proceeds. */
	const char *cancel_warning;
	/* The config keys it reads besides the common ones (provider_check_keys), NULL-ended. */
	const char *const *keys;
	/* poll_interval when the remote sets none (seconds; 0: the common 30). */
	double default_poll_interval;
	/* A remote made from the environment when there is no config file (docs/semantics.md
	 * "Mount, sharing and start-up"): when $env_key is non-empty (and $env_endpoint set,
	 * when given), with api_key_env = env_key and endpoint = $env_endpoint. NULL: never. */
	const char *env_key;
	const char *env_endpoint;
	/* The provider's guidance on the least time between two status calls of one batch
	 * (seconds, 0: none): poll_interval is raised to it (provider_poll_ms). */
	double min_poll_interval;

	/* Builds a provider from its remote's config; state_dir is private to it (may be
	 * unused). Returns 0 or -errno (-EINVAL for a bad config) with the reason in err. */
	int (*open)(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		    struct bfs_err *err);
	void (*free)(struct provider *p);

	/*
	 * Creates the batch. Exactly once: it must not create a second batch when unsure
	 * whether a first attempt did (answer lost); then it returns -EAGAIN and the caller
	 * reconciles with find(). -EUSERS: certainly not created because the provider runs as
	 * many batches as it allows (the part is queued and sent later; not -EBUSY, which the
	 * HTTP layer gives a 409); -EDQUOT: certainly not created, refused for a quota of
	 * tokens (may be accepted later, as provider_batch.quota). -EIO (or another -errno)
	 * means certainly not created.
	 */
	int (*submit)(struct provider *p, const struct provider_submit *s,
		      struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
		      struct bfs_err *err);
	/*
	 * Looks for a batch created for s: same identity where the provider keeps it (and
	 * nothing else then), else created at or after s->intent_at with s->nrequests requests.
	 * Batches s->owned claims are never candidates. Returns 0 and fills out when found,
	 * -ENOENT when certainly not there, -ENOTUNIQ when more than one candidate remains
	 * ("cannot tell which batch is ours"), another -errno when it cannot tell.
	 */
	int (*find)(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
		    struct bfs_err *err);
	/* Retrieves one batch by id. -ENOENT when the provider does not know it. on_retry
	 * (may be NULL) is told of HTTP retries while they happen, as for submit. */
	int (*get)(struct provider *p, const char *id, struct provider_batch *out,
		   provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err);
	/* Calls fn for every batch the credentials can see, newest first, page by page: all
	 * pages, or up to the first page whose batches fn all called PROVIDER_LIST_KNOWN. */
	int (*list)(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err);
	/* Asks the provider to cancel; fills out with the batch as the answer shows it. */
	int (*cancel)(struct provider *p, const char *id, struct provider_batch *out,
		      struct bfs_err *err);
	/*
	 * Streams every result line of an ended batch b (as returned by get) to fn, line by
	 * line, never holding the whole body. Calls reset before starting over after a retry.
	 * -ENODATA when the provider has no results (archived/expired at the provider).
	 */
	int (*results)(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
		       provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
		       void *retry_ctx, struct bfs_err *err);
	/*
	 * Reads one result line of this provider (as results() delivers it) for its outcome,
	 * text and usage (result.h). Pure: no network, no provider instance.
	 */
	int (*result_parse)(const char *line, size_t len, struct result_info *out);
	/*
	 * Optional (NULL: nothing to do). Called when a batch made here has ended and its
	 * results are in the cache or will never come: the provider may delete what the
	 * submission left behind (OpenAI/Azure: the uploaded input file). Never called for a
	 * batch made elsewhere. Failures are logged, not returned.
	 */
	void (*settled)(struct provider *p, const struct provider_batch *b);

	/*
	 * Optional, all four or none (NULL: the provider does not stream): a create started
	 * while its part is still being written, so the close has only the last bytes of the
	 * upload left. The body is made of path's bytes [0, avail) as stream_more() moves
	 * avail (whole checked lines of the first part, no prompt line among them), and its
	 * end is held back until stream_end(): a stream that never gets there leaves the server
	 * an incomplete body, which creates nothing (a crash, an abort, a failure).
	 *
	 * stream_begin: starts it on its own thread; 0, or -errno with the reason in err
	 * (nothing started; -ENOTSUP: this remote does not stream).
	 */
	int (*stream_begin)(struct provider *p, const char *path, struct provider_stream **out,
			    struct bfs_err *err);
	/* path's bytes [0, avail) are checked and final (avail never moves back). Never blocks.
	 * false once the stream has failed (it will send nothing more: abort it). */
	bool (*stream_more)(struct provider_stream *st, int64_t avail);
	/*
	 * At the commit, once s's intent is recorded: sends the rest of s (its offset is 0,
	 * its length at least what was made available) and the body's end, and takes the
	 * answer as submit() would (the same returns). -ESTALE: the stream failed, or the
	 * server refused it, before anything could be created: call submit(). Frees st.
	 */
	int (*stream_end)(struct provider_stream *st, const struct provider_submit *s,
			  struct provider_batch *out, struct bfs_err *err);
	/* Abandons it: the body is never completed, nothing is created. Frees st. */
	void (*stream_abort)(struct provider_stream *st);
};

/*
 * Result lines arriving as one or more JSONL downloads, shared by the HTTP providers: each
 * line's custom_id is parsed and the line handed to fn; blank lines are skipped. Put
 * provider_results_line / provider_results_reset in the http_request (line_fn, reset, with
 * the struct as ctx) and call provider_results_next_file() before each file. A download
 * retried inside the first file resets through the caller's reset. Past the first file, the
 * earlier files' lines would go too, so the reset refuses with -ERESTART: the provider then
 * calls provider_results_restart() and downloads every file again.
 */
/*
 * The longest result line kept (the http_request.max_line of every results download, with
 * skip_long_lines): a longer one is skipped unbuffered and named as bad, so one huge line (or
 * an endless one: a body that inflates to gigabytes of zeros) costs no memory. One answer to
 * one request: the largest output of these APIs is a few MiB of JSON.
 */
#define PROVIDER_RESULT_LINE_MAX (16u << 20)

struct provider_results {
	provider_result_fn fn;
	provider_reset_fn reset;
	void *ctx;
	uint64_t delivered;	    /* lines given to fn since the last reset */
	uint64_t before_file;	    /* of which from files before the current one */
	long base_line, last_line;  /* lines of the files before this one; of this one so far */
	struct bfs_err *line_err;   /* why a line was refused ("" when none) */
	provider_retry_fn on_retry; /* for the downloads' http_request.on_retry; may be NULL */
	void *retry_ctx;
};

void provider_results_init(struct provider_results *r, provider_result_fn fn,
			   provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
			   void *retry_ctx, struct bfs_err *line_err);
int provider_results_line(void *ctx, const char *line, size_t len, long lineno);
/* True while provider_results_line() delivers line on this thread: it passed
 * jsonscan_line() (result_parse need not scan it again). */
bool provider_results_checked(const char *line);
int provider_results_reset(void *ctx);
void provider_results_next_file(struct provider_results *r);
/* Drops everything delivered (the caller's reset) before a new pass. 0 or -errno. */
int provider_results_restart(struct provider_results *r);

/* True when id can be a batch directory's name: [A-Za-z0-9._-], not starting with '.' or
 * '-', shorter than PROVIDER_ID_MAX. Pure. */
bool provider_id_is_safe(const char *id);

/*
 * Refuses a key of rc that neither every remote (provider, poll_interval, list_interval,
 * reconcile_grace) nor ops reads: a misspelt key must not silently fall back to a default
 * (an `api_key_evn` would quietly use another key). -EINVAL with the key named in err.
 */
int provider_check_keys(const struct provider_ops *ops, const struct remote_conf *rc,
			struct bfs_err *err);

/*
 * The per-batch limits of a remote: the provider's, lowered by the remote's max_requests and
 * max_bytes keys. A value above the provider's limit (or not a positive integer) is refused:
 * -EINVAL with the reason in err.
 */
int provider_limits(const struct provider_ops *ops, const struct remote_conf *rc,
		    struct jsonl_limits *out, struct bfs_err *err);

/*
 * http_new() with the remote's rate-limit waits (provider_http_opts()) and transfer
 * deadlines: progress_timeout (seconds under 1 KiB/s before a transfer fails, default 60),
 * transfer_timeout and transfer_min_rate (a stream's
 * total deadline: transfer_timeout seconds, default 60, plus one second per transfer_min_rate
 * bytes of its body, default 1000000). A bad value: -EINVAL with the key named in err.
 */
struct http;
int provider_http_new(const struct remote_conf *rc, struct http **out, struct bfs_err *err);

/*
 * The HTTP options of a remote's client (rate_limit_wait: how long a create waits out a rate
 * limit in place, other requests at most 60 s of it). Fills out; unset fields keep http.c's
 * defaults.
 */
void provider_http_opts(const struct remote_conf *rc, struct http_opts *out);

/* A remote's poll interval in ms: poll_interval, raised to the provider's guidance
 * (min_poll_interval, a remote key that may lower it, e.g. for a test server). */
int64_t provider_poll_ms(const struct provider_ops *ops, const struct remote_conf *rc);

/* The ops for a provider name ("anthropic", ...), or NULL when unknown. */
const struct provider_ops *provider_lookup(const char *name);
/* The i-th provider of the registry (0-based), NULL past the last: for walks over all. */
const struct provider_ops *provider_at(size_t i);
/* Writes "anthropic, openai, azure, vertex or mock" (every name, for messages) to out,
 * truncated to size (> 0). */
void provider_names(char *out, size_t size);

#endif
