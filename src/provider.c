// SPDX-License-Identifier: MIT
/*
 * The provider registry: maps a config's `provider = NAME` to its ops table. The only file
 * besides the providers themselves that includes provider_*.h.
 */
#include <string.h>

#include "provider.h"
#include "provider_anthropic.h"
#include "provider_mock.h"
#include "provider_openai.h"
#include "provider_vertex.h"

static const struct provider_ops *const providers[] = {
	&provider_mock_ops,  &provider_anthropic_ops, &provider_openai_ops,
	&provider_azure_ops, &provider_vertex_ops,
};

const struct provider_ops *provider_lookup(const char *name)
{
	for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++)
		if (!strcmp(providers[i]->name, name))
			return providers[i];
	return NULL;
}
