-- One row that `/readyz` rewrites after a storage fault: a write that succeeds proves that
-- writes succeed again (docs/reliability.md).
create table storage_probe (
    id            integer primary key check (id = 1),
    written_at_ms bigint not null
);
