//! `recall` / `remember`: a value user code records under a name; `recall`
//! gets it back on replay (a missing entry means "compute it live").

use super::WasmResult;
use crate::executor::guest::GuestData;
use crate::executor::parse_payload;
use crate::journal::{Record, RecordName};

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
