//! The demo application (being built): a realistic multi-product API audited end to end.
//!
//! Run with: `cargo run -p demo-app`.

fn main() {
    println!("demo-app: not yet built; see the README");
}
