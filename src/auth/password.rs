//! Argon2id hashing on the blocking pool, so hashing never stalls the async workers.
//!
//! Each hash takes 19 MiB (the OWASP parameters, argon2's default) and a core for tens of
//! milliseconds, so at most one hash per core runs at a time; the rest wait their turn.
//! Without the bound, a burst of logins would start one blocking thread and 19 MiB per
//! request (the blocking pool grows to 512 threads): gigabytes, for no more throughput.

use std::sync::{Arc, LazyLock};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

use tokio::sync::Semaphore;

use crate::domain::user::Password;

/// A hash of a password nobody has: verifying against it makes an unknown email cost the
/// same time as a wrong password, so timing tells nothing about which emails exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_now("larder-dummy-password-for-timing").expect("hashing a constant works")
});

/// One permit per core: the hashes that may run at once.
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Arc::new(Semaphore::new(cores))
});

/// Runs `work` on the blocking pool once a hashing permit is free. The permit moves into
/// the blocking task, so a request dropped while its hash runs still holds it until the
/// hash ends.
async fn with_permit<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let permit = HASHING.clone().acquire_owned().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await?
}

/// Argon2id with argon2's default parameters (m=19456 KiB, t=2, p=1) and a fresh 16-byte salt
/// from the operating system (`hash_password` draws it).
fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

pub async fn hash(password: &Password) -> anyhow::Result<String> {
    let password = password.expose().to_string();
    with_permit(move || hash_now(&password)).await
}

/// Whether `password` matches `stored`; with no stored hash, does the same work and says no.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    with_permit(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed =
            PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("bad stored hash: {e}"))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

/// Computes the dummy hash ahead of the first login.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_there_are_cores() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..cores * 3)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(with_permit(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }))
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // Unbounded, all of them would overlap (each sleeps on its own blocking thread).
        let most = most.load(Ordering::SeqCst);
        assert!(
            most >= 1 && most <= cores,
            "{most} at once on {cores} cores"
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let password = Password::parse("correct horse", None).unwrap();
        let stored = hash(&password).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify("correct horse".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse".into(), Some(stored)).await.unwrap());
        assert!(
            !verify("larder-dummy-password-for-timing".into(), None)
                .await
                .unwrap()
        );
    }

    /// "correct horse", hashed by argon2 0.5.3 (`Argon2::default()`, a random salt): the
    /// hashes already stored in users' rows must keep verifying whatever argon2 version
    /// larder is built with.
    const HASHED_BY_ARGON2_0_5: &str = "$argon2id$v=19$m=19456,t=2,p=1$At47acMFnqi34f5aWUH6tA$juQaDaj3uad4uGDHvDhS7HxBuBHEBRy8OzD1Whrkm0k";

    #[tokio::test]
    async fn hashes_stored_by_earlier_versions_still_verify() {
        let stored = Some(HASHED_BY_ARGON2_0_5.to_string());
        assert!(
            verify("correct horse".into(), stored.clone())
                .await
                .unwrap()
        );
        assert!(!verify("correct horsE".into(), stored).await.unwrap());
    }

    #[test]
    fn new_hashes_keep_the_stored_format() {
        let stored = hash_now("correct horse").unwrap();
        let parsed = PasswordHash::new(&stored).unwrap();
        let params = HASHED_BY_ARGON2_0_5.rsplitn(3, '$').nth(2).unwrap();
        assert!(stored.starts_with(&format!("{params}$")), "{stored}");
        assert_eq!(parsed.salt.map(|salt| salt.len()), Some(16));
    }
}
