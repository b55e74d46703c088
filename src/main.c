// SPDX-License-Identifier: MIT
/*
 * batchfs: options, config, start and stop. Everything that can fail because of the user's
 * setup (config, keys, cache directory) is checked before the mount detaches, so errors
 * reach the terminal; SQLite and threads start only after the fork.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "batch.h"
#include "batchfs_build.h"
#include "bfs.h"
#include "conf.h"
#include "err.h"
#include "follow.h"
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
	char *log_file;
	char *log_level;
	char *fsname;
	char *uid, *gid, *umask;
	int nonempty;
	int rebuild_cache;
	int allow_other;
	int default_permissions;
	int debug;	/* -d: batchfs's own debug lines */
	int debug_fuse; /* -o debug_fuse: libfuse's request trace */
	char *args[2];	/* [SOURCE] MOUNTPOINT */
	int nargs;
	bool too_many;
};

#define MAIN_OPT(t, p)                              \
	{                                           \
		t, offsetof(struct main_opts, p), 1 \
	}

enum {
	MAIN_KEY_DEBUG
};

/* Options batchfs takes itself; the rest go to libfuse (fuse_session_new). */
static const struct fuse_opt main_opt_spec[] = {
	MAIN_OPT("config=%s", config),
	MAIN_OPT("cache=%s", cache),
	MAIN_OPT("log_file=%s", log_file),
	MAIN_OPT("log_level=%s", log_level),
	MAIN_OPT("fsname=%s", fsname),
	MAIN_OPT("uid=%s", uid),
	MAIN_OPT("gid=%s", gid),
	MAIN_OPT("umask=%s", umask),
	MAIN_OPT("nonempty", nonempty),
	MAIN_OPT("rebuild_cache", rebuild_cache),
	MAIN_OPT("allow_other", allow_other),
	MAIN_OPT("default_permissions", default_permissions),
	MAIN_OPT("debug_fuse", debug_fuse),
	FUSE_OPT_KEY("-d", MAIN_KEY_DEBUG),
	FUSE_OPT_KEY("debug", MAIN_KEY_DEBUG),
	FUSE_OPT_END,
};

/*
 * The positional arguments ([SOURCE] MOUNTPOINT, as mount.fuse3 passes them), -d, and the
 * options of an fstab line that are not for the filesystem (x-systemd.automount, ...).
 */
static int main_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct main_opts *mo = data;

	(void)outargs;
	switch (key) {
	case MAIN_KEY_DEBUG:
		mo->debug = 1;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (mo->nargs == 2) {
			mo->too_many = true;
			return 0;
		}
		mo->args[mo->nargs] = strdup(arg);
		if (!mo->args[mo->nargs])
			return -1;
		mo->nargs++;
		return 0;
	case FUSE_OPT_KEY_OPT:
		return strncmp(arg, "x-", 2) ? 1 : 0; /* x-*: for mount(8) and systemd */
	default:
		return 1;
	}
}

static void main_usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-s] [-o OPT[,OPT...]] [SOURCE] MOUNTPOINT\n\n"
	       "LLM batch jobs as files. SOURCE (as mount(8) passes it) only names the mount\n"
	       "in /proc/mounts (its fsname, default 'batchfs').\n\n"
	       "batchfs options:\n"
	       "    -o config=FILE   config file (default $XDG_CONFIG_HOME/batchfs/config,\n"
	       "                     else ~/.config/batchfs/config)\n"
	       "    -o cache=DIR     cache directory (default $XDG_STATE_HOME/batchfs,\n"
	       "                     else ~/.local/state/batchfs)\n"
	       "    -o log_file=FILE log there (default: stderr with -f, else syslog)\n"
	       "    -o log_level=L   error, warn, info (default) or debug\n"
	       "    -o uid=N,gid=N   owner shown for every file (default: the daemon's)\n"
	       "    -o umask=M       permission bits taken away from every mode shown\n"
	       "    -o allow_other   let other users in; permissions are then enforced\n"
	       "                     (default_permissions is always added)\n"
	       "    -o nonempty      allow mounting over a non-empty directory\n"
	       "    -o rebuild_cache set a damaged cache aside and start a new one\n"
	       "    -o debug_fuse    libfuse's request trace (with -f or log_file)\n"
	       "    -f               stay in the foreground\n"
	       "    -d               batchfs debug lines (implies -f and log_level=debug)\n"
	       "    -s               single-threaded\n"
	       "    -h, --help       this help\n"
	       "    -V, --version    version\n\n"
	       "Without a config file, remotes come from ANTHROPIC_API_KEY, OPENAI_API_KEY or\n"
	       "AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT; with none of them, one offline "
	       "remote\n"
	       "'mock'. See batchfs(1).\n\n"
	       "FUSE mount options:\n",
	       prog);
	/* not fuse_cmdline_help(): batchfs sets its own thread pool (max_threads and the rest) */
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

/* Makes *path absolute against the current directory (before anything changes it). */
static int main_absolute(char **path, struct bfs_err *err)
{
	char cwd[PATH_MAX], *abs;

	if (!*path || (*path)[0] == '/')
		return 0;
	if (!getcwd(cwd, sizeof(cwd))) {
		int e = errno;

		err_set(err, "cannot resolve '%s': %s", *path, strerror(e));
		return -e;
	}
	if (asprintf(&abs, "%s/%s", cwd, *path) < 0)
		return -ENOMEM;
	free(*path);
	*path = abs;
	return 0;
}

/* A decimal id or octal mask up to max, as -o uid=/gid=/umask= give them. */
static int main_number(const char *name, const char *text, int base, unsigned long max,
		       unsigned *out, struct bfs_err *err)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = text && *text ? strtoul(text, &end, base) : 0;
	if (!text || !*text || *end || errno || v > max || text[0] == '-') {
		err_set(err, "%s=%s is not %s", name, text ? text : "",
			base == 8 ? "an octal mask such as 022" : "a numeric id");
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

/* Mounting over files hides them: refused unless -o nonempty (as rclone mount does). */
static int main_check_empty(const char *mountpoint, struct bfs_err *err)
{
	DIR *dir = opendir(mountpoint);
	struct dirent *de;
	int rc = 0;

	if (!dir) {
		err_set(err, "cannot open mount point '%s': %s", mountpoint, strerror(errno));
		return -errno;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			err_set(err,
				"mount point '%s' is not empty (it holds '%s'); use -o nonempty "
				"to mount over it",
				mountpoint, de->d_name);
			rc = -ENOTEMPTY;
			break;
		}
	}
	closedir(dir);
	return rc;
}

/*
 * One daemon per cache: two would poll and commit the same batches. An flock on <cache>/lock
 * (so a dead daemon's lock is gone with it) whose file names the holder's pid and mount point
 * for the message. Returns the open lock fd (kept for the daemon's life) or -errno.
 */
static int main_lock_cache(const char *cache_dir, struct bfs_err *err)
{
	char path[PATH_MAX + 8], holder[PATH_MAX + 32] = "";
	long pid = 0;
	ssize_t n;
	int fd, e;

	snprintf(path, sizeof(path), "%s/lock", cache_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err_set(err, "cannot open '%s': %s", path, strerror(errno));
		return -errno;
	}
	if (!flock(fd, LOCK_EX | LOCK_NB))
		return fd;
	e = errno;
	n = pread(fd, holder, sizeof(holder) - 1, 0);
	close(fd);
	if (e != EWOULDBLOCK) {
		err_set(err, "cannot lock '%s': %s", path, strerror(e));
		return -e;
	}
	holder[n > 0 ? n : 0] = '\0';
	holder[strcspn(holder, "\n")] = '\0';
	pid = strtol(holder, NULL, 10);
	err_set(err, "cache directory '%s' is in use by batchfs pid %ld mounted on '%s'", cache_dir,
		pid, strchr(holder, ' ') ? strchr(holder, ' ') + 1 : "?");
	return -EBUSY;
}

/* "<pid> <mount point>\n" into the held lock file: who holds the cache, for the message. */
static void main_lock_note(int fd, const char *mountpoint)
{
	char line[PATH_MAX + 32];
	int n = snprintf(line, sizeof(line), "%ld %s\n", (long)getpid(), mountpoint);

	if (n > 0 && ftruncate(fd, 0) == 0)
		(void)!pwrite(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, 0);
}

/* What main_start needs besides b: set once in main() before fs_main. */
static struct {
	bool foreground;
	int lock_fd;
	int verdict_fd; /* background: the pipe to the waiting parent, -1 once answered */
	bool debug_fuse;
	const char *mountpoint;
} main_run = {true, -1, -1, false, NULL};

/*
 * Background mode: fork; the parent waits for the child's verdict on a pipe and exits 0 only
 * if the child started (so a start-up error gives a non-zero exit, as in the foreground, and
 * mount(8) or a script learns of it). Returns 0 in the child, or -errno if fork failed.
 */
static int main_detach(struct bfs_err *err)
{
	int fds[2];
	char verdict = 1;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC)) {
		err_set(err, "cannot detach: %s", strerror(errno));
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		err_set(err, "cannot detach: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid > 0) {
		close(fds[1]);
		while (read(fds[0], &verdict, 1) < 0 && errno == EINTR)
			;
		_exit(verdict == 0 ? 0 : 1); /* EOF: the child died before answering */
	}
	close(fds[0]);
	main_run.verdict_fd = fds[1];
	if (setsid() < 0 || chdir("/")) {
		err_set(err, "cannot detach: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

/* Background mode: leave the terminal, then tell the parent the start went well. */
static void main_answer_parent(void)
{
	char ok = 0;
	int nul;

	if (main_run.verdict_fd < 0)
		return;
	nul = open("/dev/null", O_RDWR);
	if (nul >= 0) {
		dup2(nul, STDIN_FILENO);
		dup2(nul, STDOUT_FILENO);
		dup2(nul, STDERR_FILENO);
		if (nul > STDERR_FILENO)
			close(nul);
	}
	(void)!write(main_run.verdict_fd, &ok, 1);
	close(main_run.verdict_fd);
	main_run.verdict_fd = -1;
}

/*
 * After the mount exists: detach (background), then the store, resumed work, the pollers;
 * then the verdict to the parent and READY=1 to systemd. The kernel holds requests until the
 * loop reads them, so the mount answers from here on.
 */
static int main_start(struct bfs *b)
{
	struct bfs_err err = BFS_ERR_INIT;
	int rc = 0;

	if (!main_run.foreground)
		rc = main_detach(&err);
	if (!rc) {
		main_lock_note(main_run.lock_fd, main_run.mountpoint);
		main_hook_stop_signals();
		rc = store_open(&b->store, b->cache_dir, &err);
	}
	if (!rc)
		rc = batch_resume_all(b);
	if (!rc)
		rc = poller_start(&b->poller, b, &err);
	if (!rc)
		rc = worker_start(&b->worker, b, &err); /* fs_main stops it */
	if (rc) {
		log_err("cannot start: %s", err.msg[0] ? err.msg : strerror(-rc));
		return rc; /* the parent reads EOF: exit 1 */
	}
	log_info("batchfs %s mounted on '%s': %zu remote(s) from %s, cache '%s'", BATCHFS_VERSION,
		 main_run.mountpoint, b->nremotes, b->conf->source, b->cache_dir);
	main_answer_parent();
	log_detach();
	sd_notify(0, "READY=1");
	return 0;
}

/*
 * libfuse's messages (and its -o debug_fuse trace) into our log; its levels are syslog's. It
 * writes some messages in pieces, so pieces are gathered (per thread) up to the newline.
 */
static void main_fuse_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static _Thread_local char line[1024];
	static _Thread_local size_t len;
	int n;

	if (level == FUSE_LOG_DEBUG && !main_run.debug_fuse)
		return; /* -d is batchfs's debug lines only */
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n < 0)
		return;
	len = len + (size_t)n < sizeof(line) - 1 ? len + (size_t)n : sizeof(line) - 1;
	if (len && line[len - 1] != '\n' && len < sizeof(line) - 1)
		return;
	log_text((int)level, level == FUSE_LOG_DEBUG, line);
	len = 0;
}

/* Hands an option on to libfuse. */
static int main_fuse_opt(struct fuse_args *args, const char *fmt, const char *value)
{
	char *opt = NULL;
	int rc;

	if (asprintf(&opt, fmt, value ? value : "") < 0)
		return -ENOMEM;
	rc = fuse_opt_add_arg(args, opt) ? -ENOMEM : 0;
	free(opt);
	return rc;
}

/*
 * The options libfuse gets from batchfs: allow_other always with default_permissions (the
 * daemon checks no caller: the kernel must), the subtype and fsname that make the mount
 * "SOURCE on MOUNTPOINT type fuse.batchfs" for mount(8), and -o debug_fuse as libfuse's debug.
 */
static int main_fuse_opts(struct fuse_args *args, const struct main_opts *mo)
{
	const char *fsname = mo->fsname ? mo->fsname : mo->nargs == 2 ? mo->args[0] : "batchfs";
	char *esc = NULL;
	int rc = 0;

	if (mo->allow_other)
		rc = main_fuse_opt(args, "-oallow_other", NULL);
	if (!rc && (mo->allow_other || mo->default_permissions))
		rc = main_fuse_opt(args, "-odefault_permissions", NULL);
	if (!rc && mo->debug_fuse)
		rc = main_fuse_opt(args, "-odebug", NULL);
	if (!rc)
		rc = main_fuse_opt(args, "-osubtype=batchfs", NULL);
	/* the fsname is the user's text: escape the commas and backslashes of fuse_opt */
	if (!rc &&
	    (fuse_opt_add_opt_escaped(&esc, fsname) || main_fuse_opt(args, "-ofsname=%s", esc)))
		rc = -ENOMEM;
	free(esc);
	return rc;
}

/* -o uid=, gid=, umask=: what every stat shows (tree.c). */
static int main_owner(struct bfs *b, const struct main_opts *mo, struct bfs_err *err)
{
	int rc = 0;

	b->uid = (unsigned)getuid();
	b->gid = (unsigned)getgid();
	b->umask = 0;
	if (mo->uid)
		rc = main_number("uid", mo->uid, 10, (unsigned)-2, &b->uid, err);
	if (!rc && mo->gid)
		rc = main_number("gid", mo->gid, 10, (unsigned)-2, &b->gid, err);
	if (!rc && mo->umask)
		rc = main_number("umask", mo->umask, 8, 07777, &b->umask, err);
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo;
	struct main_opts mo = {0};
	struct bfs_err err = BFS_ERR_INIT;
	struct store *probe = NULL;
	int level = LOG_INFO;
	struct bfs b;
	int rc = 1;

	memset(&b, 0, sizeof(b));
	memset(&fo, 0, sizeof(fo));
	bfs_locks_init(&b);
	b.mount_time = timefmt_now_ms();
	if (fuse_opt_parse(&args, &mo, main_opt_spec, main_opt_proc) == -1)
		goto out;
	if (mo.too_many) {
		fprintf(stderr, "batchfs: too many arguments: [SOURCE] MOUNTPOINT (try --help)\n");
		goto out;
	}
	/* the mount point, back for libfuse to resolve: the last positional argument */
	if (mo.nargs && fuse_opt_add_arg(&args, mo.args[mo.nargs - 1]))
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
	main_run.foreground = fo.foreground || mo.debug;
	main_run.debug_fuse = mo.debug_fuse;
	main_run.mountpoint = fo.mountpoint;
	if (mo.debug)
		level = LOG_DEBUG;
	if (mo.log_level && log_level_parse(mo.log_level, &level)) {
		fprintf(stderr, "batchfs: log_level=%s is not error, warn, info or debug\n",
			mo.log_level);
		goto out;
	}
	/* Before anything changes directory (the detach goes to /). */
	if (main_absolute(&mo.config, &err) || main_absolute(&mo.cache, &err) ||
	    main_absolute(&mo.log_file, &err) || main_owner(&b, &mo, &err) ||
	    main_fuse_opts(&args, &mo) || log_init(mo.log_file, main_run.foreground, level, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg[0] ? err.msg : strerror(ENOMEM));
		goto out;
	}
	fuse_set_log_func(main_fuse_log);

	if (conf_load(&b.conf, mo.config, &err) ||
	    (!mo.nonempty && main_check_empty(fo.mountpoint, &err))) {
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
	if (make_dirs(b.cache_dir, &err) ||
	    (main_run.lock_fd = main_lock_cache(b.cache_dir, &err)) < 0 ||
	    spool_init(&b.spool, b.cache_dir, &err)) {
		fprintf(stderr, "batchfs: %s\n", err.msg);
		goto out;
	}
	main_lock_note(main_run.lock_fd, fo.mountpoint);
	/* Open the cache once here so a broken one is reported on the terminal. */
	if (store_check(b.cache_dir, mo.rebuild_cache, &err) ||
	    store_open(&probe, b.cache_dir, &err)) {
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
	if (follow_init(&b)) {
		fprintf(stderr, "batchfs: out of memory\n");
		goto out;
	}
	rc = fs_main(&b, &args, fo.mountpoint, fo.singlethread, main_start);
	sd_notify(0, "STOPPING=1");
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
	follow_stop(&b); /* after the worker (fs_main stopped it): no commit takes one now */
	for (size_t i = 0; i < b.nremotes; i++) {
		b.remotes[i].ops->free(b.remotes[i].prov);
		pthread_mutex_destroy(&b.remotes[i].create_lock);
	}
	free(b.remotes);
	http_global_cleanup();
	store_free(b.store);
	conf_free(b.conf);
	if (main_run.lock_fd >= 0)
		close(main_run.lock_fd); /* the flock goes with it */
	log_release();
	free(fo.mountpoint);
	free(mo.config);
	free(mo.cache);
	free(mo.log_file);
	free(mo.log_level);
	free(mo.fsname);
	free(mo.uid);
	free(mo.gid);
	free(mo.umask);
	free(mo.args[0]);
	free(mo.args[1]);
	fuse_opt_free_args(&args);
	bfs_locks_release(&b);
	return rc;
}
