//! `sqlx::migrate!` embeds the migrations: a new file must rebuild.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
