-- GET /items's sorts and filters (issue 20): each sort's order, (key, id), alone and after
-- an owner, so a keyset page `(price, id) > ($1, $2) order by price, id limit n` is one
-- index range. The owner's index gains the id: an owner's items in id order.
drop index items_owner;
create index items_owner on items (owner_id, id);
create index items_price on items (price, id);
create index items_created on items (created_at, id);
create index items_owner_price on items (owner_id, price, id);
create index items_owner_created on items (owner_id, created_at, id);
