//! Write Cerebelum workflows and steps in Rust.
//!
//! A package is a `cdylib` crate compiled to a WebAssembly component
//! (`cargo build --target wasm32-wasip2`). It holds plain functions
//! `fn(&Context, I) -> Result<O, Error>` whose input and output are any serde
//! types (JSON on the wire), and exports them with [`package!`]:
//!
//! - a **workflow** orchestrates: it calls steps, sleeps, polls and waits for
//!   approvals through its [`Context`]. The engine journals every call and
//!   replays the workflow after a restart, so a workflow must be
//!   deterministic: clock, randomness and side effects only through
//!   [`Context`].
//! - a **step** does the work (side effects), in a fresh instance per
//!   attempt, retried according to its [`RetryPolicy`]. Steps may call
//!   allow-listed hosts with [`http`] (journaled: a replay does not send a
//!   request again) and read the tenant's secrets with
//!   [`Context::secret`].
//!
//! ```
//! use std::time::Duration;
//! use cerebelum_sdk::{Context, Error, PollOptions, RetryPolicy, StepOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     name: String,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Server {
//!     id: String,
//! }
//!
//! fn provision(ctx: &Context, input: Input) -> Result<Server, Error> {
//!     ctx.progress(10, "Creating");
//!     let server: Server = ctx.step("create", &input.name)?;
//!     ctx.sleep(Duration::from_secs(5))?;
//!     ctx.poll("check", &server, PollOptions::every(Duration::from_secs(1)))
//! }
//!
//! fn create(_ctx: &Context, name: String) -> Result<Server, Error> {
//!     Ok(Server { id: format!("s-{name}") })
//! }
//!
//! /// `None` (JSON `null`) until the server is up.
//! fn check(_ctx: &Context, server: Server) -> Result<Option<Server>, Error> {
//!     let up = true; // ask the provider
//!     Ok(up.then_some(server))
//! }
//!
//! cerebelum_sdk::package! {
//!     workflows: [
//!         provision => "Create a server and wait until it is up",
//!     ],
//!     steps: [
//!         create => "Create the server"
//!             with StepOptions::default().retry(RetryPolicy::new(5)),
//!         check => "Whether the server is up",
//!     ],
//! }
//! ```

mod approval;
mod context;
mod error;
pub mod http;
mod macros;
mod options;

/// Used by the expansion of [`package!`]; not a public API.
#[doc(hidden)]
#[path = "runtime.rs"]
pub mod __private;

pub use approval::{Approval, Decision};
pub use context::{ChildHandle, ChildOptions, Context, Level, StepHandle};
pub use error::{Error, kind};
pub use options::{PollOptions, RetryPolicy, StepOptions};

/// Bindings generated from `wit/cerebelum.wit`; not a public API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        // `package` is a WIT keyword, hence the escape.
        world: "%package",
        pub_export_macro: true,
        export_macro_name: "export_package",
        generate_all,
    });
}
