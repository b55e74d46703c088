// SPDX-License-Identifier: MIT
/*
 * batchfs: options, config, start and stop. Everything that can fail because of the user's
 * setup (config, keys, cache directory) is checked before the mount detaches, so errors
 * reach the terminal; SQLite and threads start only after the fork.
 */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "batchfs_build.h"
#include "bfs.h"
#include "conf.h"
#include "err.h"
#include "fs.h"
#include "http.h"
#include "log.h"
#include "poller.h"
#include "provider.h"
#include "store.h"
#include "timefmt.h"
#include "worker.h"

struct main_opts {
	char *config;
	char *cache;
};

#define MAIN_OPT(t, p)                              \
	{                                           \
		t, offsetof(struct main_opts, p), 1 \
	}

static const struct fuse_opt main_opt_spec[] = {
	MAIN_OPT("config=%s", config),
	MAIN_OPT("cache=%s", cache),
	FUSE_OPT_END,
};

static void main_usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-s] [-o OPT[,OPT...]] MOUNTPOINT\n\n"
	       "LLM batch jobs as files.\n\n"
	       "batchfs options:\n"
	       "    -o config=FILE   config file (default $XDG_CONFIG_HOME/batchfs/config,\n"
	       "                     else ~/.config/batchfs/config)\n"
	       "    -o cache=DIR     cache directory (default $XDG_STATE_HOME/batchfs,\n"
	       "                     else ~/.local/state/batchfs)\n"
	       "    -f               stay in the foreground\n"
	       "    -d               debug output (implies -f)\n"
	       "    -s               single-threaded\n"
	       "    -h, --help       this help\n"
	       "    -V, --version    version\n\n"
	       "Without a config file, remotes come from ANTHROPIC_API_KEY, OPENAI_API_KEY or\n"
	       "AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT; with none of them, one offline "
	       "remote\n"
	       "'mock'. See batchfs(1) and docs/semantics.md.\n\n"
	       "FUSE options:\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

/* mkdir -p with mode 0700 for the last component (the cache holds the user's prompts). */
static int make_dirs(const char *path, struct bfs_err *err)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(tmp)) {
		err_set(err, "bad cache directory '%s'", path);
		return -EINVAL;
	}
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) && errno != EEXIST) {
			err_set(err, "cannot create '%s': %s", tmp, strerror(errno));
			return -errno;
		}
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST) {
		err_set(err, "cannot create '%s': %s", tmp, strerror(errno));
		return -errno;
	}
	return 0;
}

static int cache_default(char *out, size_t size)
{
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");

	if (xdg && *xdg)
		return snprintf(out, size, "%s/batchfs", xdg) < (int)size ? 0 : -ENAMETOOLONG;
	if (home && *home)
		return snprintf(out, size, "%s/.local/state/batchfs", home) < (int)size
			       ? 0
			       : -ENAMETOOLONG;
	return -ENOENT;
}

static int open_remotes(struct bfs *b, struct bfs_err *err)
{
	b->remotes = calloc(b->conf->nremotes, sizeof(*b->remotes));
	if (!b->remotes)
		return -ENOMEM;
	for (size_t i = 0; i < b->conf->nremotes; i++) {
		struct remote *r = &b->remotes[i];
		char state_dir[PATH_MAX + 128];
		int rc;

		r->conf = &b->conf->remotes[i];
		r->idx = (unsigned)i;
		r->ops = provider_lookup(r->conf->provider);
		if (!r->ops) {
			err_set(err, "[%s] provider '%s' is not built into this batchfs",
				r->conf->name, r->conf->provider);
			return -EINVAL;
		}
		rc = provider_check_keys(r->ops, r->conf, err);
		if (!rc)
			rc = provider_limits(r->ops, r->conf, &r->limits, err);
		if (rc)
			return rc;
		pthread_mutex_init(&r->create_lock, NULL);
		snprintf(state_dir, sizeof(state_dir), "%s/%s", b->cache_dir, r->ops->name);
		if (mkdir(state_dir, 0700) && errno != EEXIST) {
			err_set(err, "cannot create '%s': %s", state_dir, strerror(errno));
			return -errno;
		}
		snprintf(state_dir, sizeof(state_dir), "%s/%s/%s", b->cache_dir, r->ops->name,
			 r->conf->name);
		rc = r->ops->open(&r->prov, r->conf, state_dir, err);
		if (rc) {
			err_prefix(err, "remote '%s'", r->conf->name);
			return rc;
		}
		b->nremotes++;
	}
	return 0;
}

/* The signals on which libfuse ends its loop, its handlers for them, which ones we hooked. */
static const int main_stop_signals[] = {SIGHUP, SIGINT, SIGTERM};
static struct sigaction main_fuse_sa[3];
static volatile sig_atomic_t main_hooked[3];

/*
 * Before the loop can end, libfuse joins its workers, and one may be waiting on the network
 * in a commit: stop every transfer first, then let libfuse's handler end the loop.
 */
static void main_on_stop_signal(int sig, siginfo_t *info, void *uc)
{
	http_abort_all();
	for (size_t i = 0; i < sizeof(main_stop_signals) / sizeof(main_stop_signals[0]); i++) {
		const struct sigaction *sa = &main_fuse_sa[i];

		if (main_stop_signals[i] != sig || !main_hooked[i])
			continue;
		if (sa->sa_flags & SA_SIGINFO)
			sa->sa_sigaction(sig, info, uc);
		else if (sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN)
			sa->sa_handler(sig);
	}
}

/*
 * Called once libfuse's handlers are in place (fs_main's start callback). A signal libfuse
 * left alone (ignored, as under nohup) stays as it is.
 */
static void main_hook_stop_signals(void)
{
	struct sigaction sa, *old;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = main_on_stop_signal;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(main_stop_signals) / sizeof(main_stop_signals[0]); i++) {
		old = &main_fuse_sa[i];
		if (sigaction(main_stop_signals[i], NULL, old) ||
		    (!(old->sa_flags & SA_SIGINFO) &&
		     (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)))
			continue;
		main_hooked[i] = 1; /* before: the handler may run as soon as it is in */
		if (sigaction(main_stop_signals[i], &sa, NULL))
			main_hooked[i] = 0;
	}
}

/*
 * After the loop, libfuse leaves our handlers in place (it restores only its own): a second
 * signal kills again, as before libfuse installed its handlers (only over SIG_DFL).
 */
static void main_unhook_stop_signals(void)
{
	for (size_t i = 0; i < sizeof(main_stop_signals) / sizeof(main_stop_signals[0]); i++)
		if (main_hooked[i])
			(void)signal(main_stop_signals[i], SIG_DFL); /* cannot fail for these */
}

/* After the fork: the store, resumed work, the pollers. */
static int main_start(struct bfs *b)
{
	struct bfs_err err = BFS_ERR_INIT;
	int rc;

	main_hook_stop_signals();
	rc = store_open(&b->store, b->cache_dir, &err);
	if (!rc)
		rc = batch_resume_all(b);
	if (!rc)
		rc = poller_start(&b->poller, b, &err);
	if (!rc)
		rc = worker_start(&b->worker, b, &err); /* fs_main stops it */
	if (rc)
		log_err("cannot start: %s", err.msg[0] ? err.msg : strerror(-rc));
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo;
	struct main_opts mo = {0};
	struct bfs_err err = BFS_ERR_INIT;
	struct store *probe = NULL;
	struct bfs b;
	int rc = 1;

	memset(&b, 0, sizeof(b));
	memset(&fo, 0, sizeof(fo));
	bfs_locks_init(&b);
	b.mount_time = timefmt_now_ms();
	if (fuse_opt_parse(&args, &mo, main_opt_spec, NULL) == -1)
		goto out;
	if (fuse_parse_cmdline(&args, &fo) != 0)
		goto out;
	if (fo.show_help) {
		main_usage(argv[0]);
		rc = 0;
		goto out;
	}
	if (fo.show_version) {
		printf("batchfs %s\n", BATCHFS_VERSION);
		printf("FUSE library version %s\n", fuse_pkgversion());
		rc = 0;
		goto out;
	}
	if (!fo.mountpoint) {
		fprintf(stderr, "batchfs: no mountpoint given (try --help)\n");
		goto out;
	}
	log_init(fo.foreground || fo.debug, fo.debug ? LOG_DEBUG : LOG_INFO);

	if (conf_load(&b.conf, mo.config, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg);
		goto out;
	}
	if (mo.cache) {
		if (!realpath(mo.cache, b.cache_dir) &&
		    snprintf(b.cache_dir, sizeof(b.cache_dir), "%s", mo.cache) >=
			    (int)sizeof(b.cache_dir)) {
			fprintf(stderr, "batchfs: cache path too long\n");
			goto out;
		}
	} else if (cache_default(b.cache_dir, sizeof(b.cache_dir))) {
		fprintf(stderr, "batchfs: no cache directory: set -o cache=DIR or HOME\n");
		goto out;
	}
	if (make_dirs(b.cache_dir, &err) || spool_init(&b.spool, b.cache_dir, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg);
		goto out;
	}
	/* Open the cache once here so a broken one is reported on the terminal. */
	if (store_open(&probe, b.cache_dir, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg);
		goto out;
	}
	store_free(probe);
	if (http_global_init()) {
		fprintf(stderr, "batchfs: cannot initialise libcurl\n");
		goto out;
	}
	if (open_remotes(&b, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg);
		goto out;
	}
	if (conf_protect_secrets())
		log_warn("cannot make the process undumpable: %s", strerror(errno));
	log_info("batchfs %s: %zu remote(s) from %s, cache '%s'", BATCHFS_VERSION, b.nremotes,
		 b.conf->source, b.cache_dir);
	rc = fs_main(&b, &args, fo.mountpoint, fo.foreground, fo.singlethread, main_start);
	main_unhook_stop_signals();
	if (rc)
		log_err("batchfs stopped: %s", strerror(-rc));
	else
		log_info("unmounted; stopping");
	/* Before any join: a download or upload in flight must not hold the exit. */
	http_abort_all();
	rc = rc ? 1 : 0;
out:
	poller_stop(b.poller);
	for (size_t i = 0; i < b.nremotes; i++) {
		b.remotes[i].ops->free(b.remotes[i].prov);
		pthread_mutex_destroy(&b.remotes[i].create_lock);
	}
	free(b.remotes);
	http_global_cleanup();
	store_free(b.store);
	conf_free(b.conf);
	free(fo.mountpoint);
	free(mo.config);
	free(mo.cache);
	fuse_opt_free_args(&args);
	bfs_locks_release(&b);
	return rc;
}
