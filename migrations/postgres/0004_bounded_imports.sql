-- An import keeps the count of its rejected rows and only the first 100 of them (with their
-- errors), so a payload of invalid rows cannot make the database grow without bound.
alter table jobs add column rejected_count bigint not null default 0;
