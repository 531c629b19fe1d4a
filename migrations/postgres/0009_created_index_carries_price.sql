-- GET /items under the created_at sort with a price bound (issue 20): the sort's index
-- carries the price after (created_at, id), so the bound is checked on the index entry as
-- the walk goes (the same indexes as on SQLite).
drop index items_created;
create index items_created on items (created_at, id, price);
drop index items_owner_created;
create index items_owner_created on items (owner_id, created_at, id, price);
