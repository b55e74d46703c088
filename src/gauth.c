// SPDX-License-Identifier: MIT
/*
 * Google OAuth2 access tokens (spec C.8): from a user's access_token_command, or from an
 * Application Default Credentials file (authorized_user: refresh-token grant; service_account:
 * RS256 JWT bearer grant signed with libcrypto; external_account: workload identity federation,
 * a subject token exchanged at STS and optionally for a service account's token;
 * impersonated_service_account: a source credential's token traded at iamcredentials), else
 * the GCE / GKE / Cloud Run metadata server. Owns the credentials and the current token, in
 * memory only, wiped when dropped. Must never log, print or store any of them: messages name
 * files, fields and HTTP statuses, never values.
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
#define GAUTH_NO_CREDS                                                               \
	"no Google credentials: set credentials = FILE or access_token_command, or " \
	"GOOGLE_APPLICATION_CREDENTIALS, or run 'gcloud auth application-default login'"
#define GAUTH_META_HOST	   "metadata.google.internal"
#define GAUTH_META_PATH	   "/computeMetadata/v1/instance/service-accounts/default/token"
#define GAUTH_STS_GRANT	   "urn:ietf:params:oauth:grant-type:token-exchange"
#define GAUTH_ACCESS_TYPE  "urn:ietf:params:oauth:token-type:access_token"
#define GAUTH_EXEC_TIMEOUT 30000 /* ms, Google's default for an executable source */
#define GAUTH_SRC_HEADERS  8	 /* credential_source.headers kept */

enum gauth_kind {
	GAUTH_COMMAND,
	GAUTH_USER,
	GAUTH_SERVICE,
	GAUTH_METADATA,	    /* the metadata server of GCE, GKE or Cloud Run */
	GAUTH_EXTERNAL,	    /* external_account: STS exchange of a subject token */
	GAUTH_IMPERSONATED, /* impersonated_service_account: a source's token traded */
};

/* external_account's credential_source: where the subject token comes from. */
struct gauth_source {
	char *file;			      /* file-sourced */
	char *url;			      /* URL-sourced */
	char *headers[GAUTH_SRC_HEADERS + 1]; /* "Name: value" for url, NULL-ended */
	char *field;			      /* format json: the token's field; NULL: text */
	char *command;			      /* executable-sourced (opt-in) */
	int64_t timeout_ms;		      /* the executable's */
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
	char *quota_hdr;				 /* "x-goog-user-project: P", or NULL */
	char *meta_url;					 /* metadata: the token URL */
	char *audience, *subject_type;			 /* external_account */
	struct gauth_source src;
	char *imp_url;	      /* external or impersonated: generateAccessToken URL, or NULL */
	int imp_lifetime;     /* seconds asked of generateAccessToken */
	char *delegates;      /* impersonated: JSON array text of the delegation chain, or NULL */
	struct gauth *source; /* impersonated: the source credential (own lock, own token) */
	/*
	 * The current token. lock protects token and refresh_at, and is held across a refresh
	 * (network I/O) so that one thread fetches while the others wait; it is never taken
	 * with another lock held, nor held while taking one, except its own source's (an
	 * impersonation's, one level deep and always in that order).
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

static int load_json(struct gauth *g, const cJSON *root, const char *path, int depth,
		     struct bfs_err *err);

/* An http(s) URL field (required or not) into *out. */
static int url_field(const cJSON *o, const char *key, bool required, const char *path, char **out,
		     struct bfs_err *err)
{
	int rc = dup_field(o, key, required, path, out, err);

	if (!rc && *out && strncasecmp(*out, "https://", 8) && strncasecmp(*out, "http://", 7)) {
		err_set(err, "credentials '%s': %s is not an http(s) URL", path, key);
		rc = -EINVAL;
	}
	return rc;
}

static int nomem(struct bfs_err *err)
{
	err_set(err, "out of memory");
	return -ENOMEM;
}

/*
 * credential_source of an external_account (Google's AIP-4117): file or url (text, or json
 * with subject_token_field_name), or executable, which runs a program and so is refused
 * unless GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1, as Google's libraries require.
 */
static int load_source(struct gauth *g, const cJSON *cs, const char *path, struct bfs_err *err)
{
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(cs, "format");
	const cJSON *hdrs = cJSON_GetObjectItemCaseSensitive(cs, "headers");
	const cJSON *exe = cJSON_GetObjectItemCaseSensitive(cs, "executable");
	const char *ftype = json_nonempty(fmt, "type");
	const char *allow = getenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES");
	const cJSON *h;
	int rc, n = 0;

	if (!cJSON_IsObject(cs)) {
		err_set(err, "credentials '%s' (external_account) have no 'credential_source'",
			path);
		return -EINVAL;
	}
	if (cJSON_IsObject(exe)) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(exe, "timeout_millis");

		if (!allow || strcmp(allow, "1")) {
			err_set(err,
				"credentials '%s' (external_account) run an executable: set "
				"GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1 to allow it",
				path);
			return -EPERM;
		}
		g->src.timeout_ms = GAUTH_EXEC_TIMEOUT;
		if (cJSON_IsNumber(t) && t->valuedouble >= 5000 && t->valuedouble <= 120000)
			g->src.timeout_ms = (int64_t)t->valuedouble;
		return dup_field(exe, "command", true, path, &g->src.command, err);
	}
	if (ftype && strcmp(ftype, "text") && strcmp(ftype, "json")) {
		err_set(err,
			"credentials '%s': credential_source.format.type '%.20s' is neither "
			"text nor json",
			path, ftype);
		return -EINVAL;
	}
	if (ftype && !strcmp(ftype, "json")) {
		rc = dup_field(fmt, "subject_token_field_name", true, path, &g->src.field, err);
		if (rc)
			return rc;
	}
	rc = dup_field(cs, "file", false, path, &g->src.file, err);
	if (!rc && !g->src.file)
		rc = url_field(cs, "url", false, path, &g->src.url, err);
	if (rc)
		return rc;
	if (!g->src.file && !g->src.url) {
		err_set(err,
			"credentials '%s' (external_account): credential_source has no file, url "
			"or executable (AWS sources are not supported)",
			path);
		return -EINVAL;
	}
	if (!cJSON_IsObject(hdrs))
		hdrs = NULL;
	cJSON_ArrayForEach(h, hdrs) {
		if (!cJSON_IsString(h) || !h->string || http_has_ctl(h->string) ||
		    http_has_ctl(h->valuestring) || n == GAUTH_SRC_HEADERS) {
			err_set(err,
				"credentials '%s': credential_source.headers must be at most %d "
				"one-line strings",
				path, GAUTH_SRC_HEADERS);
			return -EINVAL;
		}
		if (asprintf(&g->src.headers[n], "%s: %s", h->string, h->valuestring) < 0) {
			g->src.headers[n] = NULL;
			return nomem(err);
		}
		n++;
	}
	return 0;
}

static int load_external(struct gauth *g, const cJSON *root, const char *path, struct bfs_err *err)
{
	const cJSON *imp = cJSON_GetObjectItemCaseSensitive(root, "service_account_impersonation");
	const cJSON *life = cJSON_GetObjectItemCaseSensitive(imp, "token_lifetime_seconds");
	int rc;

	g->kind = GAUTH_EXTERNAL;
	rc = dup_field(root, "audience", true, path, &g->audience, err);
	if (!rc)
		rc = dup_field(root, "subject_token_type", true, path, &g->subject_type, err);
	if (!rc)
		rc = url_field(root, "token_url", true, path, &g->token_uri, err);
	if (!rc)
		rc = url_field(root, "service_account_impersonation_url", false, path, &g->imp_url,
			       err);
	if (!rc)
		rc = load_source(g, cJSON_GetObjectItemCaseSensitive(root, "credential_source"),
				 path, err);
	if (!rc && cJSON_IsNumber(life)) {
		if (!(life->valuedouble >= 600 && life->valuedouble <= 43200)) {
			err_set(err,
				"credentials '%s': token_lifetime_seconds must be 600 to 43200",
				path);
			return -EINVAL;
		}
		g->imp_lifetime = (int)life->valuedouble;
	}
	if (rc == -EINVAL && err && !strstr(err->msg, "external_account"))
		err_prefix(err, "external_account");
	return rc;
}

static int load_impersonated(struct gauth *g, const cJSON *root, const char *path, int depth,
			     struct bfs_err *err)
{
	const cJSON *src = cJSON_GetObjectItemCaseSensitive(root, "source_credentials");
	const cJSON *del = cJSON_GetObjectItemCaseSensitive(root, "delegates");
	int rc;

	g->kind = GAUTH_IMPERSONATED;
	rc = url_field(root, "service_account_impersonation_url", true, path, &g->imp_url, err);
	if (rc)
		return rc;
	if (depth > 0 || !cJSON_IsObject(src)) {
		err_set(err,
			"credentials '%s' (impersonated_service_account) need one "
			"'source_credentials' object that is not itself impersonated",
			path);
		return -EINVAL;
	}
	if (cJSON_IsArray(del) && cJSON_GetArraySize(del) > 0) {
		g->delegates = cJSON_PrintUnformatted(del);
		if (!g->delegates)
			return nomem(err);
	}
	g->source = calloc(1, sizeof(*g->source));
	if (!g->source)
		return nomem(err);
	pthread_mutex_init(&g->source->lock, NULL);
	g->source->conf = g->conf;
	g->source->http = g->http;
	g->source->command_ttl_ms = g->command_ttl_ms;
	snprintf(g->source->name, sizeof(g->source->name), "%s", g->name);
	return load_json(g->source, src, path, depth + 1, err);
}

static int load_json(struct gauth *g, const cJSON *root, const char *path, int depth,
		     struct bfs_err *err)
{
	const char *type = json_nonempty(root, "type");
	const char *quota = json_nonempty(root, "quota_project_id");
	int rc = 0;

	if (!cJSON_IsObject(root) || !type) {
		err_set(err, "credentials '%s' is not a JSON object with a 'type'", path);
		return -EINVAL;
	}
	if (quota && !g->quota_hdr && depth == 0) {
		if (http_has_ctl(quota)) {
			err_set(err, "credentials '%s': 'quota_project_id' spans lines", path);
			return -EINVAL;
		}
		if (asprintf(&g->quota_hdr, "x-goog-user-project: %s", quota) < 0) {
			g->quota_hdr = NULL;
			return nomem(err);
		}
	}
	if (!strcmp(type, "external_account"))
		return load_external(g, root, path, err);
	if (!strcmp(type, "impersonated_service_account"))
		return load_impersonated(g, root, path, depth, err);
	rc = url_field(root, "token_uri", false, path, &g->token_uri, err);
	if (!rc && !g->token_uri) {
		g->token_uri = strdup(GAUTH_TOKEN_URI);
		rc = g->token_uri ? 0 : nomem(err);
	}
	if (rc)
		return rc;
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
			return rc;
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
			"credentials '%s' are of type '%.40s': only authorized_user, "
			"service_account, external_account and impersonated_service_account are "
			"supported (or set access_token_command)",
			path, type);
		rc = -EINVAL;
	}
	return rc;
}

static int load_credentials(struct gauth *g, const char *path, struct bfs_err *err)
{
	char *text = NULL;
	cJSON *root;
	int rc;

	rc = read_small_file(path, &text, err);
	if (rc)
		return rc;
	root = cJSON_Parse(text);
	explicit_bzero(text, strlen(text));
	free(text);
	rc = load_json(g, root, path, 0, err);
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
		err_set(err, GAUTH_NO_CREDS);
		free(p);
		return -ENOENT;
	}
	*out = p;
	return 0;
}

static int fetch_metadata(struct gauth *g, enum http_retry retry, struct bfs_err *err);

/*
 * No credentials file anywhere: the metadata server, as Google's libraries do on GCE, GKE and
 * Cloud Run (GCE_METADATA_HOST names another host[:port], as for them). Its first token is
 * fetched now without retries: off Google Cloud the mount fails at once with ADC's advice.
 */
static int use_metadata(struct gauth *g, struct bfs_err *err)
{
	const char *host = getenv("GCE_METADATA_HOST");
	struct bfs_err why = BFS_ERR_INIT;
	int rc;

	if (!host || !*host)
		host = GAUTH_META_HOST;
	if (http_has_ctl(host) || strpbrk(host, "/?#@ ")) {
		err_set(err, "GCE_METADATA_HOST is not a host[:port]");
		return -EINVAL;
	}
	if (asprintf(&g->meta_url, "http://%s" GAUTH_META_PATH, host) < 0) {
		g->meta_url = NULL;
		return nomem(err);
	}
	g->kind = GAUTH_METADATA;
	if (!g->http)
		return 0; /* unit tests: nothing to ask */
	pthread_mutex_lock(&g->lock);
	rc = fetch_metadata(g, HTTP_RETRY_NONE, &why);
	pthread_mutex_unlock(&g->lock);
	if (rc) {
		err_set(err, GAUTH_NO_CREDS " (and the metadata server at %s: %s)", host, why.msg);
		rc = -ENOENT;
	}
	return rc;
}

/* quota_project_id: the remote's key, else $GOOGLE_CLOUD_QUOTA_PROJECT, else the file's. */
static int quota_project(struct gauth *g, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *q = conf_get(conf, "quota_project_id", NULL);

	if (!q || !*q)
		q = getenv("GOOGLE_CLOUD_QUOTA_PROJECT");
	if (!q || !*q)
		return 0;
	if (http_has_ctl(q)) {
		err_set(err, "quota_project_id spans lines");
		return -EINVAL;
	}
	free(g->quota_hdr);
	if (asprintf(&g->quota_hdr, "x-goog-user-project: %s", q) < 0) {
		g->quota_hdr = NULL;
		return nomem(err);
	}
	return 0;
}

static const char *kind_name(enum gauth_kind k)
{
	switch (k) {
	case GAUTH_COMMAND:
		return "access_token_command";
	case GAUTH_USER:
		return "an authorized_user file";
	case GAUTH_SERVICE:
		return "a service_account key";
	case GAUTH_METADATA:
		return "the metadata server";
	case GAUTH_EXTERNAL:
		return "an external_account file";
	case GAUTH_IMPERSONATED:
		return "an impersonated_service_account file";
	}
	return "?";
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
	} else {
		rc = credentials_path(conf, &path, err);
		if (!rc)
			rc = load_credentials(g, path, err);
		else if (rc == -ENOENT)
			rc = use_metadata(g, err);
	}
	if (!rc)
		rc = quota_project(g, conf, err);
	if (rc)
		err_prefix(err, "[%s]", conf->name);
out:
	free(path);
	if (rc) {
		gauth_free(g);
		return rc;
	}
	log_debug("remote '%s': Google credentials from %s%s", conf->name, kind_name(g->kind),
		  g->quota_hdr ? ", with a quota project" : "");
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
	free(g->quota_hdr);
	free(g->meta_url);
	free(g->audience);
	free(g->subject_type);
	free(g->src.file);
	free(g->src.url);
	for (int i = 0; i < GAUTH_SRC_HEADERS; i++)
		conf_secret_free(g->src.headers[i]);
	free(g->src.field);
	free(g->src.command);
	free(g->imp_url);
	cJSON_free(g->delegates);
	gauth_free(g->source);
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

/*
 * Makes tok (copied) the current token, good for secs from now (monotonic ms): refreshed
 * ahead of expiry (google-auth's threshold), or at 3/4 of a short life.
 */
static int set_token(struct gauth *g, const char *tok, double secs, int64_t now,
		     struct bfs_err *err)
{
	int64_t life_ms, early_ms;

	if (!tok || !*tok || http_has_ctl(tok) || strlen(tok) > GAUTH_TOKEN_MAX ||
	    !(secs > 0 && secs < 1e7)) {
		err_set(err, "the token endpoint's answer has no usable access token or lifetime");
		return -EBADMSG;
	}
	conf_secret_free(g->token);
	g->token = strdup(tok);
	if (!g->token)
		return nomem(err);
	life_ms = (int64_t)(secs * 1000);
	early_ms = life_ms / 4 < GAUTH_EARLY_MS ? life_ms / 4 : GAUTH_EARLY_MS;
	g->refresh_at = now + life_ms - early_ms;
	return 0;
}

/* expires_in as a number or a string of one (Azure and some Google servers send strings). */
static double json_seconds(const cJSON *root, const char *key, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);

	if (cJSON_IsNumber(v))
		return v->valuedouble;
	if (cJSON_IsString(v))
		return strtod(v->valuestring, NULL);
	return def;
}

/* An OAuth token answer (RFC 6749 5.1, RFC 8693 2.2.1): {access_token, expires_in}. */
static int take_token(struct gauth *g, const struct buf *resp, int64_t now, struct bfs_err *err)
{
	cJSON *root = resp->data ? cJSON_ParseWithLength(resp->data, resp->len) : NULL;
	int rc = set_token(g, json_nonempty(root, "access_token"),
			   json_seconds(root, "expires_in", GAUTH_EXPIRES_DEF_S), now, err);

	json_wipe_delete(root);
	return rc;
}

/*
 * One call of the token flows: body (form or JSON, per headers) or none for a GET, the answer
 * collected in resp (which the caller wipes). Idempotent retries: every exchange here only
 * mints a token (google-auth retries 500, 503, 504, 408, 429 too).
 */
static int gauth_call(struct gauth *g, enum http_method m, const char *url,
		      const char *const *headers, const char *body, enum http_retry retry,
		      struct buf *resp, struct bfs_err *err)
{
	struct http_mem_body mb;
	struct http_body hb;
	struct http_request rq = {
		.method = m,
		.url = url,
		.headers = headers,
		.body = body ? &hb : NULL,
		.retry = retry,
		.resp = resp,
	};

	if (!g->http) {
		err_set(err, "no HTTP client");
		return -EINVAL;
	}
	if (body)
		http_mem_body_init(&mb, &hb, body, strlen(body));
	return http_perform(g->http, &rq, NULL, err);
}

static void resp_wipe(struct buf *resp)
{
	if (resp->data)
		explicit_bzero(resp->data, resp->len);
	buf_release(resp);
}

/* The metadata server's token for the instance's default service account. */
static int fetch_metadata(struct gauth *g, enum http_retry retry, struct bfs_err *err)
{
	static const char *const headers[] = {"Metadata-Flavor: Google", "Accept: application/json",
					      NULL};
	struct buf resp = BUF_INIT(GAUTH_RESP_MAX);
	int64_t now = timefmt_mono_ms();
	int rc;

	rc = gauth_call(g, HTTP_GET, g->meta_url, headers, NULL, retry, &resp, err);
	if (!rc)
		rc = take_token(g, &resp, now, err);
	if (!rc)
		log_debug("remote '%s': new Google access token (metadata server)", g->name);
	resp_wipe(&resp);
	return rc;
}

/* POSIX shell single-quoting of s appended to b. */
static int shell_quote(struct buf *b, const char *s)
{
	int rc = buf_addstr(b, "'");

	for (; !rc && *s; s++)
		rc = *s == '\'' ? buf_addstr(b, "'\\''") : buf_add(b, s, 1);
	return rc ? rc : buf_addstr(b, "'");
}

/*
 * An executable source (AIP-4117): the command runs with the GOOGLE_EXTERNAL_ACCOUNT_*
 * variables Google defines, non-interactive, and prints {version, success, token_type,
 * id_token | saml_response, expiration_time}.
 */
static int subject_exec(struct gauth *g, char **out, struct bfs_err *err)
{
	struct remote_conf rc_ = {0};
	struct buf cmd = BUF_INIT(64 * 1024);
	char *text = NULL;
	cJSON *root = NULL;
	const char *tok, *type;
	const cJSON *exp;
	int rc;

	snprintf(rc_.name, sizeof(rc_.name), "%s", g->name);
	rc_.command_timeout = (double)g->src.timeout_ms / 1000;
	rc = buf_addstr(&cmd, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE=");
	if (!rc)
		rc = shell_quote(&cmd, g->audience);
	if (!rc)
		rc = buf_addstr(&cmd, " GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE=");
	if (!rc)
		rc = shell_quote(&cmd, g->subject_type);
	if (!rc)
		rc = buf_addstr(&cmd, " GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0; export "
				      "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE "
				      "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE "
				      "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE; ");
	if (!rc)
		rc = buf_addstr(&cmd, g->src.command);
	if (rc) {
		rc = nomem(err);
		goto out;
	}
	text = conf_command_output(&rc_, "the external_account executable", cmd.data, err);
	if (!text) {
		rc = -EACCES;
		goto out;
	}
	root = cJSON_Parse(text);
	type = json_nonempty(root, "token_type");
	exp = cJSON_GetObjectItemCaseSensitive(root, "expiration_time");
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "success"))) {
		const char *code = json_nonempty(root, "code");

		err_set(err, "the external_account executable reported failure (%.60s)",
			code && !http_has_ctl(code) ? code : "no code");
		rc = -EACCES;
		goto out;
	}
	if (cJSON_IsNumber(exp) && exp->valuedouble * 1000 <= (double)timefmt_now_ms()) {
		err_set(err, "the external_account executable printed an expired token");
		rc = -EACCES;
		goto out;
	}
	tok = json_nonempty(root, type && strstr(type, "saml2") ? "saml_response" : "id_token");
	if (!tok || !(*out = strdup(tok))) {
		err_set(err, "the external_account executable printed no subject token");
		rc = -EACCES;
	}
out:
	json_wipe_delete(root);
	conf_secret_free(text);
	buf_release(&cmd);
	return rc;
}

/* The subject token of an external_account: from its file, URL or executable. */
static int subject_token(struct gauth *g, char **out, struct bfs_err *err)
{
	struct buf resp = BUF_INIT(GAUTH_RESP_MAX);
	char *text = NULL;
	cJSON *root = NULL;
	const char *tok;
	int rc;

	*out = NULL;
	if (g->src.command)
		return subject_exec(g, out, err);
	if (g->src.file) {
		rc = read_small_file(g->src.file, &text, err);
	} else {
		rc = gauth_call(g, HTTP_GET, g->src.url, (const char *const *)g->src.headers, NULL,
				HTTP_RETRY_IDEMPOTENT, &resp, err);
		if (!rc) {
			text = buf_detach(&resp, NULL);
			rc = text ? 0 : nomem(err);
		}
	}
	if (rc) {
		err_prefix(err, "cannot read the external_account subject token");
		goto out;
	}
	if (g->src.field) {
		root = cJSON_Parse(text);
		tok = json_nonempty(root, g->src.field);
	} else {
		size_t n = strlen(text);

		while (n > 0 && strchr("\r\n \t", text[n - 1]))
			text[--n] = '\0';
		tok = text;
	}
	if (!tok || !*tok || !(*out = strdup(tok))) {
		err_set(err, "the external_account subject token is empty%s",
			g->src.field ? " or not in the JSON field named" : "");
		rc = -EACCES;
	}
out:
	json_wipe_delete(root);
	conf_secret_free(text);
	resp_wipe(&resp);
	return rc;
}

/*
 * iamcredentials generateAccessToken with bearer (the caller's token): the impersonated
 * service account's token, {accessToken, expireTime (RFC 3339)}.
 */
static int generate_token(struct gauth *g, const char *bearer, struct bfs_err *err)
{
	const char *headers[] = {bearer, "Content-Type: application/json",
				 "Accept: application/json", NULL};
	struct buf resp = BUF_INIT(GAUTH_RESP_MAX);
	int64_t now = timefmt_mono_ms(), wall = timefmt_now_ms(), exp_ms = 0;
	cJSON *root = NULL;
	char *body = NULL;
	const char *when;
	int rc;

	if (asprintf(&body, "{\"scope\":[\"%s\"],\"lifetime\":\"%ds\"%s%s%s}", GAUTH_SCOPE,
		     g->imp_lifetime > 0 ? g->imp_lifetime : GAUTH_JWT_LIFETIME,
		     g->delegates ? ",\"delegates\":" : "", g->delegates ? g->delegates : "",
		     "") < 0) {
		body = NULL;
		return nomem(err);
	}
	rc = gauth_call(g, HTTP_POST, g->imp_url, headers, body, HTTP_RETRY_IDEMPOTENT, &resp, err);
	if (rc) {
		err_prefix(err, "service account impersonation");
		goto out;
	}
	root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
	when = json_nonempty(root, "expireTime");
	if (when && timefmt_parse(when, &exp_ms))
		exp_ms = 0;
	rc = set_token(g, json_nonempty(root, "accessToken"), (double)(exp_ms - wall) / 1000, now,
		       err);
out:
	json_wipe_delete(root);
	resp_wipe(&resp);
	free(body);
	return rc;
}

/*
 * Workload identity federation: the subject token exchanged at STS (RFC 8693) for a federated
 * token, which is the access token, or with service_account_impersonation_url is traded for
 * the service account's own.
 */
static int fetch_external(struct gauth *g, struct bfs_err *err)
{
	static const char *const headers[] = {
		"Content-Type: application/x-www-form-urlencoded",
		"Accept: application/json",
		NULL,
	};
	struct buf resp = BUF_INIT(GAUTH_RESP_MAX);
	int64_t now = timefmt_mono_ms();
	char *subject = NULL, *form = NULL, *bearer = NULL;
	int rc;

	rc = subject_token(g, &subject, err);
	if (rc)
		goto out;
	{
		const char *kv[] = {"grant_type",
				    GAUTH_STS_GRANT,
				    "audience",
				    g->audience,
				    "scope",
				    GAUTH_SCOPE,
				    "requested_token_type",
				    GAUTH_ACCESS_TYPE,
				    "subject_token",
				    subject,
				    "subject_token_type",
				    g->subject_type,
				    NULL};

		form = form_body(kv);
	}
	if (!form) {
		rc = nomem(err);
		goto out;
	}
	rc = gauth_call(g, HTTP_POST, g->token_uri, headers, form, HTTP_RETRY_IDEMPOTENT, &resp,
			err);
	if (rc) {
		err_prefix(err, "the STS token exchange");
		goto out;
	}
	rc = take_token(g, &resp, now, err);
	if (rc || !g->imp_url)
		goto out;
	/* The federated token is only the means to the service account's. */
	if (asprintf(&bearer, "Authorization: Bearer %s", g->token) < 0) {
		bearer = NULL;
		rc = nomem(err);
		goto out;
	}
	conf_secret_free(g->token);
	g->token = NULL;
	rc = generate_token(g, bearer, err);
out:
	if (!rc)
		log_debug("remote '%s': new Google access token (external_account%s)", g->name,
			  g->imp_url ? ", impersonated" : "");
	resp_wipe(&resp);
	conf_secret_free(bearer);
	conf_secret_free(form);
	conf_secret_free(subject);
	return rc;
}

/*
 * impersonated_service_account: the source credential's token (its own lock, always taken
 * after ours, so never in the other order) buys the target's; a 401 means the source token
 * was revoked early: once more with a fresh one.
 */
static int fetch_impersonated(struct gauth *g, struct bfs_err *err)
{
	int rc = 0;

	for (int attempt = 0; attempt < 2; attempt++) {
		char *hdr = NULL;

		rc = gauth_header(g->source, &hdr, err);
		if (rc)
			return rc;
		rc = generate_token(g, hdr, err);
		if (rc == -EACCES && !attempt)
			gauth_reject(g->source, hdr);
		gauth_header_free(hdr);
		if (rc != -EACCES)
			break;
	}
	if (!rc)
		log_debug("remote '%s': new Google access token (impersonated_service_account)",
			  g->name);
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
		switch (g->kind) {
		case GAUTH_COMMAND:
			rc = fetch_command(g, err);
			break;
		case GAUTH_METADATA:
			rc = fetch_metadata(g, HTTP_RETRY_IDEMPOTENT, err);
			break;
		case GAUTH_EXTERNAL:
			rc = fetch_external(g, err);
			break;
		case GAUTH_IMPERSONATED:
			rc = fetch_impersonated(g, err);
			break;
		default:
			rc = fetch_grant(g, err);
		}
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

const char *gauth_quota_header(const struct gauth *g)
{
	return g ? g->quota_hdr : NULL;
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
