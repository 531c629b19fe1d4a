-- A job's payload lives beside the job, not in it (as on SQLite, where every update of a row
-- rewrites all of it): the queue updates a job's row at every chunk and heartbeat.
create table job_payloads (
    job_id  uuid primary key references jobs (id) on delete cascade,
    payload text not null
);
alter table jobs drop column payload;
