//! The schema's migrations, embedded in the binary by `build.rs` from
//! `migrations/<backend>/NNNN_description.sql`, resolved as sqlx resolves
//! a directory of them (version NNNN, the description with spaces, the
//! SQL's checksum), so databases migrated by either way agree.

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One backend's embedded migrations: (file name, SQL), in order.
#[derive(Debug)]
struct Embedded(&'static [(&'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            self.0
                .iter()
                .map(|(name, sql)| {
                    let (version, rest) = name
                        .split_once('_')
                        .ok_or_else(|| format!("migration {name} is not NNNN_description.sql"))?;
                    let version: i64 = version
                        .parse()
                        .map_err(|e| format!("migration {name}: version {version}: {e}"))?;
                    let description = rest.trim_end_matches(".sql").replace('_', " ");
                    Ok(Migration::new(
                        version,
                        Cow::Owned(description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        sql.starts_with("-- no-transaction"),
                    ))
                })
                .collect()
        })
    }
}

/// The SQLite schema's migrations.
pub(super) async fn sqlite() -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(SQLITE)).await
}

/// The PostgreSQL schema's migrations.
pub(super) async fn postgres() -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(POSTGRES)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// What is embedded is what sqlx reads from the directory (as
    /// `migrate!` embedded it): same versions, descriptions and checksums,
    /// so databases migrated before still open.
    #[tokio::test]
    async fn the_embedded_migrations_are_the_directorys() {
        for (backend, embedded) in [("sqlite", sqlite().await), ("postgres", postgres().await)] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let read = Migrator::new(dir.as_path()).await.unwrap();
            let embedded = embedded.unwrap();
            let key = |m: &Migration| {
                (
                    m.version,
                    m.description.to_string(),
                    m.checksum.to_vec(),
                    m.no_tx,
                )
            };
            let read: Vec<_> = read.iter().map(key).collect();
            assert!(read.len() >= 15, "{backend}: {} migrations", read.len());
            assert_eq!(
                embedded.iter().map(key).collect::<Vec<_>>(),
                read,
                "{backend}"
            );
        }
    }
}
