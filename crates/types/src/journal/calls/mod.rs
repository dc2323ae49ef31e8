//! One module per kind of host call: its arguments, what the journal
//! records of it, and how a person is shown it ([`Show`]). The table in
//! [`super::call`] lists them.

mod approval;
mod child;
mod clock;
mod continue_as_new;
mod http;
mod poll;
mod progress;
mod record;
mod signal;
mod sleep;
mod step;

pub use approval::*;
pub use child::*;
pub use clock::*;
pub use continue_as_new::*;
pub use http::*;
pub use poll::*;
pub use progress::*;
pub use record::*;
pub use signal::*;
pub use sleep::*;
pub use step::*;

use super::call::{Detail, Show, ShowContext, Shown};
use crate::util::{duration, utc};
