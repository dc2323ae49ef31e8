//! The store suite: the [`Store`] contract, checked through the trait on
//! both backends — every test body below runs once on a fresh SQLite file
//! (`sqlite::NAME`) and once on a fresh PostgreSQL database
//! (`postgres::NAME`).

use cerebelum_harness as common;

use cerebelum::Error;
use cerebelum::journal::{
    Call, CallError, CallKind, Entry, ErrorKind, Event, Output, Progress, ReportProgress,
};
use cerebelum::model::{
    ApiKeyRecord, Decision, ListFilter, NewExecution, PackageInfo, Quotas, Status, TaskClaim,
    TaskId, TaskSpec, TaskStatus, TaskTimeouts, TaskToken, WorkerRecord,
};
use cerebelum::store::{
    self, CommitOp, Creation, EngineFailure, SharedStore, SideWrite, StatusChange, Synchronous,
    Timer,
};
use common::{Backend, Db};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The tenant of the suite's rows.
const T: &str = cerebelum::model::DEFAULT_TENANT;

common::on_both_backends!(
    async
    packages_are_content_addressed_and_versioned,
    the_same_bytes_may_be_two_packages,
    tenants_have_keys_that_can_be_revoked,
    secrets_are_per_tenant_and_listed_without_values,
    tenants_do_not_share_names_keys_or_listings,
    the_list_filters_by_prefix_time_and_input_pages_both_ways_and_counts,
    creating_with_an_idempotency_key_returns_the_first_execution,
    commits_append_and_a_stale_epoch_is_fenced_off,
    a_status_change_ends_ownership_within_a_batch,
    a_creation_in_a_commit_needs_its_package_and_keeps_its_lineage,
    a_keyed_creation_in_a_commit_returns_the_holder_of_its_key,
    a_child_is_created_with_its_start_and_fenced_by_its_parent,
    claims_take_due_work_once_and_expired_leases_again,
    concurrent_claims_never_hand_out_an_execution_twice,
    hibernation_wakes_at_its_time_or_at_once_after_a_signal,
    due_timers_are_fired_in_bulk_without_a_claim,
    concurrent_sweeps_fire_each_timer_once,
    approvals_are_idempotent_and_wake_the_execution,
    leases_renew_report_cancels_and_can_be_released,
    retry_and_cancel_check_the_status,
    a_newer_schema_is_refused,
    a_database_of_schema_1_keeps_its_data_under_the_default_tenant,
    listening_hears_another_process_make_work_due,
    renewals_and_commits_on_the_same_executions_do_not_deadlock,
    a_task_is_created_with_its_attempt_and_claimed_once_within_its_tenant,
    a_completion_is_stored_once_and_wakes_the_execution,
    an_expired_claim_is_refused_and_its_result_stored_nowhere,
    a_queued_task_times_out_when_no_worker_takes_it,
    a_task_handed_back_goes_to_another_worker,
    sticky_tasks_prefer_their_worker_for_a_while_then_any,
    a_busy_worker_keeps_one_sticky_task_and_others_take_the_rest,
    concurrent_claims_never_hand_out_a_task_twice,
    cancelling_reaches_a_claimed_task_through_its_heartbeat,
    workers_register_and_are_listed_with_their_tasks_in_flight,
    a_write_abandoned_half_way_leaves_the_store_writable,
    operator_keys_nodes_and_gauges,
    the_open_count_follows_every_status_change,
);

/// Operator keys (no tenant), the nodes that hold leases, and the counts
/// `/metrics` reads.
async fn operator_keys_nodes_and_gauges(db: Db) {
    let store = with_package(&db).await;
    let key = ApiKeyRecord {
        id: "cbk_0perat0r".into(),
        tenant: String::new(),
        created_at_ms: NOW,
        revoked_at_ms: None,
        expires_at_ms: None,
        last_used_at_ms: None,
    };
    store
        .catalog()
        .add_operator_key(&key, "hash-of-op")
        .await
        .unwrap();
    let catalog = store.catalog();
    assert_eq!(
        catalog
            .operator_by_key("hash-of-op", NOW)
            .await
            .unwrap()
            .as_deref(),
        Some("cbk_0perat0r")
    );
    assert_eq!(
        catalog.operator_by_key("hash-of-other", NOW).await.unwrap(),
        None
    );
    assert_eq!(
        catalog.tenant_by_key("hash-of-op", NOW).await.unwrap(),
        None,
        "an operator key is no tenant's key"
    );
    let listed = catalog.list_operator_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].tenant.as_str(), listed[0].revoked_at_ms),
        ("", None)
    );
    let revoked = catalog
        .revoke_api_key("cbk_0perat0r", NOW + 5)
        .await
        .unwrap();
    assert_eq!(
        (revoked.tenant.as_str(), revoked.revoked_at_ms),
        ("", Some(NOW + 5))
    );
    assert_eq!(
        catalog.operator_by_key("hash-of-op", NOW).await.unwrap(),
        None
    );
    assert!(matches!(
        catalog.revoke_api_key("cbk_nothing", NOW).await,
        Err(Error::NotFound(_))
    ));

    // Two running on node-a, one on node-b, one pending.
    create_owned(&store, "ex_a1", "node-a").await;
    create_owned(&store, "ex_a2", "node-a").await;
    create_owned(&store, "ex_b1", "node-b").await;
    store
        .create_execution(new_execution("ex_p"), NOW, None)
        .await
        .unwrap();
    let nodes = store.executions().nodes().await.unwrap();
    let summary: Vec<_> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.owned, n.lease_max_ms))
        .collect();
    assert_eq!(
        summary,
        vec![("node-a", 2, NOW + LEASE), ("node-b", 1, NOW + LEASE)]
    );
    let gauges = store.executions().gauges(0).await.unwrap();
    let mut open = gauges.open.clone();
    open.sort();
    assert_eq!(
        open,
        vec![
            (T.to_owned(), "pending".to_owned(), 1),
            (T.to_owned(), "running".to_owned(), 3)
        ]
    );
    assert!(gauges.queued.is_empty());

    // The longest open journal (the tenant page's usage of the limit).
    let results = store
        .commit(
            vec![op("ex_a2", 1, vec![entry(1, "one"), entry(2, "two")], None)],
            NOW,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(
        store.executions().longest_open_journal(T).await.unwrap(),
        Some(("ex_a2".to_owned(), 2))
    );
    assert_eq!(
        store
            .executions()
            .longest_open_journal("nobody")
            .await
            .unwrap(),
        None
    );
    // The latest progress report, by seq, among other entries.
    let progress = |seq: i64, percent: u8| {
        let args = Progress {
            percent,
            message: format!("at {percent}"),
        };
        Entry {
            seq,
            invocation: "wf".to_owned(),
            event: Event::Call {
                hash: CallKind::ReportProgress.hash(&args),
                call: Call::ReportProgress(ReportProgress {
                    args,
                    answer: Value::Null,
                }),
            },
            at_ms: NOW + seq,
        }
    };
    let results = store
        .commit(
            vec![op(
                "ex_a2",
                1,
                vec![progress(3, 10), progress(4, 60), entry(5, "after")],
                None,
            )],
            NOW,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let latest = store.executions().latest_progress("ex_a2").await.unwrap();
    assert_eq!(latest.map(|e| e.seq), Some(4));
    assert!(
        store
            .executions()
            .latest_progress("ex_a1")
            .await
            .unwrap()
            .is_none()
    );

    // The list filtered by the start of an id.
    let listed = store
        .executions()
        .list_executions(&ListFilter {
            id_prefix: Some("ex_a".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let mut found: Vec<_> = listed.iter().map(|r| r.id.as_str()).collect();
    found.sort();
    assert_eq!(found, vec!["ex_a1", "ex_a2"]);
}

const NOW: i64 = 1_000_000;

/// The ids `filter` lists, in order.
async fn listed_ids(store: &SharedStore, filter: ListFilter) -> Vec<String> {
    store
        .executions()
        .list_executions(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Issue 35 (5): the console's list — workflow and package prefixes, a
/// time range, a field of the input, paging back as well as forward, and
/// the counts per status of what the filters find.
async fn the_list_filters_by_prefix_time_and_input_pages_both_ways_and_counts(db: Db) {
    let store = with_package(&db).await;
    for i in 0..6_i64 {
        let new = NewExecution {
            workflow: if i % 2 == 0 { "deploy-web" } else { "backup" }.to_owned(),
            input: json!({"server": {"name": format!("web-{i}")}, "n": i}),
            ..new_execution(&format!("ex_{i}"))
        };
        store.create_execution(new, NOW + i, None).await.unwrap();
    }
    db.sql("UPDATE executions SET status = 'failed' WHERE id = 'ex_4'");
    let list = |filter: ListFilter| listed_ids(&store, filter);
    let deploys = ListFilter {
        workflow_prefix: Some("deploy".into()),
        ..ListFilter::default()
    };
    assert_eq!(list(deploys.clone()).await, ["ex_4", "ex_2", "ex_0"]);
    let mine = ListFilter {
        package_prefix: Some("pk".into()),
        created_from_ms: Some(NOW + 1),
        created_to_ms: Some(NOW + 3),
        ..ListFilter::default()
    };
    assert_eq!(list(mine).await, ["ex_2", "ex_1"]);
    let field = |path: &[&str], value: &str| ListFilter {
        input_field: Some((
            path.iter().map(|p| p.to_string()).collect(),
            value.to_owned(),
        )),
        ..ListFilter::default()
    };
    assert_eq!(list(field(&["server", "name"], "web-3")).await, ["ex_3"]);
    assert_eq!(list(field(&["n"], "5")).await, ["ex_5"]);
    assert!(list(field(&["nothing"], "x")).await.is_empty());
    // Two each way: after the page ex_3, ex_2 come ex_1, ex_0; before it,
    // ex_5, ex_4 (newest first either way).
    let paged = |after: Option<&str>, before: Option<&str>| ListFilter {
        after: after.map(|id| (NOW + id[3..].parse::<i64>().unwrap(), id.to_owned())),
        before: before.map(|id| (NOW + id[3..].parse::<i64>().unwrap(), id.to_owned())),
        limit: 2,
        ..ListFilter::default()
    };
    assert_eq!(list(paged(Some("ex_2"), None)).await, ["ex_1", "ex_0"]);
    assert_eq!(list(paged(None, Some("ex_3"))).await, ["ex_5", "ex_4"]);
    assert_eq!(list(paged(None, Some("ex_1"))).await, ["ex_3", "ex_2"]);
    // Counts per status, whatever status the filter asks for.
    let counts = store
        .executions()
        .count_by_status(&ListFilter {
            status: Some(Status::Pending),
            ..deploys
        })
        .await
        .unwrap();
    assert_eq!(counts, [(Status::Pending, 2), (Status::Failed, 1)]);
    // A value JSON escapes in the text (a quote, a non-ASCII letter, as a
    // client may have written `\u00e9`) is still found.
    let quoted = NewExecution {
        workflow: "quoted".to_owned(),
        input: json!({"q": "say \"hi\"", "e": "café"}),
        ..new_execution("ex_q")
    };
    store
        .create_execution(quoted, NOW + 20, None)
        .await
        .unwrap();
    assert_eq!(list(field(&["q"], "say \"hi\"")).await, ["ex_q"]);
    assert_eq!(list(field(&["e"], "café")).await, ["ex_q"]);
}
const LEASE: i64 = 5_000;

async fn open(db: &Db) -> SharedStore {
    store::open(&db.url, Synchronous::Full).await.unwrap()
}

/// A store with the package `pkg` (sha `sha-1`).
async fn with_package(db: &Db) -> SharedStore {
    let store = open(db).await;
    store
        .catalog()
        .put_package(T, "pkg", "sha-1", b"bytes", &PackageInfo::default(), NOW)
        .await
        .unwrap();
    store
}

/// Creates tenant `name` with the package `pkg` (sha `sha-1`, the same
/// bytes as [`with_package`]'s).
async fn tenant_with_package(store: &SharedStore, name: &str) -> cerebelum::model::PackageRecord {
    store
        .catalog()
        .create_tenant(name, &Quotas::default(), &[], NOW)
        .await
        .unwrap();
    store
        .catalog()
        .put_package(name, "pkg", "sha-1", b"bytes", &PackageInfo::default(), NOW)
        .await
        .unwrap()
}

fn new_execution(id: &str) -> NewExecution {
    NewExecution {
        id: id.to_owned(),
        tenant: T.to_owned(),
        package_name: "pkg".to_owned(),
        package_version: 1,
        package_sha256: "sha-1".to_owned(),
        workflow: "wf".to_owned(),
        input: json!({"n": 1}),
        idempotency_key: None,
        worker_queue: None,
        continued_from: None,
        parent_id: None,
        detached: false,
    }
}

/// An entry the suite can tell apart by its `marker` (the store keeps
/// any event as it is; this one is the output of an invocation).
fn entry(seq: i64, marker: &str) -> Entry {
    Entry {
        seq,
        invocation: "wf".to_owned(),
        event: Event::Output(Output {
            stream: "stdout".into(),
            text: format!("{marker}|it's \"quoted\""),
            bytes: seq as u64,
        }),
        at_ms: NOW + seq,
    }
}

/// The marker of an entry made by [`entry`].
fn marker(e: &Entry) -> &str {
    match &e.event {
        Event::Output(o) => o.text.split('|').next().unwrap_or_default(),
        other => panic!("not an entry of the suite: {other:?}"),
    }
}

fn op(id: &str, epoch: i64, entries: Vec<Entry>, status: Option<StatusChange>) -> CommitOp {
    CommitOp {
        create: None,
        execution_id: id.to_owned(),
        epoch,
        entries,
        side: Vec::new(),
        status,
    }
}

fn finished() -> Option<StatusChange> {
    Some(StatusChange::Finished {
        status: Status::Completed,
        result: Some(json!({"ok": true})),
        error: None,
    })
}

/// Creates `id` owned by `node` (epoch 1).
async fn create_owned(store: &SharedStore, id: &str, node: &str) {
    let record = store
        .create_execution(new_execution(id), NOW, Some((node, NOW + LEASE)))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Running);
    assert_eq!(record.epoch, 1);
}

fn ids(claims: &[cerebelum::store::Claim]) -> Vec<String> {
    let mut ids: Vec<String> = claims.iter().map(|c| c.execution_id.clone()).collect();
    ids.sort();
    ids
}

/// Package info with two workflows.
fn two_workflows() -> PackageInfo {
    serde_json::from_value(json!({
        "workflows": [{"name": "a", "description": ""}, {"name": "b", "description": ""}],
        "steps": [],
    }))
    .unwrap()
}

async fn packages_are_content_addressed_and_versioned(db: Db) {
    let store = with_package(&db).await;
    let again = store
        .catalog()
        .put_package(
            T,
            "pkg",
            "sha-1",
            b"bytes",
            &PackageInfo::default(),
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(again.version, 1, "identical bytes keep their version");
    let v2 = store
        .catalog()
        .put_package(T, "pkg", "sha-2", b"other", &two_workflows(), NOW + 2)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        store
            .catalog()
            .find_package(T, "pkg", None)
            .await
            .unwrap()
            .sha256,
        "sha-2"
    );
    let v1 = store
        .catalog()
        .find_package(T, "pkg", Some(1))
        .await
        .unwrap();
    assert_eq!((v1.sha256.as_str(), v1.size_bytes), ("sha-1", 5));
    let no_v3 = store
        .catalog()
        .find_package(T, "pkg", Some(3))
        .await
        .unwrap_err();
    assert!(no_v3.to_string().contains("versions: 1, 2"), "{no_v3}");
    assert_eq!(
        store.catalog().package(T, "sha-2").await.unwrap().info,
        two_workflows()
    );
    assert_eq!(
        store.catalog().package_bytes("sha-2").await.unwrap(),
        b"other"
    );
    let versions: Vec<i64> = store
        .catalog()
        .list_packages(T)
        .await
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let missing = store
        .catalog()
        .find_package(T, "nope", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("known packages: pkg"), "{missing}");
    assert!(matches!(
        store.catalog().package(T, "sha-9").await,
        Err(Error::NotFound(_))
    ));
}

/// A package is named, whatever its bytes: the same bytes under another
/// name are another package (the bytes stored once), and executions run
/// the version they were started with.
async fn the_same_bytes_may_be_two_packages(db: Db) {
    let store = with_package(&db).await;
    let deploy = store
        .catalog()
        .put_package(
            T,
            "deploy",
            "sha-1",
            b"bytes",
            &PackageInfo::default(),
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!((deploy.name.as_str(), deploy.version), ("deploy", 1));
    let names: Vec<String> = store
        .catalog()
        .list_packages(T)
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("{} v{}", p.name, p.version))
        .collect();
    assert_eq!(names, ["deploy v1", "pkg v1"]);
    // Back under its first name: the version it has there.
    let again = store
        .catalog()
        .put_package(
            T,
            "pkg",
            "sha-1",
            b"bytes",
            &PackageInfo::default(),
            NOW + 2,
        )
        .await
        .unwrap();
    assert_eq!((again.name.as_str(), again.version), ("pkg", 1));
    assert_eq!(
        store.catalog().package_bytes("sha-1").await.unwrap(),
        b"bytes"
    );
    let new = NewExecution {
        package_name: "deploy".into(),
        ..new_execution("ex_d")
    };
    let started = store.create_execution(new, NOW, None).await.unwrap();
    assert_eq!(
        (started.package_name.as_str(), started.package_version),
        ("deploy", 1)
    );
}

async fn tenants_have_keys_that_can_be_revoked(db: Db) {
    let store = open(&db).await;
    let quotas = Quotas {
        max_open_executions: Some(3),
        ..Quotas::default()
    };
    let acme = store
        .catalog()
        .create_tenant("acme", &quotas, &[], NOW)
        .await
        .unwrap();
    assert_eq!(acme.quotas, quotas);
    assert!(matches!(
        store
            .catalog()
            .create_tenant("acme", &Quotas::default(), &[], NOW)
            .await,
        Err(Error::Conflict(_))
    ));
    let names: Vec<String> = store
        .catalog()
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "default"]);
    let key = ApiKeyRecord {
        id: "cbk_1".into(),
        tenant: "acme".into(),
        created_at_ms: NOW,
        revoked_at_ms: None,
        expires_at_ms: None,
        last_used_at_ms: None,
    };
    store.catalog().add_api_key(&key, "hash-1").await.unwrap();
    let orphan = ApiKeyRecord {
        tenant: "nobody".into(),
        ..key.clone()
    };
    assert!(matches!(
        store.catalog().add_api_key(&orphan, "hash-2").await,
        Err(Error::NotFound(_))
    ));
    let found = store
        .catalog()
        .tenant_by_key("hash-1", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.name, "acme");
    assert!(
        store
            .catalog()
            .tenant_by_key("hash-2", NOW)
            .await
            .unwrap()
            .is_none()
    );
    let revoked = store
        .catalog()
        .revoke_api_key("cbk_1", NOW + 5)
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(NOW + 5));
    assert!(
        store
            .catalog()
            .tenant_by_key("hash-1", NOW)
            .await
            .unwrap()
            .is_none(),
        "a revoked key stops working at once"
    );
    let again = store
        .catalog()
        .revoke_api_key("cbk_1", NOW + 9)
        .await
        .unwrap();
    assert_eq!(again.revoked_at_ms, Some(NOW + 5), "revoking is idempotent");
    assert_eq!(
        store.catalog().list_api_keys("acme").await.unwrap(),
        vec![again.clone()]
    );
    // A key that expires works until then, not at or after it; its use
    // is recorded.
    let expiring = ApiKeyRecord {
        id: "cbk_2".into(),
        created_at_ms: NOW,
        expires_at_ms: Some(NOW + 100),
        ..key.clone()
    };
    let catalog = store.catalog();
    catalog.add_api_key(&expiring, "hash-3").await.unwrap();
    for (at, valid) in [
        (NOW, true),
        (NOW + 99, true),
        (NOW + 100, false),
        (NOW + 1000, false),
    ] {
        let found = catalog.tenant_by_key("hash-3", at).await.unwrap();
        assert_eq!(found.is_some(), valid, "at NOW + {}", at - NOW);
    }
    catalog.key_used("hash-3", NOW + 50).await.unwrap();
    catalog.key_used("hash-3", NOW + 20).await.unwrap();
    let listed = catalog.list_api_keys("acme").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[1].expires_at_ms, listed[1].last_used_at_ms),
        (Some(NOW + 100), Some(NOW + 50)),
        "the latest use is kept"
    );
    assert_eq!(listed[1].state(NOW + 100), "expired");
    assert_eq!(listed[0].state(NOW), "revoked");
    let wider = Quotas {
        max_payload_bytes: Some(10),
        memory_bytes: Some(32 << 20),
        cpu_ms: Some(500),
        fuel: Some(1_000_000),
        max_journal_entries: Some(50),
        max_output_bytes: Some(1024),
        max_response_bytes: Some(2048),
        max_concurrency: Some(2),
        max_journal_rate: Some(500),
        ..quotas
    };
    let allow = vec![
        "127.0.0.1:8080".to_owned(),
        "GET *.example.com/v1/*".to_owned(),
    ];
    let updated = store
        .catalog()
        .update_tenant("acme", &wider, &allow)
        .await
        .unwrap();
    assert_eq!(
        (updated.quotas, updated.http_allow.clone()),
        (wider, allow.clone())
    );
    assert_eq!(
        store.catalog().tenant("acme").await.unwrap(),
        updated,
        "every limit and the allow-list read back as written"
    );
    assert!(matches!(
        store.catalog().update_tenant("nobody", &wider, &[]).await,
        Err(Error::NotFound(_))
    ));
}

/// Secrets: set, replaced, listed by name only, deleted; per tenant.
async fn secrets_are_per_tenant_and_listed_without_values(db: Db) {
    let store = open(&db).await;
    store
        .catalog()
        .create_tenant("acme", &Quotas::default(), &[], NOW)
        .await
        .unwrap();
    store
        .catalog()
        .set_secret("acme", "token", "first-value", NOW)
        .await
        .unwrap();
    let replaced = store
        .catalog()
        .set_secret("acme", "token", "second-value", NOW + 1)
        .await
        .unwrap();
    assert_eq!(replaced.updated_at_ms, NOW + 1);
    store
        .catalog()
        .set_secret("acme", "db-password", "hunter2hunter2", NOW)
        .await
        .unwrap();
    let names: Vec<String> = store
        .catalog()
        .list_secrets("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["db-password", "token"]);
    assert_eq!(
        store.catalog().secret_values("acme").await.unwrap(),
        vec![
            ("db-password".to_owned(), "hunter2hunter2".to_owned()),
            ("token".to_owned(), "second-value".to_owned())
        ]
    );
    assert!(
        store
            .catalog()
            .secret_values("default")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .catalog()
            .set_secret("nobody", "token", "x-value-x", NOW)
            .await,
        Err(Error::NotFound(_))
    ));
    store
        .catalog()
        .delete_secret("acme", "token")
        .await
        .unwrap();
    assert!(matches!(
        store.catalog().delete_secret("acme", "token").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store.catalog().secret_values("acme").await.unwrap().len(),
        1
    );
}

/// Packages, idempotency keys and listings are per tenant.
async fn tenants_do_not_share_names_keys_or_listings(db: Db) {
    let store = with_package(&db).await;
    // The same bytes and name are version 1 of each tenant.
    let theirs = tenant_with_package(&store, "acme").await;
    assert_eq!((theirs.tenant.as_str(), theirs.version), ("acme", 1));
    let keyed = |id: &str, tenant: &str| NewExecution {
        tenant: tenant.to_owned(),
        idempotency_key: Some("order-7".to_owned()),
        worker_queue: None,
        continued_from: None,
        parent_id: None,
        detached: false,
        ..new_execution(id)
    };
    let ours = store
        .create_execution(keyed("ex_1", T), NOW, None)
        .await
        .unwrap();
    let other = store
        .create_execution(keyed("ex_2", "acme"), NOW, None)
        .await
        .unwrap();
    assert_eq!((ours.id.as_str(), other.id.as_str()), ("ex_1", "ex_2"));
    assert_eq!(other.tenant, "acme");
    store
        .create_execution(new_execution("ex_3"), NOW + 1, None)
        .await
        .unwrap();
    let list = |tenant: &str, after: Option<(i64, String)>| {
        let store = store.clone();
        let filter = ListFilter {
            tenant: Some(tenant.to_owned()),
            after,
            limit: 1,
            ..ListFilter::default()
        };
        async move { listed_ids(&store, filter).await }
    };
    assert_eq!(list("acme", None).await, ["ex_2"]);
    // Paging: newest first, each page after the last row of the one before.
    assert_eq!(list(T, None).await, ["ex_3"]);
    assert_eq!(list(T, Some((NOW + 1, "ex_3".into()))).await, ["ex_1"]);
    assert!(list(T, Some((NOW, "ex_1".into()))).await.is_empty());
    assert_eq!(
        store.executions().count_open_executions(T).await.unwrap(),
        2
    );
    assert_eq!(
        store
            .executions()
            .count_open_executions("acme")
            .await
            .unwrap(),
        1
    );
}

async fn creating_with_an_idempotency_key_returns_the_first_execution(db: Db) {
    let store = with_package(&db).await;
    let keyed = |id: &str| NewExecution {
        idempotency_key: Some("order-7".to_owned()),
        worker_queue: None,
        continued_from: None,
        parent_id: None,
        detached: false,
        ..new_execution(id)
    };
    let first = store
        .create_execution(keyed("ex_a"), NOW, None)
        .await
        .unwrap();
    assert_eq!(first.status, Status::Pending);
    assert_eq!(first.wake_at_ms, Some(NOW));
    assert_eq!(first.package_name, "pkg");
    let second = store
        .create_execution(keyed("ex_b"), NOW + 1, None)
        .await
        .unwrap();
    assert_eq!(second.id, "ex_a");
    assert!(matches!(
        store.executions().execution("ex_b").await,
        Err(Error::NotFound(_))
    ));
    let orphan = NewExecution {
        package_name: "nope".to_owned(),
        ..new_execution("ex_c")
    };
    assert!(matches!(
        store.create_execution(orphan, NOW, None).await,
        Err(Error::NotFound(_))
    ));
    let listed = store
        .executions()
        .list_executions(&ListFilter::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "nothing stored half-way");
}

async fn commits_append_and_a_stale_epoch_is_fenced_off(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    create_owned(&store, "ex_2", "node-a").await;
    let results = store
        .commit(
            vec![
                op(
                    "ex_1",
                    1,
                    vec![entry(1, "started"), entry(2, "call-step")],
                    None,
                ),
                op("ex_2", 7, vec![entry(1, "started")], None),
                op("ex_1", 1, vec![entry(3, "result")], None),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(
        matches!(&results[1], Err(Error::LostOwnership(id)) if id == "ex_2"),
        "{:?}",
        results[1]
    );
    let journal = store.executions().journal("ex_1", 0).await.unwrap();
    assert_eq!(
        journal,
        vec![
            entry(1, "started"),
            entry(2, "call-step"),
            entry(3, "result")
        ]
    );
    assert_eq!(
        store.executions().journal("ex_1", 2).await.unwrap(),
        vec![entry(3, "result")]
    );
    assert!(
        store
            .executions()
            .journal("ex_2", 0)
            .await
            .unwrap()
            .is_empty(),
        "a fenced operation stores nothing"
    );
}

async fn a_status_change_ends_ownership_within_a_batch(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let results = store
        .commit(
            vec![
                op("ex_1", 1, vec![entry(1, "completed")], finished()),
                op("ex_1", 1, vec![entry(2, "late")], None),
            ],
            NOW + 10,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::LostOwnership(_))));
    let record = store.executions().execution("ex_1").await.unwrap();
    assert_eq!(record.status, Status::Completed);
    assert_eq!(record.result, Some(json!({"ok": true})));
    assert_eq!(record.owner, None);
    assert_eq!(record.updated_at_ms, NOW + 10);
    assert_eq!(
        store.executions().journal("ex_1", 0).await.unwrap().len(),
        1
    );
    let counts = common::count_by_status(&db.url).await;
    assert_eq!(counts, vec![("completed".to_owned(), 1)]);
}

async fn a_creation_in_a_commit_needs_its_package_and_keeps_its_lineage(db: Db) {
    let store = with_package(&db).await;
    let creation = |id: &str, package: &str| CommitOp {
        create: Some(Creation {
            new: NewExecution {
                package_name: package.to_owned(),
                ..new_execution(id)
            },
            owner: Some(("node-a".to_owned(), NOW + LEASE)),
        }),
        ..op(id, 1, vec![entry(1, "started")], None)
    };
    let results = store
        .commit(
            vec![
                creation("ex_ok", "pkg"),
                creation("ex_orphan", "nope"),
                CommitOp {
                    create: Some(Creation {
                        // A child's next run: its lineage is stored too.
                        new: NewExecution {
                            continued_from: Some("ex_before".into()),
                            parent_id: Some("ex_parent".into()),
                            detached: true,
                            ..new_execution("ex_pending")
                        },
                        owner: None,
                    }),
                    ..op("ex_pending", 0, Vec::new(), None)
                },
            ],
            NOW,
        )
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(Error::NotFound(_))));
    let ok = store.executions().execution("ex_ok").await.unwrap();
    assert_eq!((ok.status, ok.epoch), (Status::Running, 1));
    assert_eq!(
        store.executions().journal("ex_ok", 0).await.unwrap().len(),
        1
    );
    assert!(store.executions().execution("ex_orphan").await.is_err());
    let pending = store.executions().execution("ex_pending").await.unwrap();
    assert_eq!((pending.status, pending.epoch), (Status::Pending, 0));
    assert_eq!(
        (
            pending.continued_from.as_deref(),
            pending.parent_id.as_deref(),
            pending.detached
        ),
        (Some("ex_before"), Some("ex_parent"), true)
    );
    assert_eq!(
        (ok.parent_id, ok.continued_from, ok.detached),
        (None, None, false)
    );
}

/// A child is created in the commit that journals its start (issue 34):
/// fenced by its parent's epoch (a parent that lost its lease starts no
/// orphan), claimed by the parent's node, with its lineage and key.
async fn a_child_is_created_with_its_start_and_fenced_by_its_parent(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_parent", "node-a").await;
    let start = |child: &str, epoch: i64, seq: i64, key: i64| CommitOp {
        side: vec![SideWrite::CreateChild(Box::new(Creation {
            new: NewExecution {
                parent_id: Some("ex_parent".into()),
                idempotency_key: Some(format!("child:ex_parent:{key}")),
                ..new_execution(child)
            },
            owner: Some(("node-a".to_owned(), NOW + LEASE)),
        }))],
        ..op("ex_parent", epoch, vec![entry(seq, "start-child")], None)
    };
    let results = store
        .commit(
            vec![start("ex_stale", 7, 1, 1), start("ex_child", 1, 1, 1)],
            NOW,
        )
        .await
        .unwrap();
    assert!(
        matches!(results[0], Err(Error::LostOwnership(_))),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    assert!(
        matches!(
            store.executions().execution("ex_stale").await,
            Err(Error::NotFound(_))
        ),
        "a fenced start created its child"
    );
    let child = store.executions().execution("ex_child").await.unwrap();
    assert_eq!(
        (
            child.status,
            child.epoch,
            child.owner.as_deref(),
            child.parent_id.as_deref(),
            child.idempotency_key.as_deref()
        ),
        (
            Status::Running,
            1,
            Some("node-a"),
            Some("ex_parent"),
            Some("child:ex_parent:1")
        )
    );
    let journal = store.executions().journal("ex_parent", 0).await.unwrap();
    assert_eq!(journal.len(), 1, "the start is journaled once");
    // A start whose child cannot be created (its key is taken: not
    // expected, the key holds the start's seq) still journals its entry,
    // and the parent is not failed for it: a replay finds the holder.
    let results = store
        .commit(vec![start("ex_again", 1, 2, 1)], NOW)
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert!(store.executions().execution("ex_again").await.is_err());
    assert_eq!(
        store
            .executions()
            .journal("ex_parent", 0)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Starts with an idempotency key ride the group commit (issue 34): a key
/// taken before, or by a creation earlier in the same batch, answers with
/// the execution that holds it, and nothing else is stored.
async fn a_keyed_creation_in_a_commit_returns_the_holder_of_its_key(db: Db) {
    let store = with_package(&db).await;
    let keyed = |id: &str, key: Option<&str>| CommitOp {
        create: Some(Creation {
            new: NewExecution {
                idempotency_key: key.map(str::to_owned),
                ..new_execution(id)
            },
            owner: None,
        }),
        ..op(id, 0, Vec::new(), None)
    };
    let first = store
        .commit(vec![keyed("ex_first", Some("order-1"))], NOW)
        .await
        .unwrap();
    assert!(first[0].is_ok(), "{first:?}");
    let results = store
        .commit(
            vec![
                keyed("ex_again", Some("order-1")),
                keyed("ex_two_a", Some("order-2")),
                keyed("ex_two_b", Some("order-2")),
                keyed("ex_plain", None),
            ],
            NOW + 1,
        )
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(Error::KeyTaken(id)) if id == "ex_first"),
        "{results:?}"
    );
    // One of the two creations with the same new key is stored; the
    // other answers with it.
    let holder = match (&results[1], &results[2]) {
        (Ok(()), Err(Error::KeyTaken(id))) => {
            assert_eq!(id, "ex_two_a");
            "ex_two_a"
        }
        (Err(Error::KeyTaken(id)), Ok(())) => {
            assert_eq!(id, "ex_two_b");
            "ex_two_b"
        }
        other => panic!("one creation with key order-2 must win: {other:?}"),
    };
    assert!(results[3].is_ok(), "{results:?}");
    let stored = store.executions().execution(holder).await.unwrap();
    assert_eq!(stored.idempotency_key.as_deref(), Some("order-2"));
    let mut ids: Vec<String> = store
        .executions()
        .list_executions(&ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    let mut expected = vec!["ex_first", holder, "ex_plain"];
    expected.sort();
    assert_eq!(ids, expected, "nothing stored for the refused creations");
}

async fn claims_take_due_work_once_and_expired_leases_again(db: Db) {
    let store = with_package(&db).await;
    store
        .create_execution(new_execution("ex_p"), NOW, None)
        .await
        .unwrap();
    create_owned(&store, "ex_r", "node-a").await;
    let claims = store.claim_due("node-b", NOW, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claims), vec!["ex_p"], "a live lease is not claimable");
    assert_eq!(claims[0].epoch, 1);
    assert_eq!((claims[0].taken_over, claims[0].late_ms), (false, None));
    assert!(
        store
            .claim_due("node-c", NOW, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let done = store
        .commit(
            vec![op("ex_p", 1, vec![entry(1, "completed")], finished())],
            NOW,
        )
        .await
        .unwrap();
    assert!(done[0].is_ok(), "the claim's epoch owns it: {done:?}");

    // node-a's lease on ex_r runs out: another node takes it over.
    let later = NOW + LEASE + 1;
    let claims = store.claim_due("node-b", later, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claims), vec!["ex_r"]);
    assert_eq!(claims[0].epoch, 2);
    assert!(claims[0].taken_over, "node-a's lease had expired");
    let record = store.executions().execution("ex_r").await.unwrap();
    assert_eq!(record.owner.as_deref(), Some("node-b"));
    // node-a's append, too late, is refused; node-b's goes in.
    let results = store
        .commit(
            vec![
                op("ex_r", 1, vec![entry(1, "from-a")], None),
                op("ex_r", 2, vec![entry(1, "from-b")], None),
            ],
            later,
        )
        .await
        .unwrap();
    assert!(matches!(results[0], Err(Error::LostOwnership(_))));
    assert!(results[1].is_ok());
    assert_eq!(
        marker(&store.executions().journal("ex_r", 0).await.unwrap()[0]),
        "from-b"
    );
    // A node that fails gives the execution up for a later retry, counted
    // with its message, after a delay that doubles with each failure.
    let failure = |now_ms| EngineFailure {
        error: "disk on fire".into(),
        now_ms,
        base_delay_ms: 100,
        max_delay_ms: 150,
    };
    store.abandon("ex_r", 2, &failure(later)).await.unwrap();
    let stalled = store.executions().execution("ex_r").await.unwrap();
    assert_eq!(
        (stalled.engine_failures, stalled.engine_error.as_deref()),
        (1, Some("disk on fire"))
    );
    assert!(
        store
            .claim_due("node-c", later + 99, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claims = store
        .claim_due("node-c", later + 101, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claims), vec!["ex_r"]);
    assert_eq!(claims[0].epoch, 3);
    assert!(!claims[0].resumed, "taken over, not woken from hibernation");
    // The second failure in a row waits twice as long (capped at 150 ms).
    store.abandon("ex_r", 3, &failure(later)).await.unwrap();
    assert!(
        store
            .claim_due("node-c", later + 149, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .executions()
            .execution("ex_r")
            .await
            .unwrap()
            .engine_failures,
        2
    );
    let claims = store
        .claim_due("node-c", later + 151, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claims), vec!["ex_r"]);
}

async fn concurrent_claims_never_hand_out_an_execution_twice(db: Db) {
    let store = with_package(&db).await;
    const N: usize = 200;
    for i in 0..N {
        store
            .create_execution(new_execution(&format!("ex_{i:03}")), NOW, None)
            .await
            .unwrap();
    }
    // Two nodes, each with its own connections, claiming in small bites.
    let nodes: Vec<SharedStore> = vec![store.clone(), open(&db).await];
    let mut tasks = Vec::new();
    for (n, node) in nodes.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claims = node
                    .claim_due(&format!("node-{n}"), NOW, LEASE, 7)
                    .await
                    .unwrap();
                if claims.is_empty() {
                    return mine;
                }
                mine.extend(claims.into_iter().map(|c| c.execution_id));
            }
        }));
    }
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        per_node.push(mine.len());
        all.extend(mine);
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), N, "claimed {per_node:?}");
    assert_eq!(distinct.len(), N, "an execution was claimed twice");
}

async fn hibernation_wakes_at_its_time_or_at_once_after_a_signal(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_timer", "node-a").await;
    create_owned(&store, "ex_signal", "node-a").await;
    let waiting = |wake_at_ms| {
        Some(StatusChange::Waiting {
            wake_at_ms,
            seen_signals: 0,
            timer: None,
        })
    };
    // ex_signal opens an approval and hibernates without a timer; the
    // operator decides before the hibernation commits (signals moved on).
    let mut open_approval = op("ex_signal", 1, vec![entry(1, "await-approval")], None);
    open_approval.side.push(SideWrite::OpenApproval {
        key: "go".to_owned(),
        request: json!({"why": "test"}),
    });
    store.commit(vec![open_approval], NOW).await.unwrap()[0]
        .as_ref()
        .unwrap();
    store
        .executions()
        .decide_approval("ex_signal", "go", &Decision::Approve(json!(1)), NOW + 1)
        .await
        .unwrap();
    let results = store
        .commit(
            vec![
                op("ex_timer", 1, Vec::new(), waiting(Some(NOW + 1000))),
                op("ex_signal", 1, Vec::new(), waiting(None)),
            ],
            NOW + 2,
        )
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let timer = store.executions().execution("ex_timer").await.unwrap();
    assert_eq!(timer.status, Status::Waiting);
    assert_eq!(timer.owner, None);
    let claims = store.claim_due("node-b", NOW + 3, LEASE, 10).await.unwrap();
    assert_eq!(
        ids(&claims),
        vec!["ex_signal"],
        "the signal made it due at once"
    );
    assert_eq!(claims[0].signals, 1);
    let claims = store
        .claim_due("node-b", NOW + 1250, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claims), vec!["ex_timer"]);
    assert!(claims[0].resumed, "woken from hibernation");
    assert_eq!(
        claims[0].late_ms,
        Some(250),
        "claimed 250 ms after its due time"
    );
    assert!(!claims[0].taken_over);
}

/// A hibernated execution's sleep ends when due, journaled by
/// `fire_timers` for every due one at once (its result after the last
/// entry, under the sleep's invocation, also where an upgrade appended to
/// the journal while it waited), whether or not a node claims the
/// execution yet; a timer fires once, and a claim clears the timer.
async fn due_timers_are_fired_in_bulk_without_a_claim(db: Db) {
    let store = with_package(&db).await;
    let sleep_in_step = |seq| Entry {
        invocation: "2.1".to_owned(),
        ..entry(seq, "sleep")
    };
    // ex_a and ex_b sleep (in a step, in the workflow), ex_c waits for an
    // approval until the same time, ex_d sleeps longer. ex_e, ex_f and ex_g
    // sleep as ex_b, but ex_e is paused and ex_f and ex_g have a cancel
    // requested before they are due (ex_f's while it runs: its hibernation
    // keeps no timer; ex_g's as it waits). ex_h sleeps as ex_b and is
    // upgraded while it waits.
    let hibernations = [
        (
            "ex_a",
            vec![entry(1, "step"), sleep_in_step(2)],
            Some((2, "2.1")),
            1000,
        ),
        ("ex_b", vec![entry(1, "sleep")], Some((1, "wf")), 1000),
        ("ex_c", vec![entry(1, "approval")], None, 1000),
        ("ex_d", vec![entry(1, "sleep")], Some((1, "wf")), 5000),
        ("ex_e", vec![entry(1, "sleep")], Some((1, "wf")), 1000),
        ("ex_f", vec![entry(1, "sleep")], Some((1, "wf")), 1000),
        ("ex_g", vec![entry(1, "sleep")], Some((1, "wf")), 1000),
        ("ex_h", vec![entry(1, "sleep")], Some((1, "wf")), 1000),
    ];
    for (id, entries, timer, due) in hibernations {
        create_owned(&store, id, "node-a").await;
        if id == "ex_f" {
            store
                .executions()
                .request_cancel(id, NOW + 1)
                .await
                .unwrap();
        }
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        let wait = StatusChange::Waiting {
            wake_at_ms: Some(NOW + due),
            seen_signals: 0,
            timer: timer.map(|(seq, invocation)| Timer {
                next_seq,
                ..Timer::new(seq, NOW + due, invocation)
            }),
        };
        store
            .commit(vec![op(id, 1, entries, Some(wait))], NOW)
            .await
            .unwrap()[0]
            .as_ref()
            .unwrap();
    }
    store
        .executions()
        .set_paused("ex_e", true, NOW + 2)
        .await
        .unwrap();
    store
        .executions()
        .request_cancel("ex_g", NOW + 3)
        .await
        .unwrap();
    let v2 = store
        .catalog()
        .put_package(T, "pkg", "sha-2", b"bytes 2", &PackageInfo::default(), NOW)
        .await
        .unwrap();
    store
        .executions()
        .upgrade_execution("ex_h", 1, 1, &v2, NOW + 4)
        .await
        .unwrap();

    let early = store.fire_timers(NOW + 999, 100).await.unwrap();
    assert!(early.fired.is_empty(), "fired before due: {early:?}");
    assert_eq!(early.next_due, Some(NOW + 1000));

    // One per transaction: some of ex_a, ex_b and ex_h come, and the
    // sweep says more may be due; the rest come in the next.
    let first = store.fire_timers(NOW + 1000, 1).await.unwrap();
    assert!(
        !first.fired.is_empty() && first.more,
        "a full transaction: {first:?}"
    );
    let mut fired = first.fired;
    let rest = store.fire_timers(NOW + 1001, 100).await.unwrap();
    assert!(!rest.more, "none left: {rest:?}");
    fired.extend(rest.fired);
    fired.sort();
    assert_eq!(
        fired,
        vec![
            ("ex_a".to_owned(), 3),
            ("ex_b".to_owned(), 2),
            ("ex_h".to_owned(), 3)
        ],
        "each due sleep fired once, after its last entry (ex_h's: the upgrade); the approval, \
         the paused and the cancelled not"
    );
    let upgraded = store.executions().journal("ex_h", 0).await.unwrap();
    let kinds: Vec<(i64, &str)> = upgraded.iter().map(|e| (e.seq, e.event.kind())).collect();
    assert_eq!(kinds, vec![(1, "output"), (2, "upgraded"), (3, "result")]);
    assert_eq!(rest.next_due, Some(NOW + 5000));
    let journal = store.executions().journal("ex_a", 0).await.unwrap();
    let result = journal.last().unwrap();
    assert_eq!(result.seq, 3);
    assert_eq!(result.invocation, "2.1", "the sleep's invocation");
    assert_eq!(
        result.event,
        Event::Result {
            call: 2,
            outcome: Ok(Value::Null)
        }
    );
    assert_eq!(result.at_ms, NOW + 1000);
    let again = store.fire_timers(NOW + 2000, 100).await.unwrap();
    assert!(again.fired.is_empty(), "fired twice: {again:?}");

    // The fired ones are still due for a node to resume, and the
    // cancelled ones, whose code ends the sleep; ex_d is claimed before its
    // timer (a signal, say): its code handles the sleep.
    let claims = store
        .claim_due("node-b", NOW + 2000, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&claims),
        vec!["ex_a", "ex_b", "ex_c", "ex_f", "ex_g", "ex_h"]
    );
    assert!(claims.iter().all(|c| c.resumed));
    for (id, entries) in [("ex_b", 2), ("ex_e", 1), ("ex_f", 1), ("ex_g", 1)] {
        assert_eq!(
            store.executions().journal(id, 0).await.unwrap().len(),
            entries,
            "{id}'s journal"
        );
    }
    let record = store.executions().execution("ex_d").await.unwrap();
    store
        .executions()
        .request_cancel("ex_d", NOW + 3000)
        .await
        .unwrap();
    let claims = store
        .claim_due("node-b", NOW + 3000, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claims), vec!["ex_d"]);
    assert_eq!(record.status, Status::Waiting);
    let late = store.fire_timers(NOW + 6000, 100).await.unwrap();
    assert!(
        late.fired.is_empty(),
        "a claimed execution's timer fired: {late:?}"
    );
    assert_eq!(
        store.executions().journal("ex_d", 0).await.unwrap().len(),
        1
    );
}

/// Two nodes sweeping the same due timers at once, in small bites: each
/// sleep's result is journaled once, whichever part of the timers (on
/// PostgreSQL, several statements at once) and node took it.
async fn concurrent_sweeps_fire_each_timer_once(db: Db) {
    let store = with_package(&db).await;
    // Ids that end in every hex digit, as the engine's do.
    let ids: Vec<String> = (0..64).map(|i| format!("ex_{i:04x}")).collect();
    for id in &ids {
        create_owned(&store, id, "node-a").await;
        let wait = StatusChange::Waiting {
            wake_at_ms: Some(NOW + 1000),
            seen_signals: 0,
            timer: Some(Timer {
                next_seq: 2,
                ..Timer::new(1, NOW + 1000, "wf")
            }),
        };
        store
            .commit(vec![op(id, 1, vec![entry(1, "sleep")], Some(wait))], NOW)
            .await
            .unwrap()[0]
            .as_ref()
            .unwrap();
    }
    let nodes: Vec<SharedStore> = vec![store.clone(), open(&db).await];
    let mut tasks = Vec::new();
    for node in nodes {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let sweep = node.fire_timers(NOW + 1000, 3).await.unwrap();
                if sweep.fired.is_empty() && !sweep.more {
                    return mine;
                }
                mine.extend(sweep.fired);
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let expected: Vec<(String, i64)> = ids.iter().map(|id| (id.clone(), 2)).collect();
    assert_eq!(all, expected, "each timer fired once, at its next seq");
    for id in &ids {
        let journal = store.executions().journal(id, 0).await.unwrap();
        assert_eq!(journal.len(), 2, "{id}: the sleep and one result");
    }
}

async fn approvals_are_idempotent_and_wake_the_execution(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let mut wait = op(
        "ex_1",
        1,
        vec![entry(1, "await-approval")],
        Some(StatusChange::Waiting {
            wake_at_ms: None,
            seen_signals: 0,
            timer: None,
        }),
    );
    for key in ["deploy", "notify"] {
        wait.side.push(SideWrite::OpenApproval {
            key: key.to_owned(),
            request: json!({"key": key}),
        });
    }
    store.commit(vec![wait], NOW).await.unwrap()[0]
        .as_ref()
        .unwrap();
    assert!(
        store
            .claim_due("node-b", NOW + 1, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let wrong = store
        .executions()
        .decide_approval("ex_1", "nope", &Decision::Approve(json!(null)), NOW)
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("waiting for: deploy, notify"), "{wrong}");
    let approve = Decision::Approve(json!({"by": "ops"}));
    let decided = store
        .executions()
        .decide_approval("ex_1", "deploy", &approve, NOW + 5)
        .await
        .unwrap();
    assert_eq!(decided.status, "approved");
    let again = store
        .executions()
        .decide_approval("ex_1", "deploy", &approve, NOW + 6)
        .await
        .unwrap();
    assert_eq!(again.decision, Some(json!({"by": "ops"})), "idempotent");
    let conflict = store
        .executions()
        .decide_approval("ex_1", "deploy", &Decision::Reject("no".into()), NOW + 7)
        .await
        .unwrap_err();
    assert!(matches!(conflict, Error::Conflict(_)), "{conflict}");
    let timed_out = store
        .time_out_approval("ex_1", "notify", NOW + 8)
        .await
        .unwrap();
    assert_eq!(timed_out.status, "timed-out");
    let kept = store
        .time_out_approval("ex_1", "deploy", NOW + 9)
        .await
        .unwrap();
    assert_eq!(kept.status, "approved", "a decided approval stays decided");
    let approvals = store.executions().approvals("ex_1").await.unwrap();
    assert_eq!(approvals.len(), 2);
    let claims = store.claim_due("node-b", NOW + 5, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claims), vec!["ex_1"], "the decision woke it");
}

async fn leases_renew_report_cancels_and_can_be_released(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    create_owned(&store, "ex_2", "node-a").await;
    store
        .executions()
        .request_cancel("ex_2", NOW)
        .await
        .unwrap();
    let renewed = store
        .renew_leases("node-a", NOW + 4000, LEASE)
        .await
        .unwrap();
    let cancelled: Vec<&str> = renewed
        .iter()
        .filter(|r| r.cancel_requested)
        .map(|r| r.execution_id.as_str())
        .collect();
    assert_eq!(cancelled, vec!["ex_2"]);
    assert_eq!(renewed.len(), 2, "both leases renewed: {renewed:?}");
    // Renewed until NOW + 9000: not claimable at NOW + 6000.
    assert!(
        store
            .claim_due("node-b", NOW + 6000, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.release_leases("node-a").await.unwrap();
    let claims = store
        .claim_due("node-b", NOW + 6000, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claims), vec!["ex_1", "ex_2"]);
    // node-a no longer holds them: its renewal renews nothing.
    assert!(
        store
            .renew_leases("node-a", NOW + 7000, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let record = store.executions().execution("ex_2").await.unwrap();
    assert!(record.cancel_requested);
    assert_eq!(record.owner.as_deref(), Some("node-b"));
}

async fn retry_and_cancel_check_the_status(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let not_failed = store
        .executions()
        .retry_execution("ex_1", NOW)
        .await
        .unwrap_err();
    assert!(matches!(not_failed, Error::Conflict(_)), "{not_failed}");
    let failed = StatusChange::Finished {
        status: Status::Failed,
        result: None,
        error: Some(CallError::new(ErrorKind::Other("boom".into()), "")),
    };
    store
        .commit(
            vec![op("ex_1", 1, vec![entry(1, "failed")], Some(failed))],
            NOW,
        )
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    let cancel = store
        .executions()
        .request_cancel("ex_1", NOW)
        .await
        .unwrap_err();
    assert!(cancel.to_string().contains("nothing to cancel"), "{cancel}");
    let retried = store
        .executions()
        .retry_execution("ex_1", NOW + 1)
        .await
        .unwrap();
    assert_eq!(retried.status, Status::Pending);
    assert_eq!(retried.epoch, 2);
    assert_eq!(retried.error, None);
    let journal = store.executions().journal("ex_1", 0).await.unwrap();
    assert_eq!(journal[1].seq, 2);
    let Event::Retried(retried) = &journal[1].event else {
        panic!("not a retry: {:?}", journal[1]);
    };
    assert_eq!(retried.error.as_ref().unwrap().kind.as_str(), "boom");
    let filtered = store
        .executions()
        .list_executions(&ListFilter {
            status: Some(Status::Pending),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert!(matches!(
        store.executions().request_cancel("ex_404", NOW).await,
        Err(Error::NotFound(_))
    ));
}

/// Upgrading: a database written before tenants existed (schema 1) is
/// migrated with every row kept, all of it the tenant `default`'s.
async fn a_database_of_schema_1_keeps_its_data_under_the_default_tenant(db: Db) {
    let backend = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let only_v1 = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::root().join(format!("crates/store/migrations/{backend}/0001_init.sql")),
        only_v1.path().join("0001_init.sql"),
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(only_v1.path()).await.unwrap();
    let rows = "INSERT INTO packages (sha256, name, version, bytes, info, created_at) \
         VALUES ('sha-old', 'old', 1, 'bytes', '{}', 1); \
         INSERT INTO executions (id, package_sha256, package_name, package_version, workflow, \
         input, idempotency_key, status, created_at, updated_at, wake_at) \
         VALUES ('ex_old', 'sha-old', 'old', 1, 'wf', '{}', 'key-old', 'waiting', 1, 1, 99); \
         INSERT INTO journal (execution_id, seq, invocation, kind, payload, at) \
         VALUES ('ex_old', 1, 'engine', 'started', \
         '{\"workflow\": \"wf\", \"input\": {}, \"package\": \"sha-old\"}', 1);";
    match db.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}?mode=rwc", db.path.display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(rows).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(rows).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let store = open(&db).await;
    let package = store.catalog().find_package(T, "old", None).await.unwrap();
    assert_eq!((package.sha256.as_str(), package.version), ("sha-old", 1));
    assert_eq!(
        store.catalog().package_bytes("sha-old").await.unwrap(),
        b"bytes"
    );
    let old = store.executions().execution("ex_old").await.unwrap();
    assert_eq!((old.tenant.as_str(), old.status), (T, Status::Waiting));
    assert_eq!(
        store.executions().journal("ex_old", 0).await.unwrap().len(),
        1
    );
    // Its idempotency key still answers, now within the tenant.
    let again = NewExecution {
        tenant: T.to_owned(),
        package_name: "old".into(),
        package_sha256: "sha-old".into(),
        idempotency_key: Some("key-old".into()),
        worker_queue: None,
        continued_from: None,
        parent_id: None,
        detached: false,
        ..new_execution("ex_new")
    };
    let found = store.create_execution(again, NOW, None).await.unwrap();
    assert_eq!(found.id, "ex_old");
    let claimed = store.claim_due("node", NOW, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claimed), ["ex_old"], "its timer still fires");
}

async fn a_newer_schema_is_refused(db: Db) {
    let store = open(&db).await;
    drop(store);
    let checksum = match db.backend {
        Backend::Sqlite => "x'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    db.sql(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, {checksum}, 0)"
    ));
    let refused = store::open(&db.url, Synchronous::Full).await.err().unwrap();
    let message = refused.to_string();
    assert!(
        message.contains("9999") && message.contains("newer"),
        "{message}"
    );
}

async fn listening_hears_another_process_make_work_due(db: Db) {
    let store = with_package(&db).await;
    let heard = Arc::new(AtomicUsize::new(0));
    let counter = heard.clone();
    let listener = store
        .listen_due(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }))
        .await
        .unwrap();
    let Some(listener) = listener else {
        assert_eq!(db.backend, Backend::Sqlite, "PostgreSQL must listen");
        return;
    };
    // Another connection (as another node or the CLI would) starts one.
    let other = open(&db).await;
    let before = heard.load(Ordering::SeqCst);
    other
        .create_execution(new_execution("ex_1"), NOW, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while heard.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "no notification within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    listener.abort();
}

async fn renewals_and_commits_on_the_same_executions_do_not_deadlock(db: Db) {
    let store = with_package(&db).await;
    const N: usize = 60;
    let ids: Vec<String> = (0..N).map(|i| format!("ex_{i:02}")).collect();
    for id in &ids {
        create_owned(&store, id, "node-a").await;
    }
    // The heartbeat renews every lease of node-a while group commits lock
    // the same rows (in another order of ops): both must always finish.
    let renewer = {
        let store = open(&db).await;
        tokio::spawn(async move {
            for round in 0..100 {
                store
                    .renew_leases("node-a", NOW + round, LEASE)
                    .await
                    .unwrap();
            }
        })
    };
    for round in 0..40_i64 {
        let mut ops: Vec<CommitOp> = ids
            .iter()
            .map(|id| op(id, 1, vec![entry(round + 1, "log")], None))
            .collect();
        if round % 2 == 1 {
            ops.reverse();
        }
        let results = store.commit(ops, NOW).await.unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }
    renewer.await.unwrap();
    for id in &ids {
        assert_eq!(store.executions().journal(id, 0).await.unwrap().len(), 40);
    }
}

// ---- The task queue of external workers ----

/// A task for attempt `attempt` of the step call at `seq` on `queue`.
fn task(seq: i64, attempt: u32, queue: &str, timeouts: TaskTimeouts) -> TaskSpec {
    TaskSpec {
        seq,
        attempt,
        queue: queue.to_owned(),
        step: "connect_ssh".to_owned(),
        input: format!(r#"{{"seq":{seq}}}"#),
        timeouts,
        sticky: None,
    }
}

const RELAXED: TaskTimeouts = TaskTimeouts {
    schedule_to_start_ms: None,
    start_to_close_ms: 60_000,
    heartbeat_ms: None,
};

/// Commits `tasks` for `id` (owned at epoch 1), each with an entry.
async fn open_tasks(store: &SharedStore, id: &str, tasks: Vec<TaskSpec>) {
    let entries = tasks
        .iter()
        .map(|t| entry(t.seq, &format!("attempt-{}", t.attempt)))
        .collect();
    let mut open = op(id, 1, entries, None);
    open.side = tasks.into_iter().map(SideWrite::OpenTask).collect();
    store.commit(vec![open], NOW).await.unwrap()[0]
        .as_ref()
        .unwrap();
}

fn task_id(id: &str, seq: i64, attempt: u32) -> TaskId {
    TaskId {
        execution_id: id.to_owned(),
        seq,
        attempt,
    }
}

/// What `worker` claims from the suite tenant's `queue` at `at`.
async fn claim_as(store: &SharedStore, queue: &str, worker: &str, at: i64) -> Option<TaskClaim> {
    store
        .tasks()
        .claim_task(T, queue, worker, at)
        .await
        .unwrap()
}

async fn a_task_is_created_with_its_attempt_and_claimed_once_within_its_tenant(db: Db) {
    let store = with_package(&db).await;
    store
        .catalog()
        .create_tenant("b", &Quotas::default(), &[], NOW)
        .await
        .unwrap();
    create_owned(&store, "ex_1", "node-a").await;
    // A fenced-off operation creates no task.
    let mut stale = op("ex_1", 9, vec![entry(1, "attempt-1")], None);
    stale
        .side
        .push(SideWrite::OpenTask(task(1, 1, "devops", RELAXED)));
    assert!(store.commit(vec![stale], NOW).await.unwrap()[0].is_err());
    assert!(store.tasks().task(&task_id("ex_1", 1, 1)).await.is_err());

    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    let queued = store.tasks().task(&task_id("ex_1", 1, 1)).await.unwrap();
    assert_eq!(queued.status, TaskStatus::Queued);
    assert_eq!(queued.tenant, T, "the task is the execution's tenant's");
    for (tenant, queue) in [("b", "devops"), (T, "other")] {
        let none = store
            .tasks()
            .claim_task(tenant, queue, "w-x", NOW + 1)
            .await
            .unwrap();
        assert_eq!(none, None, "{tenant}/{queue} must not see the task");
    }
    let claim = claim_as(&store, "devops", "w-1", NOW + 1)
        .await
        .expect("the task");
    assert_eq!(claim.token.id, task_id("ex_1", 1, 1));
    assert_eq!(
        (claim.step.as_str(), claim.input.as_str()),
        ("connect_ssh", r#"{"seq":1}"#)
    );
    assert_eq!(claim.deadline_at_ms, NOW + 1 + 60_000);
    assert_eq!(
        claim_as(&store, "devops", "w-2", NOW + 2).await,
        None,
        "claimed once"
    );
    let claimed = store.tasks().task(&claim.token.id).await.unwrap();
    assert_eq!(claimed.status, TaskStatus::Claimed);
    assert_eq!(claimed.worker.as_deref(), Some("w-1"));
    // Another tenant's worker cannot use the token.
    let foreign = store
        .tasks()
        .complete_task("b", &claim.token, &Ok(json!("stolen")), NOW + 3)
        .await
        .unwrap_err();
    assert!(matches!(foreign, Error::NotFound(_)), "{foreign}");
    let token: TaskToken = claim.token.to_string().parse().unwrap();
    assert_eq!(
        token, claim.token,
        "the token reads back from its wire form"
    );
}

async fn a_completion_is_stored_once_and_wakes_the_execution(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    // The execution hibernates until the task's outcome arrives.
    let waiting = op(
        "ex_1",
        1,
        Vec::new(),
        Some(StatusChange::Waiting {
            wake_at_ms: Some(NOW + 60_000),
            seen_signals: 0,
            timer: None,
        }),
    );
    store.commit(vec![waiting], NOW).await.unwrap()[0]
        .as_ref()
        .unwrap();
    let claim = claim_as(&store, "devops", "w-1", NOW + 1).await.unwrap();
    assert!(
        store
            .claim_due("node-b", NOW + 2, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "still waiting"
    );
    let beat = store
        .tasks()
        .heartbeat_task(T, &claim.token, Some(&json!({"percent": 50})), NOW + 3)
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    store
        .tasks()
        .complete_task(T, &claim.token, &Ok(json!({"ip": "10.0.0.1"})), NOW + 4)
        .await
        .unwrap();
    store
        .tasks()
        .complete_task(T, &claim.token, &Ok(json!({"ip": "10.0.0.1"})), NOW + 5)
        .await
        .expect("the same claim completing again is idempotent");
    let done = store.tasks().task(&claim.token.id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.outcome, Some(Ok(json!({"ip": "10.0.0.1"}))));
    assert_eq!(done.progress, Some(json!({"percent": 50})));
    let claims = store.claim_due("node-b", NOW + 6, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claims), vec!["ex_1"], "the completion woke it");
    let late = store
        .tasks()
        .heartbeat_task(T, &claim.token, None, NOW + 7)
        .await
        .unwrap_err();
    assert!(matches!(late, Error::Conflict(_)), "{late}");
}

async fn an_expired_claim_is_refused_and_its_result_stored_nowhere(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let beating = TaskTimeouts {
        heartbeat_ms: Some(1_000),
        ..RELAXED
    };
    open_tasks(
        &store,
        "ex_1",
        vec![task(1, 1, "devops", beating), task(2, 1, "devops", beating)],
    )
    .await;
    let first = claim_as(&store, "devops", "w-1", NOW).await.unwrap();
    assert_eq!(first.deadline_at_ms, NOW + 1_000, "the heartbeat timeout");
    let beat = store
        .tasks()
        .heartbeat_task(T, &first.token, None, NOW + 900)
        .await
        .unwrap();
    assert_eq!(beat.deadline_at_ms, NOW + 1_900, "a heartbeat extends it");
    // No heartbeat since: the engine times the task out.
    let early = store
        .tasks()
        .time_out_task(&first.token.id, NOW + 1_899)
        .await
        .unwrap();
    assert_eq!(early.status, TaskStatus::Claimed, "not due yet");
    let expired = store
        .tasks()
        .time_out_task(&first.token.id, NOW + 1_900)
        .await
        .unwrap();
    assert_eq!(expired.status, TaskStatus::TimedOut);
    let Some(Err(error)) = &expired.outcome else {
        panic!("{expired:?}")
    };
    assert_eq!(error.kind, ErrorKind::Deadline);
    assert!(
        error.message.contains("w-1") && error.message.contains("heartbeat"),
        "{}",
        error.message
    );
    // The late worker's completion is refused and changes nothing.
    let refused = store
        .tasks()
        .complete_task(T, &first.token, &Ok(json!("late")), NOW + 2_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Conflict(m) if m.contains("timed out")),
        "{refused}"
    );
    assert_eq!(
        store.tasks().task(&first.token.id).await.unwrap().outcome,
        expired.outcome
    );

    // A completion that arrives after the deadline, before the engine
    // noticed, is refused too, and the timeout is stored by that call.
    let second = claim_as(&store, "devops", "w-2", NOW + 2_000)
        .await
        .unwrap();
    assert_eq!(second.token.id, task_id("ex_1", 2, 1));
    let refused = store
        .tasks()
        .complete_task(T, &second.token, &Ok(json!("late")), NOW + 3_000)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    let stored = store.tasks().task(&second.token.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::TimedOut);
    assert!(matches!(stored.outcome, Some(Err(_))), "{stored:?}");
    // A forged claim id is refused.
    let forged = TaskToken {
        claim: "cl_forged".into(),
        ..second.token.clone()
    };
    let refused = store
        .tasks()
        .heartbeat_task(T, &forged, None, NOW + 3_000)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
}

async fn a_queued_task_times_out_when_no_worker_takes_it(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let prompt = TaskTimeouts {
        schedule_to_start_ms: Some(500),
        ..RELAXED
    };
    open_tasks(&store, "ex_1", vec![task(1, 1, "nobody", prompt)]).await;
    let none = claim_as(&store, "nobody", "w-1", NOW + 500).await;
    assert_eq!(none, None, "past its schedule-to-start deadline");
    let expired = store
        .tasks()
        .time_out_task(&task_id("ex_1", 1, 1), NOW + 500)
        .await
        .unwrap();
    let Some(Err(error)) = &expired.outcome else {
        panic!("{expired:?}")
    };
    assert!(
        error.message.contains("queue 'nobody'"),
        "{}",
        error.message
    );
}

async fn a_task_handed_back_goes_to_another_worker(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    let first = claim_as(&store, "devops", "w-1", NOW).await.unwrap();
    store
        .tasks()
        .release_task(T, &first.token, None, NOW + 1)
        .await
        .unwrap();
    let second = claim_as(&store, "devops", "w-2", NOW + 2).await.unwrap();
    assert_eq!(second.token.id, first.token.id);
    assert_ne!(second.token.claim, first.token.claim, "a new fencing token");
    let refused = store
        .tasks()
        .complete_task(T, &first.token, &Ok(json!("w-1")), NOW + 3)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    store
        .tasks()
        .complete_task(T, &second.token, &Ok(json!("w-2")), NOW + 3)
        .await
        .unwrap();
    let done = store.tasks().task(&first.token.id).await.unwrap();
    assert_eq!(done.outcome, Some(Ok(json!("w-2"))));
}

async fn sticky_tasks_prefer_their_worker_for_a_while_then_any(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let mut sticky = task(2, 1, "devops", RELAXED);
    sticky.sticky = Some(("w-1".to_owned(), NOW + 1_000));
    let older = task(1, 1, "devops", RELAXED);
    open_tasks(&store, "ex_1", vec![older, sticky]).await;
    let claim = |worker: &'static str, at: i64| {
        let store = store.clone();
        async move {
            claim_as(&store, "devops", worker, at)
                .await
                .map(|c| c.token.id.seq)
        }
    };
    assert_eq!(
        claim("w-1", NOW).await,
        Some(2),
        "its own sticky task first"
    );
    open_tasks(
        &store,
        "ex_1",
        vec![{
            let mut t = task(3, 1, "devops", RELAXED);
            t.sticky = Some(("w-1".to_owned(), NOW + 1_000));
            t
        }],
    )
    .await;
    assert_eq!(
        claim("w-2", NOW + 1).await,
        Some(1),
        "not another worker's sticky task"
    );
    assert_eq!(claim("w-2", NOW + 2).await, None);
    assert_eq!(
        claim("w-2", NOW + 1_000).await,
        Some(3),
        "any worker after the window"
    );
}

/// A worker has at most one queued task waiting for it: executions that
/// keep finishing their steps on a busy worker must not queue behind it
/// while other workers idle.
async fn a_busy_worker_keeps_one_sticky_task_and_others_take_the_rest(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    let sticky = |seq| {
        let mut t = task(seq, 1, "devops", RELAXED);
        t.sticky = Some(("w-1".to_owned(), NOW + 1_000));
        t
    };
    open_tasks(&store, "ex_1", vec![sticky(1)]).await;
    open_tasks(&store, "ex_1", vec![sticky(2)]).await;
    open_tasks(&store, "ex_1", vec![sticky(3)]).await;
    let claimed = |worker: &'static str| {
        let store = store.clone();
        async move {
            claim_as(&store, "devops", worker, NOW + 1)
                .await
                .map(|c| c.token.id.seq)
        }
    };
    assert_eq!(claimed("w-2").await, Some(2), "not waiting for w-1");
    assert_eq!(claimed("w-2").await, Some(3));
    assert_eq!(claimed("w-2").await, None, "task 1 waits for w-1");
    assert_eq!(claimed("w-1").await, Some(1));
}

async fn concurrent_claims_never_hand_out_a_task_twice(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(
        &store,
        "ex_1",
        (1..=40)
            .map(|seq| task(seq, 1, "devops", RELAXED))
            .collect(),
    )
    .await;
    let claimers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = claim_as(&store, "devops", &format!("w-{w}"), NOW).await {
                got.push(c.token.id.seq);
            }
            got
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "{all:?}");
    assert_eq!(unique.len(), 40, "a task was handed out twice: {all:?}");
}

async fn cancelling_reaches_a_claimed_task_through_its_heartbeat(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    let claim = claim_as(&store, "devops", "w-1", NOW).await.unwrap();
    store
        .executions()
        .request_cancel("ex_1", NOW + 1)
        .await
        .unwrap();
    let beat = store
        .tasks()
        .heartbeat_task(T, &claim.token, None, NOW + 2)
        .await
        .unwrap();
    assert!(beat.cancel_requested, "the heartbeat says cancelled");
    // The engine delivers the cancellation and closes the task.
    let mut close = op("ex_1", 1, vec![entry(2, "result")], None);
    close.side.push(SideWrite::CloseTask { seq: 1, attempt: 1 });
    store.commit(vec![close], NOW + 3).await.unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        store.tasks().task(&claim.token.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert!(
        store
            .tasks()
            .heartbeat_task(T, &claim.token, None, NOW + 4)
            .await
            .unwrap()
            .cancel_requested
    );
    let refused = store
        .tasks()
        .complete_task(T, &claim.token, &Ok(json!(1)), NOW + 5)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    assert_eq!(
        store.tasks().task(&claim.token.id).await.unwrap().outcome,
        None
    );
}

async fn workers_register_and_are_listed_with_their_tasks_in_flight(db: Db) {
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    let worker = |id: &str, queue: &str| WorkerRecord {
        tenant: T.to_owned(),
        worker_id: id.to_owned(),
        queue: queue.to_owned(),
        host: "builder-1".to_owned(),
        max_tasks: 4,
        registered_at_ms: NOW,
        last_seen_at_ms: NOW,
        tasks_in_flight: 0,
    };
    for (id, queue) in [("w-2", "devops"), ("w-1", "devops"), ("w-3", "build")] {
        store
            .tasks()
            .register_worker(&worker(id, queue))
            .await
            .unwrap();
    }
    claim_as(&store, "devops", "w-1", NOW).await.unwrap();
    assert!(
        store
            .tasks()
            .worker_seen(T, "w-1", NOW + 5_000)
            .await
            .unwrap()
    );
    assert!(
        !store.tasks().worker_seen(T, "w-9", NOW).await.unwrap(),
        "unknown"
    );
    assert!(
        !store.tasks().worker_seen("b", "w-1", NOW).await.unwrap(),
        "another tenant's"
    );
    let listed = store.tasks().list_workers(T, NOW).await.unwrap();
    let shown: Vec<(&str, &str, i64)> = listed
        .iter()
        .map(|w| (w.queue.as_str(), w.worker_id.as_str(), w.tasks_in_flight))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("build", "w-3", 0),
            ("devops", "w-1", 1),
            ("devops", "w-2", 0)
        ]
    );
    let recent = store.tasks().list_workers(T, NOW + 1).await.unwrap();
    assert_eq!(recent.len(), 1, "only w-1 was seen since");
    // `/metrics` counts them per queue the same way.
    let mut counted = store.executions().gauges(NOW).await.unwrap().workers;
    counted.sort();
    assert_eq!(
        counted,
        vec![
            (T.to_owned(), "build".to_owned(), 1),
            (T.to_owned(), "devops".to_owned(), 2)
        ]
    );
    let counted = store.executions().gauges(NOW + 1).await.unwrap().workers;
    assert_eq!(counted, vec![(T.to_owned(), "devops".to_owned(), 1)]);
    store.tasks().remove_worker(T, "w-1").await.unwrap();
    assert!(
        store
            .tasks()
            .list_workers(T, NOW + 1)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A caller that stops waiting half-way through a write (an RPC whose
/// client went away: a worker cancels its heartbeat when its step ends)
/// must not leave a transaction open: on SQLite it would hold the write
/// lock, every later write would wait for it and fail, and writes made on
/// its connection would never be committed. The heartbeat is dropped at
/// many points, after polls some time apart.
async fn a_write_abandoned_half_way_leaves_the_store_writable(db: Db) {
    use std::future::{Future, poll_fn};
    use std::task::Poll;
    let store = with_package(&db).await;
    create_owned(&store, "ex_1", "node-a").await;
    open_tasks(&store, "ex_1", vec![task(1, 1, "devops", RELAXED)]).await;
    let claim = claim_as(&store, "devops", "w-1", NOW).await.unwrap();
    for pause_us in [0, 20, 50, 100, 200, 400, 800, 1_600] {
        for polls in 1..=4 {
            let tasks = store.tasks();
            let mut beat = std::pin::pin!(tasks.heartbeat_task(T, &claim.token, None, NOW + 1));
            for _ in 0..polls {
                let ready = poll_fn(|cx| Poll::Ready(beat.as_mut().poll(cx).is_ready())).await;
                if ready {
                    break;
                }
                std::thread::sleep(Duration::from_micros(pause_us));
            }
        }
    }
    // Writes still go through, promptly, and are seen by every reader.
    let registered = WorkerRecord {
        tenant: T.to_owned(),
        worker_id: "w-1".to_owned(),
        queue: "devops".to_owned(),
        host: "builder-1".to_owned(),
        max_tasks: 1,
        registered_at_ms: NOW,
        last_seen_at_ms: NOW,
        tasks_in_flight: 0,
    };
    let within = |what: &'static str| {
        move |e| panic!("{what} did not finish within 10 s ({e}): a transaction was left open")
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        store.tasks().register_worker(&registered),
    )
    .await
    .unwrap_or_else(within("registering a worker"))
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        store
            .tasks()
            .complete_task(T, &claim.token, &Ok(json!("done")), NOW + 2),
    )
    .await
    .unwrap_or_else(within("the completion"))
    .unwrap();
    let listed = store.tasks().list_workers(T, NOW).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the registration was committed: {listed:?}"
    );
    let done = store.tasks().task(&claim.token.id).await.unwrap();
    assert_eq!(done.outcome, Some(Ok(json!("done"))));
}

/// The tenant's open count (kept by triggers in shards, read as their
/// sum) equals a count of its pending, running and waiting executions
/// after creations, ends, a retry and a cancel, and after a read folds
/// many shards.
async fn the_open_count_follows_every_status_change(db: Db) {
    let store = with_package(&db).await;
    let counted = || {
        db.scalar(
            "SELECT COUNT(*) FROM executions WHERE status IN ('pending', 'running', 'waiting')",
        )
    };
    let kept = || async { store.executions().count_open_executions(T).await.unwrap() };
    assert_eq!(kept().await, 0);
    for i in 0..200 {
        create_owned(&store, &format!("ex_{i}"), "node-a").await;
    }
    for i in 200..300 {
        store
            .create_execution(new_execution(&format!("ex_{i}")), NOW, None)
            .await
            .unwrap();
    }
    assert_eq!(counted(), 300);
    let ends: Vec<CommitOp> = (0..150)
        .map(|i| op(&format!("ex_{i}"), 1, vec![entry(1, "end")], finished()))
        .collect();
    for outcome in store.commit(ends, NOW).await.unwrap() {
        outcome.unwrap();
    }
    let failed = StatusChange::Finished {
        status: Status::Failed,
        result: None,
        error: Some(CallError::new(ErrorKind::Other("boom".into()), "")),
    };
    store
        .commit(vec![op("ex_150", 1, vec![], Some(failed))], NOW)
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    store
        .executions()
        .retry_execution("ex_150", NOW + 1)
        .await
        .unwrap();
    store
        .executions()
        .request_cancel("ex_299", NOW + 1)
        .await
        .unwrap();
    let expected = counted();
    assert!((140..=150).contains(&expected), "{expected}");
    assert_eq!(kept().await, expected);
    // Shards of connections long gone (made up here: 100 of them, +1 and
    // -1 in turns) add nothing; a read folds them.
    db.sql(
        "INSERT INTO open_counts (tenant, shard, n) \
         WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 100) \
         SELECT 'default', 100000 + i, 1 - 2 * (i % 2) FROM g",
    );
    assert_eq!(kept().await, expected, "the count read before folding");
    let waited = Instant::now();
    while db.scalar("SELECT COUNT(*) FROM open_counts") > 64 {
        assert!(waited.elapsed() < Duration::from_secs(10), "not folded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept().await, expected, "the count read after folding");
    // Another tenant's executions are not counted.
    tenant_with_package(&store, "other").await;
    let mut theirs = new_execution("ex_other");
    theirs.tenant = "other".into();
    store.create_execution(theirs, NOW, None).await.unwrap();
    assert_eq!(kept().await, expected);
    assert_eq!(
        store
            .executions()
            .count_open_executions("other")
            .await
            .unwrap(),
        1
    );
}
