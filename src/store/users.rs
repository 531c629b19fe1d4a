//! Users: registration, lookup for login and tokens, listing, changes, deletion, and the
//! last-active-admin rule.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::coalesce::Fetched;
use super::{Db, StoreError, StoreResult, is_unique_violation};
use crate::domain::user::{Email, Role};

/// A user row, without the password hash. The API shows it through `http::users::UserView`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    /// Unix seconds: the user's tokens issued before it are refused (set with the password).
    pub tokens_valid_after: i64,
    /// A deactivated user cannot log in, and their tokens are refused.
    pub is_active: bool,
}

/// The columns a [`User`] is read from, in its field order.
const COLUMNS: &str = "id, email, full_name, role, created_at, tokens_valid_after, is_active";

impl User {
    pub fn role(&self) -> Role {
        Role::from_db(&self.role)
    }
}

/// The outcome of a registration.
pub enum Registration {
    Created(User),
    EmailTaken,
}

#[tracing::instrument(target = "larder::spans::db", name = "users.insert", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn insert(
    db: &Db,
    email: &Email,
    password_hash: &str,
    full_name: Option<&str>,
    role: Role,
) -> StoreResult<Registration> {
    db.write(async {
    let sql = "insert into users (email, email_key, password_hash, full_name, role, created_at) \
               values ($1, $2, $3, $4, $5, $6) \
               returning id, email, full_name, role, created_at, tokens_valid_after, is_active";
    let result = with_writer!(db, |pool| {
        sqlx::query_as::<_, User>(sql)
            .bind(email.as_str())
            .bind(email.key())
            .bind(password_hash)
            .bind(full_name)
            .bind(role.as_str())
            .bind(Utc::now())
            .fetch_all(pool)
            .await
    });
    db.users_changed();
    match result.map(|mut rows| rows.pop()) {
        Ok(Some(user)) => Ok(Registration::Created(user)),
        Ok(None) => Err(StoreError::Database(sqlx::Error::RowNotFound)),
        Err(error) if is_unique_violation(&error) => Ok(Registration::EmailTaken),
        Err(error) => Err(error.into()),
    }
}).await
}

/// Makes `email` an admin, creating the account if needed (idempotent). With a password
/// hash, the password is set too, and every token issued before stops working
/// (`tokens_valid_after`); without one, an existing account keeps its password and tokens.
#[tracing::instrument(target = "larder::spans::db", name = "users.upsert_admin", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn upsert_admin(
    db: &Db,
    email: &Email,
    password_hash: Option<&str>,
) -> StoreResult<User> {
    db.write(async {
        let set_password = "insert into users (email, email_key, password_hash, full_name, role, created_at, tokens_valid_after) \
               values ($1, $2, $3, null, 'admin', $4, $5) \
               on conflict (email_key) do update set role = 'admin', password_hash = excluded.password_hash, \
                   tokens_valid_after = excluded.tokens_valid_after \
               returning id, email, full_name, role, created_at, tokens_valid_after, is_active";
        let promote = "update users set role = 'admin' where email_key = $1 \
               returning id, email, full_name, role, created_at, tokens_valid_after, is_active";
        let user = with_writer!(db, |pool| {
            match password_hash {
                Some(hash) => {
                    sqlx::query_as::<_, User>(set_password)
                        .bind(email.as_str())
                        .bind(email.key())
                        .bind(hash)
                        .bind(Utc::now())
                        .bind(Utc::now().timestamp())
                        .fetch_all(pool)
                        .await
                }
                None => {
                    sqlx::query_as::<_, User>(promote)
                        .bind(email.key())
                        .fetch_all(pool)
                        .await
                }
            }
        });
        let user = user?
            .pop()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        if password_hash.is_some() {
            // A password set ends every session, refresh tokens included.
            with_writer!(db, |pool| {
                sqlx::query(super::sessions::REVOKE_ALL)
                    .bind(user.id)
                    .execute(pool)
                    .await?;
            });
        }
        db.users_changed();
        Ok(user)
    })
    .await
}

#[tracing::instrument(target = "larder::spans::db", name = "users.find", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn find(db: &Db, id: i64) -> StoreResult<Option<User>> {
    let cache = db.cache();
    if let Some(user) = cache.and_then(|cache| cache.user(id)) {
        return Ok(Some(user));
    }
    let tag = cache.map(|cache| cache.user_generation());
    let sql = "select id, email, full_name, role, created_at, tokens_valid_after, is_active \
               from users where id = $1";
    let user = with_reader!(db, |pool| {
        sqlx::query_as::<_, User>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    if let (Some(cache), Some(tag), Some(user)) = (cache, tag, &user) {
        cache.put_user(tag, user.clone());
    }
    Ok(user)
}

/// Whether `$id` is the only active admin, inside the transaction `$tx` (on PostgreSQL the
/// active admins' rows are locked until it ends).
macro_rules! last_active_admin {
    ($db:expr, $tx:ident, $id:expr) => {{
        let lock = "select id from users where role = 'admin' and is_active for update";
        let admins = "select id from users where role = 'admin' and is_active";
        let ids: Vec<(i64,)> = sqlx::query_as(if $db.is_postgres() { lock } else { admins })
            .fetch_all(&mut *$tx)
            .await?;
        ids.len() == 1 && ids[0].0 == $id
    }};
}

/// What a login needs of an account: its id, password hash and whether it is active.
pub struct Account {
    pub id: i64,
    pub password_hash: String,
    pub is_active: bool,
}

/// The account with this email (any case), for login.
#[tracing::instrument(target = "larder::spans::db", name = "users.credentials", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn credentials(db: &Db, email_key: &str) -> StoreResult<Option<Account>> {
    let sql = "select id, password_hash, is_active from users where email_key = $1";
    let row = with_reader!(db, |pool| {
        sqlx::query_as::<_, (i64, String, bool)>(sql)
            .bind(email_key)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.map(|(id, password_hash, is_active)| Account {
        id,
        password_hash,
        is_active,
    }))
}

/// The password hash of a user, to check a password they type again.
#[tracing::instrument(target = "larder::spans::db", name = "users.password_hash", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn password_hash(db: &Db, id: i64) -> StoreResult<Option<String>> {
    let sql = "select password_hash from users where id = $1";
    let hash = with_reader!(db, |pool| {
        sqlx::query_scalar::<_, String>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    Ok(hash)
}

/// The user a token names, if the token's session is live and the user active: one query
/// (a primary-key lookup on each table) per authenticated request. On SQLite the answer is
/// cached per session and dropped on every user or session write in this process.
#[tracing::instrument(target = "larder::spans::db", name = "users.for_session", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn for_session(db: &Db, user_id: i64, session_id: &str) -> StoreResult<Option<User>> {
    if let Db::Postgres(postgres) = db {
        let key: SessionKey = (user_id, session_id.into());
        return postgres.reads.session_users.get(&postgres.pool, key).await;
    }
    let cache = db.cache();
    if let Some(user) = cache.and_then(|cache| cache.session_user(session_id)) {
        return Ok((user.id == user_id).then_some(user));
    }
    let tag = cache.map(|cache| cache.user_generation());
    let sql = "select u.id, u.email, u.full_name, u.role, u.created_at, u.tokens_valid_after, u.is_active \
               from sessions s join users u on u.id = s.user_id \
               where s.id = $1 and s.user_id = $2 and not s.revoked and u.is_active";
    let user = with_reader!(db, |pool| {
        sqlx::query_as::<_, User>(sql)
            .bind(session_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?
    });
    if let (Some(cache), Some(tag), Some(user)) = (cache, tag, &user) {
        cache.put_session_user(tag, session_id, user.clone());
    }
    Ok(user)
}

/// A token's user id and session id: the key of PostgreSQL's batched token checks.
pub(crate) type SessionKey = (i64, std::sync::Arc<str>);

/// A live session's row joined to its active user, for [`for_sessions`].
#[derive(sqlx::FromRow)]
struct SessionUser {
    session_id: String,
    #[sqlx(flatten)]
    user: User,
}

/// PostgreSQL's batched token checks (`store::coalesce`): every waiting session in one query.
/// A key is answered only when the session belongs to the user the token names.
pub(crate) fn for_sessions(pool: PgPool, keys: Vec<SessionKey>) -> Fetched<SessionKey, User> {
    Box::pin(async move {
        let sql = "select s.id as session_id, u.id, u.email, u.full_name, u.role, u.created_at, \
                   u.tokens_valid_after, u.is_active \
                   from sessions s join users u on u.id = s.user_id \
                   where s.id = any($1) and not s.revoked and u.is_active";
        let session_ids: Vec<&str> = keys.iter().map(|(_, session)| session.as_ref()).collect();
        let rows = sqlx::query_as::<_, SessionUser>(sql)
            .bind(&session_ids)
            .fetch_all(&pool)
            .await?;
        let mut users = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: SessionKey = (row.user.id, row.session_id.into());
            if keys.contains(&key) {
                users.insert(key, row.user);
            }
        }
        Ok(users)
    })
}

/// Which users a listing shows.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    /// Lower-case prefix of the email.
    pub email_prefix: Option<&'a str>,
    pub role: Option<Role>,
}

/// Up to `limit` users with ids above `after`, in id order.
#[tracing::instrument(target = "larder::spans::db", name = "users.list", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn list(db: &Db, after: i64, limit: i64, filter: &Filter<'_>) -> StoreResult<Vec<User>> {
    let mut sql = format!("select {COLUMNS} from users where id > $1");
    let mut next = 2;
    if filter.email_prefix.is_some() {
        sql.push_str(&format!(" and email_key like ${next} escape '\\'"));
        next += 1;
    }
    if filter.role.is_some() {
        sql.push_str(&format!(" and role = ${next}"));
        next += 1;
    }
    sql.push_str(&format!(" order by id limit ${next}"));
    let pattern = filter.email_prefix.map(|prefix| {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    });
    let users = with_reader!(db, |pool| {
        let mut query = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql.clone())).bind(after);
        if let Some(pattern) = &pattern {
            query = query.bind(pattern.clone());
        }
        if let Some(role) = filter.role {
            query = query.bind(role.as_str());
        }
        query.bind(limit).fetch_all(pool).await?
    });
    Ok(users)
}

/// What changing a user came to.
#[derive(Debug)]
pub enum Change {
    Changed(User),
    NotFound,
    /// The email is another account's.
    EmailTaken,
    /// The change would leave no active admin.
    LastAdmin,
}

/// A change to a user: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChange<'a> {
    pub email: Option<&'a Email>,
    pub full_name: Option<Option<&'a str>>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

impl UserChange<'_> {
    /// Whether the change may take admin rights from an active admin.
    fn demotes(&self) -> bool {
        self.role == Some(Role::User) || self.is_active == Some(false)
    }
}

/// Changes a user in one transaction. Demoting or deactivating the last active admin is
/// refused (on PostgreSQL the active admins' rows are locked first, so two admins demoting
/// each other at once cannot both succeed); deactivating a user ends all their sessions.
#[tracing::instrument(target = "larder::spans::db", name = "users.change", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn change(db: &Db, id: i64, change: &UserChange<'_>) -> StoreResult<Change> {
    db.write(async {
        let outcome = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            if change.demotes() && last_active_admin!(db, tx, id) {
                tx.rollback().await?;
                return Ok(Change::LastAdmin);
            }
            let sql = format!(
                "update users set \
                     email = coalesce($2, email), email_key = coalesce($3, email_key), \
                     full_name = case when $4 then $5 else full_name end, \
                     role = coalesce($6, role), is_active = coalesce($7, is_active) \
                 where id = $1 returning {COLUMNS}"
            );
            let updated = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(change.email.map(Email::as_str))
                .bind(change.email.map(Email::key))
                .bind(change.full_name.is_some())
                .bind(change.full_name.flatten())
                .bind(change.role.map(Role::as_str))
                .bind(change.is_active)
                .fetch_optional(&mut *tx)
                .await;
            let user = match updated {
                Ok(Some(user)) => user,
                Ok(None) => {
                    tx.rollback().await?;
                    return Ok(Change::NotFound);
                }
                Err(error) if is_unique_violation(&error) => {
                    tx.rollback().await?;
                    return Ok(Change::EmailTaken);
                }
                Err(error) => return Err(error.into()),
            };
            if change.is_active == Some(false) {
                sqlx::query(super::sessions::REVOKE_ALL)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Change::Changed(user)
        });
        db.users_changed();
        Ok(outcome)
    })
    .await
}

/// Sets a user's password: every session ends, every earlier token is refused, and every
/// pending password reset is spent. False when the user does not exist.
#[tracing::instrument(target = "larder::spans::db", name = "users.set_password", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn set_password(db: &Db, id: i64, password_hash: &str) -> StoreResult<bool> {
    db.write(async {
        let found = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(
                "update users set password_hash = $2, tokens_valid_after = $3 where id = $1",
            )
            .bind(id)
            .bind(password_hash)
            .bind(Utc::now().timestamp())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            sqlx::query(super::sessions::REVOKE_ALL)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("delete from password_resets where user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            found
        });
        db.users_changed();
        Ok(found)
    })
    .await
}

/// What deleting a user came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// The user is the only active admin: nobody could administer larder after.
    LastAdmin,
}

/// Deletes the user (and, by cascade, their items, jobs, keys and sessions), unless they are
/// the last active admin. The check and the delete share a transaction; on PostgreSQL the
/// admins' rows are locked first, so two admins deleting each other at once cannot both
/// succeed.
#[tracing::instrument(target = "larder::spans::db", name = "users.delete", skip_all, fields(db.system = db.system(), otel.kind = "client"))]
pub async fn delete(db: &Db, id: i64) -> StoreResult<Deletion> {
    db.write(async {
        let outcome = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            if last_active_admin!(db, tx, id) {
                tx.rollback().await?;
                Deletion::LastAdmin
            } else {
                let deleted = sqlx::query("delete from users where id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                if deleted > 0 {
                    Deletion::Deleted
                } else {
                    Deletion::NotFound
                }
            }
        });
        // Synchronously, before the answer: the user's token stops working at once, and the
        // cascade removed their items.
        db.users_changed();
        db.items_changed();
        Ok(outcome)
    })
    .await
}
