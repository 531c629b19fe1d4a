-- Jobs can be listed, cancelled, followed and expire (SPEC §8).
--
-- SQLite cannot change a check constraint in place, and `cancelled` joins the statuses: the
-- table is rebuilt. Dropping `jobs` cascades to its payloads and rejections (foreign keys are
-- on and cannot be turned off inside the migration's transaction), so they are kept aside
-- and put back under the new table, which takes the old one's name.
create table jobs_new (
    id               blob primary key,
    kind             text not null,
    owner_id         integer not null references users (id) on delete cascade,
    status           text not null
        check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    total            integer not null,
    done             integer not null default 0,
    attempts         integer not null default 0,
    max_attempts     integer not null,
    result           text,
    error            text,
    run_at_ms        integer not null,
    locked_until_ms  integer,
    locked_by        text,
    created_at       text not null,
    started_at       text,
    finished_at      text,
    rejected_count   bigint not null default 0,
    -- The listing's order (newest first), in microseconds: `created_at` is text here.
    created_us       integer not null,
    -- When the job finished (succeeded, failed or cancelled), for the retention sweep.
    finished_ms      integer,
    -- Set by POST /jobs/{id}/cancel on a running job: its worker stops after the chunk.
    cancel_requested integer not null default 0,
    -- Chunks committed so far: the `id` of the job's latest progress event.
    chunks           integer not null default 0,
    -- Set when the retention sweep forgot the job's payload, result and progress.
    expired_ms       integer
);
insert into jobs_new (id, kind, owner_id, status, total, done, attempts, max_attempts, result,
        error, run_at_ms, locked_until_ms, locked_by, created_at, started_at, finished_at,
        rejected_count, created_us, finished_ms)
    select id, kind, owner_id, status, total, done, attempts, max_attempts, result,
        error, run_at_ms, locked_until_ms, locked_by, created_at, started_at, finished_at,
        rejected_count,
        cast((julianday(created_at) - 2440587.5) * 86400000000.0 as integer),
        case when finished_at is null then null
             else cast((julianday(finished_at) - 2440587.5) * 86400000.0 as integer) end
    from jobs;
create temp table kept_payloads as select job_id, payload from job_payloads;
create temp table kept_rejections as select job_id, idx, errors from job_rejections;
drop table jobs;
alter table jobs_new rename to jobs;
insert into job_payloads (job_id, payload) select job_id, payload from kept_payloads;
insert into job_rejections (job_id, idx, errors) select job_id, idx, errors from kept_rejections;
drop table kept_payloads;
drop table kept_rejections;

create index jobs_ready on jobs (status, run_at_ms);
create index jobs_by_owner on jobs (owner_id, created_us desc, id desc);
create index jobs_by_age on jobs (created_us desc, id desc);
create index jobs_finished on jobs (finished_ms) where expired_ms is null;

-- One row per committed chunk, written with it: what GET /jobs/{id}/events replays.
create table job_progress (
    job_id         blob not null references jobs (id) on delete cascade,
    seq            integer not null,
    done           integer not null,
    rejected_count integer not null,
    primary key (job_id, seq)
);
