//! Schedules: a tenant's workflow started at the due times of a cron
//! expression (five fields, or six with seconds first) in an IANA time
//! zone, with an overlap policy and a catch-up bound.
//!
//! Every serving node looks for due schedules every [`TICK`] ([`run`]) and
//! fires them: each due time starts an execution whose idempotency key is
//! `schedule:<name>:<due ms>` ([`due_key`]), then the schedule's next due
//! time moves on by compare-and-set ([`crate::store::Catalog::advance_schedules`],
//! one transaction for every schedule a tick fired).
//! A node that crashes between the start and the move fires the same due
//! time again after its restart and gets the same execution back; two
//! nodes firing at once get one execution and one move. So each due time
//! starts at most one execution, across restarts and nodes, without a
//! leader.

use super::audit::Actor;
use super::service::{Api, StartRequest};
use crate::error::{Error, Result};
use crate::model::{ExecutionRecord, Overlap, ScheduleAdvance, ScheduleRecord, TenantRecord};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How often a node looks for due schedules (the lateness of a firing is
/// at most this, plus the time to start its execution).
pub const TICK: Duration = Duration::from_millis(200);
/// Most due times of one schedule fired at once (`--catch-up`).
pub const MAX_CATCH_UP: i64 = 1000;
/// Due schedules read at once.
const BATCH: i64 = 1000;
/// Schedules fired at once by one node (their starts share group commits:
/// 1,000 due together fired with a p99 lateness of 443 ms at 256, 506 ms
/// at 64, `--bench schedules`).
const IN_FLIGHT: usize = 256;
/// Due times walked through after a long stop before the rest are skipped
/// in one jump.
const MAX_WALK: usize = 100_000;

/// The idempotency key of the execution of `schedule`'s due time `due_ms`.
pub fn due_key(schedule: &str, due_ms: i64) -> String {
    format!("schedule:{schedule}:{due_ms}")
}

/// The longest cron expression accepted (any real one is far shorter).
pub const MAX_CRON_BYTES: usize = 256;

/// A parsed cron expression in its time zone.
pub struct CronSpec {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl CronSpec {
    /// Parses `cron` in `timezone`; an error says what is wrong and how to
    /// write it.
    pub fn parse(cron: &str, timezone: &str) -> Result<Self> {
        let tz: chrono_tz::Tz = timezone.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "unknown time zone {timezone:?}: use an IANA name such as UTC, Europe/Madrid \
                 or America/New_York"
            ))
        })?;
        if cron.len() > MAX_CRON_BYTES {
            return Err(Error::InvalidInput(format!(
                "the cron expression {:?} is {} bytes long; at most {MAX_CRON_BYTES}",
                crate::util::shorten(cron, 40),
                cron.len()
            )));
        }
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(Error::InvalidInput(format!(
                "the cron expression {cron:?} has {fields} fields; give 5 (minute hour \
                 day-of-month month day-of-week, e.g. '0 3 * * *' for 03:00 every day) or 6 \
                 with seconds first (e.g. '*/10 * * * * *')"
            )));
        }
        let parsed = croner::parser::CronParser::new()
            .parse(cron)
            .map_err(|e| Error::InvalidInput(format!("invalid cron expression {cron:?}: {e}")))?;
        Ok(Self { cron: parsed, tz })
    }

    /// The first due time strictly after `after_ms` (ms since the epoch).
    pub fn next_after(&self, after_ms: i64) -> Result<i64> {
        // Due times are whole seconds: from the second `after_ms` is in.
        let start = chrono::DateTime::from_timestamp(after_ms.div_euclid(1000), 0)
            .ok_or_else(|| Error::InvalidInput(format!("time {after_ms} ms is out of range")))?
            .with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&start, false).map_err(|e| {
            Error::InvalidInput(format!(
                "the cron expression {} is never due after {start}: {e}",
                self.cron.pattern
            ))
        })?;
        Ok(next.timestamp_millis())
    }
}

/// A schedule as a client asks for it.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub package: String,
    pub version: Option<i64>,
    pub workflow: String,
    /// JSON text; empty for `{}`.
    pub input: String,
    pub overlap: Overlap,
    pub catch_up: i64,
}

fn check_schedule_name(name: &str) -> Result<()> {
    super::keys::check_name("schedule", name, 128)
}

impl Api {
    /// Creates a schedule of `tenant`; its first due time is the first
    /// after now.
    pub async fn create_schedule(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        new: NewSchedule,
    ) -> Result<ScheduleRecord> {
        check_schedule_name(&new.name)?;
        let spec = CronSpec::parse(&new.cron, &new.timezone)?;
        if !(1..=MAX_CATCH_UP).contains(&new.catch_up) {
            return Err(Error::InvalidInput(format!(
                "catch-up {}: give 1 to {MAX_CATCH_UP} (how many of the due times missed while \
                 no server ran are fired)",
                new.catch_up
            )));
        }
        let input = if new.input.trim().is_empty() {
            "{}".to_owned()
        } else {
            new.input.clone()
        };
        self.check_payload(tenant, "the input", input.len())?;
        let parsed: serde_json::Value = serde_json::from_str(&input).map_err(|e| {
            Error::InvalidInput(format!(
                "the input is not valid JSON ({})",
                crate::util::json_error(&e)
            ))
        })?;
        let package = self.describe(tenant, &new.package, new.version).await?;
        package.info.check_workflow(&new.workflow)?;
        let now = self.now_ms();
        let record = ScheduleRecord {
            tenant: tenant.name.clone(),
            name: new.name.clone(),
            cron: new.cron.split_whitespace().collect::<Vec<_>>().join(" "),
            timezone: new.timezone.clone(),
            package: package.name.clone(),
            version: new.version,
            workflow: new.workflow.clone(),
            input: parsed.to_string(),
            overlap: new.overlap,
            catch_up: new.catch_up,
            paused: false,
            next_due_ms: spec.next_after(now)?,
            last_due_ms: None,
            last_execution: None,
            last_error: None,
            fired: 0,
            skipped: 0,
            created_at_ms: now,
        };
        self.store().catalog().create_schedule(&record).await?;
        let detail = serde_json::json!({
            "cron": record.cron, "timezone": record.timezone,
            "package": record.package, "workflow": record.workflow,
        });
        actor
            .record(
                self.store(),
                now,
                &tenant.name,
                "schedule.create",
                &record.name,
                Some(detail),
            )
            .await?;
        Ok(record)
    }

    /// The tenant's schedules, by name.
    pub async fn schedules(&self, tenant: &TenantRecord) -> Result<Vec<ScheduleRecord>> {
        self.store().catalog().list_schedules(&tenant.name).await
    }

    /// Pauses a schedule (its due times pass without firing), or resumes
    /// it: it is next due at its first due time after now (what passed
    /// while it was paused is not caught up).
    pub async fn pause_schedule(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleRecord> {
        let current = self.store().catalog().schedule(&tenant.name, name).await?;
        let now = self.now_ms();
        let next = if paused {
            None
        } else {
            Some(CronSpec::parse(&current.cron, &current.timezone)?.next_after(now)?)
        };
        let changed = self
            .store()
            .catalog()
            .set_schedule_paused(&tenant.name, name, paused, next)
            .await?;
        let action = if paused {
            "schedule.pause"
        } else {
            "schedule.resume"
        };
        actor
            .record(self.store(), now, &tenant.name, action, name, None)
            .await?;
        Ok(changed)
    }

    pub async fn delete_schedule(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        name: &str,
    ) -> Result<()> {
        self.store()
            .catalog()
            .delete_schedule(&tenant.name, name)
            .await?;
        let now = self.now_ms();
        actor
            .record(
                self.store(),
                now,
                &tenant.name,
                "schedule.delete",
                name,
                None,
            )
            .await
    }

    /// Starts the schedule's workflow now, outside its due times (its
    /// overlap policy does not apply; its due times stay as they are).
    pub async fn trigger_schedule(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        name: &str,
    ) -> Result<(ExecutionRecord, bool)> {
        let schedule = self.store().catalog().schedule(&tenant.name, name).await?;
        let now = self.now_ms();
        let started = self
            .start(
                tenant,
                StartRequest {
                    idempotency_key: Some(format!("schedule:{name}:now:{now}")),
                    ..start_of(&schedule)
                },
            )
            .await?;
        let detail = serde_json::json!({ "execution": started.0.id });
        actor
            .record(
                self.store(),
                now,
                &tenant.name,
                "schedule.trigger",
                name,
                Some(detail),
            )
            .await?;
        Ok(started)
    }
}

/// The start of an execution of `schedule`, without its idempotency key.
fn start_of(schedule: &ScheduleRecord) -> StartRequest {
    StartRequest {
        package: schedule.package.clone(),
        version: schedule.version,
        workflow: schedule.workflow.clone(),
        input: schedule.input.clone(),
        idempotency_key: None,
        worker_queue: None,
    }
}

/// Fires the due schedules of every tenant every [`TICK`] until `shutdown`.
pub async fn run(api: Api, shutdown: impl Future<Output = ()>) {
    super::every(TICK, shutdown, "looking for due schedules", || {
        fire_due(&api)
    })
    .await
}

/// Fires what is due now; how many schedules were due.
pub async fn fire_due(api: &Api) -> Result<usize> {
    let now = api.now_ms();
    let due = api.store().catalog().due_schedules(now, BATCH).await?;
    let count = due.len();
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut firing = tokio::task::JoinSet::new();
    for schedule in due {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let api = api.clone();
        firing.spawn(async move {
            let _permit = permit;
            let fired = fire(&api, &schedule, now).await;
            if let Err(e) = &fired {
                warn!(
                    tenant = %schedule.tenant, schedule = %schedule.name, error = %e,
                    "firing a schedule failed; trying again"
                );
            }
            fired.ok().flatten()
        });
    }
    // The moves of every schedule fired, in one write.
    let mut advances = Vec::new();
    while let Some(done) = firing.join_next().await {
        if let Ok(Some(advance)) = done {
            advances.push(advance);
        }
    }
    if !advances.is_empty() {
        api.store().catalog().advance_schedules(&advances).await?;
    }
    Ok(count)
}

/// Whether execution `id` is still open (a deleted one is not).
async fn is_open(api: &Api, id: &str) -> Result<bool> {
    match api.store().executions().execution(id).await {
        Ok(record) => Ok(!record.status.is_terminal()),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fires `schedule`, due at `now`: starts the executions its due times
/// ask for; how to move it on then (`None`: not now). A transient failure
/// moves nothing: the next tick fires the same due times again, with the
/// same idempotency keys; so does a crash before the move is written.
async fn fire(api: &Api, schedule: &ScheduleRecord, now: i64) -> Result<Option<ScheduleAdvance>> {
    let catalog = api.store().catalog();
    let spec = match CronSpec::parse(&schedule.cron, &schedule.timezone) {
        Ok(spec) => spec,
        Err(e) => {
            // Checked when it was made; the time-zone data may have changed.
            warn!(schedule = %schedule.name, error = %e, "pausing a schedule that no longer parses");
            catalog
                .set_schedule_paused(&schedule.tenant, &schedule.name, true, None)
                .await?;
            return Ok(None);
        }
    };
    // The due times that passed, oldest first.
    let mut passed = vec![schedule.next_due_ms];
    let mut next = spec.next_after(schedule.next_due_ms)?;
    let mut walked_over = 0i64;
    while next <= now {
        if passed.len() >= MAX_WALK {
            walked_over += passed.len() as i64;
            passed.clear();
            next = spec.next_after(now - 1)?;
            break;
        }
        passed.push(next);
        next = spec.next_after(next)?;
    }
    let keep = match schedule.overlap {
        Overlap::Allow => schedule.catch_up as usize,
        Overlap::Skip | Overlap::BufferOne => 1,
    };
    let fire_at = passed.split_off(passed.len().saturating_sub(keep));
    let mut advance = ScheduleAdvance {
        tenant: schedule.tenant.clone(),
        name: schedule.name.clone(),
        from_due_ms: schedule.next_due_ms,
        next_due_ms: next,
        skipped: walked_over + passed.len() as i64,
        ..ScheduleAdvance::default()
    };
    let previous_open = match (&schedule.last_execution, schedule.overlap) {
        (Some(id), Overlap::Skip | Overlap::BufferOne) => is_open(api, id).await?,
        _ => false,
    };
    if previous_open {
        if schedule.overlap == Overlap::BufferOne {
            // Stays due: fired once the previous execution ended.
            return Ok(None);
        }
        advance.skipped += fire_at.len() as i64;
    } else {
        let tenant = catalog.tenant(&schedule.tenant).await?;
        for due in fire_at {
            let request = StartRequest {
                idempotency_key: Some(due_key(&schedule.name, due)),
                ..start_of(schedule)
            };
            advance.last_due_ms = Some(due);
            match api.start(&tenant, request).await {
                Ok((execution, _)) => {
                    advance.fired += 1;
                    advance.last_execution = Some(execution.id);
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // The package was deleted, a quota is full...: this due
                    // time starts nothing; the schedule says why.
                    warn!(
                        tenant = %schedule.tenant, schedule = %schedule.name, error = %e,
                        "a due time of a schedule started nothing"
                    );
                    advance.skipped += 1;
                    advance.last_error = Some(e.to_string());
                }
            }
        }
    }
    Ok(Some(advance))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn due_times_follow_the_expression_in_its_time_zone() {
        // 2026-01-15 12:00:00 UTC.
        let noon = 1_768_478_400_000;
        let utc = CronSpec::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(utc.next_after(noon).unwrap(), noon + 15 * HOUR);
        // Madrid is UTC+1 in January: 03:00 there is 02:00 UTC.
        let madrid = CronSpec::parse("0 3 * * *", "Europe/Madrid").unwrap();
        assert_eq!(madrid.next_after(noon).unwrap(), noon + 14 * HOUR);
        // Six fields: seconds first; strictly after.
        let every_ten = CronSpec::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(every_ten.next_after(noon).unwrap(), noon + 10_000);
        assert_eq!(every_ten.next_after(noon + 1).unwrap(), noon + 10_000);
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let zone = CronSpec::parse("0 3 * * *", "Mars/Olympus").err().unwrap();
        assert!(zone.to_string().contains("IANA"), "{zone}");
        let fields = CronSpec::parse("0 3 * *", "UTC").err().unwrap();
        assert!(fields.to_string().contains("has 4 fields"), "{fields}");
        let bad = CronSpec::parse("0 25 * * *", "UTC").err().unwrap();
        assert!(bad.to_string().contains("invalid cron expression"), "{bad}");
        // Issue 31 (11): bounded, and quoted by an excerpt.
        let long = format!("0 3 * * {}", "1,".repeat(5000));
        let refused = CronSpec::parse(&long, "UTC").err().unwrap().to_string();
        assert!(refused.contains("at most 256"), "{refused}");
        assert!(refused.len() < 200, "{refused}");
        assert!(check_schedule_name("nightly-certs").is_ok());
        assert!(check_schedule_name("a b").is_err());
        assert!(check_schedule_name("").is_err());
    }
}
