//! update-coordinator: a host-side service that runs allow-listed update scripts on behalf of
//! unprivileged containers.
//!
//! The pipeline, one module per step: a container drops a JSON file into `requests/`;
//! [`spool`] notices it (inotify, with directory scans as the source of truth) and reads it
//! safely; [`request`] turns the bytes into a checked [`request::Request`]; [`daemon`] queues it
//! and [`schedule`] decides when it may run; [`runner`] runs the component's script with a
//! timeout, its own process group and bounded output capture; [`report`] turns the outcome into
//! a [`status::Status`], which [`status`] writes atomically to `status/<request_id>.json`.
//! Runs survive the coordinator: each script is owned by a [`monitor`] process and every step is
//! in the durable [`record`]s, so a restarted coordinator re-attaches and answers exactly once
//! ([`recovery`] decides what each record left behind calls for);
//! [`instance`] keeps it to one coordinator per state directory.
//! [`config`] owns every path; [`systemd`] and [`logging`] talk to the service manager and the
//! journal; [`cli`] holds the subcommands.
//!
//! Defences against what a container can drop into the spool: [`dir`] (every file access
//! relative to a directory handle, no symlinks), [`trust`] (scripts nobody else can change),
//! [`signature`] (optional HMAC-signed requests), [`ratelimit`] (update floods), and against
//! each other: [`fairshare`] (no writer can refuse or stall another).
//!
//! A module is `pub` only where the binary, the integration tests or the fuzz targets use it,
//! and inside those, what only the crate uses is `pub(crate)`: so rustc reports dead code.

mod audit;
pub mod cli;
pub mod config;
mod daemon;
mod dir;
mod fairshare;
mod instance;
mod inventory;
mod limits;
mod logging;
mod monitor;
pub mod procedure;
pub mod quarantine;
mod ratelimit;
pub mod record;
mod recovery;
pub mod report;
pub mod request;
pub mod runner;
mod schedule;
pub mod signature;
pub mod spool;
pub mod status;
mod systemd;
pub mod trust;
mod window;
