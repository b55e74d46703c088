// SPDX-License-Identifier: MIT
/*
 * The INI config file (parsed by inih), or remotes made from the environment, or the one
 * offline "mock" remote. Keeps only where secrets live (api_key_env, api_key_command), never
 * the secrets: conf_secret() resolves them on demand and the caller keeps them in memory. Key
 * and token commands run here, and only here, each under a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "provider.h"
#include "timefmt.h"

#define CONF_COMMAND_OUT_MAX (64 * 1024) /* stdout kept from a command; the rest is dropped */
#define CONF_COMMAND_MAX_S   1e6	 /* longer timeouts are taken as this (no overflow) */

extern char **environ;

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

/*
 * The defaults of prompt lines (model, max_tokens, temperature) and the cost keys (max_cost
 * in USD, price_file): numbers are checked here so a typo fails the mount, not a commit.
 */
static int check_prompt_keys(const struct remote_conf *r, struct bfs_err *err)
{
	const char *mt = conf_get(r, "max_tokens", NULL);
	const char *t = conf_get(r, "temperature", NULL);
	const char *mc = conf_get(r, "max_cost", NULL);
	const char *m = conf_get(r, "model", NULL);
	const char *pf = conf_get(r, "price_file", NULL);
	char *end;
	double d;

	if (mt) {
		d = strtod(mt, &end);
		if (*end || !(d >= 1 && d <= 1e9) || d != floor(d)) {
			err_set(err, "[%s] max_tokens must be a whole number >= 1, not '%s'",
				r->name, mt);
			return -EINVAL;
		}
	}
	if (t) {
		d = strtod(t, &end);
		if (*end || !(d >= 0 && d <= 2)) {
			err_set(err, "[%s] temperature must be a number from 0 to 2, not '%s'",
				r->name, t);
			return -EINVAL;
		}
	}
	if (mc) {
		d = strtod(mc, &end);
		if (*end || !isfinite(d) || d < 0) {
			err_set(err, "[%s] max_cost must be a number of US dollars, not '%s'",
				r->name, mc);
			return -EINVAL;
		}
	}
	if (m && !*m) {
		err_set(err, "[%s] model must not be empty", r->name);
		return -EINVAL;
	}
	if (pf && !*pf) {
		err_set(err, "[%s] price_file must not be empty", r->name);
		return -EINVAL;
	}
	return 0;
}

/* quota_retry = on|off, quota_retry_attempts (docs/semantics.md "Resubmitting"). */
static int check_quota_keys(struct remote_conf *r, struct bfs_err *err)
{
	const char *on = conf_get(r, "quota_retry", "off");
	const char *n = conf_get(r, "quota_retry_attempts", NULL);

	if (strcmp(on, "on") && strcmp(on, "off")) {
		err_set(err, "[%s] quota_retry must be on or off, not '%.64s'", r->name, on);
		return -EINVAL;
	}
	r->quota_retry = !strcmp(on, "on");
	r->quota_retry_delay =
		conf_get_double(r, "quota_retry_delay", CONF_QUOTA_RETRY_DELAY_DEFAULT);
	r->quota_retry_attempts = CONF_QUOTA_RETRY_ATTEMPTS_DEFAULT;
	if (n) {
		char *end;
		long v = strtol(n, &end, 10);

		if (*end || end == n || v < 1 || v > 100) {
			err_set(err,
				"[%s] quota_retry_attempts must be a whole number from 1 to 100, "
				"not '%.64s'",
				r->name, n);
			return -EINVAL;
		}
		r->quota_retry_attempts = (int)v;
	}
	return 0;
}

static int conf_finish_remote(struct remote_conf *r, struct bfs_err *err)
{
	const char *p = conf_get(r, "provider", NULL);
	const char *keys[] = {"poll_interval",	   "list_interval",	"reconcile_grace",
			      "command_timeout",   "quota_retry_delay", "rate_limit_wait",
			      "list_full_interval"};
	const struct provider_ops *ops = p ? provider_lookup(p) : NULL;
	char names[256];
	const char *disc;
	int rc;

	/* The registry knows the providers: a new one needs no change here. */
	if (!ops) {
		provider_names(names, sizeof(names));
		if (!p)
			err_set(err, "[%s] has no 'provider' (%s)", r->name, names);
		else
			err_set(err, "[%s] unknown provider '%s' (%s)", r->name, p, names);
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
	disc = conf_get(r, "min_poll_interval", NULL);
	if (disc) {
		char *end;
		double v = strtod(disc, &end);

		/* 0 is allowed: it lifts the provider's guidance (a test server). */
		if (*end || end == disc || !(v >= 0)) {
			err_set(err, "[%s] min_poll_interval must be a number of seconds, not '%s'",
				r->name, disc);
			return -EINVAL;
		}
	}
	disc = conf_get(r, "discover", "all");
	if (strcmp(disc, "all") && strcmp(disc, "none")) {
		err_set(err, "[%s] discover must be all or none, not '%s'", r->name, disc);
		return -EINVAL;
	}
	r->discover = !strcmp(disc, "all");
	disc = conf_get(r, "results_attempts", NULL);
	r->results_attempts = CONF_RESULTS_ATTEMPTS_DEFAULT;
	if (disc) {
		char *end;
		long n = strtol(disc, &end, 10);

		if (*end || end == disc || n < 1 || n > 1000) {
			err_set(err,
				"[%s] results_attempts must be a whole number from 1 to 1000, not "
				"'%s'",
				r->name, disc);
			return -EINVAL;
		}
		r->results_attempts = (int)n;
	}
	disc = conf_get(r, "cancel_confirm", "on");
	if (strcmp(disc, "on") && strcmp(disc, "off")) {
		err_set(err, "[%s] cancel_confirm must be on or off, not '%s'", r->name, disc);
		return -EINVAL;
	}
	disc = conf_get(r, "max_concurrent_jobs", NULL);
	if (disc) {
		char *end;
		long n = strtol(disc, &end, 10);

		/* 0: no limit here (the provider's own refusals still queue a part). */
		if (*end || end == disc || n < 0 || n > 100000) {
			err_set(err,
				"[%s] max_concurrent_jobs must be a whole number from 0 to 100000, "
				"not '%s'",
				r->name, disc);
			return -EINVAL;
		}
	}
	rc = check_quota_keys(r, err);
	if (!rc)
		rc = check_prompt_keys(r, err);
	if (rc)
		return rc;
	r->provider = strdup(p);
	if (!r->provider)
		return -ENOMEM;
	r->poll_interval = conf_get_double(
		r, "poll_interval", ops->default_poll_interval ? ops->default_poll_interval : 30);
	r->list_interval = conf_get_double(r, "list_interval", 300);
	r->command_timeout = conf_get_double(r, "command_timeout", CONF_COMMAND_TIMEOUT_DEFAULT);
	return 0;
}

/* Remotes from the environment (docs/semantics.md "Mount, sharing and start-up"), else the mock. */
static int conf_from_env(struct conf *c)
{
	const struct provider_ops *ops;
	struct remote_conf *r;

	/* The providers that say how (provider_ops.env_key), in the registry's order. */
	for (size_t i = 0; (ops = provider_at(i)); i++) {
		const char *key = ops->env_key ? getenv(ops->env_key) : NULL;
		const char *ep = ops->env_endpoint ? getenv(ops->env_endpoint) : NULL;

		if (!key || !*key || (ops->env_endpoint && !ep))
			continue;
		r = conf_add_remote(c, ops->name);
		if (!r || conf_set(r, "provider", ops->name) ||
		    conf_set(r, "api_key_env", ops->env_key))
			return -ENOMEM;
		if (ep && conf_set(r, "endpoint", ep))
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

/*
 * What a key or token command inherits of the daemon's environment: what tools such as
 * `pass`, `op`, `gcloud` or `az` need to find their own stores, and nothing else. Another
 * remote's api_key_env variable (or any variable the user did not mean for it) never reaches
 * the command, nor whatever it starts.
 */
static bool command_env_allowed(const char *kv)
{
	static const char *const names[] = {
		"PATH",
		"HOME",
		"USER",
		"LOGNAME",
		"SHELL",
		"LANG",
		"LANGUAGE",
		"TZ",
		"TMPDIR",
		"TERM",
		"SSH_AUTH_SOCK",
		"GNUPGHOME",
		"GPG_TTY",
		"GPG_AGENT_INFO",
		"KRB5CCNAME",
		"DBUS_SESSION_BUS_ADDRESS",
		"DISPLAY",
		"WAYLAND_DISPLAY",
		"AZURE_CONFIG_DIR",
		"GOOGLE_APPLICATION_CREDENTIALS",
		"SSL_CERT_FILE",
		"SSL_CERT_DIR",
		"CURL_CA_BUNDLE",
		"REQUESTS_CA_BUNDLE",
	};
	static const char *const prefixes[] = {"LC_", "XDG_", "PASSWORD_STORE_", "CLOUDSDK_",
					       "OP_CONFIG_DIR"};
	const char *eq = strchr(kv, '=');
	size_t n = eq ? (size_t)(eq - kv) : strlen(kv);

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && !strncmp(kv, names[i], n))
			return true;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(kv, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

/* The allowed part of environ, as a NULL-ended array of its strings (not copied). */
static char **command_env(void)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ && environ[n])
		n++;
	env = calloc(n + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (command_env_allowed(environ[i]))
			env[k++] = environ[i];
	return env;
}

/*
 * Starts /bin/sh -c cmd in a process group of its own: stdin /dev/null, stdout the write end
 * of out[], stderr ours, no other descriptor, default signal dispositions (the daemon ignores
 * SIGPIPE), the environment of command_env_allowed(). posix_spawn() rather than fork(): other
 * threads may hold locks a forked child would never see released. Returns 0 or -errno.
 */
static int command_spawn(const char *cmd, const int out[2], pid_t *pid)
{
	char *const argv[] = {(char *)"sh", (char *)"-c", (char *)cmd, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	char **env = command_env();
	int rc;

	if (!env)
		return -ENOMEM;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	rc = posix_spawn_file_actions_init(&fa);
	if (rc) {
		free(env);
		return -rc;
	}
	rc = posix_spawnattr_init(&at);
	if (rc) {
		posix_spawn_file_actions_destroy(&fa);
		free(env);
		return -rc;
	}
	rc = posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	if (!rc)
		rc = posix_spawnattr_setpgroup(&at, 0);
	if (!rc)
		rc = posix_spawnattr_setsigmask(&at, &none);
	if (!rc)
		rc = posix_spawnattr_setsigdefault(&at, &dfl);
	if (!rc)
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
							   POSIX_SPAWN_SETSIGDEF);
	if (!rc)
		rc = posix_spawn(pid, "/bin/sh", &fa, &at, argv, env);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	return -rc;
}

/*
 * Runs cmd and keeps up to CONF_COMMAND_OUT_MAX bytes of its stdout in mem (*len of them),
 * until it closes stdout and exits. At the deadline, or when the daemon stops
 * (http_abort_all), its whole process group is killed and reaped: a hung `pass` or `gcloud`
 * never holds a thread. Returns 0 with *wstatus, -ETIMEDOUT, -ECANCELED or -errno.
 */
static int command_collect(const char *cmd, int64_t timeout_ms, char *mem, size_t *len,
			   int *wstatus)
{
	int64_t end = timefmt_mono_ms() + timeout_ms;
	struct pollfd pfd[2];
	bool eof = false, reaped = false;
	int fds[2], rc;
	pid_t pid;

	*len = 0;
	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	rc = command_spawn(cmd, fds, &pid);
	close(fds[1]);
	if (rc) {
		close(fds[0]);
		return rc;
	}
	pfd[0] = (struct pollfd){.fd = fds[0], .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = http_abort_fd(), .events = POLLIN};
	for (;;) {
		int64_t left = end - timefmt_mono_ms();
		char drop[4096];
		ssize_t k;

		if (http_aborted()) {
			rc = -ECANCELED;
			break;
		}
		if (eof) {
			pid_t w = waitpid(pid, wstatus, WNOHANG);

			if (w == pid || (w < 0 && errno != EINTR)) {
				reaped = true;
				rc = w == pid ? 0 : -errno;
				break;
			}
		}
		if (left <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		/* After EOF only the exit is awaited: look every 10 ms (poll ignores fd -1). */
		pfd[0].fd = eof ? -1 : fds[0];
		if (eof && left > 10)
			left = 10;
		if (poll(pfd, 2, (int)(left < INT_MAX ? left : INT_MAX)) <= 0 || eof ||
		    !pfd[0].revents)
			continue; /* EINTR, a timeout or the stop switch: the checks above */
		if (*len < CONF_COMMAND_OUT_MAX) {
			k = read(fds[0], mem + *len, CONF_COMMAND_OUT_MAX - *len);
			if (k > 0)
				*len += (size_t)k;
		} else {
			/* Read on to the end, so the command is not stopped by a full pipe. */
			k = read(fds[0], drop, sizeof(drop));
			if (k > 0)
				explicit_bzero(drop, (size_t)k);
		}
		if (k == 0 || (k < 0 && errno != EINTR))
			eof = true;
	}
	close(fds[0]);
	if (!reaped) {
		(void)kill(-pid, SIGKILL); /* the group: sh and whatever it started */
		while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
			;
	}
	return rc;
}

/*
 * A command's whole stdout, trailing blanks and newlines dropped (what is its config key or
 * source, for messages). The command's output is a secret: it never goes in a message.
 */
char *conf_command_output(const struct remote_conf *rc, const char *what, const char *cmd,
			  struct bfs_err *err)
{
	double t = rc->command_timeout > 0 ? rc->command_timeout : CONF_COMMAND_TIMEOUT_DEFAULT;
	char *mem = malloc(CONF_COMMAND_OUT_MAX);
	char *out = NULL;
	size_t len = 0, n;
	int st = 0, r;

	if (!mem) {
		err_set(err, "out of memory");
		return NULL;
	}
	if (t > CONF_COMMAND_MAX_S)
		t = CONF_COMMAND_MAX_S;
	r = command_collect(cmd, (int64_t)(t * 1000), mem, &len, &st);
	if (r == -ETIMEDOUT)
		err_set(err, "[%s] %s timed out after %g s (command_timeout); killed", rc->name,
			what, t);
	else if (r == -ECANCELED)
		err_set(err, "[%s] %s: " HTTP_CANCELLED_MSG, rc->name, what);
	else if (r)
		err_set(err, "[%s] cannot run %s: %s", rc->name, what, strerror(-r));
	else if (WIFSIGNALED(st))
		err_set(err, "[%s] %s was killed by signal %d", rc->name, what, WTERMSIG(st));
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		err_set(err, "[%s] %s failed (exit status %d)", rc->name, what,
			WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	else if (!len)
		err_set(err, "[%s] %s printed nothing", rc->name, what);
	if (!r && WIFEXITED(st) && !WEXITSTATUS(st) && len) {
		n = len;
		while (n > 0 && strchr("\r\n \t", mem[n - 1]))
			n--;
		out = strndup(mem, n);
		if (!out)
			err_set(err, "out of memory");
	}
	explicit_bzero(mem, len);
	free(mem);
	return out;
}

/* First line of a command's stdout (key is its config key, for messages). */
static char *conf_run_command(const struct remote_conf *rc, const char *key, const char *cmd,
			      struct bfs_err *err)
{
	char *all = conf_command_output(rc, key, cmd, err);
	size_t n = 0;

	if (!all)
		return NULL;
	while (all[n] && all[n] != '\n')
		n++;
	if (all[n]) {
		explicit_bzero(all + n, strlen(all + n));
		while (n > 0 && (all[n - 1] == '\r' || all[n - 1] == ' '))
			all[--n] = '\0';
	}
	return all;
}

char *conf_secret(const struct remote_conf *rc, const char *env_key, const char *cmd_key,
		  const char *default_env, struct bfs_err *err)
{
	const char *envname = env_key ? conf_get(rc, env_key, NULL) : NULL;
	const char *cmd = cmd_key ? conf_get(rc, cmd_key, NULL) : NULL;
	const char *v;
	char *s;

	if (cmd && !envname)
		return conf_run_command(rc, cmd_key, cmd, err);
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

int conf_protect_secrets(void)
{
	struct rlimit none = {0, 0};

	/* A core dump, or ptrace and /proc/<pid>/mem by the same user, would expose the keys. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) || setrlimit(RLIMIT_CORE, &none))
		return -errno;
	return 0;
}
