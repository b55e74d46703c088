/* SPDX-License-Identifier: MIT */
/*
 * Logging with syslog levels: stderr in the foreground, syslog otherwise. Never log keys,
 * auth headers or request/response bodies; debug lines carry sizes and ids only.
 */
#ifndef BATCHFS_LOG_H
#define BATCHFS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

/* Chooses the sink and the most verbose level printed (LOG_DEBUG with -d). Not thread-safe:
 * call once before any thread starts. */
void log_init(bool foreground, int max_level);
/* Writes one line "batchfs: <level>: <message>" if level passes the threshold; a trailing
 * newline in the message is dropped. Thread-safe: one write per message. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_msg() with a va_list, for routing libfuse's messages (fuse_set_log_func). */
void log_vmsg(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
