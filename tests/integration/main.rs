//! The integration suite: one test binary (one link of the crate per build), one module per
//! subject. Each module is named after what it tests, so `cargo test --test integration --
//! hostile::` runs one subject; tests/packages.sh selects modules the same way.

mod support;

mod cli;
mod client_generations;
mod component_scripts;
mod crash;
mod durability;
mod example_clients;
mod fairshare;
mod fleet;
mod hostile;
mod install;
mod isolation;
mod lifecycle;
mod packaging;
mod quarantine;
mod schema;
mod self_update;
mod service;
mod signing_example;
mod signing_keys;
mod waiting;
