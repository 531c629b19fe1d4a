-- Accounts and sessions (SPEC §7). Existing users stay active and keep their passwords.

-- A deactivated user cannot log in and their tokens stop working.
alter table users add column is_active boolean not null default true;

-- A session starts at a login; every access and refresh token names one. A revoked session's
-- tokens are refused on the next request. `expires_at_ms` is that of its newest refresh token.
create table sessions (
    id            text primary key,
    user_id       bigint not null references users (id) on delete cascade,
    created_at    timestamptz not null,
    last_used_at  timestamptz not null,
    user_agent    text,
    revoked       boolean not null default false,
    expires_at_ms bigint not null
);
create index sessions_user on sessions (user_id);

-- Refresh tokens, stored as SHA-256 of the token: single use, each exchange spends one and
-- issues the next. Presenting a spent one revokes its session (RFC 9700 §4.14).
create table refresh_tokens (
    token_hash    bytea primary key,
    session_id    text not null references sessions (id) on delete cascade,
    expires_at_ms bigint not null,
    spent         boolean not null default false
);
create index refresh_tokens_session on refresh_tokens (session_id);

-- One-time password reset tokens, stored as SHA-256 of the token.
create table password_resets (
    token_hash    bytea primary key,
    user_id       bigint not null references users (id) on delete cascade,
    expires_at_ms bigint not null
);
create index password_resets_user on password_resets (user_id);
