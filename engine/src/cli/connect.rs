//! Where a command's work goes: with `--server`, a `cerebelum serve` over
//! gRPC (as the tenant of `--api-key`; over TLS for `https://`); without it, the local database
//! (as tenant `default`), through the same gRPC services served in this
//! process. Either way the command gets a [`Client`] and prints the
//! records it returns the same way.
//!
//! Locally, commands that only read or decide (status, list, journal,
//! packages, watch, approve, reject, cancel, retry) open the database
//! alone: no wasm runtime, epoch thread or commit thread. Uploads and
//! starts open an engine node, whose runtime validates packages.

use super::Cli;
use super::flags::{EngineArgs, engine, open_store};
use anyhow::Result;
use cerebelum::api::client::{ClientTls, ServerUrl};
use cerebelum::api::{Api, Client};
use cerebelum::clock::SystemClock;
use cerebelum::model::Quotas;
use cerebelum::store::Synchronous;
use std::sync::Arc;

/// What a command needs of the local database.
pub(crate) enum Needs<'a> {
    /// Reading and deciding: the database alone.
    Store,
    /// Uploading or starting: an engine node with these settings.
    Engine(&'a EngineArgs),
}

/// The client of the command's place (see the module docs).
pub(crate) async fn ops(cli: &Cli, needs: Needs<'_>) -> Result<Client> {
    if let Some(url) = &cli.server {
        return remote(cli, url).await;
    }
    let api = match needs {
        Needs::Store => Api::on_store(
            open_store(&cli.db, Synchronous::Full).await?,
            Arc::new(SystemClock),
        ),
        Needs::Engine(args) => Api::new(engine(cli, args, Quotas::default(), true).await?),
    };
    local(api).await
}

/// The client of tenant `default` through `api` (on this process's
/// database).
pub(crate) async fn local(api: Api) -> Result<Client> {
    let master_key = api.master_key();
    Ok(Client::in_process(api, master_key).await?)
}

/// The client TLS settings of the command line.
pub(crate) fn client_tls(cli: &Cli) -> ClientTls {
    ClientTls {
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    }
}

/// A connection to the server at `url`, checked before anything is sent;
/// warns when the key would travel in clear to another machine.
pub(crate) async fn remote(cli: &Cli, url: &str) -> Result<Client> {
    let api_key = cli.api_key.as_deref();
    let server = ServerUrl::parse(url)?;
    if server.in_clear && api_key.is_some() {
        eprintln!(
            "warning: the API key travels in clear over http:// to {}; use such a server only \
             on a network you trust (or through an SSH tunnel)",
            server.url
        );
    }
    Ok(Client::connect(&server.url, api_key, &client_tls(cli)).await?)
}
