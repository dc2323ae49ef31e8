//! `recall` / `remember`: a value user code records under a name; `recall`
//! gets it back on replay (a missing entry means "compute it live").

use super::WasmResult;
use crate::executor::guest::GuestData;
use crate::executor::parse_payload;
use crate::journal::{PatchId, Patched, Record, RecordName};

pub async fn recall(data: &mut GuestData, name: String) -> WasmResult<Option<String>> {
    data.settle().await?;
    let recorded = data.invocation()?.recall::<Record>(&RecordName { name });
    Ok(recorded.map(|r| r.answer.to_string()))
}

pub async fn remember(data: &mut GuestData, name: String, value: String) -> WasmResult<()> {
    // A recorded value is replayed by `recall`; reaching `remember` for a
    // recorded entry means the code did not call `recall` first, and
    // the journal answer wins, as for every other call.
    let value = parse_payload(&value);
    data.immediate::<Record>(RecordName { name }, |_| value)
        .await
        .map(|_| ())
}

/// `patched(id)`: true where the journal recorded this patch here, or
/// where the invocation is past its journal (live: recorded, so replays
/// say true again); false where the journal holds another call here (it
/// was recorded by code without the patch), which is left for the old
/// path's call to match.
pub async fn patched(data: &mut GuestData, id: String) -> WasmResult<bool> {
    data.settle().await?;
    let args = PatchId { id };
    let inv = data.invocation()?;
    if inv.recall::<Patched>(&args).is_some() {
        return Ok(true);
    }
    if !inv.past_journal() {
        return Ok(false);
    }
    // Settled above: journaled at once.
    inv.immediate::<Patched>(args, |_| true)
        .await
        .map_err(wasmtime::Error::new)
}
