-- The constellation shard's tables. Portable between PostgreSQL 15 + pgvector 0.8.0 and
-- PGlite + pgvector 0.8.7: plain DDL, no dollar-quoted bodies, every statement ends in ';'.
-- Times are timestamptz; the shard writes them from its own clock so tests can control them.

create extension if not exists vector;

-- A TV known to this shard. The token is stored only as a hash; the caller compares hashes.
create table devices (
  id text primary key,
  token_hash text not null,
  region text not null,
  registered_at timestamptz not null,
  last_sync_at timestamptz,
  -- Highest pattern-delta version applied; a delta older than this is a stale replay.
  last_version bigint not null default 0 check (last_version >= 0)
);
create index devices_by_region on devices (region);

-- The latest state of each device's shared patterns. A replayed delta overwrites rows
-- instead of adding to them, so it is never counted twice. No vector index here: the shard
-- aggregates these in batches rather than indexing every device's pattern one by one.
create table device_patterns (
  device_id text not null references devices (id) on delete cascade,
  pattern_id text not null,
  embedding vector(384) not null,
  success_rate double precision not null check (success_rate >= 0 and success_rate <= 1),
  sample_count double precision not null check (sample_count >= 0),
  context jsonb not null default '{}',
  version bigint not null check (version >= 0),
  updated_at timestamptz not null,
  primary key (device_id, pattern_id)
);
-- Aggregation reads what changed since its last round.
create index device_patterns_by_updated_at on device_patterns (updated_at);

-- Patterns aggregated across devices of a region, served to TVs and searched by similarity.
create table aggregated_patterns (
  region text not null,
  id text not null,
  embedding vector(384) not null,
  success_rate double precision not null check (success_rate >= 0 and success_rate <= 1),
  sample_count double precision not null check (sample_count >= 0),
  device_count integer not null check (device_count >= 1),
  context jsonb not null default '{}',
  updated_at timestamptz not null,
  primary key (region, id)
);
create index aggregated_patterns_by_embedding on aggregated_patterns using hnsw (embedding vector_cosine_ops);

-- Content gaining viewers in a region.
create table trends (
  region text not null,
  content_id text not null,
  score double precision not null check (score >= 0),
  velocity double precision not null,
  updated_at timestamptz not null,
  primary key (region, content_id)
);
create index trends_by_score on trends (region, score desc);

-- The catalog with embeddings; new or changed items are announced to TVs by added_at.
create table content (
  content_id text primary key,
  title text not null,
  genres jsonb not null default '[]',
  embedding vector(384) not null,
  added_at timestamptz not null
);
create index content_by_added_at on content (added_at, content_id);

-- Version of the global patterns a region's TVs download; bumped by every aggregation write.
create table global_versions (
  region text primary key,
  version bigint not null default 0 check (version >= 0),
  updated_at timestamptz not null
);
