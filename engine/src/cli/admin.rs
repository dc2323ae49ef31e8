//! `cerebelum admin`: tenants and API keys, on the database directly (an
//! operator's tool; the gRPC API has no admin calls).

use super::super::{AdminCommand, KeyCommand, TenantCommand};
use anyhow::Result;
use cerebelum::api::{DEFAULT_QUOTAS, keys};
use cerebelum::clock::{Clock, SystemClock};
use cerebelum::model::{Quotas, TenantRecord};
use cerebelum::store::SharedStore;
use std::process::ExitCode;

fn limit(value: Option<i64>, default: Option<i64>, unit: i64, suffix: &str) -> String {
    let shown = |v: i64| format!("{}{suffix}", v / unit);
    match value {
        Some(v) => shown(v),
        None => format!("{} (default)", default.map(shown).unwrap_or_default()),
    }
}

fn describe(t: &TenantRecord) -> String {
    let q = t.quotas;
    let d = DEFAULT_QUOTAS;
    format!(
        "{}  max package {}  max open executions {}  max payload {}",
        t.name,
        limit(q.max_package_bytes, d.max_package_bytes, 1 << 20, " MiB"),
        limit(q.max_open_executions, d.max_open_executions, 1, ""),
        limit(q.max_payload_bytes, d.max_payload_bytes, 1 << 10, " KiB"),
    )
}

fn check_quotas(q: &Quotas) -> Result<()> {
    for (name, v) in [
        ("--max-package-mb", q.max_package_bytes),
        ("--max-open-executions", q.max_open_executions),
        ("--max-payload-kb", q.max_payload_bytes),
    ] {
        if v.is_some_and(|v| v <= 0) {
            anyhow::bail!("{name} must be a positive number");
        }
    }
    Ok(())
}

pub(super) async fn run(store: &SharedStore, command: &AdminCommand) -> Result<ExitCode> {
    let now = SystemClock.now_ms();
    match command {
        AdminCommand::Tenant { command } => match command {
            TenantCommand::Create { name, quotas } => {
                keys::check_tenant_name(name)?;
                let quotas = quotas.quotas();
                check_quotas(&quotas)?;
                let tenant = store.create_tenant(name, &quotas, now).await?;
                println!("created tenant {}", describe(&tenant));
                println!("next: cerebelum admin key create {name}");
            }
            TenantCommand::List => {
                for tenant in store.list_tenants().await? {
                    println!("{}", describe(&tenant));
                }
            }
            TenantCommand::Update { name, quotas } => {
                let given = quotas.quotas();
                check_quotas(&given)?;
                let current = store.tenant(name).await?;
                let tenant = store.set_quotas(name, &given.or(current.quotas)).await?;
                println!("updated tenant {}", describe(&tenant));
            }
        },
        AdminCommand::Key { command } => match command {
            KeyCommand::Create { tenant } => {
                let key = keys::create(store, tenant, now).await?;
                eprintln!(
                    "API key {} for tenant {tenant}; it is shown only this once:",
                    key.record.id
                );
                println!("{}", key.secret);
            }
            KeyCommand::List { tenant } => {
                for key in store.list_api_keys(tenant).await? {
                    println!(
                        "{}  {}",
                        key.id,
                        if key.revoked_at_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
            KeyCommand::Revoke { id } => {
                let key = store.revoke_api_key(keys::id_of(id), now).await?;
                println!("revoked API key {} of tenant {}", key.id, key.tenant);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
