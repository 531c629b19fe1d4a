//! Typed settings from flags and `LARDER_*` variables, checked when they are loaded.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::user::{Email, Password};

#[derive(Debug, Parser)]
#[command(
    name = "larder",
    version,
    about = "An items-and-users JSON API that speaks HTTP precisely"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(Box<Settings>),
    /// Apply the database migrations and exit (deploy pipelines; then `serve --no-migrate`).
    Migrate(DatabaseSettings),
    /// Check the settings and reach the database (and Redis): exit 0, or one line and exit 1.
    Check(Box<Settings>),
    /// Copy a live SQLite database to a new file: a consistent snapshot, taken while it serves.
    Backup(BackupArgs),
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (or promote an existing account to admin).
    Create(AdminCreate),
    /// List every account: id, email, role, whether it is active.
    List(AdminList),
    /// Set an account's password (read from stdin); every session of the account ends.
    SetPassword(AdminSetPassword),
    /// Deactivate an account: it cannot log in and every session ends (never the last
    /// active admin).
    Deactivate(AdminDeactivate),
}

#[derive(Debug, Args)]
pub struct AdminList {
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct AdminSetPassword {
    /// The account's email address.
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input (one line).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct AdminDeactivate {
    /// The account's email address.
    #[arg(long)]
    pub email: String,
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct AdminCreate {
    /// The admin's email address.
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input (one line).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write; it must not exist yet.
    #[arg(long)]
    pub to: std::path::PathBuf,
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Database URL: `sqlite://path.db` (created if missing) or `postgres://...`.
    #[arg(
        long,
        env = "LARDER_DATABASE_URL",
        default_value = "sqlite://larder.db"
    )]
    pub database_url: DatabaseUrl,
    /// Connections in the pool (on SQLite: the read pool; writes use one connection).
    #[arg(long, env = "LARDER_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pool_size: u32,
    /// Seconds to wait for a free connection before answering 503.
    #[arg(long, env = "LARDER_POOL_TIMEOUT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub pool_timeout: u64,
    /// SQLite durability: `full` survives power loss, `normal` may lose the last commits on power loss.
    #[arg(long, env = "LARDER_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,
    /// Do not apply migrations at start; refuse to start on a schema that is behind
    /// (`larder migrate` applies them).
    #[arg(long, env = "LARDER_NO_MIGRATE", default_value_t = false,
        action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub no_migrate: bool,
}

impl DatabaseSettings {
    pub fn pool_timeout(&self) -> Duration {
        Duration::from_secs(self.pool_timeout)
    }
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "LARDER_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "LARDER_MAX_BODY", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body: u64,
    /// Largest body in bytes for `POST /process` (bulk imports).
    #[arg(long, env = "LARDER_IMPORT_MAX_BODY", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub import_max_body: u64,
    /// The most rows one import may hold (one more is 413).
    #[arg(long, env = "LARDER_IMPORT_MAX_ITEMS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub import_max_items: u64,
    /// The most queued or running jobs one user may have (one more is 429).
    #[arg(long, env = "LARDER_JOB_QUOTA", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_quota: u64,
    /// Log filter, e.g. `info` or `larder=debug,info`.
    #[arg(long, env = "LARDER_LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "LARDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C.
    #[arg(long, env = "LARDER_GRACE_PERIOD", default_value_t = 10)]
    pub grace_period: u64,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "LARDER_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Seconds a client may take to send a request's headers (slow clients are cut off).
    #[arg(long, env = "LARDER_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Deployment environment; `production` requires `LARDER_JWT_SECRET`.
    #[arg(long = "env", env = "LARDER_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
    /// Secret for signing tokens (at least 32 bytes).
    #[arg(long, env = "LARDER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Lifetime of an access token in seconds (at most 24 hours); refresh tokens live 30 days.
    #[arg(long, env = "LARDER_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub token_ttl: u64,
    /// Email of an admin to create at start (idempotent).
    #[arg(long, env = "LARDER_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the admin created at start.
    #[arg(long, env = "LARDER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Rate limit of `GET /api/data` per `client`, as `requests/window`, e.g. `100/60s`.
    #[arg(long, env = "LARDER_RATE_LIMIT", default_value = "100/60s")]
    pub rate_limit: RateLimitSpec,
    /// Failed logins allowed per (account, client address), as `count/window`.
    #[arg(long, env = "LARDER_LOGIN_LIMIT", default_value = "10/5m")]
    pub login_limit: RateLimitSpec,
    /// Failed logins allowed per client address, whatever the account.
    #[arg(long, env = "LARDER_LOGIN_ADDRESS_LIMIT", default_value = "100/5m")]
    pub login_address_limit: RateLimitSpec,
    /// Registrations allowed per client address, and password-reset requests (counted apart).
    #[arg(long, env = "LARDER_REGISTRATION_LIMIT", default_value = "20/1h")]
    pub registration_limit: RateLimitSpec,
    /// SMTP server for password-reset mail, `smtp://HOST[:PORT]` (plain SMTP, e.g. a local
    /// relay); without it the reset link is written to the log.
    #[arg(long, env = "LARDER_SMTP_URL", value_parser = parse_smtp_url)]
    pub smtp_url: Option<SmtpUrl>,
    /// The sender of larder's mail.
    #[arg(
        long,
        env = "LARDER_MAIL_FROM",
        default_value = "larder <noreply@localhost>"
    )]
    pub mail_from: String,
    /// The page a password-reset link opens; the link adds `?token=…`.
    #[arg(
        long,
        env = "LARDER_PASSWORD_RESET_URL",
        default_value = "http://localhost:8000/reset-password"
    )]
    pub password_reset_url: String,
    /// Comma-separated addresses or CIDRs of proxies whose `Forwarded` / `X-Forwarded-For`
    /// name the client; from any other peer those headers are ignored.
    #[arg(long, env = "LARDER_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// The most connections open at once; more wait to be accepted. Default: sized from the
    /// process's open-file limit.
    #[arg(long, env = "LARDER_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Redis URL; when set, rate limits are shared by every process.
    #[arg(long, env = "LARDER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of larder's Redis keys, so several deployments (or tests) can share one Redis.
    #[arg(long, env = "LARDER_REDIS_PREFIX", default_value = "larder:")]
    pub redis_prefix: String,
    /// Background job workers in this process.
    #[arg(long, env = "LARDER_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Comma-separated origins allowed by CORS (`*` for any); CORS is off when unset.
    #[arg(long, env = "LARDER_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Refuse an item write (`PUT`, `PATCH`, `DELETE`) without `If-Match` with 428, so no
    /// client can overwrite a change it has not seen (RFC 6585 §3).
    #[arg(long, env = "LARDER_REQUIRE_IF_MATCH", default_value_t = false,
        action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub require_if_match: bool,
    /// Seconds a worker holds a job before another process may take it over.
    #[arg(long, env = "LARDER_JOB_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease: u64,
    /// How long a finished job is kept (e.g. `7d`, `12h`, `30m`, `90s`, `500ms`); after it,
    /// `GET /jobs/{id}` is 410 and only the id is remembered.
    #[arg(long, env = "LARDER_JOB_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub job_retention: Duration,
}

impl Settings {
    /// Checks that span several settings; clap already checked each one alone.
    pub fn check(&self) -> Result<(), String> {
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return Err("LARDER_JWT_SECRET must be at least 32 bytes".into());
        }
        if self.environment == Environment::Production && self.jwt_secret.is_none() {
            return Err("LARDER_JWT_SECRET is required when LARDER_ENV=production".into());
        }
        self.admin()?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(format!(
                "LARDER_REDIS_URL must start with redis://, got {url:?}"
            ));
        }
        Ok(())
    }

    /// The admin to make at start (`LARDER_ADMIN_EMAIL` + `LARDER_ADMIN_PASSWORD`), checked
    /// against the email rules and the password policy.
    pub fn admin(&self) -> Result<Option<(Email, Password)>, String> {
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(password)) => {
                let email = Email::parse(email).map_err(|e| format!("LARDER_ADMIN_EMAIL: {e}"))?;
                let password = Password::parse(password, Some(&email))
                    .map_err(|e| format!("LARDER_ADMIN_PASSWORD: {}", e.msg))?;
                Ok(Some((email, password)))
            }
            (None, None) => Ok(None),
            _ => Err("LARDER_ADMIN_EMAIL and LARDER_ADMIN_PASSWORD must be set together".into()),
        }
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period)
    }

    /// `LARDER_MAX_CONNECTIONS`, or what the open-file limit leaves after the database pool,
    /// log and Redis files and a margin.
    pub fn max_connections(&self) -> usize {
        if let Some(max) = self.max_connections {
            return max as usize;
        }
        let reserved = 128 + self.database.pool_size as u64;
        open_file_limit()
            .saturating_sub(reserved)
            .clamp(64, 1 << 20) as usize
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// Settings for tests and embedding: a fresh database, port 0, quiet logs.
    pub fn for_database(database_url: DatabaseUrl) -> Self {
        let cli = Cli::parse_from(["larder", "serve", "--bind", "127.0.0.1:0"]);
        let Command::Serve(mut settings) = cli.command else {
            unreachable!("serve was parsed")
        };
        settings.database.database_url = database_url;
        *settings
    }
}

/// Where password-reset mail goes: a plain SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
}

fn parse_smtp_url(value: &str) -> Result<SmtpUrl, String> {
    let malformed = || format!("expected smtp://HOST[:PORT], got {value:?}");
    let rest = value.strip_prefix("smtp://").ok_or_else(malformed)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse::<u16>().map_err(|_| malformed())?)
        }
        _ => (rest, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err(malformed());
    }
    Ok(SmtpUrl {
        host: host.to_string(),
        port,
    })
}

/// The soft limit on open files (`RLIMIT_NOFILE`).
fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Where the data lives; only the two supported schemes can be constructed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(url) | DatabaseUrl::Postgres(url) => url,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(value.to_string()))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(value.to_string()))
        } else {
            Err("expected sqlite://PATH or postgres://...".into())
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proxies allowed to name the client: addresses or CIDRs, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn contains(&self, address: &std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(address))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("expected an IP address or CIDR, got {entry:?}"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

/// A whole number and a unit: `ms`, `s` (or none), `m`, `h` or `d`.
fn duration_of(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (amount, unit) = text.split_at(split);
    let amount: u64 = amount.parse().ok()?;
    let seconds = |per: u64| amount.checked_mul(per).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(amount)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => None,
    }
}

/// A positive duration such as `7d`, `12h`, `30m`, `90s` or `500ms` (as in the rate limits).
fn parse_duration(value: &str) -> Result<Duration, String> {
    match duration_of(value.trim()) {
        Some(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "expected a positive duration such as 7d, 12h, 30m, 90s or 500ms, got {value:?}"
        )),
    }
}

/// `requests/window`, e.g. `100/60s`, `10/1m`, `5/500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimitSpec {
    /// The window in whole seconds, as the `RateLimit-Policy` header states it (at least 1).
    pub fn window_secs(&self) -> u64 {
        self.window.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl FromStr for RateLimitSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("expected REQUESTS/WINDOW such as 100/60s, got {value:?}");
        let (requests, window) = value.split_once('/').ok_or_else(malformed)?;
        let requests: u32 = requests.trim().parse().map_err(|_| malformed())?;
        let window = duration_of(window.trim()).ok_or_else(malformed)?;
        if requests == 0 || window.is_zero() {
            return Err(format!(
                "requests and window must be positive, got {value:?}"
            ));
        }
        Ok(RateLimitSpec { requests, window })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_spec_parses_units() {
        let spec: RateLimitSpec = "100/60s".parse().unwrap();
        assert_eq!(spec.requests, 100);
        assert_eq!(spec.window, Duration::from_secs(60));
        assert_eq!(
            "5/2m".parse::<RateLimitSpec>().unwrap().window,
            Duration::from_secs(120)
        );
        assert_eq!(
            "5/250ms".parse::<RateLimitSpec>().unwrap().window,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "0s", "d", "1w", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limit_spec_rejects_garbage() {
        for bad in [
            "",
            "100",
            "100/",
            "/60s",
            "0/60s",
            "10/0s",
            "10/60x",
            "-1/60s",
            "a/b",
            "1/999999999999999999m",
            "1/999999999999999999h",
        ] {
            assert!(bad.parse::<RateLimitSpec>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.7,::1".parse().unwrap();
        assert!(proxies.contains(&"10.1.2.3".parse().unwrap()));
        assert!(proxies.contains(&"192.0.2.7".parse().unwrap()));
        assert!(!proxies.contains(&"192.0.2.8".parse().unwrap()));
        assert!(proxies.contains(&"::1".parse().unwrap()));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("example.com".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn smtp_urls() {
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525").unwrap(),
            SmtpUrl {
                host: "127.0.0.1".into(),
                port: 2525
            }
        );
        assert_eq!(parse_smtp_url("smtp://mail.example.com").unwrap().port, 25);
        assert_eq!(parse_smtp_url("smtp://[::1]:2525").unwrap().host, "::1");
        for bad in [
            "",
            "smtps://x",
            "smtp://",
            "smtp://h:x",
            "smtp://u:p@h:25",
            "http://h",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_url_accepts_only_known_schemes() {
        assert!(matches!(
            "sqlite://x.db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(matches!(
            "postgres://u@h/db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
    }
}
