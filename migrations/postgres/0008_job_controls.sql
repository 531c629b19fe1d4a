-- Jobs can be listed, cancelled, followed and expire (SPEC §8).
alter table jobs drop constraint jobs_status_check;
alter table jobs add constraint jobs_status_check
    check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled'));
-- The listing's order (newest first), in microseconds, as on SQLite.
alter table jobs add column created_us bigint;
update jobs set created_us = (extract(epoch from created_at) * 1000000)::bigint;
alter table jobs alter column created_us set not null;
-- When the job finished (succeeded, failed or cancelled), for the retention sweep.
alter table jobs add column finished_ms bigint;
update jobs set finished_ms = (extract(epoch from finished_at) * 1000)::bigint
    where finished_at is not null;
-- Set by POST /jobs/{id}/cancel on a running job: its worker stops after the chunk.
alter table jobs add column cancel_requested boolean not null default false;
-- Chunks committed so far: the `id` of the job's latest progress event.
alter table jobs add column chunks bigint not null default 0;
-- Set when the retention sweep forgot the job's payload, result and progress.
alter table jobs add column expired_ms bigint;

create index jobs_by_owner on jobs (owner_id, created_us desc, id desc);
create index jobs_by_age on jobs (created_us desc, id desc);
create index jobs_finished on jobs (finished_ms) where expired_ms is null;

-- One row per committed chunk, written with it: what GET /jobs/{id}/events replays.
create table job_progress (
    job_id         uuid not null references jobs (id) on delete cascade,
    seq            bigint not null,
    done           bigint not null,
    rejected_count bigint not null,
    primary key (job_id, seq)
);
