// SPDX-License-Identifier: MIT
/*
 * Unit tests: key and token commands (conf_secret). The first line of stdout is the key; a
 * failure or a timeout says so, names the remote and the timeout, never the output, and
 * leaves no process behind; http_abort_all() cuts a command short. command_timeout is
 * checked at load.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "http.h"
#include "provider.h"
#include "tap.h"
#include "timefmt.h"

static char dir[] = "/tmp/batchfs-test-conf-XXXXXX";

/* A one-key remote "t" whose api_key_command is cmd. */
struct cmd_remote {
	char key[32];
	char value[512];
	struct conf_kv kv;
	struct remote_conf rc;
};

static void cmd_remote_init(struct cmd_remote *r, const char *cmd, double timeout)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "api_key_command");
	snprintf(r->value, sizeof(r->value), "%s", cmd);
	r->kv.key = r->key;
	r->kv.value = r->value;
	snprintf(r->rc.name, sizeof(r->rc.name), "t");
	r->rc.kv = &r->kv;
	r->rc.nkv = 1;
	r->rc.command_timeout = timeout;
}

static char *run(const char *cmd, double timeout, struct bfs_err *err, int64_t *ms)
{
	struct cmd_remote r;
	int64_t t0 = timefmt_mono_ms();
	char *s;

	cmd_remote_init(&r, cmd, timeout);
	err_clear(err);
	s = conf_secret(&r.rc, "api_key_env", "api_key_command", NULL, err);
	if (ms)
		*ms = timefmt_mono_ms() - t0;
	return s;
}

/* The pid a command wrote to file, or -1. */
static long read_pid(const char *name)
{
	char path[256];
	long pid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &pid) != 1)
			pid = -1;
		fclose(f);
	}
	return pid;
}

/* True when pid is gone or a zombie (dead, waiting for init to reap it), within 2 s. */
static bool gone(long pid)
{
	int64_t end = timefmt_mono_ms() + 2000;

	while (timefmt_mono_ms() < end) {
		char path[64], state = '?';
		FILE *f;

		if (kill((pid_t)pid, 0) && errno == ESRCH)
			return true;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
				state = '?';
			fclose(f);
		}
		if (state == 'Z')
			return true;
		usleep(20000);
	}
	return false;
}

static void test_first_line(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	char *s;

	s = run("printf 'sk-first-line \\r\\nsecond\\n'", 0, &err, NULL);
	is_str(s, "sk-first-line", "the first line of stdout, blanks and CR trimmed");
	conf_secret_free(s);
	s = run("yes | head -c 300000", 0, &err, NULL);
	is_str(s, "y", "output beyond what is kept is read to the end");
	conf_secret_free(s);
	s = run("echo sk-no-newline | tr -d '\\n'", 0, &err, NULL);
	is_str(s, "sk-no-newline", "a line without a newline");
	conf_secret_free(s);
}

static void test_failures(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	char *s;

	s = run("echo sk-leaked-secret; exit 3", 0, &err, NULL);
	ok(!s, "a failing command gives no key");
	ok(strstr(err.msg, "[t] api_key_command failed (exit status 3)") != NULL, "says so: %s",
	   err.msg);
	ok(!strstr(err.msg, "sk-leaked"), "without its output");
	conf_secret_free(s);
	s = run("true", 0, &err, NULL);
	ok(!s && strstr(err.msg, "printed nothing"), "a silent command: %s", err.msg);
	s = run("kill -9 $$", 0, &err, NULL);
	ok(!s && strstr(err.msg, "killed by signal 9"), "a killed command: %s", err.msg);
}

static void test_timeout(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	char cmd[512];
	int64_t ms;
	char *s;

	/* The shell, a child in the background and one in the foreground: all must go. */
	snprintf(cmd, sizeof(cmd),
		 "echo $$ > %s/sh; sleep 1000 & echo $! > %s/bg; sleep 1001 & echo $! > %s/fg; "
		 "wait",
		 dir, dir, dir);
	s = run(cmd, 0.5, &err, &ms);
	ok(!s, "a hung command gives no key");
	ok(ms >= 450 && ms < 2000, "after its timeout (%lld ms)", (long long)ms);
	ok(strstr(err.msg, "[t] api_key_command timed out after 0.5 s (command_timeout)") != NULL,
	   "naming the remote and the timeout: %s", err.msg);
	ok(read_pid("sh") > 0 && gone(read_pid("sh")), "the shell is gone");
	ok(read_pid("bg") > 0 && gone(read_pid("bg")), "its background child too");
	ok(read_pid("fg") > 0 && gone(read_pid("fg")), "and the other one");

	/* Output, then stdout closed, then a hang: the exit is awaited under the deadline. */
	s = run("echo sk-then-hang; exec >&-; sleep 1000", 0.5, &err, &ms);
	ok(!s && strstr(err.msg, "timed out"), "a command that never exits: %s", err.msg);
	ok(ms < 2000, "gives up in time (%lld ms)", (long long)ms);
	ok(!strstr(err.msg, "sk-then"), "without its output");
}

static void test_load(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct conf *c = NULL;
	char path[256];
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "%s/config", dir);
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\ncommand_timeout = 2.5\n[b]\nprovider = mock\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, 0, "command_timeout is read (%s)", err.msg);
	if (!rc) {
		ok(c->remotes[0].command_timeout == 2.5, "as given");
		ok(c->remotes[1].command_timeout == CONF_COMMAND_TIMEOUT_DEFAULT,
		   "30 s by default");
		conf_free(c);
	}
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\ncommand_timeout = 0\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, -EINVAL, "a zero command_timeout is refused");
	ok(strstr(err.msg, "command_timeout must be a positive number") != NULL, "%s", err.msg);

	/* discover = all | none, all by default */
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\ndiscover = none\n[b]\nprovider = mock\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, 0, "discover is read (%s)", err.msg);
	if (!rc) {
		ok(!c->remotes[0].discover, "none");
		ok(c->remotes[1].discover, "all by default");
		conf_free(c);
	}
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\ndiscover = yes\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, -EINVAL, "discover = yes is refused");
	ok(strstr(err.msg, "discover must be all or none") != NULL, "%s", err.msg);

	/* The poll interval: poll_interval, at least the provider's guidance (Azure 60 s),
	 * whose floor min_poll_interval may lower, to 0 too. */
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = azure\n[b]\nprovider = azure\nmin_poll_interval = 0\n"
		   "poll_interval = 0.2\n[c]\nprovider = anthropic\nrate_limit_wait = 1\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, 0, "min_poll_interval 0 and rate_limit_wait are read (%s)", err.msg);
	if (!rc) {
		const struct provider_ops *az = provider_lookup("azure");

		is_int(provider_poll_ms(az, &c->remotes[0]), 60000, "azure: 60 s by default");
		is_int(provider_poll_ms(az, &c->remotes[1]), 200, "unless lowered");
		is_int(provider_poll_ms(provider_lookup("anthropic"), &c->remotes[2]), 30000,
		       "anthropic: poll_interval");
		conf_free(c);
	}
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\nmin_poll_interval = -1\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, -EINVAL, "a negative min_poll_interval is refused");
	f = fopen(path, "w");
	if (!f) {
		ok(0, "cannot write %s", path);
		return;
	}
	fprintf(f, "[a]\nprovider = mock\nrate_limit_wait = 0\n");
	fclose(f);
	rc = conf_load(&c, path, &err);
	is_int(rc, -EINVAL, "a zero rate_limit_wait is refused");
	ok(strstr(err.msg, "rate_limit_wait must be a positive number") != NULL, "%s", err.msg);
	unlink(path);
}

static void *abort_later(void *arg)
{
	(void)arg;
	usleep(300000);
	http_abort_all();
	return NULL;
}

static void test_abort(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	char cmd[512];
	pthread_t t;
	int64_t ms;
	char *s;

	snprintf(cmd, sizeof(cmd), "echo $$ > %s/ab; exec sleep 1000", dir);
	pthread_create(&t, NULL, abort_later, NULL);
	s = run(cmd, 30, &err, &ms);
	pthread_join(t, NULL);
	ok(!s && strstr(err.msg, HTTP_CANCELLED_MSG), "the stop switch ends a command: %s",
	   err.msg);
	ok(ms < 1500, "at once (%lld ms)", (long long)ms);
	ok(read_pid("ab") > 0 && gone(read_pid("ab")), "and it is gone");
}

/* A command sees the variables tools need, not another remote's key. */
static void test_environment(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	char *s;

	setenv("BFS_OTHER_REMOTE_KEY", "sk-must-not-leak", 1);
	setenv("ANTHROPIC_API_KEY", "sk-must-not-leak-either", 1);
	setenv("LC_ALL", "C", 1);
	s = run("echo \"[${BFS_OTHER_REMOTE_KEY:-unset}][${ANTHROPIC_API_KEY:-unset}]\"", 0, &err,
		NULL);
	is_str(s, "[unset][unset]", "key variables are not in a command's environment");
	conf_secret_free(s);
	s = run("echo \"${HOME:+home}${PATH:+path}$LC_ALL\"", 0, &err, NULL);
	is_str(s, "homepathC", "HOME, PATH and the locale are");
	conf_secret_free(s);
	unsetenv("BFS_OTHER_REMOTE_KEY");
	unsetenv("ANTHROPIC_API_KEY");
}

static void test_protect(void)
{
	struct rlimit rl;

	is_int(conf_protect_secrets(), 0, "conf_protect_secrets");
	is_int(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0, "the process is no longer dumpable");
	ok(!getrlimit(RLIMIT_CORE, &rl) && rl.rlim_cur == 0 && rl.rlim_max == 0,
	   "and its core size limit is 0");
}

int main(void)
{
	static const char *const names[] = {"sh", "bg", "fg", "ab"};
	char path[256];

	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_first_line();
	test_failures();
	test_timeout();
	test_load();
	test_environment();
	test_protect();
	test_abort(); /* last: the switch is one way */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
	return tap_done();
}
