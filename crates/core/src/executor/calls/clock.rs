//! `now-ms` and `random-u64`: the clock and randomness, read once live and
//! replayed from the journal ever after.

use super::WasmResult;
use crate::executor::guest::GuestData;
use crate::journal::{NoArgs, NowMs, RandomU64};

pub async fn now_ms(data: &mut GuestData) -> WasmResult<u64> {
    data.immediate::<NowMs>(NoArgs {}, |inv| inv.exec.engine.now_ms().max(0) as u64)
        .await
}

pub async fn random_u64(data: &mut GuestData) -> WasmResult<u64> {
    data.immediate::<RandomU64>(NoArgs {}, |_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        h.finish()
    })
    .await
}
