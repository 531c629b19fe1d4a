//! Users: registration, lookup for login and tokens, admin deletion.

use chrono::{DateTime, Utc};

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
}

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
               returning id, email, full_name, role, created_at, tokens_valid_after";
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
               returning id, email, full_name, role, created_at, tokens_valid_after";
        let promote = "update users set role = 'admin' where email_key = $1 \
               returning id, email, full_name, role, created_at, tokens_valid_after";
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
        db.users_changed();
        user?
            .pop()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    })
    .await
}

pub async fn find(db: &Db, id: i64) -> StoreResult<Option<User>> {
    let cache = db.cache();
    if let Some(user) = cache.and_then(|cache| cache.user(id)) {
        return Ok(Some(user));
    }
    let tag = cache.map(|cache| cache.user_generation());
    let sql = "select id, email, full_name, role, created_at, tokens_valid_after from users where id = $1";
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

/// The id and password hash of the account with this email (any case), for login.
pub async fn credentials(db: &Db, email_key: &str) -> StoreResult<Option<(i64, String)>> {
    let sql = "select id, password_hash from users where email_key = $1";
    let row = with_reader!(db, |pool| {
        sqlx::query_as::<_, (i64, String)>(sql)
            .bind(email_key)
            .fetch_optional(pool)
            .await?
    });
    Ok(row)
}

/// What deleting a user came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// The user is the only admin: nobody could administer larder after.
    LastAdmin,
}

/// Deletes the user (and, by cascade, their items, jobs and keys), unless they are the last
/// admin. The check and the delete share a transaction; on PostgreSQL the admins' rows are
/// locked first, so two admins deleting each other at once cannot both succeed.
pub async fn delete(db: &Db, id: i64) -> StoreResult<Deletion> {
    db.write(async {
        let lock = "select id from users where role = 'admin' for update";
        let admins = "select id from users where role = 'admin'";
        let outcome = with_writer!(db, |pool| {
            let mut tx = pool.begin().await?;
            let admin_ids: Vec<(i64,)> =
                sqlx::query_as(if db.is_postgres() { lock } else { admins })
                    .fetch_all(&mut *tx)
                    .await?;
            if admin_ids.len() == 1 && admin_ids[0].0 == id {
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
