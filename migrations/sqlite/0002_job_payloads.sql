-- A job's payload (an import's rows, up to LARDER_IMPORT_MAX_BODY) lives beside the job, not in
-- it: SQLite rewrites a whole row on every update, and the queue updates a job's row at every
-- chunk and heartbeat.
create table job_payloads (
    job_id  blob primary key references jobs (id) on delete cascade,
    payload text not null
);
alter table jobs drop column payload;
