/* SPDX-License-Identifier: MIT */
/*
 * Google OAuth2 access tokens for Vertex AI and Cloud Storage (spec C.8), in Google's order:
 * a configured access_token_command, else an Application Default Credentials file of type
 * authorized_user (refresh-token grant), service_account (RS256 JWT bearer grant),
 * external_account (workload identity federation: a file, URL or, with
 * GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1, executable subject token exchanged at STS, then
 * optionally for a service account's token) or impersonated_service_account (iamcredentials
 * generateAccessToken with a source credential's token), else the metadata server of GCE, GKE
 * or Cloud Run ($GCE_METADATA_HOST, default metadata.google.internal). Tokens live in this
 * module's memory only; nothing secret is ever logged or written anywhere.
 */
#ifndef BATCHFS_GAUTH_H
#define BATCHFS_GAUTH_H

#include <stddef.h>
#include <stdint.h>

struct bfs_err;
struct http;
struct remote_conf;
struct gauth;

#define GAUTH_SCOPE "https://www.googleapis.com/auth/cloud-platform"

/*
 * Reads the remote's keys access_token_command, access_token_ttl (seconds a command's token
 * is reused, default 300), credentials (else $GOOGLE_APPLICATION_CREDENTIALS, else gcloud's
 * application_default_credentials.json) and quota_project_id (else
 * $GOOGLE_CLOUD_QUOTA_PROJECT, else the file's). Parses the credentials file now, so a bad
 * one fails at mount; fetches no token, except from the metadata server when no file is
 * found (once, without retries, so that off Google Cloud the mount fails at once; skipped
 * when http is NULL). http is borrowed and must outlive g. Returns 0, or
 * -EINVAL/-ENOENT/-EPERM/-ENOMEM with the reason (never a secret) in err.
 */
int gauth_new(struct gauth **out, const struct remote_conf *conf, struct http *http,
	      struct bfs_err *err);
/* Wipes every secret and frees g. NULL-safe. */
void gauth_free(struct gauth *g);

/*
 * Sets *hdr to a malloc'd "Authorization: Bearer <token>" header, fetching or refreshing the
 * token first when it is missing or close to expiry. Thread-safe: one thread refreshes while
 * the others wait on g's own lock (held across that network call, never another lock).
 * Returns 0 or -errno with the reason in err. Free *hdr with gauth_header_free().
 */
int gauth_header(struct gauth *g, char **hdr, struct bfs_err *err);
/*
 * "x-goog-user-project: P" when a quota project is configured (the caller sends it beside
 * the token, so that quota and billing go to P), else NULL. Belongs to g.
 */
const char *gauth_quota_header(const struct gauth *g);
/* Wipes and frees a header from gauth_header(). NULL-safe. */
void gauth_header_free(char *hdr);
/*
 * The API answered 401 to a request sent with hdr: forget that token so the next
 * gauth_header() fetches a new one. A newer token (another thread refreshed meanwhile) stays.
 */
void gauth_reject(struct gauth *g, const char *hdr);

/*
 * Builds a signed RS256 JWT for the service-account grant: header {alg, typ, kid} (kid
 * omitted when NULL or ""), claims {iss, scope GAUTH_SCOPE, aud, iat now_s, exp now_s + 3600}.
 * pem is a PKCS#8 or PKCS#1 RSA private key. Sets *jwt (malloc'd) and returns 0, or -EINVAL
 * for a key that is not RSA or not readable, -ENOMEM. Pure apart from libcrypto.
 */
int gauth_jwt(const char *pem, const char *kid, const char *iss, const char *aud, int64_t now_s,
	      char **jwt, struct bfs_err *err);
/* base64url without padding (RFC 7515 section 2) of n bytes into a malloc'd string. */
char *gauth_b64url(const unsigned char *data, size_t n);

#endif
