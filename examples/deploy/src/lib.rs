//! A droplet deployment, simulated without network: create a droplet, poll
//! until it is ready, configure it (flaky, retried), let it settle (durable
//! sleep), wait for an operator's approval, then go live — or destroy the
//! droplet when the approval is rejected, times out, or the execution is
//! cancelled.
//!
//! Input: `{"name": "web-1", "ready_after_ms": 1500, "settle_ms": 2000,
//! "approval_timeout_ms": null}`; all but `name` are optional with those
//! defaults.

use std::time::Duration;

use cerebelum_sdk::{Approval, Context, Decision, Error, PollOptions, RetryPolicy, StepOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The address every simulated droplet gets.
const IP: &str = "10.0.0.7";

#[derive(Deserialize)]
struct DeployInput {
    name: String,
    #[serde(default = "default_ready_after_ms")]
    ready_after_ms: u64,
    #[serde(default = "default_settle_ms")]
    settle_ms: u64,
    #[serde(default)]
    approval_timeout_ms: Option<u64>,
}

fn default_ready_after_ms() -> u64 {
    1500
}

fn default_settle_ms() -> u64 {
    2000
}

#[derive(Serialize, Deserialize)]
struct CreateDroplet {
    name: String,
    ready_after_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Created {
    droplet_id: String,
    ready_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Ready {
    droplet_id: String,
    ip: String,
    status: String,
}

#[derive(Serialize, Deserialize)]
struct Live {
    droplet_id: String,
    ip: String,
    approved_by: Value,
    status: String,
}

#[derive(Serialize, Deserialize)]
struct DropletName {
    name: String,
}

fn droplet_id(name: &str) -> String {
    format!("d-{name}")
}

/// The workflow: [`provision`], compensated by `destroy_droplet` when the
/// execution is cancelled.
fn deploy(ctx: &Context, input: DeployInput) -> Result<Live, Error> {
    match provision(ctx, &input) {
        Err(err) if err.is_cancelled() => {
            ctx.warn("Cancelled: destroying the droplet");
            if let Err(compensation) = destroy(ctx, &input.name) {
                ctx.error(&format!("Could not destroy the droplet: {compensation}"));
            }
            Err(err)
        }
        result => result,
    }
}

fn provision(ctx: &Context, input: &DeployInput) -> Result<Live, Error> {
    ctx.progress(10, "Creating droplet");
    let created: Created = ctx.step(
        "create_droplet",
        &CreateDroplet {
            name: input.name.clone(),
            ready_after_ms: input.ready_after_ms,
        },
    )?;

    ctx.progress(30, "Waiting for droplet");
    let every = PollOptions::every(Duration::from_millis(500)).max_attempts(20);
    let ready: Ready = ctx.poll("check_droplet", &created, every)?;

    ctx.progress(50, "Configuring");
    let _: Value = ctx.step("configure", &ready)?;

    ctx.progress(70, "Letting it settle");
    ctx.sleep(Duration::from_millis(input.settle_ms))?;

    ctx.progress(80, "Waiting for approval");
    let mut request = Approval::new("go-live")
        .message(format!(
            "Put {} ({}) into the load balancer?",
            input.name, ready.ip
        ))
        .details(json!({ "droplet_id": ready.droplet_id, "ip": ready.ip }));
    if let Some(ms) = input.approval_timeout_ms {
        request = request.timeout(Duration::from_millis(ms));
    }
    match ctx.await_approval(request)? {
        Decision::Approved(payload) => {
            let approved_by = payload.get("by").cloned().unwrap_or(Value::Null);
            let live: Live = ctx.step("go_live", &GoLive { ready, approved_by })?;
            ctx.progress(100, "Live");
            Ok(live)
        }
        Decision::Rejected(reason) => {
            ctx.progress(90, "Rejected: destroying the droplet");
            destroy(ctx, &input.name)?;
            Err(Error::new("rejected", reason))
        }
        Decision::TimedOut => {
            ctx.progress(90, "Approval timed out: destroying the droplet");
            destroy(ctx, &input.name)?;
            Err(Error::new(
                "approval-timeout",
                "nobody approved going live in time",
            ))
        }
    }
}

fn destroy(ctx: &Context, name: &str) -> Result<Value, Error> {
    ctx.step(
        "destroy_droplet",
        &DropletName {
            name: name.to_owned(),
        },
    )
}

fn create_droplet(ctx: &Context, input: CreateDroplet) -> Result<Created, Error> {
    let droplet_id = droplet_id(&input.name);
    ctx.info(&format!("Creating droplet {droplet_id}"));
    Ok(Created {
        droplet_id,
        ready_at_ms: ctx.now_ms().saturating_add(input.ready_after_ms),
    })
}

/// JSON `null` until the droplet is ready.
fn check_droplet(ctx: &Context, input: Created) -> Result<Option<Ready>, Error> {
    if ctx.now_ms() < input.ready_at_ms {
        return Ok(None);
    }
    Ok(Some(Ready {
        droplet_id: input.droplet_id,
        ip: IP.to_owned(),
        status: "ready".to_owned(),
    }))
}

/// Fails on its first attempt, as package managers do.
fn configure(ctx: &Context, input: Ready) -> Result<Value, Error> {
    if ctx.attempt() < 2 {
        return Err(Error::new("transient", "apt lock held by another process"));
    }
    ctx.info(&format!("Configured {}", input.droplet_id));
    Ok(json!({ "droplet_id": input.droplet_id, "configured": true }))
}

/// Input of `go_live`: the ready droplet and who approved it.
#[derive(Serialize, Deserialize)]
struct GoLive {
    #[serde(flatten)]
    ready: Ready,
    approved_by: Value,
}

fn go_live(ctx: &Context, input: GoLive) -> Result<Live, Error> {
    let ready = input.ready;
    ctx.info(&format!("{} is in the load balancer", ready.droplet_id));
    Ok(Live {
        droplet_id: ready.droplet_id,
        ip: ready.ip,
        approved_by: input.approved_by,
        status: "live".to_owned(),
    })
}

fn destroy_droplet(ctx: &Context, input: DropletName) -> Result<Value, Error> {
    let droplet_id = droplet_id(&input.name);
    ctx.info(&format!("Destroyed {droplet_id}"));
    Ok(json!({ "droplet_id": droplet_id, "destroyed": true }))
}

cerebelum_sdk::package! {
    workflows: [
        deploy => "Create a droplet, wait until it is ready, configure it and go live",
    ],
    steps: [
        create_droplet => "Create the droplet",
        check_droplet => "Whether the droplet is ready (null until it is)",
        configure => "Configure it (fails on the first attempt)"
            with StepOptions::default()
                .retry(RetryPolicy::new(4).initial_backoff(Duration::from_millis(200))),
        go_live => "Put the droplet into the load balancer",
        destroy_droplet => "Destroy the droplet (compensation)",
    ],
}
