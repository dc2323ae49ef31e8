//! Hostile guests: one workflow per attack on the engine or on the other
//! tenants (`tests/hostile.rs` runs each as tenant A while tenant B runs a
//! steady load). Each must end with an error naming the limit it hit, and
//! nothing else may notice. Also the well-behaved HTTP and secret steps the
//! sandbox tests use.

use std::hint::black_box;
use std::time::Duration;

use cerebelum_sdk::{Context, Error, RetryPolicy, StepOptions, http};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ------------------------------------------------------------- CPU

/// Workflow code that loops forever (and so never reaches a suspension
/// point: cancelling it cannot be delivered either).
fn loop_in_workflow(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let mut acc = 0_u64;
    loop {
        acc = black_box(acc.wrapping_add(1));
    }
}

/// A step that loops forever.
fn loop_in_step(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("spin_forever", &input)
}

fn spin_forever(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let mut acc = 0_u64;
    loop {
        acc = black_box(acc.wrapping_add(1));
    }
}

// ------------------------------------------------------------- memory

fn memory_bomb(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("hoard", &input)
}

/// Allocates and touches 8 MiB after 8 MiB until something stops it.
fn hoard(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    const CHUNK: usize = 8 << 20;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0_u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        kept.push(black_box(chunk));
    }
}

fn stack_overflow(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("recurse", &input)
}

#[inline(never)]
fn deeper(n: u64) -> u64 {
    // Always true at run time; the compiler cannot tell.
    if black_box(n) < u64::MAX {
        return black_box(deeper(black_box(n + 1))).wrapping_add(1);
    }
    n
}

/// Recursion without end.
fn recurse(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    Ok(json!(deeper(0)))
}

// ------------------------------------------------------------- output

#[derive(Serialize, Deserialize)]
struct Size {
    mb: usize,
}

fn huge_result(ctx: &Context, input: Size) -> Result<Value, Error> {
    ctx.step("megabytes", &input)
}

/// Returns `mb` MB of JSON.
fn megabytes(_ctx: &Context, input: Size) -> Result<String, Error> {
    Ok("x".repeat(input.mb << 20))
}

fn huge_print(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("print_forever", &input)
}

/// Writes 100 MB to stdout.
fn print_forever(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let line = "y".repeat(1023);
    for _ in 0..(100 << 10) {
        println!("{line}");
    }
    Ok(json!("printed"))
}

// ------------------------------------------------------------- host calls

fn host_call_flood(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("call_host", &input)
}

/// Ten million journaled host calls.
fn call_host(ctx: &Context, _input: Value) -> Result<Value, Error> {
    let mut sum = 0_u64;
    for _ in 0..10_000_000 {
        sum = sum.wrapping_add(ctx.now_ms());
    }
    Ok(json!(sum))
}

#[derive(Deserialize)]
struct FanOut {
    n: u32,
}

/// Starts `n` steps at once.
fn fan_out(ctx: &Context, input: FanOut) -> Result<Value, Error> {
    let handles = (0..input.n)
        .map(|i| ctx.start_step("small", &i))
        .collect::<Result<Vec<_>, _>>()?;
    let done = ctx
        .await_steps(handles)
        .into_iter()
        .filter(Result::is_ok)
        .count();
    Ok(json!(done))
}

fn small(_ctx: &Context, i: u32) -> Result<u32, Error> {
    Ok(i)
}

// ------------------------------------------------------------- authority

fn ambient(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("probe_ambient", &input)
}

/// What a step gets when it reaches for files, the environment and sockets.
fn probe_ambient(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let files: Vec<String> = ["/etc/passwd", "/", ".", "/proc/self/environ"]
        .iter()
        .map(|p| {
            match std::fs::read_dir(p)
                .map(|_| ())
                .or_else(|_| std::fs::read(p).map(|_| ()))
            {
                Ok(()) => format!("{p}: OPENED"),
                Err(e) => format!("{p}: {e}"),
            }
        })
        .collect();
    let written = match std::fs::write("/tmp/cerebelum-hostile", b"x") {
        Ok(()) => "WRITTEN".to_owned(),
        Err(e) => e.to_string(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let tcp = match std::net::TcpStream::connect("127.0.0.1:5432") {
        Ok(_) => "CONNECTED".to_owned(),
        Err(e) => e.to_string(),
    };
    let udp = match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(_) => "BOUND".to_owned(),
        Err(e) => e.to_string(),
    };
    let listen = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(_) => "LISTENING".to_owned(),
        Err(e) => e.to_string(),
    };
    Ok(json!({
        "files": files,
        "write": written,
        "env": env,
        "args": std::env::args().collect::<Vec<_>>(),
        "tcp": tcp,
        "udp": udp,
        "listen": listen,
    }))
}

#[derive(Deserialize)]
struct Fetch {
    url: String,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    secret: Option<String>,
}

/// GET `url` in a step (with the secret as a bearer token if named), then
/// a durable sleep, then return what came back.
fn fetch(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("get_url", &input)
}

fn get_url(ctx: &Context, input: Fetch) -> Result<Value, Error> {
    let mut request = http::Request::get(&input.url);
    if let Some(name) = &input.secret {
        request = request.header("authorization", format!("Bearer {}", ctx.secret(name)?));
    }
    let response = request.send()?;
    ctx.sleep(Duration::from_millis(input.sleep_ms))?;
    Ok(json!({
        "status": response.status,
        "body": response.text()?,
        "server": response.header("x-served-by"),
    }))
}

#[derive(Serialize, Deserialize)]
struct FetchN {
    url: String,
    n: u32,
}

/// `n` GETs of `url` in one step (benchmark of a journaled request).
fn fetch_n(ctx: &Context, input: FetchN) -> Result<Value, Error> {
    ctx.step("get_n", &input)
}

fn get_n(_ctx: &Context, input: FetchN) -> Result<u32, Error> {
    let mut ok = 0;
    for _ in 0..input.n {
        ok += u32::from(http::get(&input.url)?.status == 200);
    }
    Ok(ok)
}

/// Workflow code sending a request (it has no network).
fn fetch_from_workflow(_ctx: &Context, input: Fetch) -> Result<Value, Error> {
    let response = http::get(&input.url)?;
    Ok(json!(response.status))
}

#[derive(Serialize, Deserialize)]
struct Leak {
    secret: String,
}

/// A step that returns a secret and logs it: neither may be stored in clear.
fn leak_secret(ctx: &Context, input: Leak) -> Result<Value, Error> {
    ctx.step("read_secret", &input)
}

fn read_secret(ctx: &Context, input: Leak) -> Result<Value, Error> {
    let value = ctx.secret(&input.secret)?;
    ctx.log(
        cerebelum_sdk::Level::Info,
        &format!("the secret is {value}"),
    );
    println!("printing the secret: {value}");
    Ok(json!({ "value": value, "length": value.len() }))
}

/// Workflow code reading a secret (it may not).
fn secret_in_workflow(ctx: &Context, input: Leak) -> Result<Value, Error> {
    Ok(json!(ctx.secret(&input.secret)?))
}

cerebelum_sdk::package! {
    workflows: [
        loop_in_workflow => "Workflow code that never yields",
        loop_in_step => "A step that never ends",
        memory_bomb => "A step that allocates without end",
        stack_overflow => "A step that recurses without end",
        huge_result => "A step that returns mb megabytes",
        huge_print => "A step that prints 100 MB",
        host_call_flood => "A step making ten million host calls",
        fan_out => "n steps at once",
        ambient => "A step reaching for files, environment and sockets",
        fetch => "GET a URL in a step, sleep, return the response",
        fetch_from_workflow => "GET a URL from workflow code",
        fetch_n => "n GETs of a URL in one step",
        leak_secret => "A step that returns and logs a secret",
        secret_in_workflow => "Workflow code reading a secret",
    ],
    steps: [
        spin_forever => "Loop forever" with once(),
        hoard => "Allocate without end" with once(),
        recurse => "Recurse without end" with once(),
        megabytes => "Return mb megabytes" with once(),
        print_forever => "Print 100 MB" with once(),
        call_host => "Ten million host calls" with once(),
        small => "Return the input" with once(),
        probe_ambient => "Try files, env, sockets" with once(),
        get_url => "GET a URL, sleep" with once(),
        get_n => "n GETs" with once(),
        read_secret => "Return a secret" with once(),
    ],
}

/// One attempt: an attack fails at once instead of being retried.
fn once() -> StepOptions {
    StepOptions::default().retry(RetryPolicy::new(1))
}
