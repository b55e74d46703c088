// SPDX-License-Identifier: MIT
/*
 * What provider = openai and provider = azure share: the Batch API on top of the Files API
 * (https://platform.openai.com/docs/api-reference/batch, and for Azure
 * https://learn.microsoft.com/azure/ai-services/openai/how-to/batch). A submission uploads the spool
 * file (multipart, streamed from disk) and creates a batch on it whose metadata carries the local
 * identity. Until the create is settled the upload's id is recorded in the state directory, so
 * neither a crash nor a lost answer leaves an upload nobody knows of: find() adopts the batch or
 * deletes the upload. Results are the output and error files, streamed line by line. Keys and
 * tokens live only in this struct's memory: never log them, nor any header or body. What is
 * OpenAI's alone is in openai.c, Azure's (URLs, api-version, Entra ID) in azure.c.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "prompt.h"
#include "providers/common.h"
#include "providers/openai_common.h"
#include "state.h"
#include "timefmt.h"

#define OAI_META_IDENTITY     "batchfs_identity"
#define OAI_META_NAME	      "batchfs_name"
#define OAI_URL_MAX	      4096
#define OAI_PAGE	      100	      /* batches per listing page (the API allows 1..100) */
#define OAI_SKEW_MS	      (5 * 60 * 1000) /* our clock against the API's, for find() */
#define OAI_FIND_PAGES_MAX    100	      /* find() gives up after this many newer batches */
#define OAI_LIST_PAGES_MAX    100000	      /* a loop guard, not a limit anyone should reach */
#define OAI_SWEEP_PAGES_MAX   20	      /* pages of files looked through for orphans */
#define OAI_RESP_MAX	      (8u * 1024 * 1024) /* one JSON answer */
#define OAI_CHUNK	      (64 * 1024)
#define OAI_BIG_BODY	      (32 * 1024 * 1024) /* src/providers/anthropic.c ANTH_BIG_BODY */
#define OAI_RESTARTS_MAX      3			 /* whole results downloads started over */
#define OAI_UPLOAD_TRIES      3			 /* uploads whose answers were all lost */
#define OAI_FILE_WAIT_DEFAULT 300		 /* s for an upload to become "processed" */
#define OAI_POLL_FIRST_MS     250
#define OAI_POLL_MAX_MS	      5000
/* Expiry of uploads and outputs (A.2, A.4; B.3, B.4): 14 days by default. Azure takes
 * 14-30 days and counts files without one against a cap of 500 per resource (B.3, B.8);
 * OpenAI takes 1 hour to 30 days. */
#define OAI_EXPIRES_DEFAULT 1209600
#define OAI_EXPIRES_MIN	    3600
#define AZ_EXPIRES_MIN	    1209600
#define OAI_EXPIRES_MAX	    2592000

/* Helpers */

/* A file or batch id: NULL when null, absent, "" (Azure right after create, A.6) or unsafe. */
static const char *json_id(const cJSON *o, const char *key)
{
	const char *s = json_str(o, key);

	return s && provider_id_is_safe(s) ? s : NULL;
}

/* A time: unix seconds (OpenAI) or an ISO string (Azure, B.5); ms, 0 when null or unreadable. */
static int64_t json_time(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	int64_t ms;

	if (cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e13)
		return (int64_t)(v->valuedouble * 1000);
	if (cJSON_IsString(v) && !timefmt_parse(v->valuestring, &ms))
		return ms;
	return 0;
}

/* "name=value" out of a ref ("in=file-1 out=file-2 err=file-3"); false when absent. */
static bool ref_get(const char *ref, const char *name, char out[PROVIDER_ID_MAX])
{
	size_t n = strlen(name);

	for (const char *p = ref; *p;) {
		size_t len = strcspn(p, " ");

		if (len > n + 1 && !strncmp(p, name, n) && p[n] == '=' &&
		    len - n - 1 < PROVIDER_ID_MAX) {
			memcpy(out, p + n + 1, len - n - 1);
			out[len - n - 1] = '\0';
			return provider_id_is_safe(out);
		}
		p += len;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* url = base + path (printf) [+ '?' or '&' + api-version]. Returns 0 or -EFBIG/-ENOMEM. */
static int make_url(const struct provider *p, struct buf *url, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int make_url(const struct provider *p, struct buf *url, const char *fmt, ...)
{
	va_list ap;
	int rc;

	buf_reset(url);
	rc = buf_addstr(url, p->base);
	if (!rc) {
		va_start(ap, fmt);
		rc = buf_vaddf(url, fmt, ap);
		va_end(ap);
	}
	if (!rc && p->version[0])
		rc = buf_addf(url, "%c%s", strchr(url->data, '?') ? '&' : '?', p->version);
	return rc;
}

/* Calls */

/*
 * http_perform() with the auth headers in front of rq->headers (a "Content-Type: ..." line,
 * or none). With a token source (bearer), a 401 fetches a new token and tries once more: a
 * 401 had no effect.
 */
static int oai_perform(struct provider *p, struct http_request *rq, struct http_response *rs,
		       struct bfs_err *err)
{
	const char *const *base = rq->headers;
	struct http_response r = {0};
	int rc = 0;

	for (int i = 0; i < 2; i++) {
		const char *hdrs[6];
		char *auth = NULL;
		int n = 0;

		if (p->bearer) {
			rc = p->bearer(p, i > 0, &auth, err);
			if (rc)
				return rc;
			hdrs[n++] = auth;
		} else {
			hdrs[n++] = p->hdr_key;
		}
		if (p->hdr_org)
			hdrs[n++] = p->hdr_org;
		if (p->hdr_project)
			hdrs[n++] = p->hdr_project;
		for (const char *const *h = base; h && *h && n + 1 < 6; h++)
			hdrs[n++] = *h;
		hdrs[n] = NULL;
		rq->headers = hdrs;
		rc = http_perform(p->http, rq, &r, err);
		rq->headers = base;
		conf_secret_free(auth);
		if (!(rc == -EACCES && r.status == 401 && p->bearer))
			break;
	}
	if (rs)
		*rs = r;
	return rc;
}

/* A JSON call; *root is the parsed answer (the caller frees it). */
static int call_json(struct provider *p, enum http_method m, const char *url,
		     const struct http_body *body, enum http_retry retry,
		     provider_retry_fn on_retry, void *retry_ctx, cJSON **root,
		     struct http_response *rs, struct bfs_err *err)
{
	static const char *const hdr_json[] = {"Content-Type: application/json", NULL};
	struct http_request rq = {
		.method = m,
		.url = url,
		.headers = body ? hdr_json : NULL,
		.body = body,
		.retry = retry,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};

	return provider_call_json(p, oai_perform, &rq, OAI_RESP_MAX, root, rs, err);
}

/* GETs one page of a list (files, batches): *root is the caller's to free, *data its array. */
static int get_list_page(struct provider *p, const char *url, const char *what, cJSON **root,
			 const cJSON **data, struct bfs_err *err)
{
	int rc = call_json(p, HTTP_GET, url, NULL, HTTP_RETRY_IDEMPOTENT, NULL, NULL, root, NULL,
			   err);

	if (rc)
		return rc;
	*data = cJSON_GetObjectItemCaseSensitive(*root, "data");
	if (!cJSON_IsArray(*data)) {
		err_set(err, "the answer is not a page of %s", what);
		return -EBADMSG;
	}
	return 0;
}

/* State directory: upload records and line maps */

/*
 * uploads/<identity> holds the id of the file uploaded for that submission ("" while the
 * upload is under way) until its create is settled; find() uses it to adopt or clean up.
 */
static int record_path(const struct provider *p, const char *identity, char *out, size_t size)
{
	if (!provider_id_is_safe(identity))
		return -EINVAL;
	snprintf(out, size, "%s/uploads/%s", p->dir, identity);
	return 0;
}

static int write_small_file(const char *path, const char *text)
{
	char tmp[PATH_MAX + 160];
	size_t n = strlen(text);
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, n) != (ssize_t)n || fsync(fd))
		rc = errno ? -errno : -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	/* rename: the record is whole or absent, whenever the process dies. */
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

static int record_write(const struct provider *p, const char *identity, const char *file_id)
{
	char path[PATH_MAX + 128], text[PROVIDER_ID_MAX + 2];
	int rc = record_path(p, identity, path, sizeof(path));

	if (rc)
		return rc;
	snprintf(text, sizeof(text), "%s\n", file_id);
	return write_small_file(path, text);
}

/* 0 with the recorded file id ("" while uploading), -ENOENT when there is no record. */
static int record_read(const struct provider *p, const char *identity,
		       char file_id[PROVIDER_ID_MAX])
{
	char path[PATH_MAX + 128], text[PROVIDER_ID_MAX + 2];
	ssize_t n;
	int fd, rc = record_path(p, identity, path, sizeof(path));

	if (rc)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	text[n] = '\0';
	text[strcspn(text, "\n")] = '\0';
	file_id[0] = '\0';
	if (provider_id_is_safe(text))
		memcpy(file_id, text, strlen(text) + 1); /* is_safe_id: < PROVIDER_ID_MAX */
	return 0;
}

static void record_remove(const struct provider *p, const char *identity)
{
	char path[PATH_MAX + 128];

	if (!record_path(p, identity, path, sizeof(path)))
		(void)unlink(path); /* absent already is fine */
}

/*
 * lines/<input file id> lists (one per line, ascending) the user's line numbers of the blank
 * lines that were not uploaded, so a provider error about uploaded line N names the user's
 * line, after "@N" when the upload is a part whose first line is the file's line N + 1.
 * Written only for uploads that had blank lines between requests or are later parts.
 */
static long map_line(const struct provider *p, const char *input_file_id, long line)
{
	char path[PATH_MAX + 160];
	long blank, orig = line;
	FILE *f;

	if (!input_file_id || line <= 0)
		return line;
	snprintf(path, sizeof(path), "%s/lines/%s", p->dir, input_file_id);
	f = fopen(path, "re");
	if (!f)
		return line;
	if (fscanf(f, "@%ld", &blank) == 1)
		orig += blank; /* a part: its line 1 is the file's line blank + 1 */
	while (fscanf(f, "%ld", &blank) == 1 && blank <= orig)
		orig++;
	fclose(f);
	return orig;
}

/* Batch objects */

/* errors.data[] (A.5; Azure: maybe one object, line a string, B.5) -> error, error_line. */
static void batch_errors(const struct provider *p, const cJSON *o, const char *input_file_id,
			 struct provider_batch *b)
{
	const cJSON *errs = cJSON_GetObjectItemCaseSensitive(o, "errors");
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(errs, "data");
	const cJSON *first = cJSON_IsArray(data) ? cJSON_GetArrayItem(data, 0) : data;
	const cJSON *line;
	const char *code, *msg;
	int more = cJSON_IsArray(data) ? cJSON_GetArraySize(data) - 1 : 0;
	long n = 0;

	if (!cJSON_IsObject(first))
		return;
	code = json_str(first, "code");
	msg = json_str(first, "message");
	/* The enqueued-token quota (A.6, B.4): nothing ran; the same file may pass later. */
	b->quota = code && !strcmp(code, "token_limit_exceeded");
	line = cJSON_GetObjectItemCaseSensitive(first, "line");
	if (cJSON_IsNumber(line) && line->valuedouble >= 1 && line->valuedouble < 1e12)
		n = (long)line->valuedouble;
	else if (cJSON_IsString(line))
		n = strtol(line->valuestring, NULL, 10);
	if (n < 0)
		n = 0;
	snprintf(b->error, sizeof(b->error), "%s%s%.600s", code ? code : "",
		 code && msg ? ": " : "", msg ? msg : (code ? "" : "the batch failed"));
	b->error_line = map_line(p, input_file_id, n);
	if (b->error_line) {
		size_t len = strlen(b->error);

		snprintf(b->error + len, sizeof(b->error) - len, " (line %ld)", b->error_line);
	}
	if (more > 0) {
		size_t len = strlen(b->error);

		snprintf(b->error + len, sizeof(b->error) - len, " and %d more error%s", more,
			 more > 1 ? "s" : "");
	}
	for (char *c = b->error; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';
}

/* status, case-insensitive (Azure sends "Validating"); cancel_initiated plays no part. */
int oai_state_from(const char *status, bool cancel_initiated, enum batch_state *out)
{
	(void)cancel_initiated;
	/* Azure capitalises ("Validating"); spellings with one 'l' seen in Azure docs too. */
	static const struct state_word map[] = {
		{"validating", BATCH_VALIDATING},  {"in_progress", BATCH_IN_PROGRESS},
		{"finalizing", BATCH_FINALIZING},  {"cancelling", BATCH_CANCELING},
		{"canceling", BATCH_CANCELING},	   {"completed", BATCH_COMPLETED},
		{"cancelled", BATCH_CANCELED},	   {"canceled", BATCH_CANCELED},
		{"expired", BATCH_EXPIRED},	   {"failed", BATCH_FAILED},
		{"inprogress", BATCH_IN_PROGRESS},
	};

	return state_map_word(map, sizeof(map) / sizeof(map[0]), status, true, out);
}

/* Batch (A.5, with B.5's Azure quirks) -> provider_batch. -EBADMSG when it is not one. */
static int batch_from_json(const struct provider *p, const cJSON *o, struct provider_batch *out,
			   struct bfs_err *err)
{
	static const char *const ends[] = {"completed_at", "failed_at", "cancelled_at",
					   "expired_at"};
	struct provider_batch b;
	const char *id = json_str(o, "id");
	const char *status = json_str(o, "status");
	const char *in = json_id(o, "input_file_id");
	const char *outf = json_id(o, "output_file_id");
	const char *errf = json_id(o, "error_file_id");
	const cJSON *rc = cJSON_GetObjectItemCaseSensitive(o, "request_counts");
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(o, "metadata");
	const char *ident = json_str(meta, OAI_META_IDENTITY);
	int64_t rest;
	bool terminal;
	size_t len;

	if (!cJSON_IsObject(o) || !id || !status) {
		err_set(err, "the answer is not a batch");
		return -EBADMSG;
	}
	if (!provider_id_is_safe(id)) {
		err_set(err, "the batch id is not a safe file name");
		return -EBADMSG;
	}
	memset(&b, 0, sizeof(b));
	snprintf(b.id, sizeof(b.id), "%s", id);
	snprintf(b.provider_state, sizeof(b.provider_state), "%s", status);
	if (oai_state_from(status, false, &b.state)) {
		/* A word this version does not know: keep polling, show the word verbatim. */
		log_debug("%s: batch %s has an unknown status", p->remote, b.id);
		b.state = BATCH_IN_PROGRESS;
	}
	terminal = state_is_terminal(b.state);
	/* request_counts may be null while validating (Azure, B.5). */
	b.counts.total = json_count(rc, "total");
	b.counts.succeeded = json_count(rc, "completed");
	b.counts.errored = json_count(rc, "failed");
	rest = b.counts.total - b.counts.succeeded - b.counts.errored;
	if (rest < 0)
		rest = 0;
	if (b.state == BATCH_CANCELED)
		b.counts.canceled = rest;
	else if (b.state == BATCH_EXPIRED)
		b.counts.expired = rest;
	else if (!terminal)
		b.counts.processing = rest;
	b.created_at = json_time(o, "created_at");
	b.expires_at = json_time(o, "expires_at");
	if (terminal) {
		/* The stamp of the state reached, else the latest (a failed batch may also carry
		 * completed_at, B.5). */
		int own = b.state == BATCH_COMPLETED  ? 0
			  : b.state == BATCH_FAILED   ? 1
			  : b.state == BATCH_CANCELED ? 2
						      : 3;

		b.ended_at = json_time(o, ends[own]);
		for (size_t i = 0; !b.ended_at && i < sizeof(ends) / sizeof(ends[0]); i++) {
			int64_t t = json_time(o, ends[i]);

			if (t > b.ended_at)
				b.ended_at = t;
		}
	}
	/* A batch ends with an output file (successes), an error file (failures, cancelled and
	 * expired requests), both or none (A.6: all failed -> output_file_id null). */
	b.results_available = terminal && (outf || errf);
	b.results_gone = terminal && !outf && !errf;
	if (ident && strlen(ident) < sizeof(b.identity))
		snprintf(b.identity, sizeof(b.identity), "%s", ident);
	len = 0;
	if (in)
		len += (size_t)snprintf(b.ref + len, sizeof(b.ref) - len, "in=%s ", in);
	if (outf)
		len += (size_t)snprintf(b.ref + len, sizeof(b.ref) - len, "out=%s ", outf);
	if (errf)
		len += (size_t)snprintf(b.ref + len, sizeof(b.ref) - len, "err=%s ", errf);
	if (len)
		b.ref[len - 1] = '\0';
	batch_errors(p, o, in, &b);
	*out = b;
	return 0;
}

/* Files */

static int file_delete(struct provider *p, const char *file_id, struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct http_request rq = {.method = HTTP_DELETE, .retry = HTTP_RETRY_IDEMPOTENT};
	int rc = make_url(p, &url, "/files/%s", file_id);

	if (!rc) {
		rq.url = url.data;
		rc = oai_perform(p, &rq, NULL, err);
	}
	if (rc == -ENOENT)
		rc = 0; /* gone already */
	buf_release(&url);
	return rc;
}

/* Deletes a file this mount uploaded and no batch uses; says so in the log when it cannot. */
static void file_discard(struct provider *p, const char *file_id, const char *why)
{
	struct bfs_err e = BFS_ERR_INIT;

	if (file_delete(p, file_id, &e))
		log_warn("%s: cannot delete uploaded file '%s' (%s); it stays at the provider: %s",
			 p->remote, file_id, why, e.msg);
	else
		log_info("%s: deleted uploaded file '%s' (%s)", p->remote, file_id, why);
}

/*
 * Goes through the files named <identity>.jsonl: the uploads of one submission whose answers
 * were lost. With adopt >= 0 the first one of adopt bytes that is not in error is kept and its
 * id put in found; every other one is deleted (counted in *ndel, if given). Returns 0, or the
 * -errno of the listing.
 */
static int files_sweep(struct provider *p, const char *identity, int64_t adopt,
		       char found[PROVIDER_ID_MAX], int *ndel, struct bfs_err *err)
{
	char name[128], after[PROVIDER_ID_MAX] = "";
	struct buf url = BUF_INIT(OAI_URL_MAX);
	cJSON *root = NULL;
	int rc = 0;

	snprintf(name, sizeof(name), "%s.jsonl", identity);
	for (int page = 0;; page++) {
		const cJSON *data, *item;
		const char *last = NULL;

		if (page == OAI_SWEEP_PAGES_MAX) {
			err_set(err, "more than %d pages of files", OAI_SWEEP_PAGES_MAX);
			rc = -E2BIG;
			goto out;
		}
		/* The dated Azure API pages no file listing (B.3): only purpose there. */
		if (p->azure)
			rc = make_url(p, &url, "/files?purpose=batch");
		else
			rc = make_url(p, &url, "/files?purpose=batch&limit=10000%s%s",
				      after[0] ? "&after=" : "", after);
		if (rc) {
			err_set(err, "URL too long");
			goto out;
		}
		rc = get_list_page(p, url.data, "files", &root, &data, err);
		if (rc)
			goto out;
		cJSON_ArrayForEach(item, data) {
			const char *id = json_id(item, "id");
			const char *fn = json_str(item, "filename");
			const char *st = json_str(item, "status");

			last = id ? id : last;
			if (!id || !fn || strcmp(fn, name))
				continue;
			if (adopt >= 0 && !found[0] && json_count(item, "bytes") == adopt &&
			    (!st || strcasecmp(st, "error"))) {
				memcpy(found, id, strlen(id) + 1); /* json_id: < PROVIDER_ID_MAX */
				continue;
			}
			file_discard(p, id, "an upload whose answer was lost");
			if (ndel)
				(*ndel)++;
		}
		if (p->azure || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "has_more")) ||
		    !last || !strcmp(last, after))
			goto out;
		snprintf(after, sizeof(after), "%s", last);
		cJSON_Delete(root);
		root = NULL;
	}
out:
	cJSON_Delete(root);
	buf_release(&url);
	return rc;
}

/* Azure creates batches only on files that are "processed" (B.3): poll, bounded. */
static int file_wait_processed(struct provider *p, const char *file_id, const char *status,
			       struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	int64_t deadline = timefmt_mono_ms() + p->file_wait_ms;
	long delay = OAI_POLL_FIRST_MS;
	char word[32];
	int rc = 0;

	snprintf(word, sizeof(word), "%s", status ? status : "");
	for (;;) {
		cJSON *root = NULL;
		int64_t left;

		if (!strcasecmp(word, "processed"))
			break;
		if (!strcasecmp(word, "error") || !strcasecmp(word, "deleted") ||
		    !strcasecmp(word, "deleting")) {
			err_set(err, "the provider could not process the uploaded file '%s' (%s)",
				file_id, word);
			rc = -EIO;
			break;
		}
		left = deadline - timefmt_mono_ms();
		if (left <= 0) {
			err_set(err,
				"the uploaded file '%s' was still '%s' after %" PRId64
				" s (file_wait)",
				file_id, word[0] ? word : "pending", p->file_wait_ms / 1000);
			rc = -ETIMEDOUT;
			break;
		}
		rc = http_sleep_ms(delay < left ? delay : left);
		if (rc) {
			err_set(err, HTTP_CANCELLED_MSG);
			break;
		}
		delay = delay * 2 < OAI_POLL_MAX_MS ? delay * 2 : OAI_POLL_MAX_MS;
		rc = make_url(p, &url, "/files/%s", file_id);
		if (!rc)
			rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL,
				       NULL, &root, NULL, err);
		if (rc) {
			err_prefix(err, "cannot check the uploaded file '%s'", file_id);
			break;
		}
		status = json_str(root, "status");
		snprintf(word, sizeof(word), "%s", status ? status : "");
		if (!status) {
			const char *d = json_str(root, "status_details");

			err_set(err, "the uploaded file '%s' has no status%s%.200s", file_id,
				d ? ": " : "", d ? d : "");
			rc = -EBADMSG;
		}
		cJSON_Delete(root);
		if (rc)
			break;
	}
	buf_release(&url);
	return rc;
}

/* submit: the upload body, streamed from the spool file */

/*
 * multipart/form-data (A.2): the purpose field, then the file part holding the spool file's
 * non-blank lines, each ending in '\n'. Blank lines are dropped (docs/semantics.md: ignored) with the
 * blanks that open a line and the CR of a CRLF, so the provider's line N is the user's N-th
 * request (lines/ maps it back).
 */
struct upload_body {
	struct provider_spool sp; /* the part's bytes */
	long first_line;	  /* the file's line at start */
	enum {
		UB_HEAD,
		UB_LINES,
		UB_TAIL,
		UB_DONE
	} phase;
	char head[768], tail[96];
	size_t head_len, tail_len, lit;
	bool line_start; /* skipping the blanks that open a line */
	bool in_line;	 /* bytes of a non-blank line were given, its '\n' not yet */
	bool cr;	 /* a '\r' held back: dropped if a '\n' follows */
	uint64_t lines;	 /* non-blank lines begun */
	long lineno;	 /* the user's line being read, 1-based */
	/* measuring pass only: blank lines before a request go to map (opened on demand) */
	bool measuring;
	long blank_from, blank_n; /* a run of blank lines not yet known to precede a request */
	FILE *map;
	const char *map_path;
	int map_rc;
};

static int upload_rewind(void *ctx)
{
	struct upload_body *ub = ctx;

	ub->sp.off = ub->sp.start;
	ub->sp.in_len = ub->sp.in_pos = 0;
	ub->sp.eof = false;
	ub->phase = UB_HEAD;
	ub->lit = 0;
	ub->line_start = true;
	ub->in_line = ub->cr = false;
	ub->lines = 0;
	ub->lineno = ub->first_line;
	ub->blank_n = 0;
	return 0;
}

static size_t copy_lit(struct upload_body *ub, const char *lit, size_t litlen, char *dst, size_t n)
{
	size_t k = litlen - ub->lit < n ? litlen - ub->lit : n;

	memcpy(dst, lit + ub->lit, k);
	ub->lit += k;
	return k;
}

/* A blank line ended; it is recorded only once a request follows it. */
static void note_blank(struct upload_body *ub)
{
	if (ub->measuring) {
		if (!ub->blank_n)
			ub->blank_from = ub->lineno;
		ub->blank_n++;
	}
	ub->lineno++;
}

/* The map starts with "@N": the part's first line is the file's line N + 1. */
static void map_open(struct upload_body *ub)
{
	if (ub->map || ub->map_rc)
		return;
	ub->map = fopen(ub->map_path, "we");
	if (!ub->map)
		ub->map_rc = -errno;
	else if (fprintf(ub->map, "@%ld\n", ub->first_line - 1) < 0)
		ub->map_rc = -EIO;
}

/* The map of a part without blank lines among its requests: only where it starts. */
static int map_write_offset(const char *map_path, long first_line, bool *has_map)
{
	FILE *f = fopen(map_path, "we");
	int rc = 0;

	if (!f)
		return -errno;
	if (fprintf(f, "@%ld\n", first_line - 1) < 0 || fflush(f) || fsync(fileno(f)))
		rc = -EIO;
	if (fclose(f) && !rc)
		rc = -EIO;
	if (!rc)
		*has_map = true;
	return rc;
}

static void flush_blanks(struct upload_body *ub)
{
	if (!ub->measuring || !ub->blank_n)
		return;
	map_open(ub);
	for (long i = 0; ub->map && i < ub->blank_n; i++)
		if (fprintf(ub->map, "%ld\n", ub->blank_from + i) < 0)
			ub->map_rc = -EIO;
	ub->blank_n = 0;
}

static long upload_read(void *ctx, char *dst, size_t n)
{
	struct upload_body *ub = ctx;
	size_t k = 0;

	while (k < n) {
		char c;

		switch (ub->phase) {
		case UB_HEAD:
			k += copy_lit(ub, ub->head, ub->head_len, dst + k, n - k);
			if (ub->lit == ub->head_len) {
				ub->phase = UB_LINES;
				ub->lit = 0;
			}
			continue;
		case UB_TAIL:
			k += copy_lit(ub, ub->tail, ub->tail_len, dst + k, n - k);
			if (ub->lit == ub->tail_len)
				ub->phase = UB_DONE;
			continue;
		case UB_DONE:
			return (long)k;
		case UB_LINES:
			break;
		}
		if (ub->sp.in_pos == ub->sp.in_len) {
			int r;

			if (ub->sp.eof) {
				/* The last line lacked its newline: give it one. A CR held back
				 * here is trailing space, dropped. */
				if (ub->in_line) {
					dst[k++] = '\n';
					ub->in_line = false;
				}
				ub->phase = UB_TAIL;
				continue;
			}
			r = provider_spool_fill(&ub->sp);
			if (r)
				return r;
			continue;
		}
		c = ub->sp.in[ub->sp.in_pos];
		if (ub->line_start) {
			ub->sp.in_pos++;
			if (c == '\n')
				note_blank(ub);
			else if (c != ' ' && c != '\t' && c != '\r') {
				ub->sp.in_pos--;
				ub->line_start = false;
				ub->in_line = true;
				ub->lines++;
				flush_blanks(ub);
			}
			continue;
		}
		if (ub->cr) {
			ub->cr = false;
			if (c != '\n')
				dst[k++] = '\r';
			continue; /* c itself is taken on the next turn */
		}
		if (c == '\n') {
			dst[k++] = '\n';
			ub->sp.in_pos++;
			ub->line_start = true;
			ub->in_line = false;
			ub->lineno++;
		} else if (c == '\r') {
			ub->sp.in_pos++;
			ub->cr = true;
		} else {
			/* The common case: a run of ordinary bytes. */
			size_t run = 1, room = n - k, avail = ub->sp.in_len - ub->sp.in_pos;
			const char *s = ub->sp.in + ub->sp.in_pos;

			while (run < avail && run < room && s[run] != '\n' && s[run] != '\r')
				run++;
			memcpy(dst + k, s, run);
			k += run;
			ub->sp.in_pos += run;
		}
	}
	return (long)k;
}

/*
 * First pass: the exact body length, the number of requests, and (map_path) the blank lines
 * before requests, without keeping the body. *has_map tells whether map_path was written.
 */
static int upload_measure(struct upload_body *ub, int64_t *length, uint64_t *lines,
			  const char *map_path, bool *has_map)
{
	char *scratch = malloc(OAI_CHUNK);
	int64_t total = 0;
	long k;
	int rc;

	if (!scratch)
		return -ENOMEM;
	upload_rewind(ub);
	ub->measuring = true;
	ub->map_path = map_path;
	ub->map_rc = 0;
	while ((k = upload_read(ub, scratch, OAI_CHUNK)) > 0)
		total += k;
	free(scratch);
	if (k >= 0 && ub->first_line > 1)
		map_open(ub); /* a later part: its line numbers start past 1 */
	ub->measuring = false;
	rc = k < 0 ? (int)k : ub->map_rc;
	if (ub->map) {
		if ((fflush(ub->map) || fsync(fileno(ub->map))) && !rc)
			rc = -EIO;
		if (fclose(ub->map) && !rc)
			rc = -EIO;
		ub->map = NULL;
		*has_map = true;
	}
	if (rc)
		return rc;
	*length = total;
	*lines = ub->lines;
	return upload_rewind(ub);
}

static int random_hex(char *out, size_t nbytes)
{
	unsigned char rnd[32];

	if (nbytes > sizeof(rnd) || getrandom(rnd, nbytes, 0) != (ssize_t)nbytes)
		return -EIO;
	for (size_t i = 0; i < nbytes; i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

/* POST /files (A.2). Fills file_id and status (the file's "status", "" when absent). */
static int file_upload(struct provider *p, const struct http_body *body, const char *ctype,
		       char file_id[PROVIDER_ID_MAX], char status[32], struct http_response *rs,
		       provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	const char *const ctype_hdr[] = {ctype, NULL};
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct buf resp = BUF_INIT(OAI_RESP_MAX);
	struct http_request rq = {
		.method = HTTP_POST,
		.body = body,
		/* As a create: libcurl must not repeat it on its own, and a lost answer is
		 * settled by looking for the file by name (upload_settled). */
		.retry = HTTP_RETRY_CREATE,
		.resp = &resp,
		.stream = body->length > OAI_BIG_BODY,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};
	cJSON *root = NULL;
	const char *id, *st;
	int rc;

	rc = make_url(p, &url, "/files");
	if (rc) {
		err_set(err, "URL too long");
		goto out;
	}
	rq.url = url.data;
	rq.headers = ctype_hdr;
	rc = oai_perform(p, &rq, rs, err);
	if (rc)
		goto out;
	root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
	id = json_id(root, "id");
	if (!id) {
		err_set(err, "the answer to the upload is not a file object");
		rc = -EBADMSG;
		goto out;
	}
	st = json_str(root, "status");
	snprintf(file_id, PROVIDER_ID_MAX, "%s", id);
	snprintf(status, 32, "%s", st ? st : "");
out:
	cJSON_Delete(root);
	buf_release(&resp);
	buf_release(&url);
	return rc;
}

/*
 * Uploads exactly once: when an answer is lost the file is looked for by its name (the
 * identity) and adopted, or uploaded again when certainly absent. Returns 0 with file_id, or a
 * -errno after which no file of this submission is left (or the log says which may be).
 */
static int upload_settled(struct provider *p, const struct provider_submit *s,
			  const struct http_body *body, const char *ctype, int64_t bytes,
			  char file_id[PROVIDER_ID_MAX], char status[32],
			  provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	int rc = -EIO;

	for (int i = 0; i < OAI_UPLOAD_TRIES; i++) {
		struct bfs_err e = BFS_ERR_INIT;
		char found[PROVIDER_ID_MAX] = "";

		rc = file_upload(p, body, ctype, file_id, status, NULL, on_retry, retry_ctx, err);
		if (rc != -EAGAIN)
			return rc;
		rc = files_sweep(p, s->identity, bytes, found, NULL, &e);
		if (rc) {
			log_warn("%s: an upload of '%s' may be left at the provider as a file "
				 "named '%s.jsonl': %s",
				 p->remote, s->name, s->identity, e.msg);
			err_prefix(err, "cannot tell whether the upload happened (then: %s)",
				   e.msg);
			return -EIO;
		}
		if (found[0]) {
			log_debug("%s: adopted upload %s after a lost answer", p->remote, found);
			memcpy(file_id, found, strlen(found) + 1);
			status[0] = '\0'; /* unknown: Azure polls it */
			return 0;
		}
	}
	return -EIO; /* answers lost every time, and no file came of it */
}

/* POST /batches (A.4) on an uploaded file; metadata carries the identity for find(). */
static int batch_create(struct provider *p, const struct provider_submit *s, const char *file_id,
			struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
			struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct http_mem_body mb;
	struct http_body body;
	const char *endpoint = s->endpoint;
	cJSON *req = cJSON_CreateObject(), *meta, *exp, *root = NULL;
	char *text = NULL;
	int rc;

	/* Every Azure sample names the endpoint without /v1, also on the v1 API (B.4). */
	if (p->azure && !strncmp(endpoint, "/v1/", 4))
		endpoint += 3;
	meta = cJSON_AddObjectToObject(req, "metadata");
	/* The output and error files expire too (A.4, B.4): they count against the cap. */
	exp = cJSON_AddObjectToObject(req, "output_expires_after");
	if (!req || !meta || !exp || !cJSON_AddStringToObject(exp, "anchor", "created_at") ||
	    !cJSON_AddNumberToObject(exp, "seconds", (double)p->output_expires) ||
	    !cJSON_AddStringToObject(req, "input_file_id", file_id) ||
	    !cJSON_AddStringToObject(req, "endpoint", endpoint) ||
	    !cJSON_AddStringToObject(req, "completion_window", "24h") ||
	    !cJSON_AddStringToObject(meta, OAI_META_IDENTITY, s->identity) ||
	    !cJSON_AddStringToObject(meta, OAI_META_NAME, s->name) ||
	    !(text = cJSON_PrintUnformatted(req))) {
		err_set(err, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	http_mem_body_init(&mb, &body, text, strlen(text));
	rc = make_url(p, &url, "/batches");
	if (rc) {
		err_set(err, "URL too long");
		goto out;
	}
	rc = call_json(p, HTTP_POST, url.data, &body, HTTP_RETRY_CREATE, on_retry, retry_ctx, &root,
		       NULL, err);
	if (!rc)
		rc = batch_from_json(p, root, out, err);
	if (rc == -EBADMSG)
		rc = -EAGAIN; /* a 2xx came back: the batch exists, but we cannot tell which */
out:
	cJSON_Delete(root);
	cJSON_Delete(req);
	free(text);
	buf_release(&url);
	return rc;
}

/* The earlier upload of this submission, if it is still whole at the provider. */
static bool upload_reusable(struct provider *p, const char *file_id, int64_t bytes)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	cJSON *root = NULL;
	const char *st;
	bool ok = false;

	if (!make_url(p, &url, "/files/%s", file_id) &&
	    !call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL, NULL, &root, NULL,
		       NULL)) {
		st = json_str(root, "status");
		ok = json_count(root, "bytes") == bytes && (!st || strcasecmp(st, "error")) &&
		     (!json_str(root, "purpose") || !strcmp(json_str(root, "purpose"), "batch"));
	}
	cJSON_Delete(root);
	buf_release(&url);
	return ok;
}

int oai_submit(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
	       provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	struct upload_body *ub = calloc(1, sizeof(*ub));
	struct http_body body = {upload_read, upload_rewind, ub, -1};
	char boundary[64], ctype[128], file_id[PROVIDER_ID_MAX] = "", status[32] = "";
	char map_tmp[PATH_MAX + 160], map_path[PATH_MAX + 160];
	struct provider_batch b;
	uint64_t lines = 0;
	int64_t bytes;
	bool has_map = false;
	int rc;

	if (!ub) {
		err_set(err, "cannot create batch: out of memory");
		return -ENOMEM;
	}
	ub->sp.fd = -1;
	if (!provider_id_is_safe(s->identity)) {
		err_set(err, "cannot create batch: bad identity");
		rc = -EINVAL;
		goto out;
	}
	snprintf(map_tmp, sizeof(map_tmp), "%s/lines/%s.tmp", p->dir, s->identity);
	ub->sp.start = s->offset;
	ub->sp.end = s->offset + s->length;
	ub->first_line = s->first_line > 0 ? s->first_line : 1;
	ub->sp.fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (ub->sp.fd < 0) {
		rc = -errno;
		err_set(err, "cannot create batch: cannot open '%s': %s", s->path, strerror(errno));
		goto out;
	}
	rc = random_hex(boundary + 8, 12);
	if (rc) {
		err_set(err, "cannot create batch: no random bytes");
		goto out;
	}
	memcpy(boundary, "batchfs-", 8);
	snprintf(ctype, sizeof(ctype), "Content-Type: multipart/form-data; boundary=%s", boundary);
	/* expires_after in the bracket form the SDKs flatten it to (A.2): an upload without
	 * one counts against Azure's cap of 500 files (B.3). */
	ub->head_len = (size_t)snprintf(
		ub->head, sizeof(ub->head),
		"--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
		"--%s\r\nContent-Disposition: form-data; name=\"expires_after[anchor]\"\r\n\r\n"
		"created_at\r\n"
		"--%s\r\nContent-Disposition: form-data; name=\"expires_after[seconds]\"\r\n\r\n"
		"%ld\r\n"
		"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s.jsonl\"\r\n"
		"Content-Type: application/octet-stream\r\n\r\n",
		boundary, boundary, boundary, p->input_expires, boundary, s->identity);
	ub->tail_len = (size_t)snprintf(ub->tail, sizeof(ub->tail), "\r\n--%s--\r\n", boundary);
	if (s->payload > 0 && s->nrequests && s->last_line >= s->first_line &&
	    (uint64_t)(s->last_line - s->first_line + 1) == s->nrequests) {
		/* No blank line among the requests, the length known from the planning pass:
		 * no first pass over the part (a later part still maps its line numbers). */
		body.length =
			(int64_t)(ub->head_len + ub->tail_len) + s->payload + (int64_t)s->nrequests;
		lines = s->nrequests;
		rc = s->first_line > 1 ? map_write_offset(map_tmp, s->first_line, &has_map) : 0;
	} else {
		rc = upload_measure(ub, &body.length, &lines, map_tmp, &has_map);
	}
	if (rc) {
		err_set(err, "cannot create batch: cannot read '%s': %s", s->path, strerror(-rc));
		goto out;
	}
	if (lines != s->nrequests) {
		err_set(err,
			"cannot create batch: '%s' has %" PRIu64 " requests, %" PRIu64
			" were validated",
			s->path, lines, s->nrequests);
		rc = -EIO;
		goto out;
	}

	/* A record from an earlier attempt of this very submission: its upload may serve. */
	bytes = body.length - (int64_t)(ub->head_len + ub->tail_len);
	if (!record_read(p, s->identity, file_id) && file_id[0] &&
	    !upload_reusable(p, file_id, bytes)) {
		file_discard(p, file_id, "an earlier upload of the same requests");
		file_id[0] = '\0';
	}
	if (!file_id[0]) {
		/* Recorded before the first byte goes out: a crash mid-upload leaves a trace. */
		rc = record_write(p, s->identity, "");
		if (rc) {
			err_set(err, "cannot create batch: cannot write to '%s': %s", p->dir,
				strerror(-rc));
			goto out;
		}
		rc = upload_settled(p, s, &body, ctype, bytes, file_id, status, on_retry, retry_ctx,
				    err);
		if (rc) {
			/* Certainly no batch, and no upload left that nobody knows of. */
			err_prefix(err, "cannot upload the requests");
			record_remove(p, s->identity);
			goto out;
		}
		rc = record_write(p, s->identity, file_id);
		if (rc) {
			err_set(err, "cannot create batch: cannot write to '%s': %s", p->dir,
				strerror(-rc));
			file_discard(p, file_id, "its record could not be written");
			record_remove(p, s->identity);
			goto out;
		}
		log_debug("%s: uploaded %s (%" PRId64 " bytes)", p->remote, file_id, bytes);
	}
	if (has_map) {
		snprintf(map_path, sizeof(map_path), "%s/lines/%s", p->dir, file_id);
		if (rename(map_tmp, map_path))
			log_warn("%s: cannot keep the line map of '%s': %s", p->remote, s->name,
				 strerror(errno));
		has_map = false;
	}
	if (p->azure || !strcasecmp(status, "error")) {
		rc = file_wait_processed(p, file_id, status, err);
		if (rc) {
			err_prefix(err, "cannot create batch");
			file_discard(p, file_id, "no batch was created on it");
			record_remove(p, s->identity);
			rc = -EIO;
			goto out;
		}
	}
	rc = batch_create(p, s, file_id, &b, on_retry, retry_ctx, err);
	if (rc == -EAGAIN) {
		/* Keep the record: find() adopts the batch or deletes the upload. */
		err_prefix(err, "cannot create batch");
		goto out;
	}
	if (rc) {
		/* "Fail fast" regions refuse a batch over the enqueued-token quota at create,
		 * with a 400 naming token_limit_exceeded (B.4): a quota, not a bad file. */
		if (strstr(err->msg, "token_limit_exceeded"))
			rc = -EDQUOT;
		err_prefix(err, "cannot create batch");
		file_discard(p, file_id, "no batch was created on it");
		record_remove(p, s->identity);
		goto out;
	}
	record_remove(p, s->identity);
	log_debug("%s: created batch %s on %s (%" PRIu64 " requests)", p->remote, b.id, file_id,
		  lines);
	*out = b;
out:
	if (has_map)
		unlink(map_tmp);
	if (ub->sp.fd >= 0)
		close(ub->sp.fd);
	free(ub);
	return rc;
}

/* list / find */

/* The listing's pages (provider_list_pages): GET /batches?limit=&after=. */
static int list_fetch(struct provider_pager *pg, long page, const char *cursor, cJSON **root,
		      const cJSON **items, struct bfs_err *err)
{
	struct buf *url = pg->ctx;
	int rc;

	(void)page;
	rc = make_url(pg->p, url, "/batches?limit=%d%s%s", OAI_PAGE, cursor ? "&after=" : "",
		      cursor ? cursor : "");
	if (rc) {
		err_set(err, "URL too long");
		return rc;
	}
	return get_list_page(pg->p, url->data, "batches", root, items, err);
}

static int list_item(struct provider_pager *pg, const cJSON *item, struct provider_batch *out)
{
	struct bfs_err berr = BFS_ERR_INIT;

	if (batch_from_json(pg->p, item, out, &berr)) {
		log_warn("%s: skipping a listed batch: %s", pg->p->remote, berr.msg);
		return 1;
	}
	return 0;
}

static int list_next(struct provider_pager *pg, const cJSON *root, const char *cursor, char **next,
		     struct bfs_err *err)
{
	const cJSON *item;
	const char *last = NULL;

	(void)pg;
	(void)err;
	/* last_id may be missing (Azure samples, B.5): the last item's id serves. */
	cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(root, "data")) {
		if (json_id(item, "id"))
			last = json_id(item, "id");
	}
	if (json_id(root, "last_id"))
		last = json_id(root, "last_id");
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "has_more")) || !last ||
	    (cursor && !strcmp(last, cursor)))
		return 0;
	*next = strdup(last);
	return *next ? 1 : -ENOMEM;
}

/* Calls fn for each batch, newest first; fn returns < 0 to fail, > 0 to stop early. */
static int list_pages(struct provider *p, provider_batch_fn fn, void *ctx, long max_pages,
		      struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct provider_pager pg = {
		.p = p,
		.ctx = &url,
		.fetch = list_fetch,
		.item = list_item,
		.next = list_next,
		.max_pages = max_pages,
		.what = "batches",
	};
	int rc = provider_list_pages(&pg, fn, ctx, err);

	buf_release(&url);
	return rc;
}

int oai_list(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err)
{
	int rc;

	err_clear(err);
	rc = list_pages(p, fn, ctx, OAI_LIST_PAGES_MAX, err);
	if (rc && !err_is_set(err))
		err_set(err, "cannot list batches: %s", strerror(-rc));
	else if (rc)
		err_prefix(err, "cannot list batches");
	return rc;
}

struct find_ctx {
	const struct provider_submit *s;
	const char *identity;
	const char *file_id; /* the recorded upload, "" when none */
	int64_t lo;	     /* intent minus the clock-skew margin */
	int64_t prev;	     /* created_at of the previous entry */
	bool descending, found, reached_lo;
	struct provider_batch best;
};

/* Ours: same identity in metadata, or built on the upload we recorded for it. */
static int find_one(void *ctx, const struct provider_batch *b)
{
	struct find_ctx *f = ctx;
	char in[PROVIDER_ID_MAX];

	if (f->s->owned && f->s->owned(f->s->owned_ctx, b->id))
		return 0; /* another directory's (cannot share our identity; belt and braces) */
	if (!strcmp(b->identity, f->identity) ||
	    (f->file_id[0] && ref_get(b->ref, "in", in) && !strcmp(in, f->file_id))) {
		f->best = *b;
		f->found = true;
		return 1;
	}
	if (f->prev && b->created_at > f->prev)
		f->descending = false;
	if (b->created_at)
		f->prev = b->created_at;
	/* The order is newest first [I]: stop below the intent, unless it proved otherwise. */
	if (f->descending && b->created_at && b->created_at < f->lo) {
		f->reached_lo = true;
		return 1;
	}
	return 0;
}

int oai_find(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
	     struct bfs_err *err)
{
	char file_id[PROVIDER_ID_MAX] = "";
	struct find_ctx f = {
		.s = s,
		.identity = s->identity,
		.file_id = file_id,
		.lo = s->intent_at - OAI_SKEW_MS,
		.descending = true,
	};
	bool recorded = !record_read(p, s->identity, file_id);
	int rc = list_pages(p, find_one, &f, OAI_FIND_PAGES_MAX, err);

	if (rc && !f.found) {
		err_prefix(err, "cannot look for the created batch");
		return rc;
	}
	if (f.found) {
		log_debug("%s: found batch %s for a lost create", p->remote, f.best.id);
		record_remove(p, s->identity);
		*out = f.best;
		return 0;
	}
	/*
	 * No batch: what was uploaded for it serves nothing (no orphan uploads). Deleting the
	 * input also means that a create still in flight, or a listing that lags, can never
	 * give a second batch that runs: such a batch fails for want of its file.
	 */
	if (recorded) {
		struct bfs_err e = BFS_ERR_INIT;
		int ndel = 0;

		if (file_id[0])
			file_discard(p, file_id, "its batch was never created");
		if (files_sweep(p, s->identity, -1, NULL, &ndel, &e))
			log_warn("%s: uploads for '%s' may be left at the provider as files named "
				 "'%s.jsonl': %s",
				 p->remote, s->name, s->identity, e.msg);
		else if (!file_id[0] && !ndel)
			/* A server may still finish an upload whose sender died: say what to
			 * look for, since nothing here will look again. */
			log_info(
				"%s: the interrupted upload of '%s' is not at the provider; should "
				"it land late, it is a file named '%s.jsonl'",
				p->remote, s->name, s->identity);
		record_remove(p, s->identity);
	}
	err_set(err, "no batch was created for this submission");
	return -ENOENT;
}

/* get / cancel */

static int one_batch(struct provider *p, const char *what, const char *id, const char *tail,
		     provider_retry_fn on_retry, void *retry_ctx, enum http_method m,
		     struct provider_batch *out, struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct provider_batch b;
	cJSON *root = NULL;
	int rc;

	if (!provider_id_is_safe(id)) {
		err_set(err, "cannot %s batch: '%.*s' is not a batch id", what, 64, id);
		return -ENOENT;
	}
	rc = make_url(p, &url, "/batches/%s%s", id, tail);
	if (rc) {
		err_set(err, "cannot %s batch '%s': URL too long", what, id);
		goto out;
	}
	rc = call_json(p, m, url.data, NULL, HTTP_RETRY_IDEMPOTENT, on_retry, retry_ctx, &root,
		       NULL, err);
	if (!rc)
		rc = batch_from_json(p, root, &b, err);
	if (rc) {
		err_prefix(err, "cannot %s batch '%s'", what, id);
		goto out;
	}
	*out = b;
out:
	cJSON_Delete(root);
	buf_release(&url);
	return rc;
}

int oai_get(struct provider *p, const char *id, struct provider_batch *out,
	    provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	return one_batch(p, "get", id, "", on_retry, retry_ctx, HTTP_GET, out, err);
}

int oai_cancel(struct provider *p, const char *id, struct provider_batch *out, struct bfs_err *err)
{
	/* POST without a body (A.4); repeating it is harmless. */
	return one_batch(p, "cancel", id, "/cancel", NULL, NULL, HTTP_POST, out, err);
}

/* results */

static int download_file(struct provider *p, const char *file_id, struct provider_results *r,
			 struct bfs_err *err)
{
	struct buf url = BUF_INIT(OAI_URL_MAX);
	struct http_request rq = {
		.method = HTTP_GET,
		.retry = HTTP_RETRY_IDEMPOTENT,
		.line_fn = provider_results_line,
		.max_line = PROVIDER_RESULT_LINE_MAX,
		.skip_long_lines = true,
		.line_ctx = r,
		.reset = provider_results_reset,
		.stream = true,
		.on_retry = r->on_retry,
		.retry_ctx = r->retry_ctx,
	};
	int rc = make_url(p, &url, "/files/%s/content", file_id);

	if (rc) {
		err_set(err, "URL too long");
		goto out;
	}
	rq.url = url.data;
	provider_results_next_file(r);
	rc = oai_perform(p, &rq, NULL, err);
out:
	buf_release(&url);
	return rc;
}

int oai_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
		provider_reset_fn reset, void *ctx, provider_retry_fn on_retry, void *retry_ctx,
		struct bfs_err *err)
{
	struct bfs_err line_err = BFS_ERR_INIT;
	struct provider_results r;
	char files[2][PROVIDER_ID_MAX];
	const char *names[2];
	int nfiles = 0, rc = 0, i = 0;

	provider_results_init(&r, fn, reset, ctx, on_retry, retry_ctx, &line_err);
	/* Output first (successes), then errors (failed, cancelled, expired requests). */
	if (ref_get(b->ref, "out", files[nfiles]))
		names[nfiles++] = "output";
	if (ref_get(b->ref, "err", files[nfiles]))
		names[nfiles++] = "error";
	if (!nfiles) {
		err_set(err, "batch '%s' has no output or error file", b->id);
		return -ENODATA;
	}
	for (int round = 0; round <= OAI_RESTARTS_MAX; round++) {
		for (i = 0; i < nfiles; i++) {
			rc = download_file(p, files[i], &r, err);
			if (rc)
				break;
		}
		if (rc != -ERESTART || round == OAI_RESTARTS_MAX)
			break;
		log_debug("%s: results of %s: starting the download over", p->remote, b->id);
		rc = provider_results_restart(&r);
		if (rc) {
			err_set(err, "cannot restart the download: %s", strerror(-rc));
			break;
		}
	}
	if (!rc && !r.delivered) {
		err_set(err, "the result files of batch '%s' are empty", b->id);
		return -ENODATA;
	}
	if (!rc)
		return 0;
	if (rc == -ERESTART) {
		err_set(err, "the download of batch '%s' was cut short %d times", b->id,
			OAI_RESTARTS_MAX + 1);
	} else if (err_is_set(&line_err)) {
		err_set(err, "cannot download the %s file of batch '%s': %s", names[i], b->id,
			line_err.msg);
	} else if (rc == -ENOENT && state_is_terminal(b->state)) {
		/* Output files are deleted after 30 days (A.8). */
		rc = -ENODATA;
		err_prefix(err, "the %s file of batch '%s' is no longer available", names[i],
			   b->id);
	} else {
		err_prefix(err, "cannot download the %s file of batch '%s'", names[i], b->id);
	}
	return rc;
}

/* Once a batch made here has ended and its results are in (or never will be), its input file
 * only counts against the provider's file cap (B.3): delete it. */
void oai_settled(struct provider *p, const struct provider_batch *b)
{
	char in[PROVIDER_ID_MAX];

	if (ref_get(b->ref, "in", in))
		file_discard(p, in, "its batch ended and its results are settled");
}

/* open / free */

void oai_free(struct provider *p)
{
	if (!p)
		return;
	conf_secret_free(p->hdr_key);
	free(p->hdr_org);
	free(p->hdr_project);
	if (p->auth_free)
		p->auth_free(p->auth);
	http_free(p->http);
	free(p);
}

int oai_url_copy(const char *url, char *out, size_t size, size_t *path_at)
{
	size_t n = strlen(url), scheme = 0;

	while (n && url[n - 1] == '/')
		n--;
	if (!strncasecmp(url, "http://", 7))
		scheme = 7;
	else if (!strncasecmp(url, "https://", 8))
		scheme = 8;
	if (!scheme || n <= scheme || n >= size || http_has_ctl(url) || strpbrk(url, "?# "))
		return -EINVAL;
	memcpy(out, url, n);
	out[n] = '\0';
	*path_at = scheme + strcspn(out + scheme, "/");
	return 0;
}

bool oai_ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);

	return n >= t && !strcasecmp(s + n - t, tail);
}

int oai_header_dup(char **out, const char *name, const char *value)
{
	if (asprintf(out, "%s: %s", name, value) < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* An expiry key: whole seconds within what the API takes (A.2, B.3), default 14 days. */
static int expiry_key(const struct remote_conf *conf, const char *key, bool azure, long *out,
		      struct bfs_err *err)
{
	const char *v = conf_get(conf, key, NULL);
	long min = azure ? AZ_EXPIRES_MIN : OAI_EXPIRES_MIN;
	char *end;
	long n;

	*out = OAI_EXPIRES_DEFAULT;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (end == v || *end || errno || n < min || n > OAI_EXPIRES_MAX) {
		err_set(err,
			"[%s] %s must be a whole number of seconds from %ld to %d (%s: %ld to %d "
			"days), not '%.64s'",
			conf->name, key, min, OAI_EXPIRES_MAX, azure ? "Azure" : "OpenAI",
			min / 86400, OAI_EXPIRES_MAX / 86400, v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

int oai_api_key(struct provider *p, const struct remote_conf *conf, const char *env_default,
		const char *name, const char *prefix, struct bfs_err *err)
{
	char *key = conf_secret(conf, "api_key_env", "api_key_command", env_default, err);
	int rc = 0;

	if (!key)
		return -EINVAL;
	if (!*key || http_has_ctl(key)) {
		err_set(err, "[%s] the API key is empty or spans lines", conf->name);
		rc = -EINVAL;
		goto out;
	}
	if (asprintf(&p->hdr_key, "%s: %s%s", name, prefix, key) < 0) {
		p->hdr_key = NULL;
		err_set(err, "[%s] out of memory", conf->name);
		rc = -ENOMEM;
	}
out:
	conf_secret_free(key);
	return rc;
}

int oai_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
	     const struct oai_dialect *d, struct bfs_err *err)
{
	static const char *const subdirs[] = {"", "/uploads", "/lines"};
	struct provider *p = calloc(1, sizeof(*p));
	int rc;

	if (!p) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	p->azure = d->azure;
	snprintf(p->remote, sizeof(p->remote), "%s", conf->name);
	rc = d->config(p, conf, err);
	if (rc)
		goto fail;
	p->file_wait_ms =
		(int64_t)(conf_get_double(conf, "file_wait", OAI_FILE_WAIT_DEFAULT) * 1000);
	rc = expiry_key(conf, "input_expires_after", p->azure, &p->input_expires, err);
	if (!rc)
		rc = expiry_key(conf, "output_expires_after", p->azure, &p->output_expires, err);
	if (rc)
		goto fail;
	if (strlen(state_dir) + 32 > sizeof(p->dir)) {
		err_set(err, "[%s] cache path too long", conf->name);
		rc = -ENAMETOOLONG;
		goto fail;
	}
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(p->dir, sizeof(p->dir), "%s%s", state_dir, subdirs[i]);
		if (mkdir(p->dir, 0700) && errno != EEXIST) {
			rc = -errno;
			err_set(err, "cannot create '%s': %s", p->dir, strerror(errno));
			goto fail;
		}
	}
	snprintf(p->dir, sizeof(p->dir), "%s", state_dir);
	rc = provider_http_new(conf, &p->http, err);
	if (rc)
		goto fail;
	rc = d->auth(p, conf, err);
	if (rc)
		goto fail;
	*out = p;
	return 0;
fail:
	oai_free(p);
	return rc;
}

/* Request lines */

static const char *const oai_endpoints[] = {
	"/v1/responses",   "/v1/chat/completions",   "/v1/embeddings",	 "/v1/completions",
	"/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos",
};

bool oai_is_endpoint(const char *url)
{
	for (size_t i = 0; i < sizeof(oai_endpoints) / sizeof(oai_endpoints[0]); i++)
		if (!strcmp(url, oai_endpoints[i]))
			return true;
	return false;
}

/* OpenAI and Azure: method POST, a Batch API url shared by all lines, body.model. */
/*
 * max_completion_tokens replaces the deprecated max_tokens, which reasoning models refuse
 * (https://platform.openai.com/docs/api-reference/chat/create).
 */
cJSON *oai_prompt_native(const struct prompt_request *r, const char *url)
{
	cJSON *root = cJSON_CreateObject(), *body = NULL;

	if (cJSON_AddStringToObject(root, "custom_id", r->custom_id) &&
	    cJSON_AddStringToObject(root, "method", "POST") &&
	    cJSON_AddStringToObject(root, "url", url))
		body = cJSON_AddObjectToObject(root, "body");
	if (!body || !cJSON_AddStringToObject(body, "model", r->model) ||
	    !cJSON_AddNumberToObject(body, "max_completion_tokens", r->max_tokens) ||
	    (r->temperature >= 0 &&
	     !cJSON_AddNumberToObject(body, "temperature", r->temperature)) ||
	    !prompt_add_messages(body, r, true)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

int oai_validate_line(struct jsonl_validator *v, const cJSON *root, const char *custom_id,
		      long lineno, bool azure, struct bfs_err *err)
{
	const cJSON *method = cJSON_GetObjectItemCaseSensitive(root, "method"),
		    *url = cJSON_GetObjectItemCaseSensitive(root, "url");
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(root, "body"), *model;
	char ep[JSONL_COMMON_MAX];
	int rc;

	rc = jsonl_need_id(custom_id, lineno, err);
	if (!rc)
		rc = jsonl_need_string(method, "method", lineno, err);
	if (rc)
		return rc;
	if (strcmp(method->valuestring, "POST")) {
		err_set_line(err, lineno, "line %ld: method must be \"POST\"", lineno);
		return -EINVAL;
	}
	rc = jsonl_need_string(url, "url", lineno, err);
	if (rc)
		return rc;
	/*
	 * Azure accepts the url with or without the /v1 prefix
	 * (https://learn.microsoft.com/azure/ai-services/openai/how-to/batch); compare in one
	 * form. OpenAI wants the line's url to equal the batch's endpoint, one of the /v1/...
	 * values (https://platform.openai.com/docs/api-reference/batch/create).
	 */
	if (azure && strncmp(url->valuestring, "/v1/", 4) && url->valuestring[0] == '/')
		snprintf(ep, sizeof(ep), "/v1%s", url->valuestring);
	else
		snprintf(ep, sizeof(ep), "%s", url->valuestring);
	if (!oai_is_endpoint(ep)) {
		err_set_line(err, lineno,
			     "line %ld: url '%.100s' is not an endpoint the Batch API "
			     "accepts",
			     lineno, url->valuestring);
		return -EINVAL;
	}
	if (v->endpoint[0] && strcmp(v->endpoint, ep)) {
		err_set_line(err, lineno,
			     "line %ld: url '%s' differs from '%s' on line %ld (a batch "
			     "has one endpoint)",
			     lineno, ep, v->endpoint, v->common_line);
		return -EINVAL;
	}
	rc = jsonl_need_object(body, "body", lineno, err);
	if (rc)
		return rc;
	model = cJSON_GetObjectItemCaseSensitive(body, "model");
	rc = jsonl_need_string(model, "body.model", lineno, err);
	if (rc)
		return rc;
	if (strlen(model->valuestring) >= sizeof(v->model)) {
		err_set_line(err, lineno, "line %ld: body.model is too long", lineno);
		return -EINVAL;
	}
	/* One model per input file: OpenAI's guide (A.7), Azure's deployment rule (B.4). */
	if (v->model[0] && strcmp(v->model, model->valuestring)) {
		err_set_line(err, lineno,
			     "line %ld: body.model '%.100s' differs from '%s' on line %ld "
			     "(%s)",
			     lineno, model->valuestring, v->model, v->common_line,
			     azure ? "an Azure batch uses one deployment"
				   : "a batch uses one model");
		return -EINVAL;
	}
	if (!v->endpoint[0]) {
		snprintf(v->endpoint, sizeof(v->endpoint), "%s", ep);
		snprintf(v->model, sizeof(v->model), "%s", model->valuestring);
		v->common_line = lineno;
	}
	return 0;
}
