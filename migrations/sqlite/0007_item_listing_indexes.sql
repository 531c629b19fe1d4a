-- GET /items's sorts and filters (issue 20): each sort's order, (key, id), alone and after
-- an owner. Every SQLite index ends with the rowid (the id) anyway; naming it keeps the
-- row-value comparison of a cursor, `(price, id) > (?, ?)`, one range of the index.
-- `owner_id` in id order is `items_owner` (owner_id, then the rowid).
create index items_price on items (price, id);
create index items_created on items (created_at, id);
create index items_owner_price on items (owner_id, price, id);
create index items_owner_created on items (owner_id, created_at, id);
