-- Every accepted pattern delta, as the frame bytes the TV sent, written in group commits before
-- the TV is acknowledged. One row per delta (not per pattern) keeps the hot path cheap; the
-- materializer applies rows to device_patterns afterwards, and a restarted shard resumes it.
create table delta_log (
  device_id text not null,
  version bigint not null check (version >= 0),
  region text not null,
  received_at timestamptz not null,
  patterns integer not null check (patterns >= 0),
  frame bytea not null,
  materialized boolean not null default false,
  primary key (device_id, version)
);
create index delta_log_pending on delta_log (received_at) where not materialized;
