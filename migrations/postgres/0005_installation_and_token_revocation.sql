-- The installation's id, made once with the database: tokens name it (`iss`), so a database
-- recreated beside a kept secret refuses the old one's tokens.
create table installation (
    id text not null
);
insert into installation (id) values (replace(gen_random_uuid()::text, '-', ''));

-- Tokens issued before this instant (Unix seconds) no longer authenticate the user: set
-- whenever a password is set, by any path.
alter table users add column tokens_valid_after bigint not null default 0;
