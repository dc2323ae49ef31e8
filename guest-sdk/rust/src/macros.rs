//! [`package!`]: exports a crate's workflows and steps.

/// Exports the workflows and steps of this crate as a Cerebelum package.
///
/// Invoke it once, in a `cdylib` crate built for `wasm32-wasip2`. Each entry
/// is the name of a function in scope, `=>`, and a description; a step may
/// add `with` and its default [`StepOptions`](crate::StepOptions), which
/// callers can override with [`Context::step_with`](crate::Context::step_with)
/// — except its worker queue ([`StepOptions::worker`](crate::StepOptions::worker)):
/// a step placed on a queue is served by external workers, never the sandbox.
/// The function names are the names of the workflows and steps.
///
/// Every function has the signature
/// `fn(&Context, I) -> Result<O, Error>` with `I: DeserializeOwned` and
/// `O: Serialize`.
///
/// ```
/// use std::time::Duration;
/// use cerebelum_sdk::{Context, Error, RetryPolicy, StepOptions};
///
/// fn deploy(ctx: &Context, name: String) -> Result<String, Error> {
///     let id: String = ctx.step("create", &name)?;
///     ctx.step("configure", &id)
/// }
///
/// fn create(_ctx: &Context, name: String) -> Result<String, Error> {
///     Ok(format!("d-{name}"))
/// }
///
/// fn configure(ctx: &Context, id: String) -> Result<String, Error> {
///     if ctx.attempt() < 2 {
///         return Err(Error::new("transient", "apt lock held"));
///     }
///     Ok(id)
/// }
///
/// cerebelum_sdk::package! {
///     workflows: [
///         deploy => "Create a droplet and configure it",
///     ],
///     steps: [
///         create => "Create the droplet",
///         configure => "Configure it (flaky)" with StepOptions::default()
///             .retry(RetryPolicy::new(4).initial_backoff(Duration::from_millis(200))),
///     ],
/// }
/// ```
///
/// The package answers a workflow or step name it does not have with an error
/// of kind `unknown-workflow` or `unknown-step`, input JSON that does not
/// deserialize into `I` with `invalid-input`, and a result that does not
/// serialize with `invalid-output`.
///
/// The expansion defines a hidden type `__CerebelumPackage` implementing the
/// guest interface, so `package!` can appear only once per crate.
#[macro_export]
macro_rules! package {
    (
        workflows: [ $( $workflow:ident => $workflow_doc:literal ),* $(,)? ],
        steps: [
            $( $step:ident => $step_doc:literal $( with $step_options:expr )? ),* $(,)?
        ] $(,)?
    ) => {
        #[doc(hidden)]
        pub struct __CerebelumPackage;

        impl __CerebelumPackage {
            fn steps() -> ::std::vec::Vec<$crate::__private::StepDecl> {
                ::std::vec![ $( (
                    ::core::stringify!($step),
                    $step_doc,
                    $crate::__step_options!($( $step_options )?),
                ) ),* ]
            }
        }

        impl $crate::__private::PlacementGuest for __CerebelumPackage {
            fn worker_steps() -> ::std::vec::Vec<$crate::__private::WorkerStep> {
                $crate::__private::placement(Self::steps())
            }
        }

        impl $crate::__private::Guest for __CerebelumPackage {
            fn describe() -> $crate::__private::PackageInfo {
                $crate::__private::describe(
                    &[ $( (::core::stringify!($workflow), $workflow_doc) ),* ],
                    Self::steps(),
                )
            }

            fn run_workflow(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitError> {
                match name.as_str() {
                    $( ::core::stringify!($workflow) => $crate::__private::run($workflow, &input), )*
                    _ => {
                        let known: &[&str] = &[ $( ::core::stringify!($workflow) ),* ];
                        ::core::result::Result::Err($crate::__private::unknown(
                            "unknown-workflow", "workflow", &name, known,
                        ))
                    }
                }
            }

            fn run_step(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitError> {
                match name.as_str() {
                    $( ::core::stringify!($step) => $crate::__private::run($step, &input), )*
                    _ => {
                        let known: &[&str] = &[ $( ::core::stringify!($step) ),* ];
                        ::core::result::Result::Err($crate::__private::unknown(
                            "unknown-step", "step", &name, known,
                        ))
                    }
                }
            }
        }

        $crate::bindings::export_package!(__CerebelumPackage with_types_in $crate::bindings);
    };
}

/// `Some(options)` or `None`: the optional default options of a step in
/// [`package!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __step_options {
    () => {
        ::core::option::Option::None
    };
    ($options:expr) => {
        ::core::option::Option::Some::<$crate::StepOptions>($options)
    };
}
