/* SPDX-License-Identifier: MIT */
/*
 * Logging with syslog levels, to one sink: a log file (-o log_file), else stderr in the
 * foreground, else syslog (ident "batchfs": journalctl -t batchfs). Never log keys, auth headers
 * or request/response bodies; debug lines carry sizes and ids only.
 */
#ifndef BATCHFS_LOG_H
#define BATCHFS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

struct bfs_err;

/*
 * Chooses the sink (file: append to it, created 0600; else stderr if foreground, else syslog)
 * and the most verbose level written. When that is not stderr, errors are also copied to
 * stderr until log_detach(), so start-up failures reach the terminal. Returns 0, or -errno with
 * the reason in err when file cannot be opened. Not thread-safe: call before threads start.
 */
int log_init(const char *file, bool foreground, int max_level, struct bfs_err *err);
/* Started (and left the terminal, in the background): stop copying errors to stderr.
 * Thread-safe. */
void log_detach(void);
/* Closes the log file, if any. After every thread stopped. */
void log_release(void);
/* "error", "warn", "info" or "debug" (also "warning") -> LOG_ERR...; -EINVAL otherwise. */
int log_level_parse(const char *word, int *level);
/* Writes one line "batchfs: <level>: <message>" if level passes the threshold; a trailing
 * newline in the message is dropped. Thread-safe: one write per message. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_msg() with a va_list. force: write even above the threshold (libfuse's own -o debug_fuse
 * trace, which libfuse produces only when asked). */
void log_vmsg(int level, bool force, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* log_vmsg() of a finished text (libfuse's messages, gathered by main.c). */
void log_text(int level, bool force, const char *text);

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
