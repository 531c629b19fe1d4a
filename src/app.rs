//! Building and running larder: settings → pools and migrations → state → router → listener,
//! then serve until a shutdown signal, let in-flight requests finish, stop the workers.

use std::future::Future;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::mail::Mailer;
use crate::auth::password;
use crate::auth::token::Tokens;
use crate::config::{
    AdminCommand, AdminCreate, AdminDeactivate, AdminList, AdminSetPassword, BackupArgs, Cli,
    Command, DatabaseSettings, DatabaseUrl, Settings,
};
use crate::domain::user::{Email, Password};
use crate::http::state::{AppContext, AppState};
use crate::limits::Limits;
use crate::store::{self, Db};

/// The process entry point: parse the command line, then serve or run an admin command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return settings_error(error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("larder: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(settings) => {
            if let Err(problem) = settings.check() {
                eprintln!("larder: invalid settings: {problem}");
                return ExitCode::from(2);
            }
            // Dropped after the server stopped, while the runtime still runs: the last
            // spans go out, then the last log lines.
            let _telemetry = match crate::telemetry::init(
                &settings.log_level,
                settings.log_format,
                runtime.handle(),
            ) {
                Ok(telemetry) => telemetry,
                Err(problem) => {
                    eprintln!("larder: invalid settings: {problem}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(serve(*settings))
        }
        Command::Migrate(database) => runtime.block_on(migrate(database)),
        Command::Check(settings) => {
            return match runtime.block_on(check(*settings)) {
                Ok(report) => {
                    println!("larder check: {report}");
                    ExitCode::SUCCESS
                }
                Err(problem) => {
                    eprintln!("larder check: {problem}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Backup(args) => runtime.block_on(backup(args)),
        Command::Admin {
            action: AdminCommand::Create(args),
        } => match admin_from_stdin(&args.email) {
            Ok((email, password)) => runtime.block_on(create_admin(args, email, password)),
            Err(problem) => {
                eprintln!("larder: {problem}");
                return ExitCode::from(2);
            }
        },
        Command::Admin {
            action: AdminCommand::List(args),
        } => runtime.block_on(list_accounts(args)),
        Command::Admin {
            action: AdminCommand::SetPassword(args),
        } => match admin_from_stdin(&args.email) {
            Ok((email, password)) => runtime.block_on(set_password(args, email, password)),
            Err(problem) => {
                eprintln!("larder: {problem}");
                return ExitCode::from(2);
            }
        },
        Command::Admin {
            action: AdminCommand::Deactivate(args),
        } => match Email::parse(&args.email) {
            Ok(email) => runtime.block_on(deactivate(args, email)),
            Err(problem) => {
                eprintln!("larder: --email: {problem}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("larder: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version print as usual; a bad setting is one clear line and exit code 2.
fn settings_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ");
    eprintln!("larder: invalid settings: {line}");
    ExitCode::from(2)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let address = app.address();
    tracing::info!("larder is serving http://{address} (documentation: http://{address}/docs)");
    app.run_until(shutdown_signal()).await
}

/// `larder migrate`: apply the pending migrations, say where the schema is, exit.
async fn migrate(mut database: DatabaseSettings) -> anyhow::Result<()> {
    database.no_migrate = false;
    let db = Db::connect(&database)
        .await
        .context("migrating the database")?;
    let version = db.schema_version().await?;
    db.close().await;
    println!("larder migrate: the database is at {version}");
    Ok(())
}

/// `larder check`: the settings, then the database (reached, its schema version; a SQLite
/// file not made yet is fine, `serve` or `migrate` makes it), then Redis when set; whether
/// tracing is on (its `OTEL_*` settings checked). One line either way; nothing is created
/// or migrated.
async fn check(settings: Settings) -> Result<String, String> {
    settings
        .check()
        .map_err(|problem| format!("invalid settings: {problem}"))?;
    let tracing = match crate::telemetry::check_tracing() {
        Ok(true) => "; tracing on (OTLP/HTTP)",
        Ok(false) => "; tracing off",
        Err(problem) => return Err(format!("invalid settings: {problem}")),
    };
    let url = &settings.database.database_url;
    let database = match Db::sqlite_path(url) {
        Some(path) if !path.exists() => format!(
            "database {} does not exist yet (serve or migrate creates it)",
            path.display()
        ),
        _ => {
            let db = Db::open(&settings.database, store::schema::OnOpen::AsItIs)
                .await
                .map_err(|error| format!("cannot open the database: {error}"))?;
            let version = db.schema_version().await;
            db.close().await;
            let version = version.map_err(|error| format!("cannot read the database: {error}"))?;
            format!("database reachable, {version}")
        }
    };
    let redis = match &settings.redis_url {
        Some(url) => {
            crate::limits::redis::ping(url)
                .await
                .map_err(|error| format!("cannot reach Redis: {error:#}"))?;
            "; Redis reachable"
        }
        None => "",
    };
    Ok(format!("settings ok; {database}{redis}{tracing}"))
}

/// `larder backup --to PATH`: a consistent copy of the live SQLite database.
async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let bytes = store::schema::backup(&args.database.database_url, &args.to).await?;
    println!(
        "larder backup: {} written ({bytes} bytes, integrity ok)",
        args.to.display()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
}

/// The email from `--email` and password from stdin, both checked: a bad one is a usage
/// error (exit 2), found before the database is touched.
fn admin_from_stdin(email: &str) -> Result<(Email, Password), String> {
    let email = Email::parse(email).map_err(|e| format!("--email: {e}"))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = Password::parse(line.trim_end_matches(['\r', '\n']), Some(&email))
        .map_err(|e| format!("password: {}", e.msg))?;
    Ok((email, password))
}

async fn create_admin(args: AdminCreate, email: Email, password: Password) -> anyhow::Result<()> {
    let db = Db::connect(&args.database)
        .await
        .context("opening the database")?;
    let user = ensure_admin(&db, &email, &password).await?;
    db.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "admin {} is ready (id {})", user.email, user.id)?;
    Ok(())
}

/// `larder admin list`: one line per account, tab-separated.
async fn list_accounts(args: AdminList) -> anyhow::Result<()> {
    let db = Db::connect(&args.database)
        .await
        .context("opening the database")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "id\temail\trole\tactive\tcreated_at")?;
    let mut after = 0;
    loop {
        let page = store::users::list(&db, after, 500, &Default::default()).await?;
        for user in &page {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                user.id,
                user.email,
                user.role,
                if user.is_active { "yes" } else { "no" },
                user.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = last.id,
            _ => break,
        }
    }
    db.close().await;
    Ok(())
}

/// `larder admin set-password`: the account's password is set and every session ends.
async fn set_password(
    args: AdminSetPassword,
    email: Email,
    password: Password,
) -> anyhow::Result<()> {
    let db = Db::connect(&args.database)
        .await
        .context("opening the database")?;
    let account = store::users::credentials(&db, &email.key())
        .await?
        .with_context(|| format!("no account has the email {}", email.as_str()))?;
    let hash = password::hash(&password).await?;
    store::users::set_password(&db, account.id, &hash).await?;
    db.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "the password of {} is set; every session of the account has ended",
        email.as_str()
    )?;
    Ok(())
}

/// `larder admin deactivate`: the account cannot log in and every session ends.
async fn deactivate(args: AdminDeactivate, email: Email) -> anyhow::Result<()> {
    use store::users::{Change, UserChange};
    let db = Db::connect(&args.database)
        .await
        .context("opening the database")?;
    let account = store::users::credentials(&db, &email.key())
        .await?
        .with_context(|| format!("no account has the email {}", email.as_str()))?;
    let change = UserChange {
        is_active: Some(false),
        ..UserChange::default()
    };
    let outcome = store::users::change(&db, account.id, &change).await?;
    db.close().await;
    match outcome {
        Change::Changed(_) => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} is deactivated; every session of the account has ended",
                email.as_str()
            )?;
            Ok(())
        }
        Change::LastAdmin => anyhow::bail!(
            "{} is the last active admin: make another admin first",
            email.as_str()
        ),
        Change::NotFound | Change::EmailTaken => {
            anyhow::bail!("no account has the email {}", email.as_str())
        }
    }
}

async fn ensure_admin(
    db: &Db,
    email: &Email,
    password: &Password,
) -> anyhow::Result<store::users::User> {
    // Run at every start with `LARDER_ADMIN_PASSWORD`: a password that is already the
    // account's is not set again, so a restart does not end the admin's tokens.
    let stored = store::users::credentials(db, &email.key()).await?;
    let hash = match stored {
        Some(account)
            if password::verify(
                password.expose().to_string(),
                Some(account.password_hash.clone()),
            )
            .await? =>
        {
            None
        }
        _ => Some(password::hash(password).await?),
    };
    Ok(store::users::upsert_admin(db, email, hash.as_deref()).await?)
}

/// The token secret: `LARDER_JWT_SECRET`, else one generated once and kept beside the SQLite
/// file (so restarts keep sessions), else (PostgreSQL without a secret) one per process.
fn jwt_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let Some(database) = Db::sqlite_path(&settings.database.database_url) else {
        tracing::warn!(
            "LARDER_JWT_SECRET is not set: tokens will not survive a restart or work across processes"
        );
        return Ok(random_secret().into_bytes());
    };
    let mut path = database.into_os_string();
    path.push(".jwt-secret");
    read_or_create_secret(Path::new(&path))
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::fs::OpenOptions;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(mut file) => {
            let secret = random_secret();
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            Ok(secret.into_bytes())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token secret {}", path.display()))?;
            let secret = secret.trim();
            anyhow::ensure!(
                secret.len() >= 32,
                "the token secret in {} is too short",
                path.display()
            );
            Ok(secret.as_bytes().to_vec())
        }
        Err(error) => {
            Err(error).with_context(|| format!("creating the token secret {}", path.display()))
        }
    }
}

/// What an embedding program adds to larder: routes beside the API, and job kinds.
#[derive(Default)]
pub struct Extensions {
    pub routes: crate::http::ExtraRoutes,
    pub kinds: crate::jobs::Kinds,
}

/// A built server: bound to its port, state ready, background tasks running.
pub struct Application {
    listener: TcpListener,
    service: crate::http::HttpService,
    state: AppState,
    address: SocketAddr,
    background: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Extensions::default()).await
    }

    /// [`build`](Self::build), with routes and job kinds of the embedding program's (the
    /// tests inject their fault hooks this way; the release binary has none).
    pub async fn build_with(settings: Settings, extensions: Extensions) -> anyhow::Result<Self> {
        // Install the recorder before the first request is counted.
        crate::telemetry::metrics();
        let db = Db::connect(&settings.database).await.with_context(|| {
            format!(
                "opening the database {}",
                redact(&settings.database.database_url)
            )
        })?;
        if let Some((email, password)) = settings.admin().map_err(anyhow::Error::msg)? {
            ensure_admin(&db, &email, &password).await?;
        }
        let installation = db
            .installation_id()
            .await
            .context("reading the installation id")?;
        let tokens = Tokens::new(&jwt_secret(&settings)?, settings.token_ttl, &installation)?;
        let limits = Limits::from_settings(&settings).await?;
        let mailer = Mailer::new(settings.smtp_url.as_ref(), &settings.mail_from)?;
        tokio::task::spawn_blocking(password::warm_up);

        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let address = listener.local_addr()?;
        let state = AppState::new(AppContext {
            settings,
            db,
            tokens,
            limits,
            jobs: crate::jobs::Queue {
                kinds: extensions.kinds,
                ..Default::default()
            },
            mailer,
        });
        let stop = CancellationToken::new();
        let mut background = vec![tokio::spawn(housekeeping(state.clone(), stop.clone()))];
        background.extend(start_jobs(&state, &stop));
        let service = crate::http::service(state.clone(), extensions.routes);
        Ok(Application {
            listener,
            service,
            state,
            address,
            background,
            stop,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then gives in-flight requests the grace period.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.state.settings.grace_period();
        let header_timeout = Duration::from_secs(self.state.settings.header_timeout);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let max_connections = self.state.settings.max_connections();
        let closing = self.state.jobs.closing.clone();
        let server = crate::server::serve(
            self.listener,
            self.service,
            header_timeout,
            max_connections,
            async move {
                shutdown.await;
                // Endless answers (job event streams) end now, so their connections close.
                closing.cancel();
                let _ = stopping_tx.send(());
            },
        );
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {}
            _ = deadline => tracing::warn!(?grace, "grace period over: dropping unfinished requests"),
        }
        self.stop.cancel();
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.state.db.close().await;
        tracing::info!("larder stopped");
        Ok(())
    }
}

/// The job workers, on PostgreSQL the listener that wakes them for jobs stored by any process
/// (and tells the followers of jobs' events), and the retention sweep.
fn start_jobs(state: &AppState, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    use crate::jobs::worker;
    let config = worker::WorkerConfig {
        db: state.db.clone(),
        wake: state.jobs.wake.clone(),
        lease: Duration::from_secs(state.settings.job_lease),
        kinds: state.jobs.kinds.clone(),
    };
    let mut tasks = worker::spawn_workers(config, state.settings.workers, stop.clone());
    // Even without workers: the followers of a job's events hear other processes through it.
    if let Db::Postgres(postgres) = &state.db {
        tasks.push(worker::spawn_listener(
            postgres.pool.clone(),
            state.jobs.wake.clone(),
            postgres.job_events.clone(),
            stop.clone(),
        ));
    }
    tasks.push(tokio::spawn(crate::jobs::sweep_expired(
        state.db.clone(),
        state.settings.job_retention,
        stop.clone(),
    )));
    tasks
}

/// Periodic chores: expire idempotency keys, forget idle rate-limit and login-failure state.
async fn housekeeping(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = store::idempotency::sweep(&state.db).await {
            tracing::warn!(%error, "sweeping idempotency keys failed");
        }
        if let Err(error) = store::sessions::sweep(&state.db).await {
            tracing::warn!(%error, "sweeping sessions and reset tokens failed");
        }
        state.limits.evict_stale();
    }
}

/// The database URL without its password, for messages.
fn redact(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(url) => url.clone(),
        DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.clone(),
        },
    }
}
