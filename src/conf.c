// SPDX-License-Identifier: MIT
/*
 * The INI config file (parsed by inih), or remotes made from the environment, or the one
 * offline "mock" remote. Keeps only where secrets live (api_key_env, api_key_command), never
 * the secrets: conf_secret() resolves them on demand and the caller keeps them in memory.
 */
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "conf.h"
#include "err.h"

struct conf_parse {
	struct conf *c;
	struct bfs_err *err;
	int rc;
};

static bool is_remote_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CONF_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9');

		if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
			return false;
	}
	return true;
}

static struct remote_conf *conf_remote(struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->nremotes; i++)
		if (!strcmp(c->remotes[i].name, name))
			return &c->remotes[i];
	return NULL;
}

static struct remote_conf *conf_add_remote(struct conf *c, const char *name)
{
	struct remote_conf *r = realloc(c->remotes, (c->nremotes + 1) * sizeof(*r));

	if (!r)
		return NULL;
	c->remotes = r;
	r = &c->remotes[c->nremotes++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	return r;
}

static int conf_set(struct remote_conf *r, const char *key, const char *value)
{
	struct conf_kv *kv;

	for (size_t i = 0; i < r->nkv; i++) {
		if (!strcmp(r->kv[i].key, key)) {
			char *v = strdup(value);

			if (!v)
				return -ENOMEM;
			free(r->kv[i].value);
			r->kv[i].value = v;
			return 0;
		}
	}
	kv = realloc(r->kv, (r->nkv + 1) * sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	r->kv = kv;
	kv[r->nkv].key = strdup(key);
	kv[r->nkv].value = strdup(value);
	if (!kv[r->nkv].key || !kv[r->nkv].value) {
		free(kv[r->nkv].key);
		free(kv[r->nkv].value);
		return -ENOMEM;
	}
	r->nkv++;
	return 0;
}

static int conf_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct conf_parse *p = user;
	struct remote_conf *r;

	if (!*section) {
		err_set(p->err, "key '%s' outside of a [remote] section", name);
		p->rc = -EINVAL;
		return 0;
	}
	if (!is_remote_name(section)) {
		err_set(p->err, "remote name '%s' is not a valid directory name", section);
		p->rc = -EINVAL;
		return 0;
	}
	if (!strcmp(name, "api_key") || !strcmp(name, "token") || !strcmp(name, "access_token")) {
		err_set(p->err,
			"[%s] %s: keys do not belong in the config file; use api_key_env or "
			"api_key_command",
			section, name);
		p->rc = -EINVAL;
		return 0;
	}
	r = conf_remote(p->c, section);
	if (!r)
		r = conf_add_remote(p->c, section);
	if (!r || conf_set(r, name, value)) {
		p->rc = -ENOMEM;
		return 0;
	}
	return 1;
}

const char *conf_get(const struct remote_conf *rc, const char *key, const char *def)
{
	for (size_t i = 0; i < rc->nkv; i++)
		if (!strcmp(rc->kv[i].key, key))
			return rc->kv[i].value;
	return def;
}

double conf_get_double(const struct remote_conf *rc, const char *key, double def)
{
	const char *v = conf_get(rc, key, NULL);
	char *end;
	double d;

	if (!v || !*v)
		return def;
	d = strtod(v, &end);
	if (*end || !isfinite(d) || d < 0)
		return def;
	return d;
}

static int conf_finish_remote(struct remote_conf *r, struct bfs_err *err)
{
	static const char *const known[] = {"anthropic", "openai", "azure", "vertex", "mock"};
	const char *p = conf_get(r, "provider", NULL);
	const char *keys[] = {"poll_interval", "list_interval", "reconcile_grace"};
	bool ok = false;

	if (!p) {
		err_set(err, "[%s] has no 'provider' (anthropic, openai, azure, vertex or mock)",
			r->name);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		ok |= !strcmp(p, known[i]);
	if (!ok) {
		err_set(err,
			"[%s] unknown provider '%s' (anthropic, openai, azure, vertex or mock)",
			r->name, p);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = conf_get(r, keys[i], NULL);
		char *end;

		if (v && (strtod(v, &end) <= 0 || *end)) {
			err_set(err, "[%s] %s must be a positive number of seconds, not '%s'",
				r->name, keys[i], v);
			return -EINVAL;
		}
	}
	r->provider = strdup(p);
	if (!r->provider)
		return -ENOMEM;
	/* The mock lives seconds, not hours: poll it often so a first try feels alive. */
	r->poll_interval = conf_get_double(r, "poll_interval", strcmp(p, "mock") ? 30 : 0.5);
	r->list_interval = conf_get_double(r, "list_interval", 300);
	return 0;
}

/* Remotes from the environment (CONTRACT "Starting it"), else the mock. */
static int conf_from_env(struct conf *c)
{
	static const struct {
		const char *remote, *key_env, *need_env;
	} envs[] = {
		{"anthropic", "ANTHROPIC_API_KEY", NULL},
		{"openai", "OPENAI_API_KEY", NULL},
		{"azure", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"},
	};
	struct remote_conf *r;

	for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
		const char *key = getenv(envs[i].key_env);

		if (!key || !*key || (envs[i].need_env && !getenv(envs[i].need_env)))
			continue;
		r = conf_add_remote(c, envs[i].remote);
		if (!r || conf_set(r, "provider", envs[i].remote) ||
		    conf_set(r, "api_key_env", envs[i].key_env))
			return -ENOMEM;
		if (envs[i].need_env && conf_set(r, "endpoint", getenv(envs[i].need_env)))
			return -ENOMEM;
	}
	if (c->nremotes) {
		c->source = strdup("environment");
		return c->source ? 0 : -ENOMEM;
	}
	r = conf_add_remote(c, "mock");
	if (!r || conf_set(r, "provider", "mock"))
		return -ENOMEM;
	c->source = strdup("default (no config file, no API key in the environment)");
	return c->source ? 0 : -ENOMEM;
}

static char *conf_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *path = NULL;

	if (xdg && *xdg) {
		if (asprintf(&path, "%s/batchfs/config", xdg) < 0)
			return NULL;
	} else if (home && *home) {
		if (asprintf(&path, "%s/.config/batchfs/config", home) < 0)
			return NULL;
	}
	return path;
}

int conf_load(struct conf **out, const char *path, struct bfs_err *err)
{
	struct conf_parse p = {0};
	struct conf *c = calloc(1, sizeof(*c));
	char *defpath = NULL;
	FILE *f = NULL;
	int rc = 0, line;

	if (!c)
		return -ENOMEM;
	if (!path) {
		defpath = conf_default_path();
		f = defpath ? fopen(defpath, "r") : NULL;
		if (!f) {
			rc = conf_from_env(c);
			goto out;
		}
		path = defpath;
	} else {
		f = fopen(path, "r");
		if (!f) {
			rc = -errno;
			err_set(err, "cannot read config '%s': %s", path, strerror(errno));
			goto out;
		}
	}
	p.c = c;
	p.err = err;
	line = ini_parse_file(f, conf_ini_handler, &p);
	if (p.rc) {
		rc = p.rc;
		err_prefix(err, "config '%s' line %d", path, line);
		goto out;
	}
	if (line) {
		rc = -EINVAL;
		err_set(err, "config '%s' line %d: not valid INI", path, line);
		goto out;
	}
	if (!c->nremotes) {
		rc = -EINVAL;
		err_set(err, "config '%s' defines no remote", path);
		goto out;
	}
	c->source = strdup(path);
	if (!c->source)
		rc = -ENOMEM;
out:
	for (size_t i = 0; !rc && i < c->nremotes; i++)
		rc = conf_finish_remote(&c->remotes[i], err);
	if (f)
		fclose(f);
	free(defpath);
	if (rc) {
		conf_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void conf_free(struct conf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nremotes; i++) {
		for (size_t j = 0; j < c->remotes[i].nkv; j++) {
			free(c->remotes[i].kv[j].key);
			free(c->remotes[i].kv[j].value);
		}
		free(c->remotes[i].kv);
		free(c->remotes[i].provider);
	}
	free(c->remotes);
	free(c->source);
	free(c);
}

/* First line of a command's stdout; the command runs with /bin/sh, stdin from /dev/null. */
static char *conf_run_command(const char *cmd, struct bfs_err *err)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int st;

	f = popen(cmd, "re");
	if (!f) {
		err_set(err, "cannot run key command: %s", strerror(errno));
		return NULL;
	}
	n = getline(&line, &cap, f);
	/* Drain so the child never dies of SIGPIPE and its status stays meaningful. */
	for (int ch = 0; ch != EOF;)
		ch = fgetc(f);
	st = pclose(f);
	if (n <= 0 || st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		err_set(err, "key command failed (exit status %d) or printed nothing",
			st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		if (line)
			explicit_bzero(line, cap);
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
		line[--n] = '\0';
	return line;
}

char *conf_secret(const struct remote_conf *rc, const char *env_key, const char *cmd_key,
		  const char *default_env, struct bfs_err *err)
{
	const char *envname = env_key ? conf_get(rc, env_key, NULL) : NULL;
	const char *cmd = cmd_key ? conf_get(rc, cmd_key, NULL) : NULL;
	const char *v;
	char *s;

	if (cmd && !envname)
		return conf_run_command(cmd, err);
	if (!envname)
		envname = default_env;
	if (!envname) {
		err_set(err, "[%s] no key configured (%s or %s)", rc->name, env_key ? env_key : "-",
			cmd_key ? cmd_key : "-");
		return NULL;
	}
	v = getenv(envname);
	if (!v || !*v) {
		err_set(err, "[%s] environment variable %s is not set", rc->name, envname);
		return NULL;
	}
	s = strdup(v);
	if (!s)
		err_set(err, "out of memory");
	return s;
}

void conf_secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}
