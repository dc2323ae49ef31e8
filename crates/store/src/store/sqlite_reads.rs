//! SQLite's point reads on the calling thread: the execution record, the
//! tenant of an API key and a package, which every API call and every
//! waited-for end reads. sqlx's SQLite driver sends each query to its
//! connection's thread and back (~45 µs here, two wake-ups); a read of one
//! row by its key takes a few µs in SQLite itself, and a WAL reader never
//! waits for the writer, so these run inline on rusqlite connections kept
//! here. Everything else reads through sqlx ([`super::sql`]).

use super::rows::{self, Columns};
use super::sql::{EXECUTION_BY_ID, PACKAGE_BY_NAME, PointReads, TENANT_BY_KEY};
use crate::error::{Error, Result};
use crate::model::{ExecutionRecord, PackageRecord, TenantRecord};
use rusqlite::{Connection, Params, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections kept: one per thread reading at once is enough.
const KEEP: usize = 8;

/// The read connections of one SQLite database, opened as needed.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A rusqlite row, read like an sqlx one.
pub(super) struct Lite<'a, 'b>(pub(super) &'a rusqlite::Row<'b>);

impl Columns for Lite<'_, '_> {
    fn text(&self, column: &str) -> Result<Option<String>> {
        self.0.get(column).map_err(unreadable)
    }

    fn int(&self, column: &str) -> Result<Option<i64>> {
        self.0.get(column).map_err(unreadable)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        self.0.get(column).map_err(unreadable)
    }
}

fn unreadable(e: rusqlite::Error) -> Error {
    Error::Schema(format!("reading a row: {e}"))
}

impl Readers {
    /// Reads of the (already migrated) database at `path`.
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection> {
        let failed = |e| Error::sqlite(&format!("opening {} to read", self.path.display()), e);
        let conn = Connection::open(&self.path).map_err(failed)?;
        // A WAL reader waits only while another connection rebuilds the
        // WAL's index (after a crash of its process): briefly.
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(failed)?;
        Ok(conn)
    }

    /// The first row `sql` finds, read by `map`.
    fn one<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Lite) -> Result<T>,
    ) -> Result<Option<T>> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let read = (|| {
            let failed = |e| Error::sqlite("reading", e);
            let mut statement = conn.prepare_cached(sql).map_err(failed)?;
            let mut rows = statement.query(params).map_err(failed)?;
            match rows.next().map_err(failed)? {
                Some(row) => map(&Lite(row)).map(Some),
                None => Ok(None),
            }
        })();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP {
            idle.push(conn);
        }
        read
    }
}

impl PointReads for Readers {
    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        self.one(&EXECUTION_BY_ID, [id], |row| rows::execution(row))
    }

    fn tenant_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<TenantRecord>> {
        self.one(&TENANT_BY_KEY, params![hash, now_ms], |row| {
            rows::tenant(row)
        })
    }

    fn package(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<PackageRecord>> {
        self.one(&PACKAGE_BY_NAME, params![tenant, name, version], |row| {
            rows::package(row)
        })
    }
}
