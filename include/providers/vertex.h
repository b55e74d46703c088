/* SPDX-License-Identifier: MIT */
/*
 * provider = vertex, Claude batch prediction on Vertex AI: see src/providers/vertex.c.
 * Keys of its config section:
 *   project, location (a region, e.g. us-east5), bucket   required
 *   prefix = batchfs/          object names: {prefix}{identity}/requests.jsonl, output/
 *   model = claude-3-5-haiku@20241022   when the lines carry no request.model
 *   aiplatform_url = https://{location}-aiplatform.googleapis.com
 *   storage_url = https://storage.googleapis.com
 *   resumable_threshold = 8388608, upload_chunk_size = 8388608 (multiple of 262144)
 *   access_token_command, access_token_ttl = 300, credentials = FILE (else ADC: see gauth.h)
 *   first_job_retry = 600      seconds before a job failed with INTERNAL is retried (0: never)
 *   output = gcs | bigquery, bigquery_dataset = PROJECT.DATASET, bigquery_url
 * (and, read by batch.c for every provider: max_concurrent_jobs, cancel_confirm)
 */
#ifndef BATCHFS_PROVIDER_VERTEX_H
#define BATCHFS_PROVIDER_VERTEX_H

#include "provider.h"

extern const struct provider_ops provider_vertex_ops;

#endif
