/* SPDX-License-Identifier: MIT */
/*
 * provider = openai and provider = azure: the Batch API over the Files API, see
 * src/providers/openai.c (OpenAI), azure.c (Azure) and openai_common.c (what they share: one
 * implementation of the calls, two ops tables with their own line format, limits, URLs, auth).
 *
 * Config keys, openai: base_url (default $OPENAI_BASE_URL, else https://api.openai.com/v1; a
 * bare host gets /v1), api_key_env (default OPENAI_API_KEY) or api_key_command, organization,
 * project. azure: endpoint (default $AZURE_OPENAI_ENDPOINT; https://RESOURCE.openai.azure.com),
 * api_version (default $OPENAI_API_VERSION, else 2024-10-21; "v1", or an endpoint ending in
 * /openai/v1, selects the v1 API), api_key_env (default AZURE_OPENAI_API_KEY) or
 * api_key_command, or token_command (prints an Entra ID bearer token; rerun after token_ttl
 * seconds, default 3000, or a 401), file_wait (seconds an upload may stay "pending", 300).
 */
#ifndef BATCHFS_PROVIDER_OPENAI_H
#define BATCHFS_PROVIDER_OPENAI_H

#include "provider.h"

extern const struct provider_ops provider_openai_ops;
extern const struct provider_ops provider_azure_ops;

#endif
