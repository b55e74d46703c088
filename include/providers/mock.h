/* SPDX-License-Identifier: MIT */
/* The built-in offline provider: see src/providers/mock.c. */
#ifndef BATCHFS_PROVIDER_MOCK_H
#define BATCHFS_PROVIDER_MOCK_H

#include "provider.h"

extern const struct provider_ops provider_mock_ops;

#endif
