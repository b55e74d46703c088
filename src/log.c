// SPDX-License-Identifier: MIT
/*
 * Logging: one line per message, "batchfs: <level>: <text>", to stderr in the foreground and to
 * syslog otherwise. The sink and threshold are the module's only state, set once by log_init()
 * before threads start, then only read. It must never see a key, an auth header or a body:
 * callers pass sizes and ids only.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define LOG_LINE_MAX 2048

/* Written by log_init() before any thread starts, read-only afterwards. */
static bool log_foreground = true;
static int log_max_level = LOG_INFO;

void log_init(bool foreground, int max_level)
{
	log_foreground = foreground;
	log_max_level = max_level;
	if (!foreground)
		openlog("batchfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
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

void log_vmsg(int level, const char *fmt, va_list ap)
{
	char text[LOG_LINE_MAX];
	size_t n;
	int rc;

	if (level > log_max_level)
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
	/* a single call per message, so lines from different threads do not interleave */
	if (log_foreground)
		fprintf(stderr, "batchfs: %s: %s\n", log_level_word(level), text);
	else
		syslog(level, "%s: %s", log_level_word(level), text);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
