// SPDX-License-Identifier: MIT
/*
 * Logging: one line per message, "batchfs: <level>: <text>", to one sink: a log file (each line
 * stamped with UTC time and pid), stderr in the foreground, or syslog. The sink and threshold
 * are set by log_init() before threads start, then only read; log_detach() clears the copy of
 * errors to stderr (atomic: the pollers already run). It must never see a key, an auth header or a body: callers pass sizes and ids only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define LOG_LINE_MAX 2048

enum log_sink {
	LOG_SINK_STDERR,
	LOG_SINK_SYSLOG,
	LOG_SINK_FILE
};

/* Written by log_init() before any thread starts, read-only afterwards. */
static enum log_sink log_sink = LOG_SINK_STDERR;
static int log_fd = -1;
/* Not logging to stderr and still starting: errors there too. Cleared once pollers run. */
static atomic_bool log_copy_errors;
static int log_max_level = LOG_INFO;

int log_init(const char *file, bool foreground, int max_level, struct bfs_err *err)
{
	log_max_level = max_level;
	if (file && *file) {
		log_fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
		if (log_fd < 0) {
			err_set(err, "cannot open log file '%s': %s", file, strerror(errno));
			return -errno;
		}
		log_sink = LOG_SINK_FILE;
	} else if (foreground) {
		log_sink = LOG_SINK_STDERR;
	} else {
		log_sink = LOG_SINK_SYSLOG;
		openlog("batchfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	}
	atomic_store(&log_copy_errors, log_sink != LOG_SINK_STDERR);
	return 0;
}

void log_detach(void)
{
	atomic_store(&log_copy_errors, false);
}

void log_release(void)
{
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
}

int log_level_parse(const char *word, int *level)
{
	static const struct {
		const char *word;
		int level;
	} levels[] = {{"error", LOG_ERR},
		      {"warn", LOG_WARNING},
		      {"warning", LOG_WARNING},
		      {"info", LOG_INFO},
		      {"debug", LOG_DEBUG}};

	for (size_t i = 0; word && i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (!strcasecmp(word, levels[i].word)) {
			*level = levels[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

static const char *log_level_word(int level)
{
	switch (level) {
	case LOG_EMERG:
		return "emergency";
	case LOG_ALERT:
		return "alert";
	case LOG_CRIT:
		return "critical";
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_NOTICE:
		return "notice";
	case LOG_INFO:
		return "info";
	case LOG_DEBUG:
		return "debug";
	default:
		return "log";
	}
}

/* One write(2) per line with O_APPEND: lines of different threads do not interleave. */
static void log_write_file(int level, const char *text)
{
	char line[LOG_LINE_MAX + 128], stamp[32];
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ batchfs[%ld]: %s: %s\n", stamp,
		     ts.tv_nsec / 1000000, (long)getpid(), log_level_word(level), text);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	(void)!write(log_fd, line, (size_t)n); /* nowhere left to report a failed log write */
}

void log_vmsg(int level, bool force, const char *fmt, va_list ap)
{
	char text[LOG_LINE_MAX];
	size_t n;
	int rc;

	if (level > log_max_level && !force)
		return;
	rc = vsnprintf(text, sizeof(text), fmt, ap);
	if (rc < 0)
		return;
	n = strlen(text);
	/* libfuse ends its messages with '\n'; we add our own */
	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
		text[--n] = '\0';
	/* one message, one line: an embedded newline (say, in a provider's text) cannot forge one */
	for (char *p = text; (p = strpbrk(p, "\r\n")) != NULL;)
		*p = ' ';
	if (level <= LOG_ERR && atomic_load(&log_copy_errors))
		fprintf(stderr, "batchfs: %s: %s\n", log_level_word(level), text);
	/* a single call per message, so lines from different threads do not interleave */
	switch (log_sink) {
	case LOG_SINK_STDERR:
		fprintf(stderr, "batchfs: %s: %s\n", log_level_word(level), text);
		break;
	case LOG_SINK_SYSLOG:
		syslog(level, "%s: %s", log_level_word(level), text);
		break;
	case LOG_SINK_FILE:
		log_write_file(level, text);
		break;
	}
}

static void __attribute__((format(printf, 3, 4)))
log_fmt(int level, bool force, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, force, fmt, ap);
	va_end(ap);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, false, fmt, ap);
	va_end(ap);
}

void log_text(int level, bool force, const char *text)
{
	log_fmt(level, force, "%s", text);
}
