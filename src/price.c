// SPDX-License-Identifier: MIT
/*
 * The price table and costs. The table is a small TSV read in one go at a commit (a few
 * kilobytes; a user editing it sees the change at the next submission). The estimate of a
 * batch records the prices it used, so the cost of its results is priced the same way even
 * if the table changes later, and status never reads the table.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batchfs_build.h"
#include "buf.h"
#include "err.h"
#include "json.h"
#include "price.h"

#define PRICE_LINE_MAX 1024
#define PRICE_ROWS_MAX 10000

const char *price_default_file(void)
{
	/* Installed, the table is under the data directory; run from a build tree that was
	 * never installed (the quick start), the source tree's table. */
	if (access(BATCHFS_DATADIR "/prices.tsv", R_OK) && !access(BATCHFS_SOURCE_PRICES, R_OK))
		return BATCHFS_SOURCE_PRICES;
	return BATCHFS_DATADIR "/prices.tsv";
}

void price_table_free(struct price_table *t)
{
	if (!t)
		return;
	free(t->rows);
	free(t);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* "# key: value" header comments carry the table's date and source. */
static void header_line(struct price_table *t, const char *line)
{
	const char *p = line + 1;

	while (*p == ' ')
		p++;
	if (!strncmp(p, "date:", 5) && !t->date[0])
		snprintf(t->date, sizeof(t->date), "%s", p + 5 + strspn(p + 5, " "));
	else if (!strncmp(p, "source:", 7) && !t->source[0])
		snprintf(t->source, sizeof(t->source), "%s", p + 7 + strspn(p + 7, " "));
}

static int parse_price(const char *s, double *out)
{
	char *end;

	*out = strtod(s, &end);
	return *s && !*end && isfinite(*out) && *out >= 0 ? 0 : -EINVAL;
}

static int parse_row(struct price_row *r, char *line)
{
	char *f[5], *save = NULL, *tok;
	int n = 0;

	for (tok = strtok_r(line, "\t", &save); tok && n < 5; tok = strtok_r(NULL, "\t", &save))
		f[n++] = trim(tok);
	if (n != 5 || tok || !f[0][0] || strlen(f[0]) >= sizeof(r->model))
		return -EINVAL;
	snprintf(r->model, sizeof(r->model), "%s", f[0]);
	if (parse_price(f[1], &r->input) || parse_price(f[2], &r->output) ||
	    parse_price(f[3], &r->cache_write) || parse_price(f[4], &r->cache_read))
		return -EINVAL;
	return 0;
}

static int add_row(struct price_table *t, const struct price_row *r, size_t *alloc)
{
	if (t->n == *alloc) {
		size_t na = *alloc ? 2 * *alloc : 32;
		struct price_row *v;

		if (na > PRICE_ROWS_MAX)
			return -EFBIG;
		v = realloc(t->rows, na * sizeof(*v));
		if (!v)
			return -ENOMEM;
		t->rows = v;
		*alloc = na;
	}
	t->rows[t->n++] = *r;
	return 0;
}

int price_table_load(struct price_table **out, const char *path, struct bfs_err *err)
{
	struct price_table *t = calloc(1, sizeof(*t));
	char line[PRICE_LINE_MAX];
	size_t alloc = 0;
	long lineno = 0;
	FILE *f = NULL;
	int rc = 0;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	snprintf(t->path, sizeof(t->path), "%s", path);
	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		err_set(err, "cannot read the price table %s: %s", path, strerror(errno));
		goto out;
	}
	while (fgets(line, sizeof(line), f)) {
		struct price_row r;
		char *s;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			err_set(err, "%s:%ld: line too long", path, lineno);
			rc = -EINVAL;
			goto out;
		}
		s = trim(line);
		if (*s == '#') {
			header_line(t, s);
			continue;
		}
		if (!*s)
			continue;
		if (parse_row(&r, s)) {
			err_set(err,
				"%s:%ld: expected model, then input, output, cache write and cache "
				"read prices (USD per million tokens), tab-separated",
				path, lineno);
			rc = -EINVAL;
			goto out;
		}
		rc = add_row(t, &r, &alloc);
		if (rc) {
			err_set(err, "%s:%ld: %s", path, lineno,
				rc == -EFBIG ? "too many rows" : strerror(-rc));
			goto out;
		}
	}
	if (ferror(f)) {
		rc = -EIO;
		err_set(err, "cannot read the price table %s", path);
	}
out:
	if (f)
		fclose(f);
	if (rc)
		price_table_free(t);
	else
		*out = t;
	return rc;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return n > 0;
}

/* Length of model without its snapshot date suffix, or 0 when it has none. */
static size_t undated_len(const char *model)
{
	size_t n = strlen(model);

	/* "-YYYYMMDD" or "@YYYYMMDD" (Anthropic, Vertex) */
	if (n > 9 && (model[n - 9] == '-' || model[n - 9] == '@') && all_digits(model + n - 8, 8))
		return n - 9;
	/* "-YYYY-MM-DD" (OpenAI) */
	if (n > 11 && model[n - 11] == '-' && all_digits(model + n - 10, 4) &&
	    model[n - 6] == '-' && all_digits(model + n - 5, 2) && model[n - 3] == '-' &&
	    all_digits(model + n - 2, 2))
		return n - 11;
	return 0;
}

static const struct price_row *find_rows(const struct price_row *rows, size_t n, const char *model)
{
	size_t base;

	for (size_t i = 0; i < n; i++)
		if (!strcmp(rows[i].model, model))
			return &rows[i];
	base = undated_len(model);
	if (!base)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strlen(rows[i].model) == base && !strncmp(rows[i].model, model, base))
			return &rows[i];
	return NULL;
}

const struct price_row *price_lookup(const struct price_table *t, const char *model)
{
	const char *slash = strrchr(model, '/');

	if (!t)
		return NULL;
	/* Vertex names a model by resource: publishers/anthropic/models/<id>. */
	return find_rows(t->rows, t->n, slash ? slash + 1 : model);
}

/* input_tokens counts input that is neither written to nor read from the cache (Anthropic's
 * usage convention); the ingest brings other providers' usage to it. */
double price_cost(const struct price_row *p, const struct bfs_usage *u)
{
	return ((double)u->input_tokens * p->input + (double)u->output_tokens * p->output +
		(double)u->cache_creation_tokens * p->cache_write +
		(double)u->cache_read_tokens * p->cache_read) /
	       1e6;
}

/* Estimate */

static struct bfs_usage *estimate_slot(struct price_estimate *e, const char *model)
{
	for (size_t i = 0; i < e->n; i++)
		if (!strcmp(e->m[i].model, model))
			return &e->m[i];
	if (e->n == PRICE_MODELS_MAX) {
		e->overflow = true;
		return NULL;
	}
	memset(&e->m[e->n], 0, sizeof(e->m[0]));
	snprintf(e->m[e->n].model, sizeof(e->m[0].model), "%s", model);
	return &e->m[e->n++];
}

/*
 * Bytes of o printed as compact JSON (what cJSON_PrintUnformatted gives, without making it):
 * the input-token bound of one field. Depth is bounded by the line check's nesting limit.
 */
static uint64_t json_bytes(const cJSON *o)
{
	uint64_t n;
	const cJSON *c;

	if (!o)
		return 0;
	if (cJSON_IsString(o))
		return json_string_bytes(o->valuestring);
	if (cJSON_IsNumber(o))
		return json_number_bytes(o->valuedouble);
	if (cJSON_IsTrue(o) || cJSON_IsNull(o))
		return 4;
	if (cJSON_IsFalse(o))
		return 5;
	if (!cJSON_IsArray(o) && !cJSON_IsObject(o))
		return 0;
	/* A container the validator's scan did not build (jsonscan_tree): its size is kept. */
	if (o->type & cJSON_IsReference)
		return (uint64_t)o->valuedouble;
	n = 2;
	for (c = o->child; c; c = c->next) {
		if (c != o->child)
			n++; /* , */
		if (cJSON_IsObject(o))
			n += json_string_bytes(c->string) + 1; /* "key": */
		n += json_bytes(c);
	}
	return n;
}

/* The request's output cap, or -1 when it sets none (OpenAI: then the model's own limit). */
static int64_t max_tokens_of(const cJSON *o)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "max_completion_tokens");

	if (!cJSON_IsNumber(m))
		m = cJSON_GetObjectItemCaseSensitive(o, "max_tokens");
	if (!cJSON_IsNumber(m))
		m = cJSON_GetObjectItemCaseSensitive(o, "max_output_tokens");
	return cJSON_IsNumber(m) && m->valuedouble >= 0 && m->valuedouble < 9e15
		       ? (int64_t)m->valuedouble
		       : -1;
}

void price_estimate_object(struct price_estimate *e, const struct jsonl_format *fmt,
			   const cJSON *root, const char *default_model)
{
	static const char *const inputs[] = {"messages", "system", "tools", "input",
					     "instructions"};
	const cJSON *req = NULL, *n;
	const char *model;
	struct bfs_usage *u;
	int64_t mt;

	if (!cJSON_IsObject(root))
		goto out;
	if (fmt)
		req = cJSON_GetObjectItemCaseSensitive(root, fmt->request_key);
	if (!cJSON_IsObject(req))
		goto out;
	model = json_nonempty(req, "model");
	if (!model)
		model = default_model ? default_model : "";
	u = estimate_slot(e, model);
	if (!u)
		goto out;
	u->results++;
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
		u->input_tokens += json_bytes(cJSON_GetObjectItemCaseSensitive(req, inputs[i]));
	mt = max_tokens_of(req);
	n = cJSON_GetObjectItemCaseSensitive(req, "n");
	if (mt < 0)
		e->unbounded++;
	else /* OpenAI's n: that many completions, each up to the cap */
		u->output_tokens += (uint64_t)mt * (cJSON_IsNumber(n) && n->valuedouble > 1 &&
								    n->valuedouble <= 128
							    ? (uint64_t)n->valuedouble
							    : 1);
out:
	return;
}

void price_estimate_line(struct price_estimate *e, const struct jsonl_format *fmt, const char *line,
			 size_t len, const char *default_model)
{
	cJSON *root = cJSON_ParseWithLength(line, len);

	price_estimate_object(e, fmt, root, default_model);
	cJSON_Delete(root);
}

static int add_num(struct buf *out, double v)
{
	return buf_addf(out, "%.10g", v);
}

static int add_price(struct buf *out, const struct price_row *p)
{
	/* The row's own name: what the models of the results are matched against. */
	int rc = buf_addstr(out, "{\"model\": ");

	rc |= buf_add_json_string(out, p->model);
	rc |= buf_addstr(out, ", \"input\": ");

	rc |= add_num(out, p->input);
	rc |= buf_addstr(out, ", \"output\": ");
	rc |= add_num(out, p->output);
	rc |= buf_addstr(out, ", \"cache_write\": ");
	rc |= add_num(out, p->cache_write);
	rc |= buf_addstr(out, ", \"cache_read\": ");
	rc |= add_num(out, p->cache_read);
	rc |= buf_addstr(out, "}");
	return rc;
}

int price_estimate_json(const struct price_estimate *e, const struct price_table *t,
			const char *load_err, struct buf *out, double *usd, char *why,
			size_t why_size)
{
	double total = 0;
	int rc = 0;

	why[0] = '\0';
	if (!t)
		snprintf(why, why_size, "%s", load_err ? load_err : "no price table");
	else if (e->overflow)
		snprintf(why, why_size, "more than %d models in one batch", PRICE_MODELS_MAX);
	else if (e->unbounded)
		snprintf(why, why_size,
			 "%" PRIu64 " requests set no max_tokens (or max_completion_tokens): their "
			 "output has no upper bound",
			 e->unbounded);
	for (size_t i = 0; i < e->n && t && !why[0]; i++) {
		if (!e->m[i].model[0])
			snprintf(why, why_size, "no model named for some requests");
		else if (!price_lookup(t, e->m[i].model))
			snprintf(why, why_size, "no price for model %s in %s", e->m[i].model,
				 t->path);
	}
	for (size_t i = 0; i < e->n && !why[0]; i++)
		total += price_cost(price_lookup(t, e->m[i].model), &e->m[i]);
	*usd = why[0] ? -1 : total; /* known even when the JSON does not fit */
	rc |= buf_addstr(out, "{\"usd\": ");
	rc |= why[0] ? buf_addstr(out, "null") : add_num(out, total);
	rc |= buf_addstr(out, ", \"upper_bound\": true, \"reason\": ");
	rc |= why[0] ? buf_add_json_string(out, why) : buf_addstr(out, "null");
	rc |= buf_addstr(out, ", \"prices\": ");
	if (t) {
		rc |= buf_addstr(out, "{\"file\": ");
		rc |= buf_add_json_string(out, t->path);
		rc |= buf_addstr(out, ", \"date\": ");
		rc |= t->date[0] ? buf_add_json_string(out, t->date) : buf_addstr(out, "null");
		rc |= buf_addstr(out, ", \"source\": ");
		rc |= t->source[0] ? buf_add_json_string(out, t->source) : buf_addstr(out, "null");
		rc |= buf_addstr(out, "}");
	} else {
		rc |= buf_addstr(out, "null");
	}
	rc |= buf_addstr(out, ", \"models\": [");
	for (size_t i = 0; i < e->n; i++) {
		const struct bfs_usage *u = &e->m[i];
		const struct price_row *p = price_lookup(t, u->model);

		rc |= buf_addstr(out, i ? ", {\"model\": " : "{\"model\": ");
		rc |= buf_add_json_string(out, u->model);
		rc |= buf_addf(out,
			       ", \"requests\": %" PRIu64 ", \"input_tokens_max\": %" PRIu64
			       ", \"output_tokens_max\": %" PRIu64 ", \"usd\": ",
			       u->results, u->input_tokens, u->output_tokens);
		if (p) {
			rc |= add_num(out, price_cost(p, u));
			rc |= buf_addstr(out, ", \"price\": ");
			rc |= add_price(out, p);
		} else {
			rc |= buf_addstr(out, "null, \"price\": null");
		}
		rc |= buf_addstr(out, "}");
	}
	rc |= buf_addstr(out, "]}");
	return rc ? -EFBIG : 0;
}

/* Actual cost, from the usage the results report (status.usage). */

static int actual_json(const cJSON *est, const struct bfs_usage *u, size_t n, struct buf *out)
{
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(est, "models"), *m;
	struct price_row rows[PRICE_MODELS_MAX];
	size_t nrows = 0;
	char why[512] = "";
	double total = 0;
	int rc = 0;

	/* The prices the estimate used: the table as it was at submission. */
	cJSON_ArrayForEach(m, models) {
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "price");
		const char *name = json_str(p, "model");

		if (!cJSON_IsObject(p) || !name || nrows == PRICE_MODELS_MAX)
			continue;
		memset(&rows[nrows], 0, sizeof(rows[0]));
		snprintf(rows[nrows].model, sizeof(rows[0].model), "%s", name);
		rows[nrows].input = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "input"));
		rows[nrows].output = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "output"));
		rows[nrows].cache_write =
			cJSON_GetNumberValue(cJSON_GetObjectItem(p, "cache_write"));
		rows[nrows].cache_read = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "cache_read"));
		nrows++;
	}
	rc |= buf_addstr(out, "{\"usd\": ");
	for (size_t i = 0; i < n && !why[0]; i++) {
		const struct price_row *p = find_rows(rows, nrows, u[i].model);

		/*
		 * A batch of one model whose results name it otherwise (none at all, Azure's model
		 * behind the deployment, a Vertex resource path): every result is of that model.
		 */
		if (!p && nrows == 1 && n == 1)
			p = &rows[0];
		if (p)
			total += price_cost(p, &u[i]);
		else
			snprintf(why, sizeof(why), "no price recorded for model %s",
				 u[i].model[0] ? u[i].model : "(not reported)");
	}
	if (why[0]) {
		rc |= buf_addstr(out, "null, \"reason\": ");
		rc |= buf_add_json_string(out, why);
	} else {
		rc |= add_num(out, total);
		rc |= buf_addstr(out, ", \"reason\": null");
	}
	rc |= buf_addstr(out, "}");
	return rc ? -EFBIG : 0;
}

int price_status_json(const char *stored, const struct bfs_usage *u, size_t n, bool have_usage,
		      struct buf *out)
{
	cJSON *est = NULL;
	int rc = 0;

	if (!stored || !stored[0])
		return buf_addstr(out, "null");
	est = cJSON_Parse(stored);
	if (!est)
		return buf_addstr(out, "null");
	rc |= buf_addstr(out, "{\"estimate\": ");
	rc |= buf_addstr(out, stored);
	rc |= buf_addstr(out, ", \"actual\": ");
	if (have_usage)
		rc |= actual_json(est, u, n, out);
	else
		rc |= buf_addstr(out, "null");
	rc |= buf_addstr(out, "}");
	cJSON_Delete(est);
	return rc ? -EFBIG : 0;
}
