/* SPDX-License-Identifier: MIT */
/* provider = anthropic, the Message Batches API: see src/providers/anthropic.c. */
#ifndef BATCHFS_PROVIDER_ANTHROPIC_H
#define BATCHFS_PROVIDER_ANTHROPIC_H

#include "provider.h"

extern const struct provider_ops provider_anthropic_ops;

/* Anthropic's request line (the mock takes the same lines). */
extern const struct jsonl_format anthropic_format;

/* Its request line rules (a jsonl_check_fn), shared with the mock, which takes the same lines. */
int anthropic_validate_line(struct jsonl_validator *v, const struct cJSON *root,
			    const char *custom_id, long lineno, struct bfs_err *err);

/* Its state words (provider_ops.state_from), shared with the mock. */
int anthropic_state_from(const char *processing_status, bool cancel_initiated,
			 enum batch_state *out);

#endif
