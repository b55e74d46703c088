// SPDX-License-Identifier: MIT
/*
 * Google OAuth2 access tokens (spec C.8): from a user's access_token_command, or from an
 * Application Default Credentials file (authorized_user: refresh-token grant; service_account:
 * RS256 JWT bearer grant signed with libcrypto). Owns the credentials and the current token,
 * in memory only, wiped when dropped. Must never log, print or store any of them: messages
 * name files, fields and HTTP statuses, never values.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "gauth.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "timefmt.h"

#define GAUTH_TOKEN_URI	    "https://oauth2.googleapis.com/token"
#define GAUTH_FILE_MAX	    (64 * 1024) /* an ADC file is ~2.5 KiB with a 2048-bit key */
#define GAUTH_RESP_MAX	    (64 * 1024)
#define GAUTH_TOKEN_MAX	    (16 * 1024)
#define GAUTH_JWT_LIFETIME  3600	 /* seconds; Google's maximum (spec C.8) */
#define GAUTH_EARLY_MS	    (225 * 1000) /* google-auth REFRESH_THRESHOLD, 3 min 45 s */
#define GAUTH_TTL_DEFAULT   300		 /* seconds a command's token is reused */
#define GAUTH_EXPIRES_DEF_S 3600	 /* when a token answer has no expires_in */

enum gauth_kind {
	GAUTH_COMMAND,
	GAUTH_USER,
	GAUTH_SERVICE,
};

struct gauth {
	enum gauth_kind kind;
	const struct remote_conf *conf; /* borrowed: runs access_token_command */
	struct http *http;		/* borrowed */
	char name[CONF_NAME_MAX];	/* the remote, for messages */
	int64_t command_ttl_ms;
	/* Read-only after gauth_new(); secrets wiped at free. */
	char *token_uri;
	char *client_id, *client_secret, *refresh_token; /* authorized_user */
	char *client_email, *key_id, *private_key;	 /* service_account (PEM) */
	/*
	 * The current token. lock protects token and refresh_at, and is held across a refresh
	 * (network I/O) so that one thread fetches while the others wait; it is never taken
	 * with another lock held, nor held while taking one.
	 */
	pthread_mutex_t lock;
	char *token;
	int64_t refresh_at; /* monotonic ms after which the token is refreshed before use */
};

/* Secrets */

/* Wipes every string of a parsed document before freeing it (it held a key or a token). */
static void json_wipe(cJSON *o)
{
	for (cJSON *c = o; c; c = c->next) {
		if (c->valuestring)
			explicit_bzero(c->valuestring, strlen(c->valuestring));
		if (c->string)
			explicit_bzero(c->string, strlen(c->string));
		json_wipe(c->child);
	}
}

static void json_wipe_delete(cJSON *o)
{
	json_wipe(o);
	cJSON_Delete(o);
}

/* base64url and the JWT */

char *gauth_b64url(const unsigned char *data, size_t n)
{
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *out;
	int k;

	if (n > (size_t)INT32_MAX / 2)
		return NULL;
	out = malloc(cap);
	if (!out)
		return NULL;
	k = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
	while (k > 0 && out[k - 1] == '=')
		k--;
	out[k] = '\0';
	for (char *p = out; *p; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	}
	return out;
}

/* b64url(JSON of o) into *out; o is freed. */
static int b64url_json(cJSON *o, char **out)
{
	char *text = o ? cJSON_PrintUnformatted(o) : NULL;
	int rc = -ENOMEM;

	cJSON_Delete(o);
	if (!text)
		return rc;
	*out = gauth_b64url((const unsigned char *)text, strlen(text));
	if (*out)
		rc = 0;
	free(text);
	return rc;
}

static EVP_PKEY *read_rsa_key(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	if (key && EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
		EVP_PKEY_free(key);
		key = NULL;
	}
	/* libcrypto's error queue is per thread: leave nothing behind for the next caller. */
	ERR_clear_error();
	return key;
}

int gauth_jwt(const char *pem, const char *kid, const char *iss, const char *aud, int64_t now_s,
	      char **jwt, struct bfs_err *err)
{
	cJSON *hdr = cJSON_CreateObject(), *claims = cJSON_CreateObject();
	char *h64 = NULL, *c64 = NULL, *s64 = NULL, *input = NULL, *out = NULL;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *key = NULL;
	int rc = -ENOMEM;

	if (!hdr || !claims || !cJSON_AddStringToObject(hdr, "alg", "RS256") ||
	    !cJSON_AddStringToObject(hdr, "typ", "JWT") ||
	    (kid && *kid && !cJSON_AddStringToObject(hdr, "kid", kid)) ||
	    !cJSON_AddStringToObject(claims, "iss", iss) ||
	    !cJSON_AddStringToObject(claims, "scope", GAUTH_SCOPE) ||
	    !cJSON_AddStringToObject(claims, "aud", aud) ||
	    !cJSON_AddNumberToObject(claims, "iat", (double)now_s) ||
	    !cJSON_AddNumberToObject(claims, "exp", (double)(now_s + GAUTH_JWT_LIFETIME))) {
		cJSON_Delete(hdr);
		cJSON_Delete(claims);
		goto nomem;
	}
	rc = b64url_json(hdr, &h64);
	if (!rc)
		rc = b64url_json(claims, &c64);
	if (rc)
		goto nomem;
	if (asprintf(&input, "%s.%s", h64, c64) < 0) {
		input = NULL;
		goto nomem;
	}
	key = read_rsa_key(pem);
	if (!key) {
		err_set(err, "the service account's private_key is not an RSA private key in PEM");
		rc = -EINVAL;
		goto out;
	}
	/* RS256 = RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3), the key's default. */
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) != 1)
		goto crypto;
	sig = malloc(siglen);
	if (!sig)
		goto nomem;
	if (EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) != 1)
		goto crypto;
	s64 = gauth_b64url(sig, siglen);
	if (!s64 || asprintf(&out, "%s.%s", input, s64) < 0)
		goto nomem;
	*jwt = out;
	rc = 0;
	goto out;
crypto:
	ERR_clear_error();
	err_set(err, "cannot sign the service-account assertion (libcrypto)");
	rc = -EINVAL;
	goto out;
nomem:
	err_set(err, "cannot build the service-account assertion: out of memory");
	rc = -ENOMEM;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	free(sig);
	free(s64);
	free(input);
	free(c64);
	free(h64);
	return rc;
}

/* Opening: the credentials file */

static int dup_field(const cJSON *o, const char *key, bool required, const char *path, char **out,
		     struct bfs_err *err)
{
	const char *v = json_nonempty(o, key);

	if (!v) {
		if (!required)
			return 0;
		err_set(err, "credentials '%s' have no '%s'", path, key);
		return -EINVAL;
	}
	if (http_has_ctl(v) && strcmp(key, "private_key")) {
		err_set(err, "credentials '%s': '%s' spans lines", path, key);
		return -EINVAL;
	}
	*out = strdup(v);
	if (!*out) {
		err_set(err, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Reads path whole (it is small and holds secrets: the caller wipes the buffer). */
static int read_small_file(const char *path, char **out, struct bfs_err *err)
{
	struct stat st;
	char *data = NULL;
	size_t done = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		err_set(err, "cannot read credentials '%s': %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		err_set(err, "cannot read credentials '%s': %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > GAUTH_FILE_MAX) {
		err_set(err, "credentials '%s' is not a regular file of at most %d bytes", path,
			GAUTH_FILE_MAX);
		rc = -EINVAL;
		goto out;
	}
	data = calloc(1, (size_t)st.st_size + 1);
	if (!data) {
		rc = -ENOMEM;
		goto out;
	}
	while (done < (size_t)st.st_size) {
		ssize_t k = read(fd, data + done, (size_t)st.st_size - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = k < 0 ? -errno : -EIO;
			err_set(err, "cannot read credentials '%s': %s", path, strerror(-rc));
			goto out;
		}
		done += (size_t)k;
	}
	*out = data;
	data = NULL;
out:
	if (data) {
		explicit_bzero(data, (size_t)st.st_size);
		free(data);
	}
	close(fd);
	return rc;
}

static int load_credentials(struct gauth *g, const char *path, struct bfs_err *err)
{
	char *text = NULL;
	cJSON *root = NULL;
	const char *type;
	int rc;

	rc = read_small_file(path, &text, err);
	if (rc)
		return rc;
	root = cJSON_Parse(text);
	explicit_bzero(text, strlen(text));
	free(text);
	type = json_nonempty(root, "type");
	if (!cJSON_IsObject(root) || !type) {
		err_set(err, "credentials '%s' is not a JSON object with a 'type'", path);
		rc = -EINVAL;
		goto out;
	}
	rc = dup_field(root, "token_uri", false, path, &g->token_uri, err);
	if (!rc && !g->token_uri) {
		g->token_uri = strdup(GAUTH_TOKEN_URI);
		rc = g->token_uri ? 0 : -ENOMEM;
	}
	if (rc)
		goto out;
	if (strncasecmp(g->token_uri, "https://", 8) && strncasecmp(g->token_uri, "http://", 7)) {
		err_set(err, "credentials '%s': token_uri is not an http(s) URL", path);
		rc = -EINVAL;
		goto out;
	}
	if (!strcmp(type, "authorized_user")) {
		g->kind = GAUTH_USER;
		rc = dup_field(root, "client_id", true, path, &g->client_id, err);
		if (!rc)
			rc = dup_field(root, "client_secret", true, path, &g->client_secret, err);
		if (!rc)
			rc = dup_field(root, "refresh_token", true, path, &g->refresh_token, err);
	} else if (!strcmp(type, "service_account")) {
		EVP_PKEY *key;

		g->kind = GAUTH_SERVICE;
		rc = dup_field(root, "client_email", true, path, &g->client_email, err);
		if (!rc)
			rc = dup_field(root, "private_key_id", false, path, &g->key_id, err);
		if (!rc)
			rc = dup_field(root, "private_key", true, path, &g->private_key, err);
		if (rc)
			goto out;
		/* Fail at mount, not at the first submission, on a key we cannot use. */
		key = read_rsa_key(g->private_key);
		if (!key) {
			err_set(err,
				"credentials '%s': private_key is not an RSA private key in PEM",
				path);
			rc = -EINVAL;
		}
		EVP_PKEY_free(key);
	} else {
		err_set(err,
			"credentials '%s' are of type '%.40s': only authorized_user and "
			"service_account are supported (or set access_token_command)",
			path, type);
		rc = -EINVAL;
	}
out:
	json_wipe_delete(root);
	return rc;
}

/* The credentials file: the remote's `credentials`, else ADC's lookup (spec C.8 item 3). */
static int credentials_path(const struct remote_conf *conf, char **out, struct bfs_err *err)
{
	const char *path = conf_get(conf, "credentials", NULL);
	const char *dir = getenv("CLOUDSDK_CONFIG");
	const char *home = getenv("HOME");
	struct stat st;
	char *p = NULL;

	if (!path || !*path)
		path = getenv("GOOGLE_APPLICATION_CREDENTIALS");
	if (path && *path) {
		*out = strdup(path);
		return *out ? 0 : -ENOMEM;
	}
	if (dir && *dir) {
		if (asprintf(&p, "%s/application_default_credentials.json", dir) < 0)
			return -ENOMEM;
	} else if (home && *home) {
		if (asprintf(&p, "%s/.config/gcloud/application_default_credentials.json", home) <
		    0)
			return -ENOMEM;
	}
	if (!p || stat(p, &st)) {
		err_set(err,
			"[%s] no Google credentials: set credentials = FILE or "
			"access_token_command, or GOOGLE_APPLICATION_CREDENTIALS, or run 'gcloud "
			"auth application-default login'",
			conf->name);
		free(p);
		return -ENOENT;
	}
	*out = p;
	return 0;
}

int gauth_new(struct gauth **out, const struct remote_conf *conf, struct http *http,
	      struct bfs_err *err)
{
	const char *cmd = conf_get(conf, "access_token_command", NULL);
	double ttl = conf_get_double(conf, "access_token_ttl", GAUTH_TTL_DEFAULT);
	struct gauth *g = calloc(1, sizeof(*g));
	char *path = NULL;
	int rc = 0;

	if (!g) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	pthread_mutex_init(&g->lock, NULL);
	g->conf = conf;
	g->http = http;
	snprintf(g->name, sizeof(g->name), "%s", conf->name);
	if (!(ttl > 0 && ttl < 1e7)) {
		err_set(err, "[%s] access_token_ttl must be a positive number of seconds",
			conf->name);
		rc = -EINVAL;
		goto out;
	}
	g->command_ttl_ms = (int64_t)(ttl * 1000);
	/* Our own key first (spec C.8 item 4), then Application Default Credentials. */
	if (cmd && *cmd) {
		g->kind = GAUTH_COMMAND;
		goto out;
	}
	rc = credentials_path(conf, &path, err);
	if (!rc)
		rc = load_credentials(g, path, err);
	if (rc)
		err_prefix(err, "[%s]", conf->name);
out:
	free(path);
	if (rc) {
		gauth_free(g);
		return rc;
	}
	log_debug("remote '%s': Google credentials from %s", conf->name,
		  g->kind == GAUTH_COMMAND ? "access_token_command"
		  : g->kind == GAUTH_USER  ? "an authorized_user file"
					   : "a service_account key");
	*out = g;
	return 0;
}

void gauth_free(struct gauth *g)
{
	if (!g)
		return;
	conf_secret_free(g->token);
	conf_secret_free(g->client_id);
	conf_secret_free(g->client_secret);
	conf_secret_free(g->refresh_token);
	conf_secret_free(g->client_email);
	conf_secret_free(g->key_id);
	conf_secret_free(g->private_key);
	free(g->token_uri);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

/* Fetching a token */

/* application/x-www-form-urlencoded value (RFC 3986 unreserved kept) appended to out. */
static void form_escape(char *out, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			out[(*pos)++] = (char)c;
		} else {
			out[(*pos)++] = '%';
			out[(*pos)++] = hex[c >> 4];
			out[(*pos)++] = hex[c & 15];
		}
	}
	out[*pos] = '\0';
}

/*
 * Builds "k1=v1&k2=v2..." from NULL-terminated pairs into one exactly sized allocation, so no
 * copy of a secret is left behind by a growing buffer. The caller wipes and frees it.
 */
static char *form_body(const char *const *kv)
{
	size_t n = 1, pos = 0;
	char *out;

	for (const char *const *p = kv; *p; p++)
		n += 3 * strlen(*p) + 1;
	out = malloc(n);
	if (!out)
		return NULL;
	out[0] = '\0';
	for (const char *const *p = kv; p[0] && p[1]; p += 2) {
		if (pos)
			out[pos++] = '&';
		form_escape(out, &pos, p[0]);
		out[pos++] = '=';
		form_escape(out, &pos, p[1]);
	}
	return out;
}

/* A token answer {access_token, expires_in (number or string), token_type}. */
static int take_token(struct gauth *g, const struct buf *resp, int64_t now, struct bfs_err *err)
{
	cJSON *root = resp->data ? cJSON_ParseWithLength(resp->data, resp->len) : NULL;
	const char *tok = json_nonempty(root, "access_token");
	const cJSON *exp = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
	double secs = GAUTH_EXPIRES_DEF_S;
	int64_t life_ms, early_ms;
	int rc = 0;

	if (cJSON_IsNumber(exp))
		secs = exp->valuedouble;
	else if (cJSON_IsString(exp))
		secs = strtod(exp->valuestring, NULL);
	if (!tok || http_has_ctl(tok) || strlen(tok) > GAUTH_TOKEN_MAX ||
	    !(secs > 0 && secs < 1e7)) {
		err_set(err, "the token endpoint's answer has no usable access_token/expires_in");
		rc = -EBADMSG;
		goto out;
	}
	conf_secret_free(g->token);
	g->token = strdup(tok);
	if (!g->token) {
		rc = -ENOMEM;
		goto out;
	}
	/* Refresh ahead of expiry (google-auth's threshold), or at 3/4 of a short life. */
	life_ms = (int64_t)(secs * 1000);
	early_ms = life_ms / 4 < GAUTH_EARLY_MS ? life_ms / 4 : GAUTH_EARLY_MS;
	g->refresh_at = now + life_ms - early_ms;
out:
	json_wipe_delete(root);
	return rc;
}

/* Grant request to token_uri (spec C.8 items 1 and 3). Called with g->lock held. */
static int fetch_grant(struct gauth *g, struct bfs_err *err)
{
	static const char *const headers[] = {
		"Content-Type: application/x-www-form-urlencoded",
		"Accept: application/json",
		NULL,
	};
	struct buf resp = BUF_INIT(GAUTH_RESP_MAX);
	struct http_mem_body mb;
	struct http_body body;
	struct http_request rq = {
		.method = HTTP_POST,
		.url = g->token_uri,
		.headers = headers,
		.body = &body,
		/* Grants change nothing: retry like any idempotent call (google-auth retries
		 * 500, 503, 504, 408, 429). */
		.retry = HTTP_RETRY_IDEMPOTENT,
		.resp = &resp,
	};
	int64_t now = timefmt_mono_ms();
	char *jwt = NULL, *form = NULL;
	int rc;

	if (g->kind == GAUTH_SERVICE) {
		const char *kv[] = {"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer",
				    "assertion", NULL, NULL};

		rc = gauth_jwt(g->private_key, g->key_id, g->client_email, g->token_uri,
			       timefmt_now_ms() / 1000, &jwt, err);
		if (rc)
			return rc;
		kv[3] = jwt;
		form = form_body(kv);
	} else {
		const char *kv[] = {"grant_type",    "refresh_token",  "client_id",
				    g->client_id,    "client_secret",  g->client_secret,
				    "refresh_token", g->refresh_token, NULL};

		form = form_body(kv);
	}
	if (!form) {
		rc = -ENOMEM;
		err_set(err, "out of memory");
		goto out;
	}
	http_mem_body_init(&mb, &body, form, strlen(form));
	rc = http_perform(g->http, &rq, NULL, err);
	if (!rc)
		rc = take_token(g, &resp, now, err);
	if (!rc)
		log_debug("remote '%s': new Google access token (%s grant)", g->name,
			  g->kind == GAUTH_SERVICE ? "jwt-bearer" : "refresh_token");
out:
	if (resp.data)
		explicit_bzero(resp.data, resp.len);
	buf_release(&resp);
	conf_secret_free(form);
	conf_secret_free(jwt);
	return rc;
}

/* Runs access_token_command (first line of its stdout). Called with g->lock held. */
static int fetch_command(struct gauth *g, struct bfs_err *err)
{
	int64_t now = timefmt_mono_ms();
	char *tok = conf_secret(g->conf, NULL, "access_token_command", NULL, err);

	if (!tok)
		return -EACCES;
	if (!*tok || http_has_ctl(tok) || strlen(tok) > GAUTH_TOKEN_MAX) {
		conf_secret_free(tok);
		err_set(err, "access_token_command printed no usable token");
		return -EACCES;
	}
	conf_secret_free(g->token);
	g->token = tok;
	g->refresh_at = now + g->command_ttl_ms;
	log_debug("remote '%s': new Google access token (access_token_command)", g->name);
	return 0;
}

int gauth_header(struct gauth *g, char **hdr, struct bfs_err *err)
{
	int rc = 0;

	pthread_mutex_lock(&g->lock);
	if (!g->token || timefmt_mono_ms() >= g->refresh_at) {
		rc = g->kind == GAUTH_COMMAND ? fetch_command(g, err) : fetch_grant(g, err);
		if (rc)
			err_prefix(err, "cannot get a Google access token");
	}
	if (!rc && asprintf(hdr, "Authorization: Bearer %s", g->token) < 0) {
		err_set(err, "out of memory");
		rc = -ENOMEM;
	}
	pthread_mutex_unlock(&g->lock);
	return rc;
}

void gauth_header_free(char *hdr)
{
	conf_secret_free(hdr);
}

void gauth_reject(struct gauth *g, const char *hdr)
{
	const char *tok = strrchr(hdr, ' ');

	pthread_mutex_lock(&g->lock);
	if (g->token && tok && !strcmp(tok + 1, g->token))
		g->refresh_at = 0;
	pthread_mutex_unlock(&g->lock);
}
