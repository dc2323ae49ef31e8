//! A component of the wasi:cli world, not of cerebelum:workflow/package.

fn main() {
    println!("I am not a Cerebelum package");
}
