/* SPDX-License-Identifier: MIT */
/* provider = anthropic, the Message Batches API: see src/providers/anthropic.c. */
#ifndef BATCHFS_PROVIDER_ANTHROPIC_H
#define BATCHFS_PROVIDER_ANTHROPIC_H

#include "provider.h"

extern const struct provider_ops provider_anthropic_ops;

#endif
