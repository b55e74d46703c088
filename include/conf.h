/* SPDX-License-Identifier: MIT */
/*
 * The INI config (docs/semantics.md "Mount, sharing and start-up"): one section per remote. Parsed with inih. Without a
 * config file, remotes come from the environment, else one "mock" remote. Secrets are never
 * stored here: only where to find them (api_key_env, api_key_command), resolved on demand.
 */
#ifndef BATCHFS_CONF_H
#define BATCHFS_CONF_H

#include <stdbool.h>
#include <stddef.h>

struct bfs_err;

#define CONF_NAME_MAX 64
/* Seconds a key or token command may run before its process group is killed. */
#define CONF_COMMAND_TIMEOUT_DEFAULT 30
/* Failed results downloads in a row (with growing waits) before results are unavailable. */
#define CONF_RESULTS_ATTEMPTS_DEFAULT 8
/* quota_retry: the first wait (s) and how many resubmits a part gets. */
#define CONF_QUOTA_RETRY_DELAY_DEFAULT	  600
#define CONF_QUOTA_RETRY_ATTEMPTS_DEFAULT 8
/* Azure asks for at least 60 s between status calls of a batch (its batch how-to). */

struct conf_kv {
	char *key;
	char *value;
};

struct remote_conf {
	char name[CONF_NAME_MAX]; /* section name = top-level directory */
	char *provider;		  /* "anthropic", "openai", "azure", "vertex", "mock" */
	double poll_interval;	  /* seconds between polls of an unfinished batch */
	double list_interval;	  /* seconds between listings of the provider's batches */
	double command_timeout;	  /* command_timeout: seconds a key/token command may run */
	bool discover;		  /* discover = all: list the provider for batches made elsewhere */
	int results_attempts;	  /* downloads of a part's results that may fail in a row */
	bool quota_retry;	  /* quota_retry = on: resubmit a part failed for a quota */
	double quota_retry_delay; /* s before the first such resubmit, doubled each time */
	int quota_retry_attempts; /* resubmits of one part before giving up */
	struct conf_kv *kv;	  /* every key of the section, in file order */
	size_t nkv;
};

struct conf {
	struct remote_conf *remotes;
	size_t nremotes;
	char *source; /* the config file, or "environment" / "default" */
};

/*
 * Loads path (NULL: the default location; a missing default file falls back to the
 * environment). Returns 0 or -errno with the reason (file, line) in err. Remote names must be
 * batch-name-like and unique.
 */
int conf_load(struct conf **out, const char *path, struct bfs_err *err);
void conf_free(struct conf *c);
/* A key's value in a remote's section, or def when absent. The string belongs to rc. */
const char *conf_get(const struct remote_conf *rc, const char *key, const char *def);
/* A numeric key; def when absent; -EINVAL in *errp (if non-NULL) when not a number. */
double conf_get_double(const struct remote_conf *rc, const char *key, double def);
/*
 * Resolves the remote's API key: api_key_env (name of an environment variable), else
 * api_key_command (run with /bin/sh, first line of stdout), else `api_key` in the file is
 * refused (keys do not belong in config files shared with the mount). envname is the
 * provider's default variable (e.g. ANTHROPIC_API_KEY), used when neither is set; may be
 * NULL. A command runs in a process group of its own, for at most rc->command_timeout
 * seconds (0: CONF_COMMAND_TIMEOUT_DEFAULT) and no longer than until http_abort_all(); then
 * the group is killed and reaped and err names the remote, the key and the timeout. Blocks.
 * Returns a malloc'd key (the caller wipes and frees it), or NULL with err set.
 */
char *conf_secret(const struct remote_conf *rc, const char *env_key, const char *cmd_key,
		  const char *default_env, struct bfs_err *err);

/*
 * Runs cmd as conf_secret() runs api_key_command (own process group, clean environment,
 * command_timeout) and returns its whole stdout without trailing blanks, malloc'd (a secret:
 * the caller wipes and frees it), or NULL with err naming the remote and what. Blocks.
 */
char *conf_command_output(const struct remote_conf *rc, const char *what, const char *cmd,
			  struct bfs_err *err);

/*
 * Makes the process undumpable (PR_SET_DUMPABLE 0: no core, no ptrace or /proc/<pid>/mem,
 * environ by other processes of the user) with a core size limit of 0. Called once the keys
 * are loaded. Returns 0 or -errno.
 */
int conf_protect_secrets(void);
/* Wipes a secret (from conf_secret() or derived from one) and frees it. NULL-safe. */
void conf_secret_free(char *s);

#endif
