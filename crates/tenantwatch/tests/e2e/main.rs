//! End-to-end tests: the real `tenantwatch` binary against loopback simulators (and a real
//! Postfix), observed from the outside through /metrics, the exit code and the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alerting;
mod alerting_runtime;
mod cli;
mod daemon;
mod demo;
mod entra;
mod faults;
mod mailflow;
mod postfix;
mod report;
mod status_page;
mod support;
