// SPDX-License-Identifier: MIT
/*
 * Unit tests: Google credentials without a network. base64url, the RS256 JWT (signature
 * checked with the public half of a key made here), and gauth_new() on good and bad files,
 * whose messages name the file but never its secrets.
 */
#include <errno.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "gauth.h"
#include "tap.h"

#define SECRET "very-secret-refresh-token-1f2e3d"

/* base64url without padding -> bytes (for checking only). Returns the length or -1. */
static int b64url_decode(const char *in, unsigned char *out, size_t size)
{
	size_t n = strlen(in), m = (n + 3) / 4 * 4;
	char *tmp = calloc(1, m + 1);
	int k;

	if (!tmp || m / 4 * 3 > size) {
		free(tmp);
		return -1;
	}
	for (size_t i = 0; i < m; i++)
		tmp[i] = i >= n ? '=' : in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	k = EVP_DecodeBlock(out, (const unsigned char *)tmp, (int)m);
	free(tmp);
	if (k < 0)
		return -1;
	return k - (int)(m - n); /* EVP_DecodeBlock counts the padding as zero bytes */
}

static void test_b64url(void)
{
	static const unsigned char raw[] = {0xfb, 0xff, 0xfe};
	char *s;

	s = gauth_b64url((const unsigned char *)"", 0);
	is_str(s, "", "empty input");
	free(s);
	s = gauth_b64url((const unsigned char *)"f", 1);
	is_str(s, "Zg", "one byte, no padding");
	free(s);
	s = gauth_b64url((const unsigned char *)"foob", 4);
	is_str(s, "Zm9vYg", "four bytes");
	free(s);
	s = gauth_b64url(raw, 3);
	is_str(s, "-__-", "the URL-safe alphabet");
	free(s);
}

static char *key_pem(EVP_PKEY *key)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long n;

	if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1) {
		n = BIO_get_mem_data(bio, &data);
		out = strndup(data, (size_t)n);
	}
	BIO_free(bio);
	return out;
}

static void test_jwt(void)
{
	EVP_PKEY *key = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
	char *pem = key ? key_pem(key) : NULL, *ec_pem = ec ? key_pem(ec) : NULL;
	char *jwt = NULL, *dot1, *dot2, part[2048];
	unsigned char sig[1024], json[2048];
	struct bfs_err err = BFS_ERR_INIT;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int n, rc;

	ok(pem && ec_pem && md, "keys made");
	rc = gauth_jwt(pem, "kid1", "sa@p.iam.gserviceaccount.com", "https://t.example/token",
		       1700000000, &jwt, &err);
	is_int(rc, 0, "a JWT is built (%s)", err.msg);
	dot1 = jwt ? strchr(jwt, '.') : NULL;
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	ok(dot1 && dot2 && !strchr(dot2 + 1, '.'), "three parts");
	if (!dot2)
		goto out;
	snprintf(part, sizeof(part), "%.*s", (int)(dot1 - jwt), jwt);
	n = b64url_decode(part, json, sizeof(json) - 1);
	json[n > 0 ? n : 0] = '\0';
	is_str((char *)json, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"kid1\"}", "header");
	snprintf(part, sizeof(part), "%.*s", (int)(dot2 - dot1 - 1), dot1 + 1);
	n = b64url_decode(part, json, sizeof(json) - 1);
	json[n > 0 ? n : 0] = '\0';
	is_str((char *)json,
	       "{\"iss\":\"sa@p.iam.gserviceaccount.com\",\"scope\":\"https://www.googleapis.com/"
	       "auth/cloud-platform\",\"aud\":\"https://t.example/token\",\"iat\":1700000000,"
	       "\"exp\":1700003600}",
	       "claims");
	n = b64url_decode(dot2 + 1, sig, sizeof(sig));
	is_int(n, 256, "a 2048-bit signature");
	ok(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
		   EVP_DigestVerify(md, sig, (size_t)n, (const unsigned char *)jwt,
				    (size_t)(dot2 - jwt)) == 1,
	   "the RS256 signature verifies with the public key");
	free(jwt);
	jwt = NULL;
	rc = gauth_jwt(ec_pem, NULL, "a", "b", 1, &jwt, &err);
	is_int(rc, -EINVAL, "an EC key is refused");
	ok(strstr(err.msg, "RSA") && !jwt, "and says RSA (%s)", err.msg);
	rc = gauth_jwt("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", NULL, "a",
		       "b", 1, &jwt, &err);
	is_int(rc, -EINVAL, "a broken PEM is refused");
out:
	free(jwt);
	free(pem);
	free(ec_pem);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ec);
}

/* A remote with the given key/value pairs (NULL-terminated). */
static void make_conf(struct remote_conf *rc, struct conf_kv *kv, const char *const *pairs)
{
	size_t n = 0;

	memset(rc, 0, sizeof(*rc));
	snprintf(rc->name, sizeof(rc->name), "v");
	for (; pairs[2 * n]; n++) {
		kv[n].key = (char *)pairs[2 * n];
		kv[n].value = (char *)pairs[2 * n + 1];
	}
	rc->kv = kv;
	rc->nkv = n;
}

static int try_file(const char *content, char *path, struct bfs_err *err)
{
	struct remote_conf rc;
	struct conf_kv kv[4];
	struct gauth *g = NULL;
	const char *pairs[] = {"credentials", path, NULL};
	FILE *f;
	int rc_;

	if (content) {
		f = fopen(path, "w");
		if (!f)
			return -EIO;
		fputs(content, f);
		fclose(f);
	}
	make_conf(&rc, kv, pairs);
	err_clear(err);
	rc_ = gauth_new(&g, &rc, NULL, err);
	gauth_free(g);
	return rc_;
}

static void test_new(void)
{
	EVP_PKEY *key = EVP_RSA_gen(1024);
	char *pem = key ? key_pem(key) : NULL;
	char path[] = "/tmp/batchfs-test-gauth-XXXXXX";
	char file[sizeof(path) + 16], sa[4096], *esc = NULL;
	struct bfs_err err = BFS_ERR_INIT;
	struct gauth *g = NULL;
	struct remote_conf rc;
	struct conf_kv kv[4];
	const char *cmd[] = {"access_token_command", "echo tok", NULL};
	bool made = mkdtemp(path) != NULL; /* once: ok() evaluates its condition twice */
	int r;

	ok(made && pem, "temp dir and key");
	snprintf(file, sizeof(file), "%s/creds.json", path);

	r = try_file(NULL, file, &err);
	is_int(r, -ENOENT, "a missing file");
	ok(strstr(err.msg, file) != NULL, "is named (%s)", err.msg);

	r = try_file("{\"type\":\"external_account\",\"x\":\"" SECRET "\"}", file, &err);
	is_int(r, -EINVAL, "an unsupported type");
	ok(strstr(err.msg, "external_account") && !strstr(err.msg, SECRET),
	   "is named without the file's secrets (%s)", err.msg);

	r = try_file("{\"type\":\"authorized_user\",\"client_id\":\"c\",\"client_secret\":\"" SECRET
		     "\"}",
		     file, &err);
	is_int(r, -EINVAL, "an authorized_user without refresh_token");
	ok(strstr(err.msg, "refresh_token") && !strstr(err.msg, SECRET), "says so (%s)", err.msg);

	r = try_file("{\"type\":\"authorized_user\",\"client_id\":\"c\",\"client_secret\":\"s\","
		     "\"refresh_token\":\"" SECRET "\",\"token_uri\":\"ftp://x\"}",
		     file, &err);
	is_int(r, -EINVAL, "a token_uri that is not http(s)");

	r = try_file("{\"type\":\"authorized_user\",\"client_id\":\"c\",\"client_secret\":\"s\","
		     "\"refresh_token\":\"" SECRET "\"}",
		     file, &err);
	is_int(r, 0, "a good authorized_user file (%s)", err.msg);

	/* JSON-escape the PEM's newlines for a service-account file. */
	esc = calloc(1, 2 * strlen(pem) + 1);
	for (size_t i = 0, j = 0; esc && pem[i]; i++) {
		if (pem[i] == '\n') {
			esc[j++] = '\\';
			esc[j++] = 'n';
		} else {
			esc[j++] = pem[i];
		}
	}
	snprintf(sa, sizeof(sa),
		 "{\"type\":\"service_account\",\"client_email\":\"a@b\",\"private_key_id\":\"k\","
		 "\"private_key\":\"%s\"}",
		 esc ? esc : "");
	r = try_file(sa, file, &err);
	is_int(r, 0, "a good service_account file (%s)", err.msg);
	r = try_file("{\"type\":\"service_account\",\"client_email\":\"a@b\",\"private_key\":"
		     "\"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n\"}",
		     file, &err);
	is_int(r, -EINVAL, "a service_account with an unreadable key fails at once");
	ok(strstr(err.msg, "private_key") && !strstr(err.msg, "AAAA"), "says so (%s)", err.msg);

	make_conf(&rc, kv, cmd);
	r = gauth_new(&g, &rc, NULL, &err);
	is_int(r, 0, "access_token_command needs no file");
	gauth_free(g);

	unlink(file);
	rmdir(path);
	free(esc);
	free(pem);
	EVP_PKEY_free(key);
}

/* Writes content to path and opens it with the extra key pairs; *out keeps the result. */
static int open_file(const char *content, const char *path, const char *k, const char *v,
		     struct gauth **out, struct bfs_err *err)
{
	struct remote_conf rc;
	struct conf_kv kv[4];
	const char *pairs[] = {"credentials", path, k, v, NULL};
	FILE *f = fopen(path, "w");

	*out = NULL;
	if (!f)
		return -EIO;
	fputs(content, f);
	fclose(f);
	make_conf(&rc, kv, pairs);
	err_clear(err);
	return gauth_new(out, &rc, NULL, err);
}

#define EXT_HEAD                                                                  \
	"{\"type\":\"external_account\",\"audience\":\"//iam.googleapis.com/x\"," \
	"\"subject_token_type\":\"urn:ietf:params:oauth:token-type:jwt\","        \
	"\"token_url\":\"https://sts.googleapis.com/v1/token\","

static void test_cloud_identities(void)
{
	char path[] = "/tmp/batchfs-test-gauth-XXXXXX";
	char file[sizeof(path) + 16];
	struct bfs_err err = BFS_ERR_INIT;
	struct gauth *g = NULL;
	bool made = mkdtemp(path) != NULL;
	int r;

	ok(made, "temp dir");
	snprintf(file, sizeof(file), "%s/creds.json", path);
	unsetenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES");
	unsetenv("GOOGLE_CLOUD_QUOTA_PROJECT");

	r = open_file(EXT_HEAD "\"credential_source\":{\"file\":\"/var/run/token\"},"
			       "\"quota_project_id\":\"qp\"}",
		      file, NULL, NULL, &g, &err);
	is_int(r, 0, "external_account, file-sourced (%s)", err.msg);
	is_str(gauth_quota_header(g), "x-goog-user-project: qp", "the file's quota project");
	gauth_free(g);

	r = open_file(EXT_HEAD
		      "\"credential_source\":{\"url\":\"http://169.254.169.254/t\","
		      "\"headers\":{\"Metadata\":\"True\"},\"format\":{\"type\":"
		      "\"json\",\"subject_token_field_name\":\"access_token\"}},"
		      "\"service_account_impersonation_url\":\"https://iamcredentials."
		      "googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken\","
		      "\"quota_project_id\":\"qp\"}",
		      file, "quota_project_id", "mine", &g, &err);
	is_int(r, 0, "external_account, URL-sourced JSON, impersonated (%s)", err.msg);
	is_str(gauth_quota_header(g), "x-goog-user-project: mine", "the remote's key wins");
	gauth_free(g);

	r = open_file(EXT_HEAD "\"credential_source\":{\"url\":\"http://x/t\",\"format\":"
			       "{\"type\":\"json\"}}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, -EINVAL, "a json format needs subject_token_field_name");
	ok(strstr(err.msg, "subject_token_field_name") != NULL, "says so (%s)", err.msg);

	r = open_file(EXT_HEAD "\"credential_source\":{\"environment_id\":\"aws1\"}}", file, NULL,
		      NULL, &g, &err);
	is_int(r, -EINVAL, "an AWS source is refused");
	ok(strstr(err.msg, "external_account") != NULL, "naming the type (%s)", err.msg);

	r = open_file(EXT_HEAD "\"credential_source\":{\"executable\":{\"command\":"
			       "\"/bin/echo " SECRET "\"}}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, -EPERM, "an executable source without Google's opt-in");
	ok(strstr(err.msg, "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1") &&
		   !strstr(err.msg, SECRET),
	   "names the variable, not the command (%s)", err.msg);
	setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1", 1);
	r = open_file(EXT_HEAD "\"credential_source\":{\"executable\":{\"command\":"
			       "\"/bin/true\"}}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, 0, "an executable source with it (%s)", err.msg);
	gauth_free(g);
	unsetenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES");

	r = open_file("{\"type\":\"impersonated_service_account\","
		      "\"service_account_impersonation_url\":\"https://iamcredentials.googleapis."
		      "com/v1/projects/-/serviceAccounts/a@b:generateAccessToken\","
		      "\"delegates\":[\"projects/-/serviceAccounts/c@d\"],"
		      "\"source_credentials\":{\"type\":\"authorized_user\",\"client_id\":"
		      "\"c\",\"client_secret\":\"s\",\"refresh_token\":\"" SECRET "\"}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, 0, "impersonated_service_account over an authorized_user (%s)", err.msg);
	ok(gauth_quota_header(g) == NULL, "no quota project unless one is set");
	gauth_free(g);

	r = open_file("{\"type\":\"impersonated_service_account\","
		      "\"service_account_impersonation_url\":\"https://x/y\","
		      "\"source_credentials\":{\"type\":\"authorized_user\",\"client_id\":"
		      "\"c\",\"client_secret\":\"" SECRET "\"}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, -EINVAL, "a bad source fails at open");
	ok(strstr(err.msg, "refresh_token") && !strstr(err.msg, SECRET), "says why (%s)", err.msg);

	r = open_file("{\"type\":\"impersonated_service_account\","
		      "\"service_account_impersonation_url\":\"https://x/y\","
		      "\"source_credentials\":{\"type\":\"impersonated_service_account\","
		      "\"service_account_impersonation_url\":\"https://x/y\","
		      "\"source_credentials\":{}}}",
		      file, NULL, NULL, &g, &err);
	is_int(r, -EINVAL, "an impersonation of an impersonation is refused");

	unlink(file);
	rmdir(path);
}

/* No file anywhere: the metadata server (no HTTP client here, so nothing is fetched). */
static void test_metadata_fallback(void)
{
	char home[] = "/tmp/batchfs-test-gauth-home-XXXXXX";
	struct bfs_err err = BFS_ERR_INIT;
	struct gauth *g = NULL;
	struct remote_conf rc;
	struct conf_kv kv[2];
	const char *pairs[] = {"quota_project_id", "qp2", NULL};
	bool made = mkdtemp(home) != NULL;
	int r;

	ok(made, "empty HOME");
	setenv("HOME", home, 1);
	unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
	unsetenv("CLOUDSDK_CONFIG");
	setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);
	make_conf(&rc, kv, pairs);
	r = gauth_new(&g, &rc, NULL, &err);
	is_int(r, 0, "no credentials file: the metadata server (%s)", err.msg);
	is_str(gauth_quota_header(g), "x-goog-user-project: qp2",
	       "with the remote's quota project");
	gauth_free(g);
	g = NULL;
	setenv("GCE_METADATA_HOST", "evil.example/path?", 1);
	r = gauth_new(&g, &rc, NULL, &err);
	is_int(r, -EINVAL, "GCE_METADATA_HOST must be a host[:port]");
	gauth_free(g);
	unsetenv("GCE_METADATA_HOST");
	rmdir(home);
}

int main(void)
{
	test_b64url();
	test_jwt();
	test_new();
	test_cloud_identities();
	test_metadata_fallback();
	return tap_done();
}
