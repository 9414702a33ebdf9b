//! Rebuild this crate when a migration is added or changed.
//!
//! `sqlx::migrate!` embeds each migration with `include_str!`, which tracks the files that
//! existed at the last build but not a new file appearing in the directory; without this a
//! new migration would be silently missing from the binary until something else changed.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
