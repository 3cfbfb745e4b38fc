//! `sqlx::migrate!` embeds the migrations at compile time; a migration added without touching
//! a source file would otherwise not be built in (sqlx's documented advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
