//! The host calls user code makes, as the journal records them: one
//! [`Call`] variant per kind, declared once in [`durable_calls!`] below.
//!
//! Each kind lives in its own module under [`super::calls`]: its arguments
//! and what it records (the type in the table), and how a person is shown
//! it ([`Show`]: the console's timeline row, `status`'s "waiting on" line,
//! `watch`'s line). The table derives the rest — the kind's stored name,
//! [`CallKind`], the stored payload both ways, the conversions between a
//! call's type and [`Call`] ([`DurableCall`]) — so adding a call kind is a
//! new module and a line here (and, in the executor, its module under
//! `executor::calls`).

use super::calls::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// A call kind's type: what it records, and which [`Call`] variant holds
/// it. Implemented by [`durable_calls!`] for every type in its table.
pub trait DurableCall: Clone + Serialize + DeserializeOwned + Into<Call> {
    const KIND: CallKind;

    /// The call, if it is of this kind.
    fn from_call(call: Call) -> Option<Self>;
}

/// How a call is shown to a person, written once per kind (in its module)
/// and read by the console's timeline, `status` and `watch`.
pub trait Show {
    fn show(&self, cx: &ShowContext<'_>) -> Shown;
}

impl<T: Show> Show for Box<T> {
    fn show(&self, cx: &ShowContext<'_>) -> Shown {
        (**self).show(cx)
    }
}

/// What a call's presentation may refer to.
#[derive(Debug, Clone, Copy)]
pub struct ShowContext<'a> {
    /// The execution it belongs to (`watch` prints commands with it).
    pub execution: &'a str,
    /// The [`Shown::name`] of earlier calls, by their seq (an
    /// `await-child` names the child its `start-child` started).
    pub names: &'a HashMap<i64, String>,
}

/// A call as a person sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shown {
    /// Its row in the console's timeline: `step`, `sleep`, `poll`,
    /// `approval`, `signal`, `await`, `child`, `continue`, `state`,
    /// `progress`, `log`, `http`. None: not a row (the clock, randomness
    /// and recorded values are replayed answers, not events a person looks
    /// for).
    pub row: Option<&'static str>,
    /// The row's title.
    pub title: String,
    /// What the row shows under its title.
    pub details: Vec<Detail>,
    /// Sleeps, approvals, signals and polls: when it ends unless something
    /// else ends it first.
    pub due_ms: Option<i64>,
    /// It takes time: attempts, checks and a result refer to it later, and
    /// until its result the timeline shows it waiting or running.
    pub waits: bool,
    /// What later lines call it (`step deploy`, `sleep`, `poll check`,
    /// `approval 'go'`, `signal 'dns'`, `child deploy ex_…`): `watch`
    /// names its result so, and [`ShowContext::names`] keeps it.
    pub name: Option<String>,
    /// What `status` says the execution waits on while it has no result
    /// (`sleep until 2026-11-25T17:00:00Z`, `approval 'go' (times out …)`).
    pub waiting: Option<String>,
    /// `watch`'s line for it, when workflow code makes it.
    pub line: Option<String>,
}

/// Part of what a timeline row shows under its title.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// A JSON value (an input, the details of an approval).
    Json(Value),
    /// A paragraph of text.
    Text(String),
    /// A short piece of code (a URL).
    Code(String),
}

/// `serde_json::to_value` of a journal type (they always serialise).
fn value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The table of call kinds: `Variant(Type) = "stored-kind"`, in the order
/// of their discriminants. Everything that maps between the variants, the
/// kinds and their stored names is generated from it.
macro_rules! durable_calls {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $kind:literal, )*) => {
        /// A host call, with what it needs to be replayed: its arguments,
        /// and the answer or due time it got when it was made.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Call {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// The kinds of host calls, as replay compares them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CallKind {
            $( $variant, )*
        }

        impl CallKind {
            /// Every kind, in the table's order.
            pub const ALL: &'static [CallKind] = &[$( CallKind::$variant, )*];

            /// The name it is stored under (the `kind` column).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( CallKind::$variant => $kind, )*
                }
            }
        }

        impl Call {
            pub fn kind(&self) -> CallKind {
                match self {
                    $( Call::$variant(_) => CallKind::$variant, )*
                }
            }

            /// The call's payload as stored: `{"args": …, …}`.
            pub(super) fn payload(&self) -> Value {
                match self {
                    $( Call::$variant(c) => value(c), )*
                }
            }

            /// [`Call::payload`] as JSON text, serialised straight from the
            /// typed call (the commit path: no intermediate `Value`).
            pub(super) fn payload_text(&self) -> String {
                match self {
                    $( Call::$variant(c) => super::text(c), )*
                }
            }

            pub(super) fn parse(kind: CallKind, payload: Value) -> Result<Self, serde_json::Error> {
                Ok(match kind {
                    $( CallKind::$variant => Call::$variant(serde_json::from_value(payload)?), )*
                })
            }

            /// How a person is shown it (see [`Show`]).
            pub fn show(&self, cx: &ShowContext<'_>) -> Shown {
                match self {
                    $( Call::$variant(c) => c.show(cx), )*
                }
            }
        }

        $(
            impl From<$ty> for Call {
                fn from(call: $ty) -> Self {
                    Call::$variant(call)
                }
            }

            impl DurableCall for $ty {
                const KIND: CallKind = CallKind::$variant;

                fn from_call(call: Call) -> Option<Self> {
                    match call {
                        Call::$variant(c) => Some(c),
                        _ => None,
                    }
                }
            }
        )*
    };
}

durable_calls! {
    CallStep(CallStep) = "call-step",
    StartStep(StartStep) = "start-step",
    AwaitSteps(AwaitSteps) = "await-steps",
    Sleep(Sleep) = "sleep",
    Poll(Poll) = "poll",
    AwaitApproval(AwaitApproval) = "await-approval",
    AwaitSignal(AwaitSignal) = "await-signal",
    SetState(SetState) = "set-state",
    StartChild(Box<StartChild>) = "start-child",
    AwaitChild(AwaitChild) = "await-child",
    /// Answered with the id of the execution that continues this one.
    ContinueAsNew(ContinueAsNew) = "continue-as-new",
    ReportProgress(ReportProgress) = "report-progress",
    Log(Log) = "log",
    NowMs(NowMs) = "now-ms",
    RandomU64(RandomU64) = "random-u64",
    Record(Record) = "record",
    Patched(Patched) = "patched",
    Http(HttpCall) = "http",
}

impl CallKind {
    pub(super) fn parse(kind: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == kind)
    }

    /// The hash of a call of this kind with `args`, as recorded and
    /// compared: the first 8 bytes of SHA-256 over the kind, a zero byte
    /// and the arguments' JSON (keys sorted).
    pub fn hash(self, args: &impl Serialize) -> String {
        self.hash_value(&value(args))
    }

    /// [`CallKind::hash`] of arguments already turned into JSON.
    pub fn hash_value(self, args: &Value) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.as_str().as_bytes());
        h.update([0]);
        let sorted = serde_json::to_string(&SortedKeys(args)).unwrap_or_default();
        h.update(sorted.as_bytes());
        hex::encode(&h.finalize()[..8])
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON value serialized with the keys of its objects sorted, whatever
/// order they are kept in (objects keep the order they were written in:
/// serde_json's `preserve_order`), so that a call's hash stays what it
/// was when maps were sorted and journals written then still replay.
struct SortedKeys<'a>(&'a Value);

impl Serialize for SortedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &SortedKeys(&map[key]))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&SortedKeys(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

impl Call {
    /// A short description for messages: `call-step {"step":"greet",..}`.
    pub fn describe(&self) -> String {
        describe_call(self.kind(), &self.payload()["args"])
    }
}

/// A short description of a call for messages: `call-step {"step":"greet",..}`.
pub fn describe_call(kind: CallKind, args: &Value) -> String {
    format!("{kind} {}", crate::util::shorten(&args.to_string(), 120))
}

/// A call answered at once: its arguments and the answer it got.
pub trait Immediate: DurableCall {
    type Args: Serialize;
    type Answer: Clone;

    fn new(args: Self::Args, answer: Self::Answer) -> Self;
    fn answer(self) -> Self::Answer;
}

/// Declares the type of a call answered at once (`{"args": …, "answer":
/// …}`) and its [`Immediate`] implementation.
macro_rules! answered {
    ($(#[$doc:meta])* $name:ident($args:ty) -> $answer:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            pub args: $args,
            pub answer: $answer,
        }

        impl $crate::journal::call::Immediate for $name {
            type Args = $args;
            type Answer = $answer;

            fn new(args: $args, answer: $answer) -> Self {
                Self { args, answer }
            }

            fn answer(self) -> $answer {
                self.answer
            }
        }
    };
}
pub(crate) use answered;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_stored_under_its_own_name_and_read_back() {
        let mut names: Vec<&str> = CallKind::ALL.iter().map(|k| k.as_str()).collect();
        for kind in CallKind::ALL {
            assert_eq!(CallKind::parse(kind.as_str()), Some(*kind));
        }
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            CallKind::ALL.len(),
            "a stored name is used twice"
        );
        assert_eq!(CallKind::parse("result"), None, "not a call kind");
    }

    #[test]
    fn a_call_converts_to_its_type_and_back() {
        let sleep = Sleep {
            args: SleepArgs { duration_ms: 5 },
            due_at: 7,
        };
        let call: Call = sleep.clone().into();
        assert_eq!(call.kind(), CallKind::Sleep);
        assert_eq!(Sleep::from_call(call.clone()), Some(sleep));
        assert_eq!(Poll::from_call(call), None);
    }

    #[test]
    fn await_child_is_named_by_the_child_its_start_named() {
        let start = StartChild {
            args: ChildArgs {
                workflow: "deploy".into(),
                input: Value::Null,
                options: None,
            },
            child: Some(ChildStarted {
                id: "ex_1".into(),
                package: "kit".into(),
                version: 2,
            }),
            error: None,
        };
        let mut names = HashMap::new();
        let cx = ShowContext {
            execution: "ex_0",
            names: &names,
        };
        let shown = Call::from(Box::new(start)).show(&cx);
        assert_eq!(shown.name.as_deref(), Some("child deploy ex_1"));
        assert_eq!(shown.waiting, None, "starting a child waits for nothing");
        names.insert(3, shown.name.unwrap());
        let wait = Call::from(AwaitChild {
            args: ChildHandle { handle: 3 },
        });
        let cx = ShowContext {
            execution: "ex_0",
            names: &names,
        };
        let shown = wait.show(&cx);
        assert_eq!(shown.waiting.as_deref(), Some("child deploy ex_1"));
        assert_eq!(
            shown.line.as_deref(),
            Some("⏳ waiting for child deploy ex_1")
        );
        assert!(shown.waits);
    }
}
