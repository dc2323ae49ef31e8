//! `cerebelum admin` and `cerebelum audit`: tenants (quotas, sandbox
//! limits, HTTP allow-lists), API keys, secrets and the audit log, on the
//! database directly (`--db`), or with `--server` through a server's
//! `Admin` service as the operator of `--api-key`
//! (a [`Client`] either way). The master key's commands work on
//! files, so only where the database is.

use super::Cli;
use super::connect::remote;
use super::flags::{
    DAY_MS, MAX_MEMORY_MB, QuotaArgs, master_key, open_store, range_i64, sqlite_file,
};
use anyhow::{Context, Result, bail};
use cerebelum::api::admin::{MIN_SECRET_LEN, NO_MASTER_KEY, check_secret_name};
use cerebelum::api::audit::Actor;
use cerebelum::api::{Api, Client};
use cerebelum::api::{DEFAULT_QUOTAS, keys};
use cerebelum::clock::{Clock, SystemClock};
use cerebelum::model::{Quotas, TenantRecord};
use cerebelum::secrets::{self, MasterKey};
use cerebelum::store::{SharedStore, Synchronous};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Create, list or change tenants.
    Tenant {
        #[command(subcommand)]
        command: Box<TenantCommand>,
    },
    /// Create, list or revoke API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Secrets of a tenant, which its steps read through the SDK and
    /// which never appear in journals, logs or API answers. Stored sealed
    /// by the master key (--master-key-file).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The master key that seals secrets at rest: create one, or move
    /// every secret to a new one.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum MasterKeyCommand {
    /// Write a new random master key to FILE (readable by its owner only).
    Create { file: PathBuf },
    /// Re-seal every secret of every tenant with the master key in --new
    /// (their data keys are re-wrapped), reading them with the current one
    /// (--master-key-file, or the SQLite default). Safe to run again after
    /// an interruption. Afterwards, start `serve` with the new key.
    Rotate {
        /// The new master key file.
        #[arg(long)]
        new: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant (its quotas default to the server's; no HTTP).
    Create {
        /// Letters, digits, '-', '_' and '.'.
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        tenant: TenantArgs,
    },
    /// List tenants with their quotas and HTTP allow-lists.
    List,
    /// Change a tenant's quotas or HTTP allow-list (what is not given stays).
    Update {
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        tenant: TenantArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a secret of a tenant; the value is read from standard input
    /// (one line, or all of it), so it stays out of the shell history.
    Set { tenant: String, name: String },
    /// List a tenant's secrets (names only).
    List { tenant: String },
    /// Delete a secret.
    Delete { tenant: String, name: String },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Create an API key for a tenant and print it (only once: the
    /// database keeps a hash). With --operator instead of a tenant: an
    /// operator key, which signs in to the web console's views of every
    /// tenant and of the nodes.
    Create {
        /// The key's tenant (none with --operator).
        #[arg(required_unless_present = "operator")]
        tenant: Option<String>,
        /// An operator key (no tenant).
        #[arg(long, conflicts_with = "tenant")]
        operator: bool,
        /// The key expires this long from now (`90s`, `45m`, `12h`, `30d`):
        /// refused from then on, as if revoked. Default: never.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List a tenant's keys, or with --operator the operator keys: id,
    /// state (active, revoked, expired), created, expires, last used.
    List {
        /// The tenant whose keys to list (none with --operator).
        #[arg(required_unless_present = "operator")]
        tenant: Option<String>,
        /// List the operator keys instead.
        #[arg(long, conflicts_with = "tenant")]
        operator: bool,
    },
    /// Revoke a key at once, by its id (`cbk_…`, the part before the
    /// second underscore) or the whole key.
    Revoke { id: String },
}

/// Per-tenant settings whose server default is an engine flag
/// (`--memory-limit-mb`, `--step-timeout-ms`), and the HTTP allow-list.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct TenantArgs {
    /// Linear memory of one invocation, MiB (default: the server's
    /// --memory-limit-mb).
    #[arg(long, value_parser = range_i64(1, MAX_MEMORY_MB as i64))]
    memory_mb: Option<i64>,
    /// CPU time of one invocation, ms (default: the server's --step-timeout-ms).
    #[arg(long, value_parser = range_i64(1, DAY_MS as i64))]
    cpu_ms: Option<i64>,
    /// A host the tenant's steps may send HTTP requests to; repeat for
    /// several (replaces the list). Forms: `api.example.com`,
    /// `*.example.com`, `127.0.0.1:8080`, `api.example.com/v1/*`, and any
    /// of them after a method: `GET api.example.com`.
    #[arg(long = "allow-http", value_name = "HOST")]
    allow_http: Vec<String>,
    /// Remove every host from the HTTP allow-list.
    #[arg(long, conflicts_with = "allow_http")]
    deny_http: bool,
}

/// `cerebelum admin`.
pub(crate) async fn run(cli: &Cli, command: &AdminCommand) -> Result<ExitCode> {
    if let AdminCommand::MasterKey { command } = command {
        if let Some(server) = &cli.server {
            bail!(
                "`cerebelum admin master-key` works on key files and the database where the \
                 server runs, not through --server {server} (or CEREBELUM_SERVER): run it \
                 there, with --db"
            );
        }
        let store = database(cli).await?;
        return master_key_command(cli, &store, command).await;
    }
    let sets_secret = matches!(
        command,
        AdminCommand::Secret {
            command: SecretCommand::Set { .. }
        }
    );
    let admin = operations(cli, sets_secret).await?;
    administer(&admin, command).await
}

/// Where `cerebelum admin` works: the server of `--server` (as the
/// operator of `--api-key`), or the database of `--db` (as `cli:<user>`,
/// with the master key, created for SQLite if `create_master_key`).
async fn operations(cli: &Cli, create_master_key: bool) -> Result<Client> {
    if let Some(url) = &cli.server {
        return remote(cli, url).await;
    }
    let key = master_key(cli, create_master_key)?.map(Arc::new);
    if create_master_key && key.is_none() {
        // Said before the value is read.
        bail!("{NO_MASTER_KEY}");
    }
    let store = database(cli).await?;
    let api = Api::on_store(store, Arc::new(SystemClock));
    Ok(Client::in_process(api, key).await?)
}

/// The database of `--db`.
async fn database(cli: &Cli) -> Result<SharedStore> {
    let db = &cli.db;
    let sqlite_file = sqlite_file(db);
    let created = sqlite_file.as_ref().is_some_and(|f| !f.exists());
    let store = open_store(db, Synchronous::Full).await?;
    if created {
        eprintln!("note: created a new, empty database {db} (pass --db to use another)");
    }
    Ok(store)
}

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// Only the actions on this tenant (default: every tenant's, and the
    /// operator keys').
    #[arg(long)]
    tenant: Option<String>,
    /// How many rows, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    /// Only rows older than this id (to page back).
    #[arg(long)]
    before: Option<i64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// `cerebelum audit`: the audit log, newest first.
pub(crate) async fn audit(cli: &Cli, args: &AuditArgs) -> Result<ExitCode> {
    let admin = operations(cli, false).await?;
    let rows = admin
        .audit(args.tenant.as_deref(), args.before, args.limit)
        .await?;
    for row in &rows {
        if args.json {
            out!("{}", serde_json::to_string(row)?);
            continue;
        }
        let detail = row
            .detail
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        out!(
            "{:>6}  {} UTC  {:<22} {:<20} {:<24} {:<14} {} {}",
            row.id,
            cerebelum::console::html::utc(row.at_ms),
            row.action,
            row.target,
            row.actor,
            if row.tenant.is_empty() {
                "-"
            } else {
                &row.tenant
            },
            row.origin,
            detail
        );
    }
    if rows.is_empty() {
        eprintln!(
            "the audit log has no rows{}",
            match &args.tenant {
                Some(t) => format!(" for tenant {t}"),
                None => String::new(),
            }
        );
    } else if rows.len() as i64 == args.limit
        && let Some(last) = rows.last()
    {
        eprintln!("older rows: --before {}", last.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn limit(value: Option<i64>, default: Option<i64>, unit: i64, suffix: &str) -> String {
    let shown = |v: i64| format!("{}{suffix}", v / unit);
    match value {
        Some(v) => shown(v),
        None => format!(
            "{} (default)",
            default.map(shown).unwrap_or_else(|| "server's".into())
        ),
    }
}

fn describe(t: &TenantRecord) -> String {
    let q = t.quotas;
    let d = DEFAULT_QUOTAS;
    let http = if t.http_allow.is_empty() {
        "none".to_owned()
    } else {
        t.http_allow.join(", ")
    };
    format!(
        "{}\n  max package {}  max open executions {}  max payload {}\n  \
         memory {}  cpu {}  fuel {}  journal entries {}  output {}  response {}  \
         concurrency {}  journal rate {}/s  watch streams {}  start rate {}/s\n  \
         HTTP allowed to: {http}",
        t.name,
        limit(q.max_package_bytes, d.max_package_bytes, 1 << 20, " MiB"),
        limit(q.max_open_executions, d.max_open_executions, 1, ""),
        limit(q.max_payload_bytes, d.max_payload_bytes, 1 << 10, " KiB"),
        limit(q.memory_bytes, d.memory_bytes, 1 << 20, " MiB"),
        limit(q.cpu_ms, d.cpu_ms, 1, " ms"),
        match q.fuel {
            Some(f) => f.to_string(),
            None => "unlimited (default)".into(),
        },
        limit(q.max_journal_entries, d.max_journal_entries, 1, ""),
        limit(q.max_output_bytes, d.max_output_bytes, 1 << 10, " KiB"),
        limit(q.max_response_bytes, d.max_response_bytes, 1 << 10, " KiB"),
        limit(q.max_concurrency, d.max_concurrency, 1, ""),
        limit(q.max_journal_rate, d.max_journal_rate, 1, ""),
        limit(q.max_streams, d.max_streams, 1, ""),
        limit(q.max_start_rate, d.max_start_rate, 1, ""),
    )
}

/// The given quotas merged with what the tenant-only flags set (clap has
/// checked each value's range).
fn given(quotas: &QuotaArgs, tenant: &TenantArgs) -> Quotas {
    let mut q = quotas.quotas();
    q.memory_bytes = tenant.memory_mb.map(|m| m << 20);
    q.cpu_ms = tenant.cpu_ms;
    q
}

/// The allow-list the flags ask for: `None` to keep the current one.
fn allow_list(tenant: &TenantArgs) -> Option<Vec<String>> {
    if tenant.deny_http {
        return Some(Vec::new());
    }
    (!tenant.allow_http.is_empty()).then(|| tenant.allow_http.clone())
}

fn read_secret_value() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the secret's value from standard input")?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value).to_owned();
    if value.chars().count() < MIN_SECRET_LEN {
        bail!(
            "the secret is {} characters long; give at least {MIN_SECRET_LEN} on standard input \
             (e.g. `printf %s \"$TOKEN\" | cerebelum admin secret set TENANT NAME`): shorter \
             values cannot be told apart from ordinary text when they are redacted",
            value.chars().count()
        );
    }
    Ok(value)
}

async fn administer(admin: &Client, command: &AdminCommand) -> Result<ExitCode> {
    let now = SystemClock.now_ms();
    match command {
        AdminCommand::Tenant { command } => match command.as_ref() {
            TenantCommand::Create {
                name,
                quotas,
                tenant,
            } => {
                let q = given(quotas, tenant);
                let allow = allow_list(tenant).unwrap_or_default();
                let created = admin.create_tenant(name, q, allow).await?;
                out!("created tenant {}", describe(&created));
                out!("next: cerebelum admin key create {name}");
            }
            TenantCommand::List => {
                for tenant in admin.tenants().await? {
                    out!("{}", describe(&tenant));
                }
            }
            TenantCommand::Update {
                name,
                quotas,
                tenant,
            } => {
                let q = given(quotas, tenant);
                let updated = admin.update_tenant(name, q, allow_list(tenant)).await?;
                out!("updated tenant {}", describe(&updated));
            }
        },
        AdminCommand::Key { command } => match command {
            KeyCommand::Create {
                tenant, expires_in, ..
            } => {
                let expires_in = match expires_in {
                    Some(text) => Some(keys::parse_duration(text)?),
                    None => None,
                };
                let key = admin.create_key(tenant.as_deref(), expires_in).await?;
                match tenant {
                    Some(tenant) => eprintln!(
                        "API key {} for tenant {tenant}; it is shown only this once:",
                        key.record.id
                    ),
                    None => eprintln!(
                        "operator key {} (administers the server: `cerebelum admin --server`, \
                         the console's views of every tenant); it is shown only this once:",
                        key.record.id
                    ),
                }
                out!("{}", key.secret);
            }
            KeyCommand::List { tenant, .. } => {
                let found = admin.keys(tenant.as_deref()).await?;
                let when = |ms: Option<i64>, none: &str| {
                    ms.map_or_else(
                        || none.to_owned(),
                        |ms| format!("{} UTC", cerebelum::console::html::utc(ms)),
                    )
                };
                if !found.is_empty() {
                    out!(
                        "{:<12}  {:<7}  {:<23}  {:<23}  last used",
                        "id",
                        "state",
                        "created",
                        "expires"
                    );
                }
                for key in found {
                    out!(
                        "{:<12}  {:<7}  {:<23}  {:<23}  {}",
                        key.id,
                        key.state(now),
                        when(Some(key.created_at_ms), ""),
                        when(key.expires_at_ms, "never"),
                        when(key.last_used_at_ms, "never"),
                    );
                }
            }
            KeyCommand::Revoke { id } => {
                let key = admin.revoke_key(id).await?;
                if key.tenant.is_empty() {
                    out!("revoked operator key {}", key.id);
                } else {
                    out!("revoked API key {} of tenant {}", key.id, key.tenant);
                }
            }
        },
        AdminCommand::Secret { command } => match command {
            SecretCommand::Set { tenant, name } => {
                // Checked before the value is read (and again by the admin).
                check_secret_name(name)?;
                let value = read_secret_value()?;
                let secret = admin.set_secret(tenant, name, &value).await?;
                out!(
                    "set secret {} of tenant {} (steps read it with the SDK; running \
                     executions see it within seconds)",
                    secret.name,
                    secret.tenant
                );
            }
            SecretCommand::List { tenant } => {
                for secret in admin.secrets(tenant).await? {
                    out!("{}", secret.name);
                }
            }
            SecretCommand::Delete { tenant, name } => {
                admin.delete_secret(tenant, name).await?;
                out!("deleted secret {name} of tenant {tenant}");
            }
        },
        AdminCommand::MasterKey { .. } => unreachable!("handled by `run`"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cerebelum admin master-key`, on the database and key files here.
async fn master_key_command(
    cli: &Cli,
    store: &SharedStore,
    command: &MasterKeyCommand,
) -> Result<ExitCode> {
    let now = SystemClock.now_ms();
    let actor = Actor::cli();
    match command {
        MasterKeyCommand::Create { file } => {
            let key = MasterKey::create(file)?;
            out!(
                "created master key {} in {} (pass it as --master-key-file)",
                key.id(),
                file.display()
            );
        }
        MasterKeyCommand::Rotate { new } => {
            let new_key = MasterKey::read(new)?;
            let current = master_key(cli, false)?;
            let mut moved = 0;
            for tenant in store.catalog().list_tenants().await? {
                let tenant = tenant.name;
                for (name, stored) in store.catalog().secret_values(&tenant).await? {
                    let resealed = match &current {
                        Some(key) => key.reseal(&new_key, &tenant, &name, &stored)?,
                        None if secrets::is_sealed(&stored)
                            && secrets::sealed_by(&stored) != Some(new_key.id()) =>
                        {
                            bail!(
                                "secret '{name}' of tenant '{tenant}' is sealed by master \
                                     key {}: give it as --master-key-file",
                                secrets::sealed_by(&stored).unwrap_or("?")
                            )
                        }
                        None if secrets::is_sealed(&stored) => stored.clone(),
                        None => new_key.seal(&tenant, &name, &stored)?,
                    };
                    if resealed != stored {
                        store
                            .catalog()
                            .set_secret(&tenant, &name, &resealed, now)
                            .await?;
                        moved += 1;
                    }
                }
            }
            let detail = serde_json::json!({
                "from": current.as_ref().map(|k| k.id().to_owned()),
                "to": new_key.id(),
                "secrets": moved,
            });
            actor
                .record(
                    store,
                    now,
                    "",
                    "master_key.rotate",
                    new_key.id(),
                    Some(detail),
                )
                .await?;
            out!(
                "re-sealed {moved} secret(s) with master key {}; start `cerebelum serve` with \
                     --master-key-file {} from now on",
                new_key.id(),
                new.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
