-- larder's schema on SQLite. Instants that SQL compares are integer milliseconds;
-- instants that are only shown are RFC 3339 text.

create table users (
    id            integer primary key autoincrement,
    email         text not null,
    email_key     text not null unique,   -- lower-cased: emails are unique case-insensitively
    password_hash text not null,
    full_name     text,
    role          text not null default 'user' check (role in ('user', 'admin')),
    created_at    text not null
);

create table items (
    id          integer primary key autoincrement,
    name        text not null,
    description text,
    price       real not null check (price >= 0),
    quantity    integer not null check (quantity >= 0),
    owner_id    integer not null references users (id) on delete cascade,
    version     integer not null default 1,
    created_at  text not null,
    updated_at  text not null,
    job_id      blob,      -- the import job that created the item, if any
    job_index   integer,   -- its row in that job: a retried chunk cannot create it twice
    unique (job_id, job_index)
);
create index items_owner on items (owner_id);

create table idempotency_keys (
    user_id         integer not null references users (id) on delete cascade,
    scope           text not null,
    key             text not null,
    request_hash    blob not null,
    status          integer,           -- null while the first request is in flight
    response_headers text,
    response_body   blob,
    created_at_ms   integer not null,
    primary key (user_id, scope, key)
);
create index idempotency_created on idempotency_keys (created_at_ms);

create table jobs (
    id              blob primary key,
    kind            text not null,
    owner_id        integer not null references users (id) on delete cascade,
    status          text not null check (status in ('queued', 'running', 'succeeded', 'failed')),
    payload         text not null,
    total           integer not null,
    done            integer not null default 0,
    attempts        integer not null default 0,
    max_attempts    integer not null,
    result          text,
    error           text,
    run_at_ms       integer not null,
    locked_until_ms integer,
    locked_by       text,
    created_at      text not null,
    started_at      text,
    finished_at     text
);
create index jobs_ready on jobs (status, run_at_ms);

create table job_rejections (
    job_id  blob not null references jobs (id) on delete cascade,
    idx     integer not null,
    errors  text not null,
    primary key (job_id, idx)
);
