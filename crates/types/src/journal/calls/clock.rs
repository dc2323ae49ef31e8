//! `now-ms` and `random-u64`: the clock and randomness, answered once and
//! replayed.

use super::*;
use crate::journal::call::answered;
use serde::{Deserialize, Serialize};

/// A call without arguments: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoArgs {}

answered!(NowMs(NoArgs) -> u64);
answered!(RandomU64(NoArgs) -> u64);

/// Replayed answers, not events a person looks for.
impl Show for NowMs {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        Shown::default()
    }
}

impl Show for RandomU64 {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        Shown::default()
    }
}
