//! The smallest useful package: a workflow passing data through three steps.
//!
//! `hello` with `{"name": "web-1"}` returns `{"message": "HELLO, WEB-1!"}`.

use cerebelum_sdk::{Context, Error};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Name {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    greeting: String,
}

#[derive(Serialize, Deserialize)]
struct Message {
    message: String,
}

/// greet → shout → punctuate.
fn hello(ctx: &Context, input: Name) -> Result<Message, Error> {
    ctx.progress(0, "Greeting");
    let greeting: Greeting = ctx.step("greet", &input)?;
    ctx.progress(33, "Shouting");
    let shouted: Greeting = ctx.step("shout", &greeting)?;
    ctx.progress(66, "Punctuating");
    let message: Message = ctx.step("punctuate", &shouted)?;
    ctx.progress(100, "Done");
    Ok(message)
}

fn greet(_ctx: &Context, input: Name) -> Result<Greeting, Error> {
    Ok(Greeting {
        greeting: format!("Hello, {}", input.name),
    })
}

fn shout(_ctx: &Context, input: Greeting) -> Result<Greeting, Error> {
    Ok(Greeting {
        greeting: input.greeting.to_uppercase(),
    })
}

fn punctuate(_ctx: &Context, input: Greeting) -> Result<Message, Error> {
    Ok(Message {
        message: format!("{}!", input.greeting),
    })
}

cerebelum_sdk::package! {
    workflows: [
        hello => "Greet someone loudly, one step at a time",
    ],
    steps: [
        greet => "Build the greeting",
        shout => "Uppercase it",
        punctuate => "Append an exclamation mark",
    ],
}
